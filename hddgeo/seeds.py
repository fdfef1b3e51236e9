"""Every random stream of a run, derived from the run's seed in one place.

A run's randomness is split into named streams so that each one is reproducible on its own: iteration
``it`` draws from a generator of its own (nothing depends on what earlier iterations drew, so a resumed run
repeats an uninterrupted one), and the networks outside the iteration loop (evaluation, pruning, IDM's queue,
DANCE's experts, GeoDM's projections, coreset selection) get seeds of their own.  Runs with the same seed that
differ only in the matcher or centroid therefore see the same networks, batches, augmentations, initial
images and evaluation networks: that is what makes the comparisons of :mod:`hddgeo.stats` paired.

Two derivations exist, recorded in a run's ``seed_scheme``:

* **Scheme 2** (the default): every seed is hashed from ``(seed, stream, index)`` by numpy's
  :class:`~numpy.random.SeedSequence` into 63 bits, and the seeds a stream draws for networks and
  augmentations are 63-bit too.  No two streams of any two seeds coincide (a test checks seeds 0-999 with the
  indices runs use), so runs with different seeds are independent replicates.
* **Scheme 1** (runs written before the scheme existed, whose ``config.json`` has no ``seed_scheme``): seeds
  were offsets of the run's seed, so evaluation network ``j`` of seed ``s`` was network ``j - 1`` of seed
  ``s + 1``, and ``iteration(0)`` of seed 0 was the initial-image generator.  Kept, bit for bit, so that those
  runs reproduce.

Changing any number here changes every result of its scheme.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

# streams of one iteration
STEP = 0        # the shared step: network seed, real batches, DSA seeds
IDM_TRAIN = 1   # IDM's training of the network just used

SCHEMES = (1, 2)
DEFAULT_SCHEME = 2

# Scheme 1's offsets (kept, bit for bit, for old runs)
_PERIODIC_EVAL_OFFSET = 10_000   # evaluation network j during a run: seed + 10_000 + j
_FINAL_EVAL_OFFSET = 20_000      # evaluation network j after a run:  seed + 20_000 + j
_PRUNE_NETWORK_OFFSET = 777      # the random ConvNet that ranks images for hierarchical pruning

# ----------------------------------------------------------------------------- scheme 2
# Stream codes of scheme 2: the first word of every derivation key.  Never renumber them.
_ITERATION, _INIT, _PERIODIC_EVAL, _FINAL_EVAL, _PRUNE, _IDM_QUEUE, _EXPERT, _GEODM, _CORESET, _PRUNE_RANDOM = range(1, 11)
_EVAL_STREAMS = {"periodic": _PERIODIC_EVAL, "final": _FINAL_EVAL}
_MASK63 = (1 << 63) - 1


def derive(seed: int, *key: int) -> int:
    """Scheme 2's seed for ``(seed, *key)``: 63 bits of :class:`numpy.random.SeedSequence` hashed from the run's
    seed (entropy) and the stream's key (``spawn_key``); 63 bits so that every consumer (torch's ``manual_seed``,
    JSON readers that know only signed 64-bit integers) takes it as it is."""
    words = np.random.SeedSequence(int(seed), spawn_key=tuple(int(x) for x in key)).generate_state(2, np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & _MASK63


class RunSeeds:
    """The random streams of one run: ``RunSeeds(seed, scheme)``; ``RunSeeds.of(cfg)`` for a configuration.

    Every method returns a seed (an ``int``) or a fresh ``torch.Generator``: nothing here holds state.
    """

    def __init__(self, seed: int, scheme: int = DEFAULT_SCHEME):
        if scheme not in SCHEMES:
            raise ValueError(f"unknown seed scheme {scheme!r}; choose one of {', '.join(map(str, SCHEMES))}")
        if scheme == 2 and (type(seed) is not int or seed < 0):
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed, self.scheme = int(seed), scheme

    @classmethod
    def of(cls, cfg) -> "RunSeeds":
        return cls(cfg.seed, cfg.seed_scheme)

    def _generator(self, *key: int) -> torch.Generator:
        return torch.Generator().manual_seed(derive(self.seed, *key))

    def iteration(self, it: int, stream: int = STEP) -> torch.Generator:
        """The generator of iteration ``it`` (``stream`` STEP: the shared step; IDM_TRAIN: IDM's training)."""
        if self.scheme == 1:
            return torch.Generator().manual_seed((self.seed * 1_000_003 + int(it)) * 7 + stream)
        return self._generator(_ITERATION, it, stream)

    def init(self) -> torch.Generator:
        """The generator the initial synthetic images are drawn with."""
        return torch.Generator().manual_seed(self.seed) if self.scheme == 1 else self._generator(_INIT)

    def draw(self, gen: torch.Generator, count: Union[int, None] = None):
        """Seeds drawn from a stream's generator for what it seeds in turn (a network, a DSA draw): one ``int``, or a
        list of ``count``; below 2**31 in scheme 1, 63 bits in scheme 2 (so that two streams' draws do not meet)."""
        high = 2**31 - 1 if self.scheme == 1 else _MASK63
        if count is None:
            return int(torch.randint(0, high, (), generator=gen))
        return torch.randint(0, high, (count,), generator=gen).tolist()

    def eval_networks(self, kind: str, count: int) -> list[int]:
        """Seeds of the ``count`` evaluation networks of a ``kind`` (``"periodic"``: during the run, ``"final"``)."""
        if kind not in _EVAL_STREAMS:
            raise ValueError(f"unknown evaluation kind {kind!r}; choose periodic or final")
        if self.scheme == 1:
            start = self.seed + (_PERIODIC_EVAL_OFFSET if kind == "periodic" else _FINAL_EVAL_OFFSET)
            return list(range(start, start + count))
        return [derive(self.seed, _EVAL_STREAMS[kind], j) for j in range(count)]

    def prune_network(self) -> int:
        """Seed of the random ConvNet that ranks images for hierarchical pruning."""
        return self.seed + _PRUNE_NETWORK_OFFSET if self.scheme == 1 else derive(self.seed, _PRUNE)

    def prune_random(self) -> torch.Generator:
        """The generator of random pruning (the control of hierarchical pruning; scheme 2 only, where it came)."""
        return self._generator(_PRUNE_RANDOM) if self.scheme == 2 else torch.Generator().manual_seed(
            self.seed * 1_000_003 + 314_159)

    def idm_queue(self, index: int) -> int:
        """Seed of the ``index``-th network of IDM's initial queue."""
        return self.seed * 7919 + int(index) if self.scheme == 1 else derive(self.seed, _IDM_QUEUE, index)

    def expert(self, index: int) -> int:
        """Seed of DANCE's expert ``index``."""
        if self.scheme == 1:
            return (self.seed * 10_007 + 5_003 + int(index)) % (2**31 - 1)
        return derive(self.seed, _EXPERT, index)

    def geodm_projection(self) -> torch.Generator:
        """The generator of GeoDM's fixed random projection."""
        if self.scheme == 1:
            return torch.Generator().manual_seed(self.seed * 1_000_003 + 271_828)
        return self._generator(_GEODM)

    def coreset(self, stream: int) -> int:
        """Seed of a coreset selection network (``stream`` 1: feature network, 2: forgetting network)."""
        if self.scheme == 1:
            return (self.seed + 1) * 1_000_003 + stream
        return derive(self.seed, _CORESET, stream)


def network_seeds(seeds: Union[int, Sequence[int]], count: int) -> list[int]:
    """The seeds of ``count`` networks: ``seeds .. seeds + count - 1`` for an ``int`` (scheme 1's evaluation
    networks), else the sequence itself, which must hold ``count`` seeds."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        return list(range(int(seeds), int(seeds) + count))
    seeds = [int(s) for s in seeds]
    if len(seeds) != count:
        raise ValueError(f"{count} networks need {count} seeds, got {len(seeds)}")
    return seeds
