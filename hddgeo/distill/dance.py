"""DANCE (Zhang et al., IJCAI 2024): DM with pre-trained experts, on the shared step.

DANCE ("Dual-view distribution AligNment for dataset CondEnsation") keeps DM's per-class feature
matching but takes its feature networks from a few *expert* ConvNets trained on the real data:

* **inner-class view** (pseudo long-term distribution alignment): each iteration picks an expert and
  ``l ~ U(0, 1)`` and embeds real and synthetic images with the *middle encoder*
  ``l * init + (1 - l) * trained`` (the expert's initial and trained weights), standing in for a
  network somewhere along a training run without training one.  The matching term is the run's
  :class:`~hddgeo.losses.Matcher`, so ``--matcher hdd --centroid karcher`` (HDD, paper Section 4.4)
  works unchanged.
* **inter-class view** (distribution calibration): cross-entropy of the *trained* expert on the
  (augmented) synthetic images against their labels keeps each class inside its real region.

Options (the ``dance_*`` fields of :class:`~hddgeo.distill.DistillConfig`: ``--dance-num-experts N`` or
``--opt num_experts=N``):

``num_experts`` (3)
    experts trained (each from its own seeded initialisation).  The reference pre-trains 20 and
    draws from the first 5.
``expert_epochs`` (5)
    epochs of expert training; small so that a CPU run starts quickly.  The reference trains its
    experts for 60 epochs (80 for ImageWoof); raise this for paper-scale runs.
``expert_lr`` (0.01), ``expert_batch`` (256)
    SGD for the experts (momentum 0.9, weight decay 5e-4, as in the evaluation protocol).
``expert_dsa`` (``null`` = follow the run's ``dsa``)
    DSA (per-image draws) while training the experts.
``ce_weight`` (1.0)
    weight of the calibration cross-entropy.  The reference takes an unweighted cross-entropy step,
    which 1.0 matches.
``expert_cache`` (``$HDDGEO_CACHE/experts``, else ``~/.cache/hddgeo/experts``)
    where trained experts are cached.

Differences from the reference implementation, kept deliberately:

* one optimiser step per iteration on ``matching + ce_weight * CE`` (the shared step); the reference
  steps once per class for the matching term and once more per class for the calibration term;
* every floating parameter *and buffer* is interpolated (the reference interpolates parameters
  only, which is the same for the instance-norm ConvNet, the only network it uses);
* the calibration expert runs in eval mode (again the same for instance norm; for batch-norm
  models it uses the expert's running statistics instead of statistics of a synthetic batch).

Experts are trained once and cached on disk under a key that hashes the dataset (name, train tensor
shape and a cheap checksum), the model, the number of experts, their epochs and training settings,
and the run seed; later runs (and ``--resume``) load them.  Training is deterministic, so a run whose
cache was removed retrains the same experts.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import warnings
from functools import partial
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from hddgeo.data import dsa
from hddgeo.data.augment import dsa_apply, dsa_apply_blocks, dsa_draw, upload
from hddgeo.device import on_accelerator
from hddgeo.rundir import save_tensors
from hddgeo.seeds import DEFAULT_SCHEME, RunSeeds
from hddgeo.training import sgd_epochs

from .methods import DistillMethod, fresh_network, register_method

CACHE_FORMAT = 1

OPTION_DEFAULTS = {
    "num_experts": 3,
    "expert_epochs": 5,
    "expert_lr": 0.01,
    "expert_batch": 256,
    "expert_dsa": None,
    "ce_weight": 1.0,
    "expert_cache": None,
}

# the expert optimiser beyond its learning rate: the evaluation protocol's SGD
EXPERT_MOMENTUM = 0.9
EXPERT_WEIGHT_DECAY = 5e-4


# ------------------------------------------------------------------------------------------------
# options
# ------------------------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_options(options: Optional[dict]) -> dict:
    """``options`` merged over :data:`OPTION_DEFAULTS`; ``ValueError`` naming a bad key or value."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTION_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown dance option(s) {', '.join(map(repr, unknown))}; valid keys: "
                         f"{', '.join(OPTION_DEFAULTS)}")
    opts = {**OPTION_DEFAULTS, **options}

    def bad(key, want):
        raise ValueError(f"dance option {key} must be {want}, got {opts[key]!r}")

    if not _is_int(opts["num_experts"]) or opts["num_experts"] < 1:
        bad("num_experts", "an integer >= 1")
    if not _is_int(opts["expert_epochs"]) or opts["expert_epochs"] < 0:
        bad("expert_epochs", "an integer >= 0")
    if not _is_int(opts["expert_batch"]) or opts["expert_batch"] < 1:
        bad("expert_batch", "an integer >= 1")
    if not _is_number(opts["expert_lr"]) or not opts["expert_lr"] > 0:
        bad("expert_lr", "a positive number")
    if not _is_number(opts["ce_weight"]) or not opts["ce_weight"] >= 0:
        bad("ce_weight", "a non-negative number")
    if opts["expert_dsa"] is not None and not isinstance(opts["expert_dsa"], bool):
        bad("expert_dsa", "true, false or null (follow the run's dsa)")
    if opts["expert_cache"] is not None and not isinstance(opts["expert_cache"], str):
        bad("expert_cache", "a directory path")
    opts["expert_lr"] = float(opts["expert_lr"])
    opts["ce_weight"] = float(opts["ce_weight"])
    return opts


def default_cache_dir() -> str:
    """``$HDDGEO_CACHE/experts`` if ``HDDGEO_CACHE`` is set, else ``~/.cache/hddgeo/experts``."""
    root = os.environ.get("HDDGEO_CACHE")
    if root:
        return os.path.join(os.path.expanduser(root), "experts")
    return os.path.join(os.path.expanduser("~"), ".cache", "hddgeo", "experts")


# ------------------------------------------------------------------------------------------------
# the middle encoder: pure functions of the expert's two state dicts
# ------------------------------------------------------------------------------------------------

def interpolate_state(init_state: dict, trained_state: dict, l: float) -> dict:
    """``l * init + (1 - l) * trained`` for every floating entry of two state dicts.

    ``l = 1`` returns the initial weights and ``l = 0`` the trained ones exactly (``1 * a + 0 * b``
    is ``a`` in floating point; a lerp ``b + l * (a - b)`` is not).  Non-floating entries (batch-norm
    step counters) come from the endpoint nearer to ``l``.  The inputs are not modified.
    """
    l = float(l)
    if not 0.0 <= l <= 1.0:
        raise ValueError(f"interpolation weight l must lie in [0, 1], got {l}")
    if list(init_state) != list(trained_state):
        missing = sorted(set(init_state) ^ set(trained_state))
        raise ValueError(f"state dicts differ in their entries ({missing or 'order'}); "
                         f"both must come from the same architecture")
    out = {}
    for key, a in init_state.items():
        b = trained_state[key]
        if a.shape != b.shape:
            raise ValueError(f"state entry {key!r} has shape {tuple(a.shape)} at init but "
                             f"{tuple(b.shape)} trained")
        if a.is_floating_point():
            out[key] = l * a + (1.0 - l) * b
        else:
            out[key] = (a if l >= 0.5 else b).clone()
    return out


@dataclass
class Expert:
    """One pre-trained expert: its initial and trained state dicts and the trained network itself
    (frozen, eval mode: the calibration model and the template for middle encoders)."""

    seed: int
    init: dict
    trained: dict
    network: nn.Module
    train_loss: float = float("nan")
    train_acc: float = float("nan")


def middle_encoder(expert: Expert, l: float) -> nn.Module:
    """A new frozen network with weights ``l * init + (1 - l) * trained`` (train mode, as DM's
    networks; instance norm makes train and eval mode agree), on the device of the expert's network."""
    net = copy.deepcopy(expert.network)
    net.load_state_dict(interpolate_state(expert.init, expert.trained, l))
    for p in net.parameters():
        p.requires_grad_(False)
    return net.train()


# ------------------------------------------------------------------------------------------------
# experts: training and the on-disk cache
# ------------------------------------------------------------------------------------------------

def data_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A cheap checksum of a train split: all labels, an even sample of at most 2^20 pixel values,
    and the float64 sum of all pixels."""
    h = hashlib.sha256()
    h.update(labels.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    flat = images.detach().cpu().reshape(-1)
    if flat.numel() > 2**20:
        flat = flat[torch.linspace(0, flat.numel() - 1, 2**20).long()]
    h.update(flat.to(torch.float32).contiguous().numpy().tobytes())
    h.update(repr(float(images.detach().double().sum())).encode())
    return h.hexdigest()[:16]


def cache_fields(dataset, model: str, opts: dict, seed: int, dsa_strategy: Optional[str],
                 seed_scheme: int = DEFAULT_SCHEME) -> dict:
    """Everything the cached experts depend on (hashed into the file name, checked on load); the seed scheme is
    named from scheme 2 on, so scheme 1's experts keep their file names."""
    scheme = {} if seed_scheme == 1 else {"seed_scheme": seed_scheme}
    return {"format": CACHE_FORMAT, **scheme, "dataset": dataset.name, "model": model,
            "num_experts": opts["num_experts"], "expert_epochs": opts["expert_epochs"], "seed": int(seed),
            "train_shape": list(dataset.train_images.shape), "checksum": data_fingerprint(
                dataset.train_images, dataset.train_labels),
            "lr": opts["expert_lr"], "momentum": EXPERT_MOMENTUM, "weight_decay": EXPERT_WEIGHT_DECAY,
            "batch": opts["expert_batch"], "dsa": dsa_strategy}


def cache_path(cache_dir: str, fields: dict) -> str:
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]
    return os.path.join(cache_dir, f"{fields['dataset']}-{fields['model']}-{key}.pt")


def _clone_state(net: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def train_expert(model: str, dataset, seed: int, epochs: int, lr: float = 0.01, batch: int = 256,
                 dsa_strategy: Optional[str] = None, device=None, amp: str = "none") -> dict:
    """Train one ``model`` from the initialisation seeded by ``seed`` on the real train split, on ``device``
    (default: the CPU).

    SGD (momentum 0.9, weight decay 5e-4), shuffled batches and per-image DSA draws all come from
    generators seeded by ``seed`` (the global RNG is not used).  Returns the initial and trained
    state dicts (on ``device``; the cache file gets CPU copies) and the last epoch's training loss and accuracy.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    net = fresh_network(model, dataset, seed, device=device)
    init = _clone_state(net)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=EXPERT_MOMENTUM, weight_decay=EXPERT_WEIGHT_DECAY)
    gen = torch.Generator().manual_seed(int(seed))
    n = len(dataset.train_labels)
    correct = {}

    def count(epoch, idx, logits, y):  # correct predictions per epoch, kept on the device (read once)
        correct[epoch] = correct.get(epoch, 0) + (logits.argmax(1) == y).sum()

    augment = partial(dsa, strategy=dsa_strategy, siamese=False) if dsa_strategy else None
    train_loss = sgd_epochs(net, dataset.train_images.to(device), dataset.train_labels.to(device), opt, gen, epochs,
                            batch, augment=augment, on_batch=count, amp=amp)
    return {"seed": int(seed), "init": init, "trained": _clone_state(net), "train_loss": train_loss,
            "train_acc": int(correct[epochs - 1]) / n if epochs else float("nan")}


def _load_cache(path: str, fields: dict) -> Optional[list]:
    if not os.path.exists(path):
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: retrain and overwrite it
        warnings.warn(f"ignoring unreadable DANCE expert cache {path} ({err}); retraining the experts")
        return None
    if (not isinstance(blob, dict) or blob.get("fields") != fields
            or len(blob.get("experts", ())) != fields["num_experts"]):
        warnings.warn(f"DANCE expert cache {path} does not match this run's settings; retraining the experts")
        return None
    return blob["experts"]


def load_or_train_experts(dataset, model: str, opts: dict, seed: int, dsa_strategy: Optional[str],
                          cache_dir: Optional[str] = None, device=None, amp: str = "none",
                          seed_scheme: int = DEFAULT_SCHEME) -> tuple:
    """The run's experts (``list[Expert]``, networks on ``device``) and the cache file they came from or were
    written to.  The cache holds CPU tensors: experts trained on a GPU load on the CPU and the other way
    round (experts trained on different devices differ by rounding; the cache key does not name the device)."""
    cache_dir = os.path.expanduser(cache_dir or opts.get("expert_cache") or default_cache_dir())
    fields = cache_fields(dataset, model, opts, seed, dsa_strategy, seed_scheme)
    run_seeds = RunSeeds(seed, seed_scheme)
    path = cache_path(cache_dir, fields)
    records = _load_cache(path, fields)
    if records is None:
        print(f"dance: training {opts['num_experts']} {model} expert(s) for {opts['expert_epochs']} epoch(s) on "
              f"{dataset.name} (cached at {path})", file=sys.stderr)
        records = [train_expert(model, dataset, run_seeds.expert(i), opts["expert_epochs"], lr=opts["expert_lr"],
                                batch=opts["expert_batch"], dsa_strategy=dsa_strategy, device=device, amp=amp)
                   for i in range(opts["num_experts"])]
        os.makedirs(cache_dir, exist_ok=True)
        save_tensors({"fields": fields, "experts": records}, path)  # CPU copies
    device = torch.device("cpu") if device is None else torch.device(device)
    experts = []
    for rec in records:
        net = fresh_network(model, dataset, rec["seed"], device=device)
        net.load_state_dict(rec["trained"])
        for p in net.parameters():
            p.requires_grad_(False)
        on_device = {k: {n: v.to(device) for n, v in rec[k].items()} for k in ("init", "trained")}
        experts.append(Expert(seed=rec["seed"], init=on_device["init"], trained=on_device["trained"], network=net.eval(),
                              train_loss=rec["train_loss"], train_acc=rec["train_acc"]))
    return experts, path


def _fingerprint(expert: Expert) -> float:
    return float(sum(v.double().sum() for v in expert.trained.values() if v.is_floating_point()))


# ------------------------------------------------------------------------------------------------
# the method
# ------------------------------------------------------------------------------------------------

class Dance(DistillMethod):
    """DANCE on the shared step: middle encoders for matching, the trained expert for calibration."""

    name = "dance"
    parse_options = staticmethod(parse_options)
    factor = 1

    def __init__(self, cfg, dataset, pool, matcher):
        super().__init__(cfg, dataset, pool, matcher)
        self.opts = parse_options(cfg.method_options())
        expert_dsa = cfg.dsa if self.opts["expert_dsa"] is None else self.opts["expert_dsa"]
        self.experts, self.cache_file = load_or_train_experts(
            dataset, cfg.model, self.opts, cfg.seed, cfg.dsa_strategy if expert_dsa else None, device=self.device,
            amp=cfg.amp, seed_scheme=self.seeds.scheme)

    def network(self, it, gen, draw=None):
        # One draw from the step's generator, like DM's network seed, so DANCE and DM see the same
        # real batches and augmentations at the same seed; everything DANCE needs derives from it.
        sub = torch.Generator().manual_seed(self.seeds.draw(gen))
        e = int(torch.randint(0, len(self.experts), (), generator=sub))
        l = float(torch.rand((), generator=sub, dtype=torch.float64))
        ce_seeds = self.seeds.draw(sub, self.pool.num_classes)
        if draw is not None:
            draw.update(expert=e, l=l, ce_seeds=ce_seeds)
        return middle_encoder(self.experts[e], l)

    def calibration_images(self, images: torch.Tensor, labels: torch.Tensor, seeds: list) -> torch.Tensor:
        """Per-class DSA (per-image draws, one seed per class) of the synthetic images, so a class's
        augmentation does not depend on which other classes are in the batch."""
        if not self.cfg.dsa:
            return images
        # the labels are class-major with as many images per class (a SyntheticSet's layout) and hold this
        # process's classes: the split is known on the host, without reading the labels from the device
        classes = self.classes if len(labels) else []
        if len(classes) == 0 or len(labels) % len(classes):
            raise ValueError(f"{len(labels)} synthetic images do not split evenly into {len(classes)} classes")
        parts = torch.split(images, len(labels) // len(classes))
        draws = [dsa_draw(seeds[c], self.cfg.dsa_strategy, x.shape, siamese=False) for x, c in zip(parts, classes)]
        if on_accelerator(images.device):  # all classes in one call per DSA operation
            return dsa_apply_blocks(images, [len(x) for x in parts], draws, upload(draws, images.device))
        return torch.cat([dsa_apply(x, d, q) for x, d, q in zip(parts, draws, upload(draws, images.device))])

    def extra_loss(self, step, syn_images, syn_labels, total: Optional[int] = None):
        w = self.opts["ce_weight"]
        if w == 0 or len(syn_labels) == 0:
            return None, {}
        expert = self.experts[step.draw["expert"]].network
        # DSA outside autocast (in float32, as without --amp); only the network runs under it, chunked to the
        # memory budget on an accelerator
        images = self.calibration_images(syn_images, syn_labels, step.draw["ce_seeds"])
        logits = self.forward(expert, images, grad=True)
        ce = F.cross_entropy(logits, syn_labels, reduction="sum") / (total or len(syn_labels))
        return w * ce, {"ce": ce.detach()}

    def state_dict(self):
        # Experts are deterministic and cached; record a fingerprint so a resume notices if they changed.
        return {"cache_file": self.cache_file, "fingerprints": [_fingerprint(e) for e in self.experts]}

    def load_state_dict(self, state):
        saved = (state or {}).get("fingerprints")
        if saved is not None and saved != [_fingerprint(e) for e in self.experts]:
            warnings.warn("the DANCE experts differ from those of the interrupted run (cache removed and retrained "
                          "differently?); the resumed run will not reproduce an uninterrupted one exactly")


register_method("dance", Dance)

__all__ = ["Dance", "Expert", "OPTION_DEFAULTS", "cache_fields", "cache_path", "data_fingerprint",
           "default_cache_dir", "interpolate_state", "load_or_train_experts", "middle_encoder",
           "parse_options", "train_expert"]
