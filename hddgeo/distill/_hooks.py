"""Test hooks of the distillation loop (private: not part of hddgeo's API).

``with stop_after(n): run_distillation(...)`` checkpoints iteration ``n`` and raises :class:`RunInterrupted`, as a
kill right after that checkpoint would: the tests resume such a run and check that it ends with exactly the
synthetic set of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

_STOP_AFTER: list[Optional[int]] = [None]


class RunInterrupted(Exception):
    """Raised by :func:`stop_after` to simulate a kill between iterations."""


@contextlib.contextmanager
def stop_after(iteration: int) -> Iterator[None]:
    """Within the block, a distillation stops right after iteration ``iteration`` is checkpointed."""
    before, _STOP_AFTER[0] = _STOP_AFTER[0], iteration
    try:
        yield
    finally:
        _STOP_AFTER[0] = before


def checkpoint_asked(done: int) -> bool:
    """Whether a test asked for a checkpoint (and a stop) after iteration ``done``."""
    return _STOP_AFTER[0] == done


def stop_if_asked(done: int, last: bool) -> None:
    """:class:`RunInterrupted` after iteration ``done`` (checkpointed) when a test asked for it and it is not the
    run's last iteration."""
    if _STOP_AFTER[0] == done and not last:
        raise RunInterrupted(f"stopped after iteration {done}")
