"""Packaging: what `import hddgeo` and `hddgeo --help` load, the extras' one-line errors, the version and metadata."""
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hddgeo.extras import EXTRAS, MissingExtraError, missing_extra_message, require

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("seaborn", "matplotlib", "sklearn", "ot", "ray", "tensorboard", "wandb")

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)


def _loaded_after(statement: str) -> set:
    code = (f"import sys\n{statement}\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    res = _python(code)
    assert res.returncode == 0, res.stderr
    return set(res.stdout.split())


def test_import_hddgeo_loads_no_optional_package():
    loaded = _loaded_after("import hddgeo")
    assert "hddgeo" in loaded and "geoopt" in loaded  # the check sees what was imported
    assert not loaded & set(OPTIONAL), f"import hddgeo loaded {sorted(loaded & set(OPTIONAL))}"
    assert "pandas" not in loaded  # the geometry and the losses need no tables (labels live in hddgeo.labels)


@pytest.mark.parametrize("argv", [["--help"], ["distill", "--help"], ["study", "--help"], ["plot", "--help"]])
def test_cli_help_loads_no_optional_package(argv):
    loaded = _loaded_after("from hddgeo.cli import main\n"
                           f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code")
    assert "hddgeo" in loaded
    assert not loaded & set(OPTIONAL), f"hddgeo {' '.join(argv)} loaded {sorted(loaded & set(OPTIONAL))}"


def test_version_flag_prints_the_package_version():
    import hddgeo

    res = subprocess.run([sys.executable, "-m", "hddgeo", "--version"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"hddgeo {hddgeo.__version__}"


@pytest.mark.parametrize("blocked,argv,extra", [
    ("sklearn", ["centroids", "--dataset", "digits", "--out", "{tmp}/c.csv"], "digits"),
    ("matplotlib", ["plot", "poincare", "{tmp}"], "plots"),
])
def test_a_missing_extra_is_one_line_and_status_2(blocked, argv, extra, tmp_path):
    """A command whose optional package is absent (blocked here through sys.modules) names the extra to install."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    res = _python(f"import sys\nsys.modules[{blocked!r}] = None\nfrom hddgeo.cli import main\nsys.exit(main({argv!r}))")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert f"pip install 'hddgeo[{extra}]'" in lines[0] and repr(blocked) in lines[0]
    assert not list(tmp_path.iterdir()), "nothing is written before the error"


def test_require_and_the_message_of_a_wrapped_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ot", None)
    with pytest.raises(MissingExtraError, match=r"hddgeo\[geodm\]"):
        require("ot")
    # a library's own ImportError raised from the missing module still maps to the extra
    try:
        try:
            importlib.import_module("ot")  # blocked above: raises
        except ImportError as inner:
            raise ImportError("GeoDM needs POT") from inner
    except ImportError as outer:
        assert "hddgeo[geodm]" in missing_extra_message(outer)
    assert missing_extra_message(ModuleNotFoundError("x", name="not_an_extra")) is None
    assert missing_extra_message(ValueError("x")) is None


def test_pyproject_is_the_only_metadata_and_its_core_is_slim():
    assert not (ROOT / "setup.cfg").exists() and not (ROOT / "setup.py").exists()
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower() for d in meta["dependencies"]}
    assert {"torch", "geoopt"} <= core
    for name in ("scikit-learn", "seaborn", "matplotlib", "pot", "ray", "tensorboard", "pyyaml"):
        assert name not in core, f"{name} is a core requirement"
    extras = meta["optional-dependencies"]
    wanted = {"sklearn": "scikit-learn", "matplotlib": "matplotlib", "seaborn": "seaborn", "ot": "pot",
              "ray": "ray", "tensorboard": "tensorboard", "wandb": "wandb"}
    for module, (extra, _) in EXTRAS.items():
        assert any(d.lower().startswith(wanted[module]) for d in extras[extra]), f"extra {extra} lacks {module}"
    assert meta["scripts"]["hddgeo"] == "hddgeo.cli:main"


def test_citation_and_license_match_the_metadata():
    import hddgeo

    cff = (ROOT / "CITATION.cff").read_text()
    assert f"version: {hddgeo.__version__}\n" in cff
    assert "Hyperbolic Dataset Distillation" in cff
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "MIT"
