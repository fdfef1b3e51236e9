"""Optional packages: which extra of ``pip install 'hddgeo[EXTRA]'`` brings each one.

``import hddgeo`` and the ``hddgeo`` command's own work need only the core requirements; a feature that
needs more imports it where it runs, through :func:`require` or a plain import.  Either way, the command
line (:func:`hddgeo.cli.run_main`) turns the missing module into one line naming the extra to install
(:func:`missing_extra_message`) and exit status 2.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

__all__ = ["EXTRAS", "MissingExtraError", "require", "check", "missing_extra_message"]

#: top-level module name -> (extra, what needs it)
EXTRAS = {
    "sklearn": ("digits", "the digits data set (scikit-learn ships it)"),
    "matplotlib": ("plots", "figures"),
    "seaborn": ("plots", "figures"),
    "ot": ("geodm", "GeoDM's optimal-transport term (POT)"),
    "ray": ("ray", "the Ray executor"),
    "tensorboard": ("tensorboard", "TensorBoard event files"),
    "wandb": ("wandb", "Weights & Biases logging"),
}


class MissingExtraError(ImportError):
    """An optional package is not installed; the message says which extra brings it."""


def _message(module: str, extra: str, what: str) -> str:
    return f"{what} needs the Python module {module!r}, which is not installed: pip install 'hddgeo[{extra}]'"


def require(module: str) -> ModuleType:
    """Import ``module`` (one of :data:`EXTRAS`, or a submodule of one) or raise :class:`MissingExtraError`.

    Raises
    ------
    MissingExtraError
        The module's top-level package is not installed; the message names the extra that installs it.
    """
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] != top or top not in EXTRAS:
            raise
        extra, what = EXTRAS[top]
        raise MissingExtraError(_message(top, extra, what), name=top) from err


def check(module: str) -> None:
    """Raise :class:`MissingExtraError` if ``module`` (one of :data:`EXTRAS`) is not installed, without importing it.

    For checks made before a run writes anything, where importing the package itself would be slow.
    """
    import importlib.util

    if importlib.util.find_spec(module) is None:
        extra, what = EXTRAS[module]
        raise MissingExtraError(_message(module, extra, what), name=module)


def missing_extra_message(err: BaseException) -> Optional[str]:
    """The one-line message for ``err`` if it (or the error it was raised from) is an optional package that is
    not installed, else ``None``."""
    seen = 0
    while err is not None and seen < 5:  # a library's own ImportError raised from the ModuleNotFoundError
        if isinstance(err, MissingExtraError):
            return str(err)
        if isinstance(err, ModuleNotFoundError) and err.name and err.name.split(".")[0] in EXTRAS:
            top = err.name.split(".")[0]
            extra, what = EXTRAS[top]
            return _message(top, extra, what)
        err, seen = err.__cause__, seen + 1
    return None
