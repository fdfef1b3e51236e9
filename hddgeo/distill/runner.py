"""One distillation run, top to bottom: :func:`run_distillation` checks its input, owns its run directory and runs
the loop (:class:`_Loop`: a step, a checkpoint, the finish); :func:`evaluate_run` re-evaluates a finished run.

What a run directory holds, and which file is written when, is the contract of :doc:`/rundir` (``docs/rundir.md``);
the configuration is :class:`~hddgeo.distill.config.DistillConfig`.  Everything random in iteration ``it`` is drawn
from generators seeded by ``(seed, it)`` (:mod:`hddgeo.seeds`) and the checkpoint holds every piece of state carried
between iterations, so ``--resume`` after a kill ends with exactly the synthetic set of an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from functools import partial
from typing import Optional

import torch

from hddgeo import seeds
from hddgeo.data import ClassPool, dsa, load_dataset
from hddgeo.device import (AMP_MODES, NONDETERMINISTIC_CUDA, autocast, configure_process, deterministic, provenance,
                           resolve_device, tf32_settings)
from hddgeo.errors import EXPECTED, NonFiniteError, OutOfMemory, RunDirError
from hddgeo.evaluate import evaluate_synset
from hddgeo.losses import Matcher
from hddgeo.models import MODEL_NAMES, embed
from hddgeo.rundir import (CHECKPOINT, CONFIG, LOCK, LOG, METRICS, SYNSET, LogWriter, RunLock, load_tensors, pack_rows,
                           read_json, remove_temporaries, save_tensors, unpack_rows, write_json)

from . import _hooks, distributed
from .config import RESUMABLE_FIELDS, DistillConfig, check_threads, config_differences, describe
from .methods import METHODS, build_method
from .synset import SyntheticSet


def run_distillation(cfg: DistillConfig, out_dir: str, resume: bool = False, progress: bool = True,
                     final_eval: bool = True) -> dict:
    """Distil into ``out_dir`` (created, or resumed from its checkpoint) and return the metrics.

    Every input is checked before the first file is written (``ValueError`` for a bad value,
    :class:`~hddgeo.errors.RunDirError` for a run directory that cannot be used, :class:`~hddgeo.errors.RunDirBusy`
    when another process holds it).  A non-finite loss, gradient or image stops the run with
    :class:`~hddgeo.errors.NonFiniteError` before it reaches a checkpoint, so the last checkpoint stays good; a device
    out of memory is :class:`~hddgeo.errors.OutOfMemory`, naming what to lower.
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
        except EXPECTED as err:
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
                return _distil(cfg, out_dir, dataset, method, state, rank, world, progress, final_eval, where)
            except torch.OutOfMemoryError as err:
                raise out_of_memory(err, cfg, out_dir, where.get("phase", "at the start"), where.get("saved_at")) from None
    finally:
        if lock is not None:
            lock.release()


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


def _prepare_directory(cfg: DistillConfig, out_dir: str, resume: bool):
    """``(configuration to run, checkpoint state or None)``; :class:`RunDirError` before anything is written.

    ``resume`` continues from ``checkpoint.pt`` with the saved ``config.json``; a run that died before its
    first checkpoint (``config.json`` only) restarts from iteration 0 with its saved configuration."""
    if resume:
        if not os.path.isdir(out_dir):
            raise RunDirError(f"cannot resume: {out_dir} is not a run directory (start a new run without --resume)")
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
            raise RunDirError(f"{ckpt_path} lacks {', '.join(missing)}: not a checkpoint written by hddgeo")
        saved = state.get("config")
        if isinstance(saved, dict):
            changed = config_differences(cfg, saved)
            if changed:
                raise RunDirError(f"{os.path.join(out_dir, CONFIG)} differs from the checkpoint in "
                                 f"{', '.join(f'{k} ({old!r} in the checkpoint)' for k, (old, _) in sorted(changed.items()))}; "
                                 f"restore config.json or start a new run")
        return cfg, state
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise RunDirError(f"--out {out_dir} is a file, not a directory; choose another --out")
    if os.path.isdir(out_dir) and set(os.listdir(out_dir)) - {LOCK}:
        raise RunDirError(f"run directory {out_dir} already exists; pass --resume to continue it or choose another --out")
    parent = os.path.dirname(os.path.abspath(out_dir))
    ancestor = parent
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor) or not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot create {out_dir}: {ancestor} is not a writable directory; choose another --out")
    return cfg, None



_REDUCE_WIDTH = 64  # slots of the packed log values summed over ranks


def _own_new_directory(out_dir: str) -> RunLock:
    """Create ``out_dir`` and lock it for a new run; :class:`RunDirError` if it cannot be written or another run
    filled it since :func:`_prepare_directory` found it empty (:class:`~hddgeo.errors.RunDirBusy` while another
    process holds it)."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"cannot write the run directory {out_dir}: {err.strerror or err}; choose another --out") from None
    lock = RunLock(out_dir)
    if set(os.listdir(out_dir)) - {LOCK}:
        lock.release()
        raise RunDirError(f"run directory {out_dir} already exists; pass --resume to continue it or choose another --out")
    return lock


# ----------------------------------------------------------------------------------------------------- the loop
def _distil(cfg, out_dir, dataset, method, state, rank, world, progress, final_eval, where) -> dict:
    """The loop of :func:`run_distillation`, once the configuration, data and method are ready: a step per
    iteration, a checkpoint every ``checkpoint_every`` and at the end, then the finish; ``where`` is kept up to date
    with the loop's phase and last checkpoint (for an out-of-memory message)."""
    from tqdm import tqdm

    loop = _Loop(cfg, out_dir, dataset, method, rank, world, where)
    loop.start(state)
    loop_start = time.perf_counter()
    with tqdm(range(loop.start_it, cfg.iterations), initial=loop.start_it, total=cfg.iterations,
              disable=not (progress and loop.main), desc=describe(cfg), unit="it", dynamic_ncols=True) as bar:
        for it in bar:
            row = loop.step(it)
            bar.set_postfix(loss=f"{row['loss']:.4g}",
                            **({"acc": f"{row['eval_acc']:.3f}"} if "eval_acc" in row else {}))
            done, last = it + 1, it + 1 == cfg.iterations
            if last or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or _hooks.checkpoint_asked(done):
                loop.checkpoint(done)
            _hooks.stop_if_asked(done, last)
    return loop.finish(final_eval, loop_start, progress)


class _Loop:
    """What a run carries from one iteration to the next (the synthetic set, its optimiser, the method's state,
    the log rows) and the three things done to it: :meth:`step`, :meth:`checkpoint` and :meth:`finish`."""

    def __init__(self, cfg: DistillConfig, out_dir: str, dataset, method, rank: int, world: int, where: dict):
        self.cfg, self.out_dir, self.dataset, self.method = cfg, out_dir, dataset, method
        self.world, self.main, self.where = world, rank == 0, where
        self.ckpt_path = os.path.join(out_dir, CHECKPOINT)
        self.run_seeds = seeds.RunSeeds.of(cfg)
        self.syn = method.init_synset(self.run_seeds.init())
        self.optimizer = torch.optim.SGD([self.syn.images], lr=cfg.lr_img, momentum=cfg.momentum)
        self.start_it, self.rows = 0, []
        self.spent = {"checkpoint": 0.0, "periodic_eval": 0.0}
        self.boards = []  # TensorBoard's and W&B's writers: they read what the loop computed, and change nothing of it

    def start(self, state: Optional[dict]) -> None:
        """Restore a checkpoint's ``state``, or write a new run's ``config.json``; open the log and the boards."""
        cfg, out_dir, syn = self.cfg, self.out_dir, self.syn
        if state is not None:
            if tuple(state["images"].shape) != tuple(syn.images.shape):
                raise RunDirError(f"{self.ckpt_path} holds images of shape {tuple(state['images'].shape)} but "
                                  f"config.json describes {tuple(syn.images.shape)}; restore config.json or start a "
                                  f"new run")
            with torch.no_grad():
                syn.images.copy_(state["images"])  # CPU tensors from the file, onto the run's device
            self.optimizer.load_state_dict(state["optimizer"])  # moves its state to where syn.images is
            self.method.load_state_dict(state["method"])
            self.start_it, self.rows = int(state["iteration"]), unpack_rows(state["rows"])
        elif self.main:
            try:
                os.makedirs(out_dir, exist_ok=True)
                write_json(os.path.join(out_dir, CONFIG), cfg.to_json())
            except OSError as err:
                raise RunDirError(f"cannot write the run directory {out_dir}: {err.strerror or err}; choose another "
                                  f"--out") from None
        self.saved_at = self.start_it
        self.where.update(phase="at the start", saved_at=self.saved_at)
        self.log = LogWriter(os.path.join(out_dir, LOG))
        if cfg.tensorboard and self.main:
            from hddgeo.tensorboard import RunBoard

            self.boards.append(RunBoard(out_dir, self.start_it))
        if cfg.wandb and self.main:
            from hddgeo.wandb_log import RunWandb

            self.boards.append(RunWandb(out_dir, cfg.to_json(), describe(cfg)))

    def step(self, it: int) -> dict:
        """Iteration ``it``: the method's loss, one optimiser step on the images, the log row (returned)."""
        cfg, syn, world = self.cfg, self.syn, self.world
        self.where["phase"] = f"at iteration {it + 1}"
        t0 = time.perf_counter()
        diagnose = bool(cfg.gap_every) and (it % cfg.gap_every == 0 or it + 1 == cfg.iterations)
        loss, parts, step, failure = self._loss(it, diagnose)
        self.optimizer.zero_grad(set_to_none=False)
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
        self.optimizer.step()
        # a NaN or inf gradient makes the images non-finite too, so one check covers both (the summed gradient,
        # hence the images, are the same on every rank); it and every logged value come back in one transfer
        finite, logged = read_back(torch.isfinite(syn.images).all(),
                                   {"loss": loss.detach(), **parts, "grad_norm": grad_norm},
                                   reduce=distributed.sum_ if world > 1 else None)  # the sum over ranks, same read
        if not finite:
            raise distributed.first_failure(failure, self._non_finite("synthetic images (or their gradient)", it),
                                            world) from None
        self.method.after_step(step)
        if not math.isfinite(logged["loss"]):
            raise self._non_finite("loss", it)
        row = {"iteration": it + 1, **logged, "seconds": time.perf_counter() - t0}
        if cfg.eval_every and (it + 1) % cfg.eval_every == 0:
            t_eval = time.perf_counter()
            images, labels = syn.expanded()
            row["eval_acc"] = evaluate_spread(cfg, self.dataset, images.detach(), labels, cfg.eval_epochs,
                                              self.run_seeds.eval_networks("periodic", cfg.eval_nets))["mean"]
            self.spent["periodic_eval"] += time.perf_counter() - t_eval
        self.rows.append(row)
        for board in self.boards:
            board.row(row)
        return row

    def _loss(self, it: int, diagnose: bool) -> tuple:
        """``(loss, parts, step, None)`` of the method's step, or ``(None, None, None, failure)`` when it failed under
        torchrun (the failure then travels as a NaN gradient, see :meth:`step`); alone, a failure is raised."""
        try:
            loss, parts, step = self.method.step(it, self.syn, diagnose=diagnose)
            return loss, parts, step, None
        except ValueError as err:
            if it == 0:  # the images are still the initial ones: the input itself is bad
                failure = err
            else:  # after image updates, NaN/inf features mean the images have run away
                size = float(self.syn.images.detach().abs().max())
                failure = self._non_finite(f"features of the synthetic images (largest |pixel| {size:.3g}: {err})", it)
            if self.world == 1:
                raise failure from None
            return None, None, None, failure

    def _non_finite(self, what: str, it: int) -> NonFiniteError:
        kept = f"the checkpoint of iteration {self.saved_at} is kept" if self.saved_at else "no checkpoint was written"
        return NonFiniteError(f"iteration {it + 1}: the {what} became NaN or infinite (lower --lr-img or --scale); "
                              f"{kept}; start a new run with other settings")

    def checkpoint(self, done: int) -> None:
        """Write ``checkpoint.pt`` (atomically) and the log after iteration ``done`` (the boards' image grid first)."""
        t0 = time.perf_counter()
        if self.main:
            if self.boards:  # on disk before the checkpoint that a resume would start from
                grid = self.syn.grid(self.dataset)
                for board in self.boards:
                    board.images(grid, done)
                    board.flush()
            save_tensors({"images": self.syn.images.detach().clone(), "optimizer": self.optimizer.state_dict(),
                          "method": self.method.state_dict(), "iteration": done, "rows": pack_rows(self.rows),
                          "config": self.cfg.to_json()}, self.ckpt_path)
            self.log.write(self.rows)
        distributed.barrier()
        self.spent["checkpoint"] += time.perf_counter() - t0
        self.saved_at = self.where["saved_at"] = done

    def finish(self, final_eval: bool, loop_start: float, progress: bool) -> dict:
        """Save the synthetic set, run the final evaluation, write ``metrics.json``; the metrics."""
        cfg, syn, out_dir = self.cfg, self.syn, self.out_dir
        if self.main:
            syn.save(os.path.join(out_dir, SYNSET), {"dataset": cfg.dataset, "config": cfg.to_json()})
            syn.save_grid(os.path.join(out_dir, "synset.png"), self.dataset)
        seconds = [r["seconds"] for r in self.rows]
        device = self.method.device
        # seconds_per_iteration: the steps alone (every iteration, also those before a resume); the others are this
        # process's wall clock: the loop with its checkpoints and periodic evaluations, and their shares
        metrics = {"method": describe(cfg), "dataset": cfg.dataset, "ipc": cfg.ipc, "iterations": cfg.iterations,
                   "seconds_per_iteration": sum(seconds) / max(len(seconds), 1), "processes": self.world,
                   "device": str(device), "loop_seconds": time.perf_counter() - loop_start,
                   "checkpoint_seconds": self.spent["checkpoint"], "periodic_eval_seconds": self.spent["periodic_eval"],
                   "resumed_from_iteration": self.start_it, "deterministic": cfg.deterministic, **tf32_settings(),
                   "provenance": provenance(device)}
        if final_eval and cfg.final_eval_epochs > 0:
            self.where["phase"] = "in the final evaluation"
            t_eval = time.perf_counter()
            images, labels = syn.expanded()
            res = evaluate_spread(cfg, self.dataset, images.detach(), labels, cfg.final_eval_epochs,
                                  self.run_seeds.eval_networks("final", cfg.final_eval_nets),
                                  progress=progress and self.main)
            metrics.update({"acc_mean": res["mean"], "acc_std": res["std"], "accs": res["accs"],
                            "eval_model": cfg.model, "eval_epochs": cfg.final_eval_epochs, "eval_seeds": res["seeds"],
                            "final_eval_seconds": time.perf_counter() - t_eval})
        if self.main:
            write_json(os.path.join(out_dir, METRICS), metrics)
            for board in self.boards:
                board.final(cfg.to_json(), metrics)
                board.close()
        distributed.barrier()
        return metrics


# ----------------------------------------------------------------------------------------- reading back, failing
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


def out_of_memory(err: BaseException, cfg, out_dir: str, phase: str, saved_at: Optional[int]) -> OutOfMemory:
    """One line for a device's out-of-memory error ``err`` met ``phase`` (e.g. ``at iteration 12``)."""
    found = re.search(r"[Tt]ried to allocate ([0-9.]+ ?[KMGT]?i?B)", str(err))
    tried = f"tried to allocate {found.group(1)}" if found else "an allocation failed"
    kept = (f"the checkpoint of iteration {saved_at} is kept (resume with --resume)" if saved_at
            else "no checkpoint was written")
    return OutOfMemory(f"run {out_dir}: {cfg.device} out of memory {phase} ({tried}); lower --batch-real (now "
                       f"{cfg.batch_real}) or --memory-budget-gb (now {cfg.memory_budget_gb:g})"
                       + (", or add --amp bf16" if cfg.amp == "none" else "") + f"; {kept}")


# ------------------------------------------------------------------------------------------------- evaluation
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
        raise RunDirError(f"{path} not found: {run_dir} is not a finished run directory")
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


__all__ = ["evaluate_run", "evaluate_spread", "eval_augment", "out_of_memory", "prepare", "prune_pool", "read_back",
           "run_distillation"]
