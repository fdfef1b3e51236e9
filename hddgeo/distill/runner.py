"""A distillation run: configuration, the loop, periodic evaluation, and a resumable run directory.

Run directory contents::

    config.json    the full configuration
    log.csv        one row per iteration: losses, seconds, evaluation accuracy (when evaluated)
    checkpoint.pt  synthetic images, optimiser and method state, log rows (written atomically)
    synset.pt      final synthetic set (``images``/``train_labels`` are what a network trains on)
    synset.png     denormalised image grid, one row per class
    metrics.json   final evaluation (mean, std, per-network accuracies) and timing

Everything random in iteration ``it`` is drawn from generators seeded by ``(seed, it)``, and the
checkpoint holds every piece of state carried between iterations, so ``--resume`` after a kill ends
with exactly the synthetic set of an uninterrupted run.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Optional

import torch

from hddgeo.data import ClassPool, dsa, load_dataset, parse_strategy
from hddgeo.data.datasets import DATASET_NAMES
from hddgeo.evaluate import evaluate_synset
from hddgeo.geometry.centroids import CENTROID_METHODS
from hddgeo.losses import MATCHERS, Matcher
from hddgeo.models import MODEL_NAMES

from . import distributed
from .methods import METHODS, build_method
from .synset import SyntheticSet, atomic_torch_save


@dataclass
class DistillConfig:
    dataset: str = "digits"
    data_root: Optional[str] = None
    download: bool = False
    ipc: int = 10
    method: str = "dm"
    matcher: str = "euclidean"
    centroid: str = "law"
    k: float = 1.0
    scale: float = 20.0
    max_norm: Optional[float] = 10.0
    euclidean_weight: float = 1.0
    hdd_weight: float = 1.0
    iterations: int = 1000
    lr_img: float = 1.0
    momentum: float = 0.5
    batch_real: int = 256
    init: str = "real"
    model: str = "convnet"
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    seed: int = 0
    eval_every: int = 0
    eval_nets: int = 1
    eval_epochs: int = 300
    final_eval_nets: int = 3
    final_eval_epochs: int = 1000
    checkpoint_every: int = 50
    gap_every: int = 0  # log d(Law, Karcher) of real and synthetic features every N iterations (0: never)
    idm_queue: int = 10
    idm_train_steps: int = 1
    idm_net_age: int = 100
    idm_net_lr: float = 0.01
    idm_ce_weight: float = 0.5
    threads: Optional[int] = None
    # hierarchical pruning (paper Sec. 4.3): match only the most root-level share of each class
    prune_fraction: float = 1.0
    prune_level: str = "radius"
    # method-specific options (DANCE, GeoDM, ...): each method reads and validates its own keys
    options: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad option; called before anything is written."""
        def choice(name, value, options):
            if value not in options:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(options)}")

        choice("dataset", self.dataset, DATASET_NAMES)
        choice("method", self.method, tuple(METHODS))
        choice("matcher", self.matcher, MATCHERS)
        choice("centroid", self.centroid, CENTROID_METHODS)
        choice("model", self.model, MODEL_NAMES)
        choice("init", self.init, ("real", "noise"))
        parse_strategy(self.dsa_strategy)
        for name in ("ipc", "iterations", "batch_real", "final_eval_nets", "idm_queue", "idm_net_age"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("eval_every", "final_eval_epochs", "eval_epochs", "checkpoint_every", "idm_train_steps", "gap_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be non-negative, got {getattr(self, name)}")
        if not (self.k > 0) or not math.isfinite(self.k):
            raise ValueError(f"k must be positive (curvature K = -1/k), got {self.k}")
        if self.max_norm is not None and not (self.max_norm > 0):
            raise ValueError(f"max-norm must be positive (or 'none'), got {self.max_norm}")
        if not (0 < self.prune_fraction <= 1):
            raise ValueError(f"prune-fraction is the share of each class kept and must lie in (0, 1], got {self.prune_fraction}")
        choice("prune level", self.prune_level, ("radius", "centroid_distance"))
        if not (self.lr_img > 0):
            raise ValueError(f"lr-img must be positive, got {self.lr_img}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "DistillConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def describe(cfg: DistillConfig) -> str:
    """Short label such as ``dm``, ``dm+hdd/law``, ``idm+both/karcher``."""
    return cfg.method if cfg.matcher == "euclidean" else f"{cfg.method}+{cfg.matcher}/{cfg.centroid}"


def prepare(cfg: DistillConfig):
    """Validate the configuration and load what the run needs; raises before any file is written."""
    cfg.validate()
    dataset = load_dataset(cfg.dataset, data_root=cfg.data_root, download=cfg.download)
    pool = ClassPool(dataset.train_images, dataset.train_labels, dataset.num_classes)
    if cfg.prune_fraction < 1:
        pool = prune_pool(pool, dataset, cfg)
    per = METHODS[cfg.method].factor ** 2
    smallest = min(range(pool.num_classes), key=pool.count)
    if cfg.init == "real" and cfg.ipc * per > pool.count(smallest):
        raise ValueError(
            f"IPC {cfg.ipc} needs {cfg.ipc * per} real images per class for {cfg.method}'s initialisation, but class "
            f"{smallest} has {pool.count(smallest)}; lower --ipc or use --init noise"
        )
    matcher = Matcher(cfg.matcher, cfg.centroid, cfg.k, cfg.scale, cfg.max_norm, cfg.euclidean_weight, cfg.hdd_weight)
    matcher.num_classes = dataset.num_classes
    return dataset, pool, matcher


def prune_pool(pool: ClassPool, dataset, cfg: DistillConfig) -> ClassPool:
    """Keep the most root-level ``prune_fraction`` of each class, ranked on features of a random ConvNet
    (seeded by the run's seed) lifted with the run's ``k`` and ``max_norm``."""
    from hddgeo.hierarchy import prune_by_level

    from .methods import fresh_network

    net = fresh_network(cfg.model, dataset, cfg.seed + 777)
    with torch.no_grad():
        feats = torch.cat([net.embed(pool.images[i:i + 512]) for i in range(0, len(pool), 512)])
    keep = prune_by_level(feats, cfg.prune_fraction, level=cfg.prune_level, k=cfg.k, max_norm=cfg.max_norm,
                          labels=pool.labels)
    return pool.subset(keep)


def eval_augment(cfg: DistillConfig):
    return partial(dsa, strategy=cfg.dsa_strategy, siamese=False) if cfg.dsa else None


def evaluate_spread(cfg: DistillConfig, dataset, images, labels, num_nets: int, epochs: int, seed: int,
                    model: Optional[str] = None, progress: bool = False) -> dict:
    """``evaluate_synset`` with the networks split into contiguous blocks over ranks (all of them alone)."""
    r, world = distributed.rank(), (torch.distributed.get_world_size() if distributed.active() else 1)
    start, stop = r * num_nets // world, (r + 1) * num_nets // world
    accs = []
    if stop > start:
        res = evaluate_synset(images, labels, dataset.test_images, dataset.test_labels, dataset.num_classes,
                              model=model or cfg.model, num_nets=stop - start, epochs=epochs,
                              augment=eval_augment(cfg), seed=seed + start, progress=progress)
        accs = res["accs"]
    accs = [a for block in distributed.gather(accs) for a in block]
    import numpy as np

    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "accs": accs}


def _write_log(path: str, rows: list) -> None:
    if not rows:
        return
    fields = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2)
    os.replace(tmp, path)


class RunInterrupted(Exception):
    """Raised by a ``stop_after`` hook in tests to simulate a kill between iterations."""


def run_distillation(cfg: DistillConfig, out_dir: str, resume: bool = False, progress: bool = True,
                     stop_after: Optional[int] = None, final_eval: bool = True) -> dict:
    """Distil into ``out_dir`` (created, or resumed from its checkpoint) and return the metrics.

    ``stop_after`` stops right after iteration ``stop_after`` has been checkpointed, as a kill would
    (tests use it to check that resuming reproduces an uninterrupted run).
    """
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world = distributed.setup()
    main_proc = rank == 0
    ckpt_path = os.path.join(out_dir, "checkpoint.pt")
    error = None
    try:
        if resume:
            if not os.path.exists(ckpt_path):
                raise ValueError(f"cannot resume: {ckpt_path} does not exist (start a new run without --resume)")
            with open(os.path.join(out_dir, "config.json")) as fh:
                cfg = DistillConfig.from_json(json.load(fh))
        elif os.path.exists(out_dir) and os.listdir(out_dir):
            raise ValueError(f"run directory {out_dir} already exists; pass --resume to continue it or choose another --out")
        dataset, pool, matcher = prepare(cfg)
        method = build_method(cfg.method, cfg, dataset, pool, matcher)
    except (ValueError, FileNotFoundError) as err:
        if world == 1:
            raise
        error = str(err)
    if world > 1:
        distributed.broadcast_error(error)  # every rank stops if any rank's input was bad
    method.classes = distributed.shard(range(pool.num_classes), rank, world)

    start_it, rows = 0, []
    syn = method.init_synset(torch.Generator().manual_seed(cfg.seed))
    optimizer = torch.optim.SGD([syn.images], lr=cfg.lr_img, momentum=cfg.momentum)
    if resume:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        with torch.no_grad():
            syn.images.copy_(state["images"])
        optimizer.load_state_dict(state["optimizer"])
        method.load_state_dict(state["method"])
        start_it, rows = state["iteration"], state["rows"]
    elif main_proc:
        os.makedirs(out_dir, exist_ok=True)
        _write_json(os.path.join(out_dir, "config.json"), cfg.to_json())

    def checkpoint(it_done: int) -> None:
        if main_proc:
            atomic_torch_save({"images": syn.images.detach().clone(), "optimizer": optimizer.state_dict(),
                               "method": method.state_dict(), "iteration": it_done, "rows": rows}, ckpt_path)
            _write_log(os.path.join(out_dir, "log.csv"), rows)
        distributed.barrier()

    bar = tqdm(range(start_it, cfg.iterations), initial=start_it, total=cfg.iterations,
               disable=not (progress and main_proc), desc=describe(cfg), unit="it", dynamic_ncols=True)
    for it in bar:
        t0 = time.perf_counter()
        matcher.diagnose = bool(cfg.gap_every) and (it % cfg.gap_every == 0 or it + 1 == cfg.iterations)
        loss, parts, net = method.step(it, syn)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        distributed.sum_(syn.images.grad)  # each class's gradient comes from exactly one rank
        optimizer.step()
        method.after_step(it, net)
        logged = distributed.sum_floats({"loss": float(loss.detach()), **parts})
        row = {"iteration": it + 1, **logged, "seconds": time.perf_counter() - t0}
        if cfg.eval_every and (it + 1) % cfg.eval_every == 0:
            images, labels = syn.expanded()
            row["eval_acc"] = evaluate_spread(cfg, dataset, images.detach(), labels, cfg.eval_nets, cfg.eval_epochs,
                                              seed=cfg.seed + 10_000)["mean"]
        rows.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4g}", **({"acc": f"{row['eval_acc']:.3f}"} if "eval_acc" in row else {}))
        last = it + 1 == cfg.iterations
        if last or (cfg.checkpoint_every and (it + 1) % cfg.checkpoint_every == 0) or stop_after == it + 1:
            checkpoint(it + 1)
        if stop_after == it + 1 and not last:
            bar.close()
            raise RunInterrupted(f"stopped after iteration {it + 1}")
    bar.close()

    if main_proc:
        syn.save(os.path.join(out_dir, "synset.pt"), {"dataset": cfg.dataset, "config": cfg.to_json()})
        syn.save_grid(os.path.join(out_dir, "synset.png"), dataset)
    seconds = [r["seconds"] for r in rows]
    metrics = {"method": describe(cfg), "dataset": cfg.dataset, "ipc": cfg.ipc, "iterations": cfg.iterations,
               "seconds_per_iteration": sum(seconds) / max(len(seconds), 1), "processes": world}
    if final_eval and cfg.final_eval_epochs > 0:
        images, labels = syn.expanded()
        res = evaluate_spread(cfg, dataset, images.detach(), labels, cfg.final_eval_nets, cfg.final_eval_epochs,
                              seed=cfg.seed + 20_000, progress=progress and main_proc)
        metrics.update({"acc_mean": res["mean"], "acc_std": res["std"], "accs": res["accs"], "eval_model": cfg.model,
                        "eval_epochs": cfg.final_eval_epochs})
    if main_proc:
        _write_json(os.path.join(out_dir, "metrics.json"), metrics)
    distributed.barrier()
    return metrics


def evaluate_run(run_dir: str, model: Optional[str] = None, num_nets: int = 3, epochs: Optional[int] = None,
                 progress: bool = True) -> dict:
    """Re-evaluate a finished run's ``synset.pt`` (optionally on another architecture)."""
    path = os.path.join(run_dir, "synset.pt")
    if not os.path.exists(path):
        raise ValueError(f"{path} not found: {run_dir} is not a finished run directory")
    with open(os.path.join(run_dir, "config.json")) as fh:
        cfg = DistillConfig.from_json(json.load(fh))
    model = model or cfg.model
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}")
    dataset = load_dataset(cfg.dataset, data_root=cfg.data_root)
    syn = SyntheticSet.load(path)
    epochs = cfg.final_eval_epochs if epochs is None else epochs
    res = evaluate_synset(syn["images"], syn["train_labels"], dataset.test_images, dataset.test_labels,
                          dataset.num_classes, model=model, num_nets=num_nets, epochs=epochs,
                          augment=eval_augment(cfg), seed=cfg.seed + 20_000, progress=progress)
    out = {"model": model, "acc_mean": res["mean"], "acc_std": res["std"], "accs": res["accs"], "epochs": epochs}
    _write_json(os.path.join(run_dir, f"eval_{model}.json"), out)
    return out
