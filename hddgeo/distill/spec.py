"""A study as a file: a TOML grid of :class:`DistillConfig` fields (``hddgeo study SPEC``).

::

    report = "results"            # the tables: results.csv, results_summary.csv, results_paired.csv, results.md
    out = "results/demo"          # the study folder (--out wins); cells are run directories in out/runs/
    ipc = [1, 10]
    seeds = [0, 1, 2]
    baseline = true               # the random row: each seed's initial images, evaluated (and random@TAG, the
                                  # images a pruned variant starts from)

    [config]                      # fields of every cell; a list is an axis: the cells are the product
    dataset = "digits"
    iterations = 100
    k = [0.5, 1.0]                # an axis: each cell's tag gets k0.5 / k1

    [ipc_config.10]               # fields of the IPC 10 cells (after [config])
    final_eval_epochs = 500

    [profiles.quick]              # --quick (or --profile quick): fields applied after those above
    iterations = 2

    [[variants]]                  # the switch: each variant's fields are applied last, a tag names it
    matcher = "euclidean"
    [[variants]]
    matcher = "euclidean"
    lr_img = 10.0
    tag = "lr10"                  # its label is dm@lr10

    [stages.pilot]                # --stage pilot: some variants (by label), own seeds, IPCs and report name
    variants = ["dm", "dm+hdd/law"]
    seeds = [0, 1, 2]
    ipc = [1]                     # (default: the top-level ipc list)
    report = "pilot"

    [[claims]]                    # the verdict: one row per claim and IPC (hddgeo compare --claims SPEC)
    claim = "HDD beats DM"
    a = "dm+hdd/law"              # a - b, paired by seed
    b = "dm"                      # or a list of labels: against the best of them on the same seeds
    paper = {1 = 1.4, 10 = 0.6}   # the paper's number (points) per IPC, if it gives one
    kind = "gain"                 # or "same": a does as well as b (within the margin)
    group = "paper"               # or "project": this project's own question (a table of its own)
    [[claims]]                    # a setting tuned on some seeds, reported on the others
    claim = "HDD at its best lambda beats DM"
    a = ["dm+hdd/law@l2", "dm+hdd/law@l20"]   # the best of a grid, chosen on tune_seeds (b may be a grid too)
    b = "dm"
    tune_seeds = [0, 1, 2]        # the difference is reported on every other seed that ran both
    [[claims]]                    # two grids paired by position: one setting chosen for both (their mean)
    claim = "Karcher = Law at a common lambda"
    a = ["dm+hdd/karcher@l2", "dm+hdd/karcher@l20"]
    b = ["dm+hdd/law@l2", "dm+hdd/law@l20"]
    tune_seeds = [0, 1, 2]
    common = true

    margin = 0.5                  # the equivalence margin of "same" claims, points (default 1)
    [paper]                       # the paper's setting and absolute numbers, printed beside the claims
    iterations = 20000            # its distillation iterations (the budget column compares ours with it)
    runs = 3                      # runs behind each mean ± std
    [paper.accuracy]              # per label and IPC: [mean, std] in %
    "dm" = {1 = [70.7, 0.6], 10 = [83.4, 0.1]}

A value ``"none"`` is ``None`` (``max_norm = "none"``: no clip).  A field that is an axis of ``[config]`` may not be
set again by a variant or an ``[ipc_config.N]`` table (refused, so that a cell's tag always says what it ran); a
profile or a command-line override of it replaces the axis.  Report names (the spec's and each stage's) are file
name stems (one path component: no ``/``, not ``..``), ``out`` is a relative folder of such names (``--out`` may
be any folder), and a spec may ask for at most :data:`MAX_CELLS` cells.  Cells come in :func:`study.run_study`'s order
(per IPC, per seed: the baseline, then every axis value and variant) and with its names
(:func:`study.cell_name`), so a spec reuses the run directories of the script it replaced.  Every cell runs
with one torch thread unless the spec sets ``threads``.  Python 3.11's ``tomllib`` reads the file (``tomli``
on 3.10).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
from typing import Optional, Sequence

import numpy as np

from hddgeo import stats
from hddgeo.labels import base_method
from hddgeo.verdict import SAME_MARGIN, Claim

from .cell import Cell, cell_name, check_name
from .config import DistillConfig, describe, describe_baseline
from .study import check_seeds_and_jobs

MAX_CELLS = 100_000  # cells one spec may ask for (a typo in an axis should not build millions of cells)
SPEC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specs")
TOP_KEYS = ("report", "out", "ipc", "seeds", "baseline", "config", "ipc_config", "profiles", "variants", "stages",
            "claims", "description", "margin", "paper")
CLAIM_KEYS = ("claim", "a", "b", "paper", "kind", "group", "tune_seeds", "common")
PAPER_KEYS = ("iterations", "runs", "accuracy")
STAGE_KEYS = ("variants", "seeds", "report", "ipc")
FIELDS = {f.name: f for f in dataclasses.fields(DistillConfig)}
# fields whose value changes the random baseline row (its initial images or their evaluation)
BASELINE_FIELDS = ("dataset", "data_root", "init", "model", "final_eval_nets", "final_eval_epochs", "seed_scheme",
                   "eval_test_per_class", "dsa", "dsa_strategy", "prune_fraction", "prune_level", "method")


def _toml():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    return tomllib


def find_spec(name: str) -> str:
    """The path of ``name``: a file, or a spec shipped in ``hddgeo/specs/`` (``demo`` or ``demo.toml``)."""
    if os.path.isfile(name):
        return name
    shipped = os.path.join(SPEC_DIR, name if name.endswith(".toml") else name + ".toml")
    if os.path.sep not in name and os.path.isfile(shipped):
        return shipped
    known = ", ".join(sorted(f[:-5] for f in os.listdir(SPEC_DIR) if f.endswith(".toml")))
    raise ValueError(f"spec {name} not found: name a TOML file or a shipped spec ({known})")


def shipped_specs() -> list[str]:
    return sorted(os.path.join(SPEC_DIR, f) for f in os.listdir(SPEC_DIR) if f.endswith(".toml"))


def _fields(table, where: str, axes: bool = False) -> dict:
    """``table``'s configuration fields, checked by name; ``"none"`` -> ``None`` for optional fields."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table of configuration fields, got {table!r}")
    out = {}
    for key, value in table.items():
        if key not in FIELDS or key in ("ipc", "seed"):
            hint = " (use the top-level ipc / seeds lists)" if key in ("ipc", "seed") else ""
            raise ValueError(f"{where}: unknown field {key!r}{hint}; fields: {', '.join(n for n in FIELDS if n not in ('ipc', 'seed'))}")
        optional = str(FIELDS[key].type).startswith("Optional")

        def conv(v):
            return None if optional and isinstance(v, str) and v.lower() == "none" else v

        if isinstance(value, list):
            if not axes:
                raise ValueError(f"{where}: {key} is a list; lists (grid axes) belong in [config] only")
            if not value:
                raise ValueError(f"{where}: the axis {key} is an empty list")
            value = [conv(v) for v in value]
            out[key] = value if len(value) > 1 else value[0]
        else:
            out[key] = conv(value)
    return out




def _relative_folder(value, where: str) -> str:
    """``value`` if it is a relative folder made of names :func:`check_name` accepts (``results/demo``)."""
    if not isinstance(value, str) or not value or os.path.isabs(value):
        raise ValueError(f"{where} must be a relative folder (results/demo; pass --out for any other), got {value!r}")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"{where} names no folder, got {value!r}")
    for part in parts:
        check_name(part, f"{where} ({value!r})")
    return value


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a table (of names and values), got {value!r}"[:300])
    return value


def _int_list(value, where: str) -> list[int]:
    if not isinstance(value, list) or not value or any(type(v) is not int or not 0 <= v <= 2**31 - 1 for v in value):
        raise ValueError(f"{where} must be a non-empty list of non-negative integers (below 2**31), got {value!r}"[:300])
    return value


def _axis_value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclasses.dataclass
class Spec:
    path: str
    report: str
    out: Optional[str]
    ipcs: list
    seeds: list
    baseline: bool
    config: dict
    ipc_config: dict
    profiles: dict
    variants: list
    stages: dict
    claims: list = dataclasses.field(default_factory=list)
    margin: float = SAME_MARGIN
    paper: Optional[dict] = None

    def budget(self) -> str:
        """Our distillation iterations against the paper's (``[paper] iterations``), for the claims table."""
        ours, theirs = self.config.get("iterations"), (self.paper or {}).get("iterations")
        if not isinstance(ours, int) or not theirs:
            return ""
        return f"{ours:,} / {theirs:,} iterations ({100 * ours / theirs:.2g} %)"

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]

    def axes(self) -> dict:
        return {k: v for k, v in self.config.items() if isinstance(v, list)}

    def cells(self, out_dir: Optional[str] = None, stage: Optional[str] = None, profile: Optional[str] = None,
              seeds: Optional[Sequence[int]] = None, ipcs: Optional[Sequence[int]] = None,
              overrides: Optional[dict] = None) -> list[Cell]:
        """The cells, in table order: for each IPC and seed, the baseline (first value of every axis), then every
        combination of the axes with every variant (of ``stage``).  ``overrides`` (fields) are applied after the
        profile, before the variants: the command line's ``--device``, ``--data-root``, ``--tensorboard``."""
        out_dir = out_dir or self.out
        if not out_dir:
            raise ValueError(f"{self.path} names no out folder; pass --out")
        variants = self.stage_variants(stage)
        seeds = list(seeds) if seeds is not None else list(self.stages.get(stage, {}).get("seeds") or self.seeds)
        ipcs = list(ipcs) if ipcs is not None else list(self.stages.get(stage, {}).get("ipc") or self.ipcs)
        check_seeds_and_jobs(seeds)  # a repeated seed would count one run twice
        if profile is not None and profile not in self.profiles:
            raise ValueError(f"{self.path} has no profile {profile!r}"
                             + (f"; profiles: {', '.join(self.profiles)}" if self.profiles else ""))
        extra = dict(self.profiles.get(profile, {}))
        extra.update(overrides or {})
        axes = {k: v for k, v in self.axes().items() if k not in extra}
        if self.baseline:
            changing = [k for k in axes if k in BASELINE_FIELDS]
            if changing:
                raise ValueError(f"{self.path}: the axis {changing[0]} changes the random baseline; "
                                 f"set baseline = false or make one spec per {changing[0]}")
        scalars = {k: v for k, v in self.config.items() if k not in axes}
        count = len(ipcs) * len(seeds) * (int(self.baseline) + math.prod(len(v) for v in axes.values()) * len(variants))
        if count > MAX_CELLS:
            sizes = " x ".join([f"{len(ipcs)} IPCs", f"{len(seeds)} seeds"] + [f"{len(v)} {k}" for k, v in axes.items()]
                               + [f"{len(variants)} variants"])
            raise ValueError(f"{self.path} asks for {count:,} cells ({sizes}), more than {MAX_CELLS:,}; split it into "
                             f"stages or specs")
        combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())] or [{}]
        cells = []
        for ipc in ipcs:
            for seed in seeds:
                def build(combo, variant):
                    fields = {**scalars, **self.ipc_config.get(ipc, {}), **extra, **combo}
                    fields.setdefault("threads", 1)
                    fields.update({k: v for k, v in variant.items()})
                    tags = [variant.get("tag", "")] + [f"{k}{_axis_value(v)}" for k, v in combo.items()]
                    fields["tag"] = "-".join(t for t in tags if t)
                    try:
                        return DistillConfig(**fields, ipc=ipc, seed=seed)
                    except TypeError as err:
                        raise ValueError(f"{self.path}: {err}") from None

                distilled = [build(combo, variant) for combo in combos for variant in variants]
                if self.baseline:
                    # the seed's initial images, then those of every pruned pool (each its own random row)
                    cfg = build(combos[0], {})
                    cells.append(Cell("baseline", cfg, os.path.join(out_dir, "runs", cell_name(cfg, stats.RANDOM))))
                    pruned = {}
                    for cfg in distilled:
                        label = describe_baseline(cfg)
                        if label == stats.RANDOM:
                            continue
                        first = pruned.setdefault(label, cfg)
                        differ = [f for f in BASELINE_FIELDS + ("k", "max_norm") if getattr(first, f) != getattr(cfg, f)]
                        if differ:
                            raise ValueError(f"{self.path}: two pruned variants share the random row {label} but prune "
                                             f"differently ({differ[0]} {getattr(first, differ[0])!r} against "
                                             f"{getattr(cfg, differ[0])!r}); give them different tags")
                    cells += [Cell("baseline", cfg, os.path.join(out_dir, "runs", cell_name(cfg, label)))
                              for label, cfg in pruned.items()]
                cells += [Cell("distill", cfg, os.path.join(out_dir, "runs", cell_name(cfg))) for cfg in distilled]
        return cells

    def _variant_configs(self) -> list[DistillConfig]:
        base = {k: (v[0] if isinstance(v, list) else v) for k, v in self.config.items()}
        try:
            return [DistillConfig(**{**base, **variant}) for variant in self.variants]
        except TypeError as err:
            raise ValueError(f"{self.path}: {err}") from None

    def labels(self) -> list[str]:
        """The method label of each variant (``dm``, ``dm+hdd/law``, ``dm@lr10``)."""
        return [describe(cfg) for cfg in self._variant_configs()]

    def random_labels(self, stage: Optional[str] = None) -> list[str]:
        """The random rows the spec (or ``stage``) runs with its baseline on: ``random``, and ``random@TAG`` for
        each pruned variant's pool (:func:`~hddgeo.distill.config.describe_baseline`)."""
        if not self.baseline:
            return []
        wanted = None if stage is None else self.stages.get(stage, {}).get("variants")
        pruned = [describe_baseline(cfg) for cfg in self._variant_configs()
                  if wanted is None or describe(cfg) in wanted]
        return list(dict.fromkeys([stats.RANDOM] + pruned))

    def stage_variants(self, stage: Optional[str]) -> list[dict]:
        if stage is None:
            return list(self.variants)
        if stage not in self.stages:
            raise ValueError(f"{self.path} has no stage {stage!r}"
                             + (f"; stages: {', '.join(self.stages)}" if self.stages else ""))
        labels = self.labels()
        wanted = self.stages[stage].get("variants")
        if wanted is None:
            return list(self.variants)
        missing = [w for w in wanted if w not in labels]
        if missing:
            raise ValueError(f"{self.path}: stage {stage} names {missing[0]!r}, which is no variant's label "
                             f"({', '.join(labels)})")
        return [v for v, label in zip(self.variants, labels) if label in wanted]

    def designs(self, label: str, ipc: int) -> bool:
        """Whether some stage of the spec (or, without stages, the spec) runs ``label`` at ``ipc``; ``random`` is
        run wherever the baseline is on."""
        if label == stats.RANDOM:
            return self.baseline and (ipc in self.ipcs or any(ipc in s.get("ipc", self.ipcs)
                                                             for s in self.stages.values()))
        if stats.is_random(label):  # a pruned pool's images: run wherever one of its variants is
            return any(self.designs(describe(cfg), ipc) for cfg in self._variant_configs()
                       if self.baseline and describe_baseline(cfg) == label)
        if label not in self.labels():
            return False
        if not self.stages:
            return ipc in self.ipcs
        return any(label in s.get("variants", self.labels()) and ipc in s.get("ipc", self.ipcs)
                   for s in self.stages.values())

    def datasets(self) -> set:
        """Every dataset a cell of this spec may run on (``[config]``, its axis, profiles, IPC tables, variants)."""
        found = set()
        for table in [self.config, *self.ipc_config.values(), *self.profiles.values(), *self.variants]:
            value = table.get("dataset", FIELDS["dataset"].default if table is self.config else None)
            found.update(value if isinstance(value, list) else [value])
        return {d for d in found if d is not None}

    def report_name(self, stage: Optional[str] = None) -> str:
        return self.stages.get(stage, {}).get("report") or self.report


def load_spec(path: str) -> Spec:
    """Read and check a spec file (``ValueError``, one line, naming the file and the key)."""
    path = find_spec(path)
    tomllib = _toml()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}; keys: {', '.join(TOP_KEYS)}")
    report = check_name(data.get("report", "results"), f"{path}: report")
    out = data.get("out")
    if out is not None:
        _relative_folder(out, f"{path}: out")
    baseline = data.get("baseline", True)
    if not isinstance(baseline, bool):
        raise ValueError(f"{path}: baseline must be true or false, got {baseline!r}")
    ipc_config = {}
    for key, table in _table(data.get("ipc_config") or {}, f"{path}: ipc_config").items():
        if not str(key).isdigit():
            raise ValueError(f"{path}: ipc_config.{key} must be named by an IPC (ipc_config.10)")
        ipc_config[int(key)] = _fields(table, f"{path} [ipc_config.{key}]")
    profiles = {name: _fields(table, f"{path} [profiles.{name}]")
                for name, table in _table(data.get("profiles") or {}, f"{path}: profiles").items()}
    variants = data.get("variants") or [{}]
    if not isinstance(variants, list):
        raise ValueError(f"{path}: variants must be an array of tables ([[variants]])")
    variants = [_fields(v, f"{path} variant {i + 1}") for i, v in enumerate(variants)]
    stages = {}
    for name, table in _table(data.get("stages") or {}, f"{path}: stages").items():
        table = _table(table, f"{path}: stages.{name}")
        bad = [k for k in table if k not in STAGE_KEYS]
        if bad:
            raise ValueError(f"{path} [stages.{name}]: unknown key {bad[0]!r}; keys: {', '.join(STAGE_KEYS)}")
        for key in ("seeds", "ipc"):
            if key in table:
                _int_list(table[key], f"{path} [stages.{name}] {key}")
        if "report" in table:
            check_name(table["report"], f"{path} [stages.{name}] report")
        wanted = table.get("variants")
        if wanted is not None and (not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted)):
            raise ValueError(f"{path} [stages.{name}] variants must be a list of variant labels, got {wanted!r}"[:300])
        stages[name] = dict(table)
    spec = Spec(path=path, report=report, out=out, ipcs=_int_list(data.get("ipc", [10]), f"{path}: ipc"),
                seeds=_int_list(data.get("seeds", [0]), f"{path}: seeds"), baseline=baseline,
                config=_fields(data.get("config") or {}, f"{path} [config]", axes=True), ipc_config=ipc_config,
                profiles=profiles, variants=variants, stages=stages)
    axes = spec.axes()
    for where, fields in ([(f"variant {i + 1}", v) for i, v in enumerate(variants)]
                          + [(f"[ipc_config.{ipc}]", t) for ipc, t in ipc_config.items()]):
        again = [k for k in fields if k in axes]
        if again:
            raise ValueError(f"{path} {where} sets {again[0]}, an axis of [config] ({axes[again[0]]!r}): its cells "
                             f"would be tagged with the axis value but run another; drop it there, or make the "
                             f"axis a list of variants")
    for i, v in enumerate(variants):
        if "tag" in v and v["tag"] is not None and v["tag"] != "":
            check_name(v["tag"], f"{path} variant {i + 1} tag")
    for name in stages:
        spec.stage_variants(name)  # labels checked now
    spec.claims = _claims(data.get("claims") or [], path, spec.labels() + spec.random_labels() + [stats.RANDOM])
    _check_claims_against_design(spec)
    margin = data.get("margin", SAME_MARGIN)
    if type(margin) not in (int, float) or not (0 < margin < 100):
        raise ValueError(f"{path}: margin is the equivalence margin in points, a number in (0, 100); got {margin!r}")
    spec.margin = float(margin)
    spec.paper = _paper(data.get("paper"), path, spec.labels() + spec.random_labels() + [stats.RANDOM])
    return spec


def _paper(table, path: str, labels: list) -> Optional[dict]:
    """A spec's ``[paper]`` table, checked: its iterations and runs (positive integers) and absolute accuracies
    ``[mean, std]`` (finite, in [0, 100]) per variant label and IPC."""
    if table is None:
        return None
    where = f"{path} [paper]"
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table")
    bad = [k for k in table if k not in PAPER_KEYS]
    if bad:
        raise ValueError(f"{where}: unknown key {bad[0]!r}; keys: {', '.join(PAPER_KEYS)}")
    for key in ("iterations", "runs"):
        if key in table and (type(table[key]) is not int or table[key] < (2 if key == "runs" else 1)):
            raise ValueError(f"{where}: {key} must be an integer >= {2 if key == 'runs' else 1}, got {table[key]!r}")
    accuracy = {}
    for label, per_ipc in _table(table.get("accuracy") or {}, f"{where} accuracy").items():
        if label not in labels:
            raise ValueError(f"{where} accuracy names {label!r}, which is no variant's label ({', '.join(labels)})")
        if not isinstance(per_ipc, dict):
            raise ValueError(f"{where} accuracy.{label} must be a table of [mean, std] per IPC")
        accuracy[label] = {}
        for ipc, pair in per_ipc.items():
            ok = (str(ipc).isdigit() and isinstance(pair, list) and len(pair) == 2
                  and all(type(v) in (int, float) and math.isfinite(v) and 0 <= v <= 100 for v in pair))
            if not ok:
                raise ValueError(f"{where} accuracy.{label}.{ipc} must be [mean, std] in percent, got {pair!r}")
            accuracy[label][int(ipc)] = (float(pair[0]), float(pair[1]))
    return {**{k: table[k] for k in ("iterations", "runs") if k in table}, "accuracy": accuracy}


def _claims(tables, path: str, labels: list) -> list[Claim]:
    """The ``[[claims]]`` of a spec, checked: known keys, labels of the spec's variants (or ``random``), paper
    numbers per IPC."""
    if not isinstance(tables, list):
        raise ValueError(f"{path}: claims must be an array of tables ([[claims]])")
    out = []
    for i, t in enumerate(tables, 1):
        where = f"{path} claim {i}"
        if not isinstance(t, dict):
            raise ValueError(f"{where} must be a table ([[claims]])")
        bad = [k for k in t if k not in CLAIM_KEYS]
        if bad:
            raise ValueError(f"{where}: unknown key {bad[0]!r}; keys: {', '.join(CLAIM_KEYS)}")
        for key in ("claim", "a", "b"):
            if key not in t:
                raise ValueError(f"{where} needs {key!r}")
        if not isinstance(t["claim"], str) or not t["claim"]:
            raise ValueError(f"{where}: claim must be a text, got {t['claim']!r}")
        a, b = t["a"], t["b"]
        names = (a if isinstance(a, list) else [a]) + (b if isinstance(b, list) else [b])
        for key, side in (("a", a), ("b", b)):
            if isinstance(side, list) and len(side) < 2:
                raise ValueError(f"{where}: {key} as a list names at least two labels (the best of them is taken)")
        tune = t.get("tune_seeds")
        if tune is not None:
            tune = tuple(_int_list(tune, f"{where}: tune_seeds"))
        for name in names:
            if name not in labels:
                raise ValueError(f"{where} names {name!r}, which is no variant's label ({', '.join(labels)})")
        common = t.get("common", False)
        if not isinstance(common, bool):
            raise ValueError(f"{where}: common must be true or false, got {common!r}")
        paper = t.get("paper")
        if paper is not None:
            if not isinstance(paper, dict) or not all(str(k).isdigit() and type(v) in (int, float) and math.isfinite(v)
                                                      for k, v in paper.items()):
                raise ValueError(f"{where}: paper must be a table of points per IPC ({{1 = 1.4, 10 = 0.6}}, finite), "
                                 f"got {paper!r}")
            paper = {int(k): float(v) for k, v in paper.items()}
        try:  # Claim checks its kind
            out.append(Claim(t["claim"], tuple(a) if isinstance(a, list) else a, tuple(b) if isinstance(b, list) else b,
                             paper, t.get("kind", "gain"), t.get("group", "paper"), tune, common))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    return out


def _check_claims_against_design(spec: Spec) -> None:
    """Each claim's tuning seeds are seeds the spec (or a stage) runs, leaving at least one to report on: otherwise
    its row would wait for ever for cells nothing runs."""
    seeds = set(spec.seeds).union(*(s.get("seeds", spec.seeds) for s in spec.stages.values()))
    for i, c in enumerate(spec.claims, 1):
        where = f"{spec.path} claim {i}"
        if c.tune_seeds:
            absent = [x for x in c.tune_seeds if x not in seeds]
            if absent:
                raise ValueError(f"{where}: tune_seeds names seed {absent[0]}, which no stage runs "
                                 f"(seeds: {', '.join(map(str, sorted(seeds)))})")
            if seeds <= set(c.tune_seeds):
                raise ValueError(f"{where}: tune_seeds are every seed the spec runs, so none is left to report the "
                                 f"difference on; run more seeds or tune on fewer")


MAX_SECONDS = 1e6  # a plausible bound on one iteration's or one evaluation's seconds (11 days): beyond it, not data


def _add_rates(path: str, ipc, step_rates: dict, eval_rates: dict) -> None:
    """The seconds per distillation iteration (added to the list of ``(IPC, method)``: an IDM step costs more than
    a DM step) and per evaluation network-epoch (to the list of the IPC) of the finished cell whose
    ``metrics.json`` is ``path``, at ``ipc`` (or the file's own when ``None``); a file that is unreadable, a link,
    or says neither (or an implausible number: compared, never converted first) adds nothing."""
    from hddgeo.rundir import read_json

    try:
        if os.path.islink(path):
            return
        m = read_json(path)
    except ValueError:
        return
    ipc = m.get("ipc") if ipc is None else ipc
    if type(ipc) is not int:
        return
    rate = m.get("seconds_per_iteration")
    if type(rate) in (int, float) and 0 < rate < MAX_SECONDS:  # a baseline's is null (NaN before 0.2)
        label = m.get("method")
        step_rates.setdefault((ipc, base_method(label) if isinstance(label, str) else None), []).append(float(rate))
    spent, accs, epochs = m.get("final_eval_seconds"), m.get("accs"), m.get("eval_epochs")
    if type(spent) in (int, float) and 0 <= spent < MAX_SECONDS * 1e3 and isinstance(accs, list) and accs \
            and type(epochs) is int and 0 < epochs < 10**9:
        eval_rates.setdefault(ipc, []).append(float(spent) / (len(accs) * epochs))


def estimate(cells: Sequence[Cell], folder: Optional[str] = None) -> dict:
    """What running ``cells`` costs: how many are finished, to resume and new; the distillation iterations and the
    evaluation network-epochs left (final and periodic evaluations); and the hours one process needs at the
    finished cells' rates (the medians of their seconds per iteration and per evaluation network-epoch, from
    finished cells of the same IPC where there are some, else from all).  Where no cell of ``cells`` is finished
    yet (a stage before it starts), the rates come from the other finished cells under ``folder``'s ``runs/`` (the
    study's earlier stages; ``rates_from`` says which, ``borrowed_ipcs`` the IPCs priced at other IPCs' rates).
    A step is priced at the same method's rate at that IPC where one is finished, else at the IPC's rate of any
    method (``borrowed_methods`` names the methods so priced)."""
    finished = resumable = 0
    iterations = network_epochs = 0
    step_rates, eval_rates, left = {}, {}, []
    for cell in cells:
        metrics = os.path.join(cell.run_dir, "metrics.json")
        if os.path.isfile(metrics):
            finished += 1
            _add_rates(metrics, cell.cfg.ipc, step_rates, eval_rates)
            continue
        cell_epochs = cell.cfg.final_eval_nets * cell.cfg.final_eval_epochs
        cell_iterations = 0
        if cell.kind == "distill":
            done = 0
            log = os.path.join(cell.run_dir, "log.csv")
            if os.path.isfile(os.path.join(cell.run_dir, "checkpoint.pt")):
                resumable += 1
                if os.path.isfile(log):
                    with open(log) as fh:
                        done = max(sum(1 for _ in fh) - 1, 0)
            cell_iterations = max(cell.cfg.iterations - done, 0)
            if cell.cfg.eval_every:  # the periodic evaluations still ahead
                ahead = cell.cfg.iterations // cell.cfg.eval_every - done // cell.cfg.eval_every
                cell_epochs += ahead * cell.cfg.eval_nets * cell.cfg.eval_epochs
        iterations += cell_iterations
        network_epochs += cell_epochs
        left.append((cell.cfg.ipc, cell.cfg.method, cell_iterations, cell_epochs))
    out = {"cells": len(cells), "finished": finished, "resume": resumable,
           "new": len(cells) - finished - resumable, "iterations": iterations, "network_epochs": network_epochs}

    def rate(rates: dict, ipc: int, method: Optional[str] = None):  # the median: a cell that shared its core ran up
        # to 6x slower; steps keyed by (IPC, method), evaluations by IPC
        if method is not None:
            values = rates.get((ipc, method)) or [v for (i, _), vs in rates.items() if i == ipc for v in vs]
        else:
            values = rates.get(ipc)
        values = values or [v for vs in rates.values() for v in vs]
        return float(np.median(values)) if values else None

    out["rates_from"] = "these cells"
    if folder is not None and not (step_rates and eval_rates) and os.path.isdir(os.path.join(folder, "runs")):
        ours = {os.path.normpath(c.run_dir) for c in cells}
        others_step, others_eval = {}, {}
        try:
            entries = sorted(os.scandir(os.path.join(folder, "runs")), key=lambda e: e.name)
        except OSError:  # an unreadable folder prices nothing; the run's own checks speak for it
            entries = []
        for entry in entries:
            path = os.path.join(entry.path, "metrics.json")
            if os.path.normpath(entry.path) not in ours and entry.is_dir(follow_symlinks=False) \
                    and os.path.isfile(path):
                _add_rates(path, None, others_step, others_eval)
        borrowed = [what for what, own in (("steps", step_rates), ("evaluations", eval_rates)) if not own]
        step_rates, eval_rates = step_rates or others_step, eval_rates or others_eval
        out["rates_from"] = ("the folder's other finished cells" if len(borrowed) == 2 else
                             f"these cells ({borrowed[0]}: the folder's other finished cells)")
    if step_rates and eval_rates:
        out["hours"] = sum(n * rate(step_rates, ipc, method) + e * rate(eval_rates, ipc)
                           for ipc, method, n, e in left) / 3600
        step_ipcs = {i for i, _ in step_rates}
        out["borrowed_ipcs"] = sorted({ipc for ipc, _, _, _ in left if ipc not in step_ipcs or ipc not in eval_rates})
        out["borrowed_methods"] = sorted({m for ipc, m, n, _ in left if n and (ipc, m) not in step_rates
                                          and ipc in step_ipcs})
    return out


def describe_estimate(est: dict) -> str:
    text = (f"{est['cells']} cells ({est['finished']} finished, {est['resume']} to resume, {est['new']} new); "
            f"left: {est['iterations']:,} distillation iterations and {est['network_epochs']:,} evaluation "
            f"network-epochs")
    if "hours" in est:
        text += (f"; about {est['hours']:.2f} h in one process at the rates (steps and evaluations) of "
                 f"{est.get('rates_from', 'these cells')}")
        if est.get("borrowed_ipcs"):
            text += f" (no finished cell of IPC {', '.join(map(str, est['borrowed_ipcs']))} to time: other IPCs' rates)"
        if est.get("borrowed_methods"):
            text += (f" ({', '.join(est['borrowed_methods'])}: no finished cell to time its steps, priced at other "
                     f"methods' steps)")
    return text
