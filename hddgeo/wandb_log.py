"""Weights & Biases logging of a run (``--wandb``), beside TensorBoard's (:mod:`hddgeo.tensorboard`).

What a run logs, with the same names as its TensorBoard scalars (:func:`hddgeo.tensorboard.tag_of`):

* every column of ``log.csv`` at its iteration (``loss/total``, ``loss/<part>``, ``diagnostics/...``,
  ``time/seconds``, ``accuracy/periodic``);
* the synthetic images as one grid (``synset``) at every checkpoint;
* the configuration (every field) as the W&B run's config, the final accuracy in its summary
  (``accuracy/final``, ``accuracy/final_std``, ``seconds_per_iteration``, the label).

W&B's own settings apply (``WANDB_MODE=offline`` writes everything under ``RUN_DIR/wandb/`` and sends nothing;
``wandb sync RUN_DIR/wandb/offline-run-*`` uploads it later; ``WANDB_PROJECT`` names the project, default
``hddgeo``).  The W&B run id is kept in ``RUN_DIR/wandb_id``, so ``--resume`` continues the same W&B run; the
rows a killed process logged after its last checkpoint are logged again by the resumed one with the same
values (a resumed run repeats them bit for bit), and W&B keeps one value per step.  Like TensorBoard's writer,
this only reads numbers the loop has computed: a run computes the same with or without it.  ``wandb`` is
optional (``pip install "hddgeo[wandb]"``) and is imported only when a run asks for it.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import struct

from hddgeo.extras import MissingExtraError, check
from hddgeo.rundir import write_text
from hddgeo.tensorboard import tag_of

ID_FILE = "wandb_id"
SUBDIR = "wandb"


def check_available() -> None:
    """``ValueError`` (one line naming the extra) when the ``wandb`` package is missing: a configuration check
    (``DistillConfig.validate``), whose errors are ValueErrors."""
    try:
        check("wandb")
    except MissingExtraError as err:
        raise ValueError(str(err)) from None


def _json_value(value):
    return value if isinstance(value, (bool, int, float, str)) or value is None else json.dumps(value, sort_keys=True)


class RunWandb:
    """The W&B run of one run directory (rank 0 only): the same calls as :class:`hddgeo.tensorboard.RunBoard`."""

    def __init__(self, run_dir: str, cfg_json: dict, label: str):
        check_available()
        import wandb

        id_path = os.path.join(run_dir, ID_FILE)
        if os.path.islink(id_path):
            raise ValueError(f"{id_path} is a link; remove it")
        if os.path.isfile(id_path):
            with open(id_path) as fh:
                run_id = fh.read().strip()
            if not run_id.isalnum() or len(run_id) > 64:
                raise ValueError(f"{id_path} does not hold a W&B run id; remove it to start a new W&B run")
        else:
            run_id = secrets.token_hex(6)  # W&B takes letters and digits
            write_text(id_path, run_id + "\n")
        folder = os.path.join(run_dir, SUBDIR)
        if os.path.islink(folder) or (os.path.exists(folder) and not os.path.isdir(folder)):
            raise ValueError(f"{folder} is a link or a file, not W&B's folder; remove it")
        os.makedirs(folder, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "hddgeo"), dir=run_dir, id=run_id,
                              resume="allow", name=f"{label} {os.path.basename(os.path.abspath(run_dir))}",
                              config={k: _json_value(v) for k, v in cfg_json.items()}, reinit="finish_previous")
        self._wandb = wandb

    def row(self, row: dict) -> None:
        """One ``log.csv`` row (``iteration`` and its columns) at its iteration."""
        values = {tag_of(c): float(v) for c, v in row.items()
                  if c != "iteration" and isinstance(v, (int, float)) and math.isfinite(v)}
        self.run.log(values, step=int(row["iteration"]))

    def images(self, grid, step: int) -> None:
        """The synthetic set's grid (``SyntheticSet.grid``, ``(C, H, W)`` in [0, 1]) at ``step``."""
        pixels = (grid.detach().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        self.run.log({"synset": self._wandb.Image(pixels)}, step=int(step))

    def flush(self) -> None:
        pass  # W&B writes its transaction log as it goes

    def final(self, cfg_json: dict, metrics: dict) -> None:
        summary = {"label": metrics.get("method", ""),
                   "seconds_per_iteration": float(metrics.get("seconds_per_iteration", float("nan")))}
        if metrics.get("acc_mean") is not None:
            summary.update({"accuracy/final": float(metrics["acc_mean"]), "accuracy/final_std": float(metrics["acc_std"])})
        self.run.summary.update(summary)

    def close(self) -> None:
        self.run.finish()


# ----------------------------------------------------------------------------- reading offline runs back
_BLOCK = 32768
_HEADER = 7  # a record's header: CRC-32C (4 bytes), length (2), type (1); the file's: ":W&B", magic, version
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: str):
    """The records of a W&B transaction log (``run-ID.wandb``: LevelDB's log format, 32 KiB blocks)."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        body = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            yield body
        elif kind == _FIRST:
            pending = body
        elif kind == _MIDDLE:
            pending += body
        elif kind == _LAST:
            yield pending + body
            pending = b""
        elif kind == 0 and length == 0:
            pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0  # zero padding up to the block's end


def read_offline(run_dir: str) -> dict:
    """What the offline W&B runs of ``run_dir`` logged, in the order they ran (a resume's run after the first):
    ``{"scalars": {tag: {step: value}}, "images": [step, ...], "config": {...}, "summary": {...}, "ids": [...]}``;
    a later run's value for a step replaces an earlier one's, as W&B keeps one value per step."""
    import glob

    from wandb.proto import wandb_internal_pb2 as pb

    out = {"scalars": {}, "images": [], "config": {}, "summary": {}, "ids": []}
    for path in sorted(glob.glob(os.path.join(run_dir, SUBDIR, "offline-run-*", "run-*.wandb"))):
        for body in _records(path):
            rec = pb.Record()
            rec.ParseFromString(body)
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                out["ids"].append(rec.run.run_id)
                out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
            elif kind == "config":
                out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
            elif kind == "history":
                items = {(i.key or "/".join(i.nested_key)): i.value_json for i in rec.history.item}
                step = int(json.loads(items.get("_step", str(rec.history.step.num))))
                for key, value in items.items():
                    if key == "synset" or key.startswith("synset/"):
                        if step not in out["images"]:
                            out["images"].append(step)
                    elif not key.startswith("_"):
                        out["scalars"].setdefault(key, {})[step] = json.loads(value)
            elif kind == "summary":
                out["summary"].update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                                       for i in rec.summary.update})
    return out
