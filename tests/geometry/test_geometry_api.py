"""The public API's form: numpydoc sections on every exported name, Examples that run, kernels out of sight.

The docs build runs the same examples (``sphinx -b doctest`` picks them up from the autosummary pages); this
test runs them with the tests too, so a change that breaks one fails here first."""
import doctest
import importlib
import inspect
import re

import pytest

import hddgeo
import hddgeo.geometry

# every module whose docstrings carry examples the API reference shows
DOCTEST_MODULES = ["hddgeo.geometry._math", "hddgeo.geometry.lorentz", "hddgeo.geometry.centroids",
                   "hddgeo.geometry.poincare", "hddgeo.losses", "hddgeo.stats", "hddgeo.plots"]
EXPORTED = [getattr(hddgeo, n) for n in hddgeo.__all__ if callable(getattr(hddgeo, n))] + [
    getattr(hddgeo.geometry, n) for n in ("dist", "expmap", "logmap", "logmap0", "gradient_reach")]


@pytest.mark.parametrize("obj", EXPORTED, ids=lambda o: o.__name__)
def test_every_exported_name_has_numpydoc_sections_and_an_example(obj):
    doc = inspect.getdoc(obj)
    wanted = ["Parameters", "Examples"] + ([] if inspect.isclass(obj) else ["Returns"])
    if obj.__name__ not in ("gradient_reach", "KarcherInfo"):
        wanted.append("Raises")
    for section in wanted:
        assert re.search(rf"^{section}\n-{{{len(section)}}}$", doc, re.M), f"{obj.__name__}: no {section} section"
    assert ">>> " in doc


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_the_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, raise_on_error=False, verbose=False)
    assert result.attempted > 0 and result.failed == 0, f"{name}: {result.failed} of {result.attempted} failed"


def test_no_public_name_ends_in_the_in_place_underscore():
    """A trailing underscore means in-place in PyTorch; the geometry's kernels are private (leading underscore,
    private modules) and nothing the package exports ends in one."""
    import hddgeo.losses
    import hddgeo.plots

    for module in (hddgeo, hddgeo.geometry, hddgeo.geometry.lorentz, hddgeo.geometry.centroids,
                   hddgeo.geometry.poincare, hddgeo.geometry._math, hddgeo.geometry._karcher_math, hddgeo.losses,
                   hddgeo.plots):
        bad = [n for n, v in vars(module).items() if callable(v) and re.fullmatch(r"[a-z]\w*[a-z0-9]_", n)]
        assert not bad, f"{module.__name__}: {bad}"
    assert not hasattr(hddgeo.geometry.lorentz, "frame_unboost_")
