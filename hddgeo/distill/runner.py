"""A distillation run: configuration, the loop, periodic evaluation, and a resumable run directory.

Run directory contents::

    config.json    the full configuration
    log.csv        one row per iteration: losses, seconds, evaluation accuracy (when evaluated)
    checkpoint.pt  synthetic images, optimiser and method state, log rows (written atomically)
    synset.pt      final synthetic set (``images``/``train_labels`` are what a network trains on)
    synset.png     denormalised image grid, one row per class
    metrics.json   final evaluation (mean, std, per-network accuracies) and timing

Everything random in iteration ``it`` is drawn from generators seeded by ``(seed, it)`` (:mod:`hddgeo.seeds`), and the
checkpoint holds every piece of state carried between iterations, so ``--resume`` after a kill ends
with exactly the synthetic set of an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Optional

import torch

from hddgeo.data import ClassPool, dsa, load_dataset, parse_strategy
from hddgeo.data.datasets import DATASET_NAMES
from hddgeo.device import (AMP_MODES, NONDETERMINISTIC_CUDA, autocast, check_device_name, configure_process,
                           deterministic, provenance, resolve_device, tf32_settings)
from hddgeo.evaluate import evaluate_synset
from hddgeo.geometry.centroids import CENTROID_METHODS
from hddgeo.losses import MATCHERS, Matcher
from hddgeo.models import MODEL_NAMES, embed
from hddgeo.rundir import (CHECKPOINT, CONFIG, LOCK, LOG, METRICS, SYNSET, LogWriter, RunLock, load_tensors, pack_rows,
                           read_json, remove_temporaries, save_tensors, unpack_rows, write_json)
from hddgeo import seeds
from hddgeo.stats import method_label

from . import distributed
from .memory import DEFAULT_BUDGET_GB
from .methods import METHODS, build_method
from .synset import SyntheticSet


def _opt(default, help: str, group: str, choices=None, default_factory=None):
    """A configuration field with what the command line needs to offer it as a flag: its help text, its
    group in ``--help`` and (a function giving) its valid values, read from the registries."""
    metadata = {"help": help, "group": group, "choices": choices}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


_PRUNE_LEVELS = ("radius", "centroid_distance", "random")  # random: the control, a uniform share of each class
_INITS = ("real", "noise")
MAX_SEED = 2**31 - 1  # seeds are derived from the run's seed by products far below 2**64 (hddgeo.seeds)


@dataclass
class DistillConfig:
    """Everything a distillation run computes from; each field is one ``hddgeo distill`` flag."""

    dataset: str = _opt("digits", "dataset; digits is embedded", "data", lambda: DATASET_NAMES)
    data_root: Optional[str] = _opt(None, "folder holding the dataset files (Fashion-MNIST: Debian's folder by "
                                          "default; not needed for digits)", "data")
    download: bool = _opt(False, "download a torchvision dataset into --data-root", "data")
    ipc: int = _opt(10, "synthetic images per class", "method")
    method: str = _opt("dm", "distillation method", "method", lambda: tuple(METHODS))
    matcher: str = _opt("euclidean", "matching loss: euclidean is DM's mean matching, clipped_euclidean the same on "
                                     "HDD's clipped tangent vectors (k, max-norm), both a weighted sum", "method",
                        lambda: MATCHERS)
    centroid: str = _opt("law", "hyperbolic centroid of the hdd matcher", "method", lambda: CENTROID_METHODS)
    k: float = _opt(1.0, "geoopt's k (curvature K = -1/k)", "method")
    scale: float = _opt(20.0, "lambda, the HDD loss scale", "method")
    max_norm: Optional[float] = _opt(10.0, "clip |v|/sqrt(k) before expmap0 (reference 10; 'none' disables)", "method")
    euclidean_weight: float = _opt(1.0, "weight of DM's term (matcher both)", "method")
    hdd_weight: float = _opt(1.0, "weight of HDD's term (matcher both)", "method")
    iterations: int = _opt(1000, "distillation iterations", "optimisation")
    lr_img: float = _opt(1.0, "SGD learning rate of the synthetic images", "optimisation")
    momentum: float = _opt(0.5, "SGD momentum of the synthetic images", "optimisation")
    batch_real: int = _opt(256, "real images per class per iteration", "optimisation")
    init: str = _opt("real", "initial synthetic images", "optimisation", lambda: _INITS)
    model: str = _opt("convnet", "feature and evaluation network", "optimisation", lambda: MODEL_NAMES)
    dsa: bool = _opt(True, "differentiable siamese augmentation", "optimisation")
    dsa_strategy: str = _opt("color_crop_cutout_flip_scale_rotate", "DSA operations joined by '_'", "optimisation")
    seed: int = _opt(0, "seed of every random stream of the run", "optimisation")
    seed_scheme: int = _opt(seeds.DEFAULT_SCHEME, "how the run's random streams derive from its seed: 2 (independent "
                                                  "streams), 1 (offsets; runs from before the scheme existed)",
                            "optimisation", lambda: seeds.SCHEMES)
    eval_every: int = _opt(0, "evaluate every N iterations (0: never)", "evaluation and checkpoints")
    eval_nets: int = _opt(1, "networks of each periodic evaluation", "evaluation and checkpoints")
    eval_epochs: int = _opt(300, "epochs of each periodic evaluation", "evaluation and checkpoints")
    final_eval_nets: int = _opt(3, "networks of the final evaluation", "evaluation and checkpoints")
    final_eval_epochs: int = _opt(1000, "epochs of the final evaluation (0: none)", "evaluation and checkpoints")
    eval_test_per_class: int = _opt(0, "test on the first N test images of each class (0: the whole test set)",
                                    "evaluation and checkpoints")
    checkpoint_every: int = _opt(50, "checkpoint every N iterations (and at the end)", "evaluation and checkpoints")
    gap_every: int = _opt(0, "log the Law-Karcher centroid distance of real and synthetic features every N "
                             "iterations (0: never)", "evaluation and checkpoints")
    idm_queue: int = _opt(10, "networks in the semi-trained queue", "IDM")
    idm_train_steps: int = _opt(1, "training steps of the used network per iteration", "IDM")
    idm_net_age: int = _opt(100, "uses before a network is renewed", "IDM")
    idm_net_lr: float = _opt(0.01, "learning rate of the queue's networks", "IDM")
    idm_ce_weight: float = _opt(0.5, "weight of the class-aware cross-entropy", "IDM")
    threads: Optional[int] = _opt(None, "torch CPU threads (default: torch's, the physical cores)", "device")
    device: str = _opt("auto", "where the run computes: auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda, "
                               "cuda:N; under torchrun cuda means cuda:LOCAL_RANK", "device")
    amp: str = _opt("none", "bf16: feature and evaluation networks under bf16 autocast (the geometry stays "
                            "float64, losses float32 or float64)", "device", lambda: AMP_MODES)
    deterministic: bool = _opt(False, "torch's deterministic algorithms and no cuDNN autotuning (CUDA: slower, "
                                      "repeatable; the CPU is deterministic already)", "device")
    tf32: Optional[bool] = _opt(None, "TF32 for float32 CUDA work: auto (torch's default: convolutions in TF32, "
                                      "matmuls not), on (both), off (neither: float32 as on the CPU, for parity "
                                      "checks)", "device")
    memory_budget_gb: float = _opt(DEFAULT_BUDGET_GB, "GiB of activations one forward pass may hold on a GPU: larger "
                                                      "batches are split into chunks (and checkpointed under "
                                                      "autograd); lower it when a run is out of memory", "device")
    prune_fraction: float = _opt(1.0, "hierarchical pruning: share of each class's most root-level images to "
                                      "match (paper Sec. 4.3)", "method")
    prune_level: str = _opt("radius", "how root-level is ranked (random: a uniformly drawn share, the control)",
                            "method", lambda: _PRUNE_LEVELS)
    tensorboard: bool = _opt(False, "write TensorBoard event files into RUN_DIR/tensorboard (losses, diagnostics, "
                                    "accuracy, seconds, the image grid at every checkpoint, hyper-parameters); "
                                    "changes nothing the run computes", "evaluation and checkpoints")
    wandb: bool = _opt(False, "log to Weights & Biases what TensorBoard gets (WANDB_MODE=offline keeps it in "
                              "RUN_DIR/wandb; a resume continues the same W&B run); changes nothing the run computes",
                       "evaluation and checkpoints")
    tag: str = _opt("", "a name for this variant in tables, appended to the method's label after '@' (e.g. "
                        "lr10 for a DM with a larger image learning rate); letters, digits, '.', '-' and '_'", "method")
    options: dict = _opt(None, "method-specific option KEY=VALUE (repeatable, dance and geodm), e.g. "
                               "--opt ot_weight=0.5", "method", default_factory=dict)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad option; called before anything is written."""
        _check_types(self)

        def choice(name, value, options):
            if value not in options:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(options)}")

        choice("dataset", self.dataset, DATASET_NAMES)
        choice("method", self.method, tuple(METHODS))
        choice("matcher", self.matcher, MATCHERS)
        choice("centroid", self.centroid, CENTROID_METHODS)
        choice("model", self.model, MODEL_NAMES)
        choice("init", self.init, _INITS)
        parse_strategy(self.dsa_strategy)
        for name in ("ipc", "iterations", "batch_real", "eval_nets", "final_eval_nets", "idm_queue", "idm_net_age"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("eval_every", "final_eval_epochs", "eval_epochs", "checkpoint_every", "idm_train_steps", "gap_every",
                     "eval_test_per_class"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be non-negative, got {getattr(self, name)}")
        if self.seed_scheme not in seeds.SCHEMES:
            raise ValueError(f"unknown seed-scheme {self.seed_scheme}; choose one of "
                             f"{', '.join(map(str, seeds.SCHEMES))}")
        if self.seed_scheme >= 2 and self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        check_device_name(self.device)
        choice("amp", self.amp, AMP_MODES)
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1 (or left unset for torch's default), got {self.threads}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must lie in 0..{MAX_SEED}, got {self.seed}")
        for name in ("k", "scale", "lr_img", "idm_net_lr", "memory_budget_gb"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name.replace('_', '-')} must be positive and finite, got {value}"
                                 + (" (curvature K = -1/k)" if name == "k" else ""))
        for name in ("euclidean_weight", "hdd_weight", "idm_ce_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name.replace('_', '-')} must be a finite number >= 0 (a negative weight turns "
                                 f"its term into gradient ascent), got {value}")
        if self.matcher == "both" and self.euclidean_weight == 0 and self.hdd_weight == 0:
            raise ValueError("matcher both with euclidean-weight 0 and hdd-weight 0 matches nothing; give one a weight")
        if not (0 <= self.momentum < 1):
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.max_norm is not None and not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise ValueError(f"max-norm must be positive and finite (or 'none'), got {self.max_norm}")
        if not (0 < self.prune_fraction <= 1):
            raise ValueError(f"prune-fraction is the share of each class kept and must lie in (0, 1], got {self.prune_fraction}")
        choice("prune level", self.prune_level, _PRUNE_LEVELS)
        if self.tag and not re.fullmatch(r"[A-Za-z0-9._-]{1,40}", self.tag):
            raise ValueError(f"tag must be 1-40 letters, digits, '.', '-' or '_', got {self.tag!r}")
        METHODS[self.method].parse_options(self.options)
        if self.tensorboard:
            from hddgeo.tensorboard import check_available

            check_available()
        if self.wandb:
            from hddgeo.wandb_log import check_available as wandb_available

            wandb_available()

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict, source: str = "config") -> "DistillConfig":
        """A validated configuration from a JSON object; ``ValueError`` naming unknown keys or bad values."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(sorted(names))}")
        cfg = cls(**legacy_fields(d))
        try:
            cfg.validate()
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        return cfg


def legacy_fields(saved: dict) -> dict:
    """A saved configuration (JSON) with the values that a field missing from it had before the field existed,
    where that is not the field's default: ``seed_scheme`` 1 (the field came with scheme 2)."""
    return {"seed_scheme": 1, **saved} if isinstance(saved, dict) else saved


# Field annotation -> accepted JSON/Python types (bool is not an int here, although Python says it is).
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,),
          "Optional[str]": (str, type(None)), "Optional[float]": (int, float, type(None)),
          "Optional[int]": (int, type(None)), "Optional[bool]": (bool, type(None))}


def _check_types(cfg) -> None:
    for f in dataclasses.fields(cfg):
        value, allowed = getattr(cfg, f.name), _TYPES[str(f.type)]
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            want = str(f.type).replace("Optional[", "").rstrip("]") + (" or null" if "Optional" in str(f.type) else "")
            raise ValueError(f"{f.name} must be {want}, got {value!r}")


def describe(cfg: DistillConfig) -> str:
    """Short label such as ``dm``, ``dm+hdd/law``, ``idm+both/karcher``, ``dm@lr10`` (with a tag)."""
    return method_label(cfg.method, cfg.matcher, cfg.centroid, cfg.tag)


def prepare(cfg: DistillConfig):
    """Validate the configuration and load what the run needs; raises before any file is written."""
    cfg.validate()
    device = resolve_device(cfg.device)  # a device that does not exist fails here, before the data loads
    if cfg.deterministic and device.type == "cuda" and METHODS[cfg.method].factor > 1:
        raise ValueError(f"--deterministic on CUDA: {cfg.method} has an op without a deterministic CUDA kernel "
                         f"({NONDETERMINISTIC_CUDA['factored_synset']}); drop --deterministic or run {cfg.method} "
                         f"on the CPU")
    dataset = load_dataset(cfg.dataset, data_root=cfg.data_root, download=cfg.download)
    if cfg.eval_test_per_class:
        dataset = dataset.test_subset(cfg.eval_test_per_class)
    # the train split goes to the device once; every iteration indexes its batches there
    pool = ClassPool(dataset.train_images.to(device), dataset.train_labels, dataset.num_classes)
    if cfg.prune_fraction < 1:
        pool = prune_pool(pool, dataset, cfg)
    per = METHODS[cfg.method].factor ** 2
    smallest = min(range(pool.num_classes), key=pool.count)
    if cfg.init == "real" and cfg.ipc * per > pool.count(smallest):
        raise ValueError(
            f"IPC {cfg.ipc} needs {cfg.ipc * per} real images per class for {cfg.method}'s initialisation, but class "
            f"{smallest} has {pool.count(smallest)}; lower --ipc or use --init noise"
        )
    matcher = Matcher(cfg.matcher, cfg.centroid, k=cfg.k, scale=cfg.scale, max_norm=cfg.max_norm,
                      euclidean_weight=cfg.euclidean_weight, hdd_weight=cfg.hdd_weight, num_classes=dataset.num_classes)
    return dataset, pool, matcher


def prune_pool(pool: ClassPool, dataset, cfg: DistillConfig) -> ClassPool:
    """Keep the most root-level ``prune_fraction`` of each class, ranked on features of a random ConvNet
    (seeded by the run's seed) lifted with the run's ``k`` and ``max_norm``; ``prune_level="random"`` keeps as many
    images of each class drawn uniformly (the control)."""
    from hddgeo.hierarchy import kept_count, prune_by_level

    if cfg.prune_level == "random":
        gen = seeds.RunSeeds.of(cfg).prune_random()
        keep = [pool.sample_indices(c, kept_count(pool.count(c), cfg.prune_fraction), gen)
                for c in range(pool.num_classes)]
        return pool.subset(torch.cat(keep).sort().values)

    from .methods import fresh_network

    net = fresh_network(cfg.model, dataset, seeds.RunSeeds.of(cfg).prune_network(), device=pool.images.device)
    with autocast(pool.images.device, cfg.amp):
        feats = embed(net, pool.images).float()
    keep = prune_by_level(feats, cfg.prune_fraction, level=cfg.prune_level, k=cfg.k, max_norm=cfg.max_norm,
                          labels=pool.labels)
    return pool.subset(keep)


def eval_augment(cfg: DistillConfig):
    return partial(dsa, strategy=cfg.dsa_strategy, siamese=False) if cfg.dsa else None


def evaluate_spread(cfg: DistillConfig, dataset, images, labels, epochs: int, net_seeds: list,
                    model: Optional[str] = None, progress: bool = False) -> dict:
    """``evaluate_synset`` of the networks seeded by ``net_seeds``, split into contiguous blocks over ranks (all of
    them alone)."""
    r, world = distributed.rank(), (torch.distributed.get_world_size() if distributed.active() else 1)
    num_nets = len(net_seeds)
    start, stop = r * num_nets // world, (r + 1) * num_nets // world
    accs = []
    if stop > start:
        res = evaluate_synset(images, labels, dataset.test_images, dataset.test_labels, dataset.num_classes,
                              model=model or cfg.model, num_nets=stop - start, epochs=epochs,
                              augment=eval_augment(cfg), seed=net_seeds[start:stop], progress=progress,
                              device=resolve_device(cfg.device), amp=cfg.amp)
        accs = res["accs"]
    accs = [a for block in distributed.gather(accs) for a in block]
    import numpy as np

    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "accs": accs, "seeds": list(net_seeds)}


class RunInterrupted(Exception):
    """Raised by a ``stop_after`` hook in tests to simulate a kill between iterations."""


# Fields that may differ between a checkpoint and the config.json it is resumed with: they do not change what
# the run computes (where the data lives, whether it may be downloaded, how many threads or which device
# compute it, whether CUDA's kernels are the deterministic ones).  Checkpoints hold CPU tensors, so a run
# started on a GPU resumes on the CPU and the other way round.
RESUMABLE_FIELDS = ("threads", "data_root", "download", "device", "deterministic", "tensorboard", "wandb",
                    "memory_budget_gb")


def check_threads(threads: Optional[int]) -> None:
    """``ValueError`` when ``threads`` exceeds this machine's cores (torch crashes on absurd counts, and more
    threads than cores only slow a run); checked where a run starts, not in a configuration read from a file."""
    cores = os.cpu_count() or 1
    if threads is not None and threads > cores:
        raise ValueError(f"threads {threads} is more than the {cores} cores of this machine; pass --threads 1..{cores}")


def _prepare_directory(cfg: DistillConfig, out_dir: str, resume: bool):
    """``(configuration to run, checkpoint state or None)``; ``ValueError`` before anything is written.

    ``resume`` continues from ``checkpoint.pt`` with the saved ``config.json``; a run that died before its
    first checkpoint (``config.json`` only) restarts from iteration 0 with its saved configuration."""
    if resume:
        if not os.path.isdir(out_dir):
            raise ValueError(f"cannot resume: {out_dir} is not a run directory (start a new run without --resume)")
        saved_cfg = DistillConfig.from_json(read_json(os.path.join(out_dir, CONFIG)), source=os.path.join(out_dir, CONFIG))
        # where the data is, the threads and the device may be given anew (a value other than the default);
        # everything else is the saved run's
        defaults = DistillConfig()
        cfg = dataclasses.replace(saved_cfg, **{k: getattr(cfg, k) for k in RESUMABLE_FIELDS
                                                if getattr(cfg, k) != getattr(defaults, k)})
        ckpt_path = os.path.join(out_dir, CHECKPOINT)
        if not os.path.exists(ckpt_path):
            return cfg, None
        state = load_tensors(ckpt_path, "checkpoint")
        missing = [k for k in ("images", "optimizer", "method", "iteration", "rows") if k not in state]
        if missing:
            raise ValueError(f"{ckpt_path} lacks {', '.join(missing)}: not a checkpoint written by hddgeo")
        saved = state.get("config")
        if isinstance(saved, dict):
            changed = config_differences(cfg, saved)
            if changed:
                raise ValueError(f"{os.path.join(out_dir, CONFIG)} differs from the checkpoint in "
                                 f"{', '.join(f'{k} ({old!r} in the checkpoint)' for k, (old, _) in sorted(changed.items()))}; "
                                 f"restore config.json or start a new run")
        return cfg, state
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir} is a file, not a directory; choose another --out")
    if os.path.isdir(out_dir) and set(os.listdir(out_dir)) - {LOCK}:
        raise ValueError(f"run directory {out_dir} already exists; pass --resume to continue it or choose another --out")
    parent = os.path.dirname(os.path.abspath(out_dir))
    ancestor = parent
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor) or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"cannot create {out_dir}: {ancestor} is not a writable directory; choose another --out")
    return cfg, None


def config_differences(cfg: DistillConfig, saved: dict) -> dict:
    """``{field: (saved value, cfg's value)}`` for every field in which a saved configuration (JSON) describes
    another run than ``cfg``; ``RESUMABLE_FIELDS`` are not compared.  A field missing from ``saved`` (a run
    written before the field existed) counts as its default, which is what that version computed."""
    wanted = json.loads(json.dumps(cfg.to_json()))  # the JSON round trip (tuples -> lists, ...)
    defaults = json.loads(json.dumps(DistillConfig().to_json()))
    saved = {**defaults, **legacy_fields(saved)}
    return {name: (saved.get(name), value) for name, value in wanted.items()
            if name not in RESUMABLE_FIELDS and saved.get(name) != value
            and not (name == "tf32" and {saved.get(name), value} <= {None, False})}


# ``tf32`` auto (None) and off (False) are one run to config_differences: before auto existed, off was the default,
# and every run directory written then was computed on the CPU (no GPU had run hddgeo), where TF32 changes nothing.


_REDUCE_WIDTH = 64  # slots of the packed log values summed over ranks


def read_back(flag: torch.Tensor, values: dict, reduce=None) -> tuple:
    """``(bool(flag), values as floats)`` with every tensor among them read from the device in one transfer:
    on a GPU each ``float(tensor)`` is a host synchronisation, and an iteration makes one.

    ``reduce`` (``distributed.sum_`` under torchrun) is applied in place to the packed tensor before the read, so the
    sum over ranks of every value (numbers included, in the order of their sorted names, the same on every rank)
    comes back in the same transfer; the flag, the same on every rank, is then ``world`` or 0."""
    names = [k for k, v in values.items() if torch.is_tensor(v) or reduce is not None]
    if reduce is not None:
        names = sorted(names)

    def as_tensor(v):
        if torch.is_tensor(v):
            return v.detach().reshape(()).to(flag.device, torch.float64)
        return torch.full((), float(v), dtype=torch.float64, device=flag.device)  # a fill, not a copy

    packed = torch.stack([flag.to(torch.float64)] + [as_tensor(values[k]) for k in names])
    if reduce is not None:
        # one length on every rank, also when a rank whose step failed has fewer values (all then stop on the flag)
        if len(packed) > _REDUCE_WIDTH:
            raise ValueError(f"{len(packed) - 1} logged values: more than the {_REDUCE_WIDTH - 1} a reduction holds")
        packed = torch.cat([packed, packed.new_zeros(_REDUCE_WIDTH - len(packed))])
        reduce(packed)
    packed = packed.tolist()
    out = dict(values)  # numbers stay as they are
    out.update(zip(names, packed[1:len(names) + 1]))
    return packed[0] != 0, out


class NonFiniteError(ValueError):
    """The loss, the image gradients or the images became NaN or infinite."""


def _first_failure(own: Optional[ValueError], seen: ValueError, world: int) -> ValueError:
    """The error every rank raises when an iteration fails.  ``own`` is this rank's failure in its own step
    (``None`` when its step went through), ``seen`` what it saw (the non-finite images).  Under torchrun every
    rank stops at the same point with the same one line: the lowest failing rank's own message, else ``seen``."""
    if world == 1:
        return own or seen
    failures = [f for f in distributed.gather(None if own is None else (isinstance(own, NonFiniteError), str(own)))
                if f is not None]
    if not failures:
        return seen
    is_nonfinite, message = failures[0]
    return (NonFiniteError if is_nonfinite else ValueError)(message)


def run_distillation(cfg: DistillConfig, out_dir: str, resume: bool = False, progress: bool = True,
                     stop_after: Optional[int] = None, final_eval: bool = True) -> dict:
    """Distil into ``out_dir`` (created, or resumed from its checkpoint) and return the metrics.

    ``stop_after`` stops right after iteration ``stop_after`` has been checkpointed, as a kill would
    (tests use it to check that resuming reproduces an uninterrupted run).  A non-finite loss, gradient or
    image stops the run with :class:`NonFiniteError` before it reaches a checkpoint, so the last checkpoint
    stays good.
    """
    rank, world = distributed.setup(cfg.device)
    error, state, lock = None, None, None
    try:
        try:
            if resume and rank == 0 and os.path.isdir(out_dir):
                lock = RunLock(out_dir)  # one process owns the directory, from before its files are read
            cfg, state = _prepare_directory(cfg, out_dir, resume)
            check_threads(cfg.threads)
            # before this process's first CUDA work: cuBLAS reads its workspace setting once, at its first call
            configure_process(cfg.deterministic, cfg.tf32, resolve_device(cfg.device))
            dataset, pool, matcher = prepare(cfg)
            with deterministic(cfg.deterministic):  # DANCE trains its experts here
                method = build_method(cfg.method, cfg, dataset, pool, matcher)
            if rank == 0 and lock is None:
                lock = _own_new_directory(out_dir)  # every input checked: the first write
            elif rank == 0:
                remove_temporaries(out_dir)  # what a killed write (or a planter) left under temporary names
        except torch.OutOfMemoryError as err:  # uploading the data, DANCE's experts
            oom = out_of_memory(err, cfg, out_dir, "while preparing the run", None)
            if world == 1:
                raise oom from None
            error = str(oom)
        except (ValueError, FileNotFoundError) as err:
            if world == 1:
                raise
            error = str(err)
        if world > 1:
            distributed.broadcast_error(error)  # every rank stops if any rank's input was bad
        if cfg.threads:  # after resuming, so that the saved thread count is honoured
            torch.set_num_threads(cfg.threads)
        method.classes = distributed.shard(range(pool.num_classes), rank, world)
        where = {}  # where the loop is, for an out-of-memory message
        with deterministic(cfg.deterministic):
            try:
                return _distil(cfg, out_dir, dataset, method, state, rank, world, progress, stop_after, final_eval,
                               where)
            except torch.OutOfMemoryError as err:
                raise out_of_memory(err, cfg, out_dir, where.get("phase", "at the start"), where.get("saved_at")) from None
    finally:
        if lock is not None:
            lock.release()


class OutOfMemory(ValueError):
    """The device ran out of memory (``torch.OutOfMemoryError``); the message names the run, the allocation and
    what to lower.  A ``ValueError``: the command line exits with status 2, a study marks the cell failed."""


def out_of_memory(err: BaseException, cfg, out_dir: str, phase: str, saved_at: Optional[int]) -> OutOfMemory:
    """One line for a device's out-of-memory error ``err`` met ``phase`` (e.g. ``at iteration 12``)."""
    found = re.search(r"[Tt]ried to allocate ([0-9.]+ ?[KMGT]?i?B)", str(err))
    tried = f"tried to allocate {found.group(1)}" if found else "an allocation failed"
    kept = (f"the checkpoint of iteration {saved_at} is kept (resume with --resume)" if saved_at
            else "no checkpoint was written")
    return OutOfMemory(f"run {out_dir}: {cfg.device} out of memory {phase} ({tried}); lower --batch-real (now "
                       f"{cfg.batch_real}) or --memory-budget-gb (now {cfg.memory_budget_gb:g})"
                       + (", or add --amp bf16" if cfg.amp == "none" else "") + f"; {kept}")


def _own_new_directory(out_dir: str) -> RunLock:
    """Create ``out_dir`` and lock it for a new run; ``ValueError`` if it cannot be written, another process
    holds it, or another run filled it since :func:`_prepare_directory` found it empty."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot write the run directory {out_dir}: {err.strerror or err}; choose another --out") from None
    lock = RunLock(out_dir)
    if set(os.listdir(out_dir)) - {LOCK}:
        lock.release()
        raise ValueError(f"run directory {out_dir} already exists; pass --resume to continue it or choose another --out")
    return lock


def _distil(cfg, out_dir, dataset, method, state, rank, world, progress, stop_after, final_eval, where=None) -> dict:
    """The loop of :func:`run_distillation`, once the configuration, data and method are ready; ``where`` is kept
    up to date with the loop's phase and last checkpoint (for an out-of-memory message)."""
    where = {} if where is None else where
    from tqdm import tqdm

    main_proc = rank == 0
    ckpt_path = os.path.join(out_dir, CHECKPOINT)

    start_it, rows = 0, []
    run_seeds = seeds.RunSeeds.of(cfg)
    syn = method.init_synset(run_seeds.init())
    optimizer = torch.optim.SGD([syn.images], lr=cfg.lr_img, momentum=cfg.momentum)
    if state is not None:
        if tuple(state["images"].shape) != tuple(syn.images.shape):
            raise ValueError(f"{ckpt_path} holds images of shape {tuple(state['images'].shape)} but config.json "
                             f"describes {tuple(syn.images.shape)}; restore config.json or start a new run")
        with torch.no_grad():
            syn.images.copy_(state["images"])  # CPU tensors from the file, onto the run's device
        optimizer.load_state_dict(state["optimizer"])  # moves its state to where syn.images is
        method.load_state_dict(state["method"])
        start_it, rows = int(state["iteration"]), unpack_rows(state["rows"])
    elif main_proc:
        try:
            os.makedirs(out_dir, exist_ok=True)
            write_json(os.path.join(out_dir, CONFIG), cfg.to_json())
        except OSError as err:
            raise ValueError(f"cannot write the run directory {out_dir}: {err.strerror or err}; choose another --out") from None
    saved_at = start_it
    where.update(phase="at the start", saved_at=saved_at)

    log = LogWriter(os.path.join(out_dir, LOG))
    spent = {"checkpoint": 0.0, "periodic_eval": 0.0}
    boards = []  # TensorBoard's and W&B's writers: they read what the loop computed, and change nothing of it
    if cfg.tensorboard and main_proc:
        from hddgeo.tensorboard import RunBoard

        boards.append(RunBoard(out_dir, start_it))
    if cfg.wandb and main_proc:
        from hddgeo.wandb_log import RunWandb

        boards.append(RunWandb(out_dir, cfg.to_json(), describe(cfg)))

    def checkpoint(it_done: int) -> None:
        t0 = time.perf_counter()
        if main_proc:
            if boards:  # on disk before the checkpoint that a resume would start from
                grid = syn.grid(dataset)
                for board in boards:
                    board.images(grid, it_done)
                    board.flush()
            save_tensors({"images": syn.images.detach().clone(), "optimizer": optimizer.state_dict(),
                          "method": method.state_dict(), "iteration": it_done, "rows": pack_rows(rows),
                          "config": cfg.to_json()}, ckpt_path)
            log.write(rows)
        distributed.barrier()
        spent["checkpoint"] += time.perf_counter() - t0

    def non_finite(what: str, it: int):
        kept = f"the checkpoint of iteration {saved_at} is kept" if saved_at else "no checkpoint was written"
        return NonFiniteError(f"iteration {it + 1}: the {what} became NaN or infinite (lower --lr-img or --scale); "
                              f"{kept}; start a new run with other settings")

    loop_start = time.perf_counter()
    bar = tqdm(range(start_it, cfg.iterations), initial=start_it, total=cfg.iterations,
               disable=not (progress and main_proc), desc=describe(cfg), unit="it", dynamic_ncols=True)
    for it in bar:
        where["phase"] = f"at iteration {it + 1}"
        t0 = time.perf_counter()
        diagnose = bool(cfg.gap_every) and (it % cfg.gap_every == 0 or it + 1 == cfg.iterations)
        failure = None
        try:
            loss, parts, step = method.step(it, syn, diagnose=diagnose)
        except ValueError as err:
            if it == 0:  # the images are still the initial ones: the input itself is bad
                failure = err
            else:  # after image updates, NaN/inf features mean the images have run away
                size = float(syn.images.detach().abs().max())
                failure = non_finite(f"features of the synthetic images (largest |pixel| {size:.3g}: {err})", it)
            if world == 1:
                bar.close()
                raise failure from None
        optimizer.zero_grad(set_to_none=False)
        if failure is None:
            loss.backward()
        else:
            # this rank cannot go on, and the others are about to wait for its gradient: it sends NaN, which
            # makes every rank's images non-finite below, where all of them stop with this rank's message
            syn.images.grad = torch.full_like(syn.images, float("nan"))
            loss, parts = syn.images.grad.sum(), {}
        distributed.sum_(syn.images.grad)  # each class's gradient comes from exactly one rank
        # the image gradient's norm (the step-size control of a study compares it between matchers); the summed
        # gradient is the same on every rank, so each contributes 1/world of it to the summed log values
        grad_norm = syn.images.grad.detach().norm() / world
        optimizer.step()
        # a NaN or inf gradient makes the images non-finite too, so one check covers both (the summed gradient,
        # hence the images, are the same on every rank); it and every logged value come back in one transfer
        finite, logged = read_back(torch.isfinite(syn.images).all(),
                                   {"loss": loss.detach(), **parts, "grad_norm": grad_norm},
                                   reduce=distributed.sum_ if world > 1 else None)  # the sum over ranks, same read
        if not finite:
            bar.close()
            raise _first_failure(failure, non_finite("synthetic images (or their gradient)", it), world) from None
        method.after_step(step)
        if not math.isfinite(logged["loss"]):
            bar.close()
            raise non_finite("loss", it)
        row = {"iteration": it + 1, **logged, "seconds": time.perf_counter() - t0}
        if cfg.eval_every and (it + 1) % cfg.eval_every == 0:
            t_eval = time.perf_counter()
            images, labels = syn.expanded()
            row["eval_acc"] = evaluate_spread(cfg, dataset, images.detach(), labels, cfg.eval_epochs,
                                              run_seeds.eval_networks("periodic", cfg.eval_nets))["mean"]
            spent["periodic_eval"] += time.perf_counter() - t_eval
        rows.append(row)
        for board in boards:
            board.row(row)
        bar.set_postfix(loss=f"{row['loss']:.4g}", **({"acc": f"{row['eval_acc']:.3f}"} if "eval_acc" in row else {}))
        last = it + 1 == cfg.iterations
        if last or (cfg.checkpoint_every and (it + 1) % cfg.checkpoint_every == 0) or stop_after == it + 1:
            checkpoint(it + 1)
            saved_at = where["saved_at"] = it + 1
        if stop_after == it + 1 and not last:
            bar.close()
            raise RunInterrupted(f"stopped after iteration {it + 1}")
    bar.close()

    if main_proc:
        syn.save(os.path.join(out_dir, SYNSET), {"dataset": cfg.dataset, "config": cfg.to_json()})
        syn.save_grid(os.path.join(out_dir, "synset.png"), dataset)
    seconds = [r["seconds"] for r in rows]
    # seconds_per_iteration: the steps alone (every iteration, also those before a resume); the others are this
    # process's wall clock: the loop with its checkpoints and periodic evaluations, and their shares
    metrics = {"method": describe(cfg), "dataset": cfg.dataset, "ipc": cfg.ipc, "iterations": cfg.iterations,
               "seconds_per_iteration": sum(seconds) / max(len(seconds), 1), "processes": world,
               "device": str(method.device), "loop_seconds": time.perf_counter() - loop_start,
               "checkpoint_seconds": spent["checkpoint"], "periodic_eval_seconds": spent["periodic_eval"],
               "resumed_from_iteration": start_it, "deterministic": cfg.deterministic, **tf32_settings(),
               "provenance": provenance(method.device)}
    if final_eval and cfg.final_eval_epochs > 0:
        where["phase"] = "in the final evaluation"
        t_eval = time.perf_counter()
        images, labels = syn.expanded()
        res = evaluate_spread(cfg, dataset, images.detach(), labels, cfg.final_eval_epochs,
                              run_seeds.eval_networks("final", cfg.final_eval_nets), progress=progress and main_proc)
        metrics.update({"acc_mean": res["mean"], "acc_std": res["std"], "accs": res["accs"], "eval_model": cfg.model,
                        "eval_epochs": cfg.final_eval_epochs, "eval_seeds": res["seeds"],
                        "final_eval_seconds": time.perf_counter() - t_eval})
    if main_proc:
        write_json(os.path.join(out_dir, METRICS), metrics)
        for board in boards:
            board.final(cfg.to_json(), metrics)
            board.close()
    distributed.barrier()
    return metrics


def evaluate_run(run_dir: str, model: Optional[str] = None, num_nets: int = 3, epochs: Optional[int] = None,
                 progress: bool = True, data_root: Optional[str] = None, device: str = "auto",
                 amp: Optional[str] = None, threads: Optional[int] = None) -> dict:
    """Re-evaluate a finished run's ``synset.pt`` (optionally on another architecture).

    ``data_root`` names where the dataset is; by default the run's own ``data_root`` (a received run
    directory is data: the loaders parse files, they never run code from them).  ``device`` is where the
    networks train (whatever device the run was distilled on), ``amp`` defaults to the run's, ``threads`` (torch's
    CPU threads) to the run's own count, at which a re-evaluation on the same machine repeats the run's own."""
    path = os.path.join(run_dir, SYNSET)
    if not os.path.exists(path):
        raise ValueError(f"{path} not found: {run_dir} is not a finished run directory")
    cfg = DistillConfig.from_json(read_json(os.path.join(run_dir, CONFIG)), source=os.path.join(run_dir, CONFIG))
    model = model or cfg.model
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}")
    amp = cfg.amp if amp is None else amp
    if amp not in AMP_MODES:
        raise ValueError(f"unknown amp mode {amp!r}; choose one of {', '.join(AMP_MODES)}")
    device = resolve_device(device)
    configure_process(tf32=cfg.tf32, device=device)
    threads = threads or cfg.threads
    if threads is not None:
        if not 1 <= threads <= (os.cpu_count() or 1):
            raise ValueError(f"--threads must lie in 1..{os.cpu_count()}, got {threads}")
        torch.set_num_threads(threads)
    dataset = load_dataset(cfg.dataset, data_root=data_root or cfg.data_root)
    if cfg.eval_test_per_class:
        dataset = dataset.test_subset(cfg.eval_test_per_class)
    syn = SyntheticSet.load(path)
    if "images" not in syn or "train_labels" not in syn:
        raise ValueError(f"{path} lacks 'images' / 'train_labels': not a synthetic set written by hddgeo")
    epochs = cfg.final_eval_epochs if epochs is None else epochs
    res = evaluate_synset(syn["images"], syn["train_labels"], dataset.test_images, dataset.test_labels,
                          dataset.num_classes, model=model, num_nets=num_nets, epochs=epochs,
                          augment=eval_augment(cfg), seed=seeds.RunSeeds.of(cfg).eval_networks("final", num_nets),
                          progress=progress, device=device, amp=amp)
    out = {"model": model, "acc_mean": res["mean"], "acc_std": res["std"], "accs": res["accs"], "epochs": epochs,
           "eval_seeds": res["seeds"]}
    write_json(os.path.join(run_dir, f"eval_{model}.json"), out)
    return out
