"""Every random stream of a run, derived from the run's seed in one place.

A run's randomness is split into named streams so that each one is reproducible on its own: iteration
``it`` draws from a generator seeded by ``(seed, it, stream)`` (nothing depends on what earlier iterations
drew, so a resumed run repeats an uninterrupted one), and networks outside the iteration loop (evaluation,
pruning, IDM's queue, DANCE's experts, GeoDM's projections, coreset selection) get seeds far apart from each
other and from the iteration streams.  Runs with the same seed that differ only in the matcher or centroid
therefore see the same networks, batches, augmentations, initial images and evaluation networks: that is
what makes the comparisons of :mod:`hddgeo.stats` paired.  Changing any number here changes every result.
"""
from __future__ import annotations

import torch

# streams of one iteration
STEP = 0        # the shared step: network seed, real batches, DSA seeds
IDM_TRAIN = 1   # IDM's training of the network just used

PERIODIC_EVAL_OFFSET = 10_000   # evaluation network j during a run: seed + 10_000 + j
FINAL_EVAL_OFFSET = 20_000      # evaluation network j after a run:  seed + 20_000 + j
PRUNE_NETWORK_OFFSET = 777      # the random ConvNet that ranks images for hierarchical pruning


def iteration_generator(seed: int, it: int, stream: int = STEP) -> torch.Generator:
    """A generator for iteration ``it`` of a run that does not depend on what earlier iterations drew."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(it)) * 7 + stream)


def init_generator(seed: int) -> torch.Generator:
    """The generator the initial synthetic images are drawn with."""
    return torch.Generator().manual_seed(int(seed))


def idm_queue_seed(seed: int, index: int) -> int:
    """Initialisation seed of the ``index``-th network of IDM's initial queue."""
    return int(seed) * 7919 + int(index)


def expert_seed(seed: int, index: int) -> int:
    """Initialisation seed of DANCE's expert ``index``."""
    return (int(seed) * 10_007 + 5_003 + int(index)) % (2**31 - 1)


def geodm_projection_generator(seed: int) -> torch.Generator:
    """The generator of GeoDM's fixed random projection."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + 271_828)


def coreset_seed(seed: int, stream: int) -> int:
    """Seed of a coreset selection network (``stream`` 1: feature network, 2: forgetting network); far above
    any evaluation seed ``seed + j``."""
    return (int(seed) + 1) * 1_000_003 + stream
