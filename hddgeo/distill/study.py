"""Grids of distillation runs that differ in one switch (matcher / centroid / IPC), as tidy tables.

Every cell uses the same seed, budget and evaluation protocol; a baseline row evaluates the real
images the synthetic sets start from (the "before distillation" row).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Optional

import pandas as pd
import torch

from hddgeo.evaluate import evaluate_synset

from .methods import build_method
from .runner import DistillConfig, describe, eval_augment, prepare, run_distillation

DEFAULT_VARIANTS = (
    {"matcher": "euclidean"},
    {"matcher": "hdd", "centroid": "law"},
    {"matcher": "hdd", "centroid": "karcher"},
)


def baseline_row(cfg: DistillConfig, progress: bool = False) -> dict:
    """Accuracy of the initial synthetic set (real images) under the final evaluation protocol."""
    dataset, pool, matcher = prepare(cfg)
    method = build_method(cfg.method, cfg, dataset, pool, matcher)
    syn = method.init_synset(torch.Generator().manual_seed(cfg.seed))
    images, labels = syn.expanded()
    res = evaluate_synset(images.detach(), labels, dataset.test_images, dataset.test_labels, dataset.num_classes,
                          model=cfg.model, num_nets=cfg.final_eval_nets, epochs=cfg.final_eval_epochs,
                          augment=eval_augment(cfg), seed=cfg.seed + 20_000, progress=progress)
    return {"method": "real init (no distillation)", "ipc": cfg.ipc, "acc_mean": res["mean"], "acc_std": res["std"],
            "accs": res["accs"], "seconds_per_iteration": float("nan")}


def run_study(base: DistillConfig, out_dir: str, ipcs: Iterable[int] = (1, 10),
              variants: Iterable[dict] = DEFAULT_VARIANTS, baseline: bool = True, progress: bool = True,
              resume: bool = True) -> pd.DataFrame:
    """Run every ``variant`` (overrides of ``base``) at every IPC; return and save the accuracy table.

    Each cell writes its own run directory under ``out_dir``; finished cells are reused and
    unfinished ones resumed, so a killed study continues where it stopped.
    """
    rows = []
    for ipc in ipcs:
        if baseline:
            rows.append(baseline_row(dataclasses.replace(base, ipc=ipc), progress=False))
        for variant in variants:
            cfg = dataclasses.replace(base, ipc=ipc, **variant)
            run_dir = os.path.join(out_dir, f"ipc{ipc}_{describe(cfg).replace('/', '-').replace('+', '_')}")
            metrics = run_cell(cfg, run_dir, resume=resume, progress=progress)
            rows.append({"method": describe(cfg), "ipc": ipc, "acc_mean": metrics.get("acc_mean"),
                         "acc_std": metrics.get("acc_std"), "accs": metrics.get("accs"),
                         "seconds_per_iteration": metrics["seconds_per_iteration"], "run_dir": run_dir})
    table = pd.DataFrame(rows)
    save_table(table, out_dir, "results")
    return table


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """Wide view: one row per method, one ``mean ± std`` column (in %) per IPC."""
    t = table.copy()
    t["acc"] = [f"{100 * m:.1f} ± {100 * s:.1f}" for m, s in zip(t["acc_mean"], t["acc_std"])]
    wide = t.pivot_table(index="method", columns="ipc", values="acc", aggfunc="first", sort=False)
    wide.columns = [f"IPC {c}" for c in wide.columns]
    return wide.reset_index()


def save_table(table: pd.DataFrame, out_dir: str, name: str, markdown: Optional[str] = None) -> None:
    os.makedirs(out_dir, exist_ok=True)
    table.drop(columns=["accs"], errors="ignore").to_csv(os.path.join(out_dir, f"{name}.csv"), index=False)
    wide = format_table(table)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as fh:
        fh.write(markdown or _markdown(wide))


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- helpers for experiment scripts
# Fields that do not change what a run computes; a finished run made with other values is still reused.
_IGNORED_FIELDS = ("threads", "data_root", "download")


def config_mismatch(cfg: DistillConfig, run_dir: str) -> dict:
    """``{field: (in run_dir/config.json, requested)}`` for every field that differs (empty: same run)."""
    import json

    with open(os.path.join(run_dir, "config.json")) as fh:
        saved = json.load(fh)
    wanted = json.loads(json.dumps(cfg.to_json()))  # the JSON round trip (tuples -> lists, ...)
    return {name: (saved.get(name), value) for name, value in wanted.items()
            if name not in _IGNORED_FIELDS and saved.get(name) != value}


def run_cell(cfg: DistillConfig, run_dir: str, resume: bool = True, progress: bool = True) -> dict:
    """Distil one cell of a study into ``run_dir`` and return its metrics, reusing what is there.

    A finished run (``metrics.json``) is reused and an unfinished one (``checkpoint.pt``) resumed, when
    ``resume`` is true; either way its ``config.json`` must describe the same run as ``cfg``
    (``ValueError`` naming the differing fields otherwise, so that a changed budget never silently
    reuses an old result).  A directory killed before its first checkpoint holds only ``config.json``
    (and perhaps temporary files): it is cleared and the run starts afresh.
    """
    import json
    import shutil

    cfg.validate()
    if os.path.isdir(run_dir) and os.path.exists(os.path.join(run_dir, "config.json")):
        diff = config_mismatch(cfg, run_dir)
        if diff:
            shown = ", ".join(f"{k}={old!r} (requested {new!r})" for k, (old, new) in sorted(diff.items()))
            raise ValueError(f"{run_dir} holds a different run: {shown}; use another output folder or delete it")
    metrics_path = os.path.join(run_dir, "metrics.json")
    if resume and os.path.exists(metrics_path):
        with open(metrics_path) as fh:
            return json.load(fh)
    has_ckpt = os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
    if os.path.isdir(run_dir) and not has_ckpt:
        stale = os.listdir(run_dir)
        if all(name == "config.json" or name == "log.csv" or ".tmp-" in name for name in stale):
            shutil.rmtree(run_dir)
    return run_distillation(cfg, run_dir, resume=resume and has_ckpt, progress=progress)


def read_log(run_dir: str) -> pd.DataFrame:
    """A run's ``log.csv`` (one row per iteration; ``gap_*`` / ``eval_acc`` are NaN where not logged)."""
    return pd.read_csv(os.path.join(run_dir, "log.csv"))


def initial_images(cfg: DistillConfig) -> torch.Tensor:
    """The synthetic images a run of ``cfg`` starts from (its seed's real or noise initialisation)."""
    dataset, pool, matcher = prepare(cfg)
    method = build_method(cfg.method, cfg, dataset, pool, matcher)
    return method.init_synset(torch.Generator().manual_seed(cfg.seed)).images.detach()
