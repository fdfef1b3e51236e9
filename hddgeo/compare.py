"""``hddgeo compare`` as a function: finished runs (or a study's long table, or ``hddgeo evaluate`` folders) read,
checked and compared per method and paired by seed, with the tables written into a folder.

The files (into ``out``): ``compare.csv`` (the long table: one row per method, IPC, seed and evaluation network),
``compare_summary.csv`` (per method and IPC), ``compare_paired.csv`` (the paired differences: columns ``ipc, a, b``,
the mean difference and its 95 % interval ``ci_low, ci_high``), ``compare.md`` (both as markdown), and with a
spec's claims ``compare_verdict.csv``.  ``hddgeo evaluate --out`` folders give ``compare_evaluation.csv`` and
``compare_evaluation.md`` instead (:func:`hddgeo.synset_files.compare_evaluations`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

from .synset_files import compare_evaluations, is_evaluation


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What :func:`compare` wrote: its report as markdown text (as printed) and the files, in order."""

    text: str
    files: tuple[str, ...]


def compare(paths: Sequence[str], out: str = ".", *, claims: Optional[str] = None,
            pairs: Sequence[tuple[str, str]] = ()) -> Comparison:
    """Compare the runs in ``paths`` and write the tables into ``out``.

    Parameters
    ----------
    paths : sequence of str
        Run directories, folders holding run directories (directly or in ``runs/``, as a study's folder does), one
        study's long table (a ``.csv``), or folders written by ``hddgeo evaluate --out`` (only those).
    out : str
        Folder the tables are written into (created).
    claims : str, optional
        A study spec (a TOML file or a shipped spec's name) whose ``[[claims]]`` are judged on these runs.
    pairs : sequence of (str, str)
        Method pairs compared beside the default ones (each method against ``dm`` and ``random``).

    Returns
    -------
    Comparison
        The report's text and the files written.

    Raises
    ------
    ValueError
        A file that is not what it should be, runs that cannot be paired or pooled (the message names the field and
        two runs), a pair naming no run, claims of another dataset.  Every file is checked before one is written.
    """
    paths = list(paths)
    if paths and all(is_evaluation(p) for p in paths):
        if claims or pairs:
            raise ValueError("--claims and --pair read runs or a study's table, not hddgeo evaluate folders")
        text = compare_evaluations(paths, out)
        return Comparison(text + "\n", (os.path.join(out, "compare_evaluation.csv"),
                                        os.path.join(out, "compare_evaluation.md")))
    from .distill.results import read_runs, table_datasets, write_report

    spec = None
    if claims:
        from .distill.spec import load_spec

        spec = load_spec(claims)
        if not spec.claims:
            raise ValueError(f"{spec.path} has no [[claims]]")
    table, unevaluated = read_runs(paths)  # every file checked before anything is written
    note = (f"Not evaluated (distilled with --final-eval-epochs 0), left out: {', '.join(unevaluated)}\n"
            if unevaluated else "")
    chosen = None
    if pairs:
        from .stats import default_pairs

        labels = list(dict.fromkeys(table["method"]))
        unknown = sorted({m for pair in pairs for m in pair} - set(labels))
        if unknown:
            raise ValueError(f"--pair names {', '.join(unknown)}, which no run is; the runs are {', '.join(labels)}")
        chosen = default_pairs(labels) + [tuple(p) for p in pairs if tuple(p) not in default_pairs(labels)]
    verdict = None
    if spec is not None:
        from .verdict import claims_table

        datasets = table_datasets(table, paths[0])
        if len(datasets) > 1:
            raise ValueError(f"--claims reads one dataset's runs; these are of {', '.join(datasets)}: "
                             f"compare each dataset's separately")
        if datasets[0] not in spec.datasets():
            raise ValueError(f"the runs are of {datasets[0]} but {spec.path} is a study of "
                             f"{', '.join(sorted(spec.datasets()))}: its claims (and paper numbers) are not theirs")
        verdict = claims_table(table, spec.claims, spec.designs, margin=spec.margin, paper=spec.paper,
                               budget=spec.budget())
    _, _, text = write_report(table, out, "compare", pairs=chosen, preamble=note.rstrip("\n"))
    names = ["compare.csv", "compare_summary.csv", "compare_paired.csv"]
    if verdict is not None:
        from .rundir import write_csv, write_text
        from .tables import markdown_table

        write_csv(os.path.join(out, "compare_verdict.csv"), verdict)
        text += f"\nVerdict ({spec.name}'s claims; a claim in its design whose runs are missing: pending):\n\n" \
            + markdown_table(verdict)
        write_text(os.path.join(out, "compare.md"), text)
        names.append("compare_verdict.csv")
    return Comparison(text, tuple(os.path.join(out, n) for n in names + ["compare.md"]))


__all__ = ["Comparison", "compare"]
