"""hddgeo's exceptions: the failures a run or a study expects and reports in one line.

A bad *value* (a negative IPC, an unknown method, NaN among the points) is Python's ``ValueError`` and a wrong
*type* or an unknown keyword is ``TypeError``, as in Python and torch.  What is neither, but still a failure the
user can act on, is a :class:`HddgeoError`:

======================  ==========================================================================================
:class:`RunDirBusy`     another process holds the run directory (or a study's cell) right now
:class:`RunDirError`    the run directory cannot be used: it exists, it holds another run, it cannot be written
                        or resumed
:class:`NonFiniteError` the loss, the image gradients or the images of a run became NaN or infinite
:class:`OutOfMemory`    the device ran out of memory; the message says what to lower
:class:`StudyError`     cells of a study failed (the others ran), or its executor could not run them
:class:`ConfigTypeError` a configuration (``config.json``, a study spec, method options) has a field of the wrong
                        type or an unknown key: a ``TypeError`` too, as Python's
======================  ==========================================================================================

The command line (:func:`hddgeo.cli.run_main`) prints any of them as one line and exits with status 2, as it does
for ``ValueError`` (a ``TypeError`` is a bug, unless it is a :class:`ConfigTypeError`); a study marks the cell that
raised one as failed and runs the others.
"""
from __future__ import annotations


class HddgeoError(Exception):
    """Base of hddgeo's expected failures (not a bug): one line that says what happened and what to do."""


class RunDirBusy(HddgeoError):
    """Another process holds the run directory (its lock), so this one may neither read nor write it."""


class RunDirError(HddgeoError):
    """The run directory cannot be used as asked: it already holds files, holds another run, is not a run directory
    to resume, or cannot be written."""


class NonFiniteError(HddgeoError):
    """The loss, the image gradients or the images became NaN or infinite (the run diverged)."""


class OutOfMemory(HddgeoError):
    """The device ran out of memory (``torch.OutOfMemoryError``); the message names the run, the allocation and
    what to lower."""


class StudyError(HddgeoError):
    """A study could not run all its cells: some failed (the tables hold the others), or its executor (a Ray
    cluster) could not run them."""


class ConfigTypeError(HddgeoError, TypeError):
    """A configuration's field has the wrong type, or the configuration has a key no field has.  A ``TypeError``
    (what Python raises for a wrong type or an unknown keyword) that the command line reports in one line: a
    configuration is the user's input, often a file."""


#: what the command line and a study treat as the user's error: one line, exit status 2 / a failed cell
EXPECTED = (HddgeoError, ValueError, FileNotFoundError)

__all__ = ["EXPECTED", "ConfigTypeError", "HddgeoError", "NonFiniteError", "OutOfMemory", "RunDirBusy", "RunDirError", "StudyError"]
