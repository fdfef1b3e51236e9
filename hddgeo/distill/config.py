"""A distillation run's configuration: :class:`DistillConfig`, one field per ``hddgeo distill`` flag, and what
compares two of them (:func:`config_differences`, the fields a resume may change).

A configuration is data: ``config.json`` in every run directory (:doc:`/rundir`) is :meth:`DistillConfig.to_json`,
and :meth:`DistillConfig.from_json` reads it back, mapping what older versions wrote (:func:`legacy_fields`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import InitVar, dataclass, field
from typing import Optional

from hddgeo import seeds
from hddgeo.data import parse_strategy
from hddgeo.data.datasets import DATASET_NAMES
from hddgeo.device import AMP_MODES, check_device_name
from hddgeo.errors import ConfigTypeError
from hddgeo.geometry.centroids import CENTROID_METHODS
from hddgeo.losses import MATCHERS
from hddgeo.models import MODEL_NAMES
from hddgeo.labels import RANDOM, method_label

from . import dance, geodm
from .memory import DEFAULT_BUDGET_GB
from .methods import METHODS

def _opt(default, help: str, group: str, choices=None, default_factory=None):
    """A configuration field with what the command line needs to offer it as a flag: its help text, its
    group in ``--help`` and (a function giving) its valid values, read from the registries."""
    metadata = {"help": help, "group": group, "choices": choices}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _dance(key: str, help: str):
    return _opt(dance.OPTION_DEFAULTS[key], help, "DANCE")


def _geodm(key: str, help: str):
    default = geodm.OPTION_DEFAULTS[key]
    return _opt(",".join(default) if key == "components" else default, help, "GeoDM")


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
    dance_num_experts: int = _dance("num_experts", "experts trained, each from its own seeded initialisation")
    dance_expert_epochs: int = _dance("expert_epochs", "epochs of expert training (the reference trains 60)")
    dance_expert_lr: float = _dance("expert_lr", "SGD learning rate of the experts")
    dance_expert_batch: int = _dance("expert_batch", "batch size of expert training")
    dance_expert_dsa: Optional[bool] = _dance("expert_dsa", "DSA while training the experts: auto (the run's --dsa), "
                                                            "on, off")
    dance_ce_weight: float = _dance("ce_weight", "weight of the calibration cross-entropy")
    dance_expert_cache: Optional[str] = _dance("expert_cache", "folder of the cached experts (default "
                                                               "$HDDGEO_CACHE/experts, else ~/.cache/hddgeo/experts)")
    geodm_proj_dim: int = _geodm("proj_dim", "output dimension of each fixed random projection head")
    geodm_geo_lr: float = _geodm("geo_lr", "Adam learning rate of the curvatures and geometry weights (0 freezes them)")
    geodm_ot_weight: float = _geodm("ot_weight", "weight of the OT term (0: plain DM plus logging)")
    geodm_ot_reg: float = _geodm("ot_reg", "entropic regularisation of Sinkhorn, relative to the mean cost")
    geodm_ot_max_iter: int = _geodm("ot_max_iter", "Sinkhorn iterations at most")
    geodm_ot_tol: float = _geodm("ot_tol", "Sinkhorn stops when the L2 error of the row marginals is below this")
    geodm_center: bool = _geodm("center", "subtract each class's mean real feature before the heads")
    geodm_tangent_norm: float = _geodm("tangent_norm", "mean norm of each class's real tangent vectors after the heads")
    geodm_init_curvature: float = _geodm("init_curvature", "initial |K| of the hyperbolic and spherical components")
    geodm_components: str = _geodm("components", "the geometries of the product, joined by ','")
    options: InitVar[Optional[dict]] = None  # KEY=VALUE of --opt: the field METHOD_KEY of the run's method

    def __post_init__(self, options: Optional[dict]) -> None:
        if options:
            for key, value in method_fields(self.method, options).items():
                setattr(self, key, value)

    def method_options(self) -> dict:
        """The options of the run's method (its ``METHOD_*`` fields, e.g. ``dance_num_experts`` as ``num_experts``);
        ``{}`` for DM, which has none."""
        prefix = self.method + "_"
        return {f.name[len(prefix):]: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name.startswith(prefix)}

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad option (:class:`~hddgeo.errors.ConfigTypeError`, a ``TypeError``,
        for one of the wrong type); called before anything is written."""
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
        METHODS[self.method].parse_options(self.method_options())
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
        """A validated configuration from a JSON object; :class:`~hddgeo.errors.ConfigTypeError` (a ``TypeError``)
        naming unknown keys or a field of the wrong type, ``ValueError`` naming a bad value."""
        names = {f.name for f in dataclasses.fields(cls)}
        d = legacy_fields(d)
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigTypeError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: "
                                  f"{', '.join(sorted(names))}")
        cfg = cls(**d)
        try:
            cfg.validate()
        except (ValueError, ConfigTypeError) as err:
            raise type(err)(f"{source}: {err}") from None
        return cfg


def legacy_fields(saved: dict) -> dict:
    """A saved configuration (JSON) in today's form: a field missing from it gets the value it had before the field
    existed, where that is not the field's default (``seed_scheme`` 1: the field came with scheme 2), and the
    ``options`` object of older runs (DANCE's and GeoDM's options, before they were fields) becomes the method's
    fields (``{"num_experts": 2}`` of a DANCE run is ``dance_num_experts``; GeoDM's ``components`` list is joined
    by ',')."""
    if not isinstance(saved, dict):
        return saved
    out = {"seed_scheme": 1, **saved}
    options = out.pop("options", None)
    if isinstance(options, dict) and options:
        method = out.get("method", "dm")
        if method == "geodm" and isinstance(options.get("components"), (list, tuple)):
            options = {**options, "components": ",".join(map(str, options["components"]))}
        out.update(method_fields(method, options))
    elif options not in (None, {}):
        raise ConfigTypeError(f"options must be an object of KEY: VALUE, got {options!r}"[:200])
    return out


def method_fields(method: str, options: dict) -> dict:
    """``{"METHOD_KEY": value}`` of ``--opt KEY=VALUE`` options of ``method``; :class:`~hddgeo.errors.ConfigTypeError`
    naming the valid keys for a key the method does not take."""
    prefix = f"{method}_"
    valid = [f.name[len(prefix):] for f in dataclasses.fields(DistillConfig) if f.name.startswith(prefix)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        if not valid:
            raise ConfigTypeError(f"{method} takes no --opt options, got {', '.join(map(repr, unknown))}; --opt KEY=VALUE "
                                  f"sets a field METHOD_KEY of the run's method (dance, geodm, idm)")
        raise ConfigTypeError(f"unknown {method} option(s) {', '.join(map(repr, unknown))}; valid keys: "
                              f"{', '.join(valid)}")
    return {prefix + key: value for key, value in options.items()}


# Field annotation -> accepted JSON/Python types (bool is not an int here, although Python says it is).
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,),
          "Optional[str]": (str, type(None)), "Optional[float]": (int, float, type(None)),
          "Optional[int]": (int, type(None)), "Optional[bool]": (bool, type(None))}


def _check_types(cfg) -> None:
    for f in dataclasses.fields(cfg):
        value, allowed = getattr(cfg, f.name), _TYPES[str(f.type)]
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            want = str(f.type).replace("Optional[", "").rstrip("]") + (" or null" if "Optional" in str(f.type) else "")
            raise ConfigTypeError(f"{f.name} must be {want}, got {value!r}")


def describe(cfg: DistillConfig) -> str:
    """Short label such as ``dm``, ``dm+hdd/law``, ``idm+both/karcher``, ``dm@lr10`` (with a tag)."""
    return method_label(cfg.method, cfg.matcher, cfg.centroid, cfg.tag)


def describe_baseline(cfg: DistillConfig) -> str:
    """The label of the random row that belongs to ``cfg``: ``random`` (the seed's initial images), or for a pruned
    pool (``prune_fraction < 1``), whose initial images are drawn from what the pruning kept, ``random@TAG`` with the
    configuration's tag (``random@prune0.2-radius`` when it has none)."""
    if cfg.prune_fraction >= 1:
        return RANDOM
    return method_label(RANDOM, tag=cfg.tag or f"prune{cfg.prune_fraction:g}-{cfg.prune_level}")


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


__all__ = ["MAX_SEED", "RESUMABLE_FIELDS", "DistillConfig", "check_threads", "config_differences", "describe",
           "describe_baseline",
           "legacy_fields", "method_fields"]
