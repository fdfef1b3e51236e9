"""The ``hddgeo`` command.

    hddgeo demo                         the README's main job: digits table (DM vs DM+HDD law/karcher)
    hddgeo distill --dataset digits --ipc 10 --method dm --matcher hdd --centroid karcher --out runs/x
    hddgeo distill --out runs/x --resume
    hddgeo evaluate runs/x [--model resnet18]
    hddgeo centroids                    Law vs Karcher vs tangent centroids per class, as CSV
    hddgeo compare RUN_DIR...           per-method accuracy and paired differences over seeds

Bad input exits with status 2 and a one-line message; nothing is written before the input is checked.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from .device import AMP_MODES, resolve_device
from .distill.runner import RESUMABLE_FIELDS, DistillConfig

DEFAULTS = DistillConfig()


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        self.exit(2, f"hddgeo: error: {message} (see {self.prog} --help)\n")


def _max_norm(text: str):
    if text.lower() in ("none", "off", "inf"):
        return None
    return float(text)


def _add_distill_options(p):
    """One flag per :class:`DistillConfig` field, with its help, group and choices from the field's metadata:
    a new field is a new flag. Values are validated by ``DistillConfig.validate``, in one place."""
    groups = {}
    for f in dataclasses.fields(DistillConfig):
        meta = f.metadata
        g = groups.get(meta["group"]) or groups.setdefault(meta["group"], p.add_argument_group(meta["group"]))
        flag, default = "--" + f.name.replace("_", "-"), getattr(DEFAULTS, f.name)
        choices = meta["choices"]() if meta["choices"] else None
        text = meta["help"] + (f" ({' | '.join(choices)})" if choices else "")
        if f.name == "options":
            g.add_argument("--opt", dest="options", action="append", default=[], metavar="KEY=VALUE", help=text)
        elif str(f.type) == "bool":
            if default:
                g.add_argument(flag.replace("--", "--no-", 1), dest=f.name, action="store_false", help=f"no {text}")
            else:
                g.add_argument(flag, action="store_true", help=text)
        else:
            kind = {"int": int, "Optional[int]": int, "float": float, "str": str, "Optional[str]": str}.get(str(f.type))
            if f.name == "max_norm":
                kind = _max_norm
            shown = "" if default is None else f" [default: {default}]"
            g.add_argument(flag, type=kind, default=default, help=text + shown)
    p.add_argument_group("method").add_argument(
        "--preset", choices=["paper"], default=None,
        help="take k, lambda, lr_img and iterations from the paper's Tables 5-6 (flags you give still win)")


def _add_device_option(p) -> None:
    field = next(f for f in dataclasses.fields(DistillConfig) if f.name == "device")
    p.add_argument("--device", default=DEFAULTS.device, help=field.metadata["help"] + f" [default: {DEFAULTS.device}]")


def _parse_options(items) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (JSON values where they parse, else strings)."""
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--opt expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _given(parser, args) -> set:
    """The options whose parsed value differs from the parser's default: what the user set, however spelt
    (argparse accepts abbreviations such as --iter)."""
    return {name for name, value in vars(args).items() if value != parser.get_default(name)}


def _config_from_args(args, given: set) -> DistillConfig:
    fields = {f.name for f in dataclasses.fields(DistillConfig)}
    values = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    values["options"] = _parse_options(args.options)
    if args.preset == "paper":
        from .distill.presets import paper_preset

        for name, value in paper_preset(args.method, args.dataset, args.ipc).items():
            if name not in given:
                values[name] = value
    return DistillConfig(**values)


def _refuse_flags_with_resume(given: set) -> None:
    """``--resume`` continues the saved configuration: a flag that would change the run is an error."""
    changing = sorted(given - {"resume", "out", "quiet", "command", *RESUMABLE_FIELDS})
    if changing:
        shown = ", ".join("--" + name.replace("_", "-").replace("options", "opt") for name in changing)
        allowed = ", ".join("--" + name.replace("_", "-") for name in RESUMABLE_FIELDS)
        raise ValueError(f"--resume continues the run saved in --out with its own config.json; drop {shown} "
                         f"(only {allowed} and --quiet may be given with --resume), or start a new run")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hddgeo", description="Hyperbolic dataset distillation (HDD) on geoopt's Lorentz model.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("distill", help="distil a dataset into a run directory")
    _add_distill_options(d)
    d.add_argument("--out", required=True, help="run directory (must not exist unless --resume)")
    d.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    d.add_argument("--quiet", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="re-evaluate a run's synthetic set")
    e.add_argument("run_dir")
    e.add_argument("--model", default=None, help="convnet | alexnet | vgg11 | resnet18 (default: the run's)")
    e.add_argument("--nets", type=int, default=3)
    e.add_argument("--epochs", type=int, default=None)
    e.add_argument("--data-root", default=None, help="folder holding the run's dataset (default: the run's own)")
    _add_device_option(e)
    e.add_argument("--amp", choices=AMP_MODES, default=None, help="bf16 autocast of the evaluation networks "
                                                                  "(default: the run's own --amp)")
    e.add_argument("--quiet", action="store_true")

    m = sub.add_parser("demo", help="the main job: digits, IPC 1 and 10, DM vs DM+HDD (law, karcher), short budget")
    m.add_argument("--out", default="results/demo")
    m.add_argument("--iterations", type=int, default=100)
    m.add_argument("--scale", type=float, default=1.0,
                   help="lambda for digits: 8x8 features give centroid distances ~1 per class, so the paper's 20 "
                        "makes HDD's image gradients ~250x DM's and SGD at lr 1 overshoots")
    m.add_argument("--batch-real", type=int, default=64)
    m.add_argument("--nets", type=int, default=3, help="evaluation networks per cell")
    m.add_argument("--epochs", type=int, default=200, help="evaluation epochs")
    m.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    m.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="distillation seeds; differences are paired by seed and their intervals taken over seeds")
    m.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="cells run at a time, each in a one-thread process (at most the cores; 2 suits a 2-core machine)")
    _add_device_option(m)
    m.add_argument("--quiet", action="store_true")

    cmp = sub.add_parser("compare", help="per-method accuracy and paired differences (95%% t intervals over seeds) "
                                         "of finished run directories")
    cmp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                     help="run directories, or folders holding them (a study's output folder)")
    cmp.add_argument("--out", default=None, help="folder for compare.csv, compare_paired.csv and compare.md "
                                                 "(default: the current folder)")

    pl = sub.add_parser("plot", help="figures of a run directory")
    pl.add_argument("what", choices=["poincare"], help="poincare: Poincare-disk views and radius histograms")
    pl.add_argument("run_dir")
    pl.add_argument("--out", default=None, help="folder for the PNGs (default RUN_DIR/plots)")
    pl.add_argument("--per-class", type=int, default=200, help="real images per class to embed")
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--data-root", default=None, help="folder holding the run's dataset (default: the run's own)")
    _add_device_option(pl)

    c = sub.add_parser("centroids", help="Law vs Karcher vs tangent centroids of each class, as CSV")
    c.add_argument("--dataset", default="digits")
    c.add_argument("--data-root", default=None)
    c.add_argument("--k", type=float, default=1.0)
    c.add_argument("--max-norm", type=_max_norm, default=10.0)
    c.add_argument("--feature-scale", type=float, default=1.0, help="multiply features before lifting")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", default="results/centroids.csv")
    _add_device_option(c)
    p.commands = sub.choices  # name -> subparser, whose defaults tell which options the user set
    return p


def _run(args, given: set) -> int:
    if args.command == "distill":
        from .distill.runner import run_distillation

        if args.resume:
            _refuse_flags_with_resume(given)
        cfg = _config_from_args(args, given)
        from .distill import distributed

        try:
            metrics = run_distillation(cfg, args.out, resume=args.resume, progress=not args.quiet)
        finally:
            distributed.cleanup()
        acc = f"{100 * metrics['acc_mean']:.2f} ± {100 * metrics['acc_std']:.2f}" if "acc_mean" in metrics else "n/a"
        print(f"{metrics['method']} on {metrics['dataset']} IPC {metrics['ipc']}: accuracy {acc} %, "
              f"{metrics['seconds_per_iteration']:.3f} s/iteration -> {args.out}")
    elif args.command == "evaluate":
        from .distill.runner import evaluate_run

        res = evaluate_run(args.run_dir, model=args.model, num_nets=args.nets, epochs=args.epochs, progress=not args.quiet,
                           data_root=args.data_root, device=args.device, amp=args.amp)
        print(f"{res['model']}: {100 * res['acc_mean']:.2f} ± {100 * res['acc_std']:.2f} % over {len(res['accs'])} networks")
    elif args.command == "demo":
        from .distill.study import check_seeds_and_jobs, run_study

        check_seeds_and_jobs(args.seeds, args.jobs)
        resolve_device(args.device)
        base = DistillConfig(dataset="digits", method="dm", iterations=args.iterations, batch_real=args.batch_real,
                             scale=args.scale, final_eval_nets=args.nets, final_eval_epochs=args.epochs,
                             checkpoint_every=50, device=args.device)
        table = run_study(base, args.out, ipcs=args.ipc, seeds=args.seeds, progress=not args.quiet, jobs=args.jobs)
        with open(os.path.join(args.out, "results.md")) as fh:  # written by run_study
            print(fh.read())
        sec = table.groupby(["method", "ipc"], sort=False)["seconds_per_iteration"].mean().dropna()
        print("seconds per iteration: " + ", ".join(f"{m} IPC {i}: {v:.3f}" for (m, i), v in sec.items()))
        print(f"wrote {os.path.join(args.out, 'results.csv')} (one row per method, IPC, seed and network) and "
              f"results.md")
    elif args.command == "compare":
        from .distill.study import read_runs, write_report

        out = args.out or "."
        table, unevaluated = read_runs(args.run_dirs)  # every file checked before anything is written
        note = (f"Not evaluated (distilled with --final-eval-epochs 0), left out: {', '.join(unevaluated)}\n"
                if unevaluated else "")
        summary, diffs, text = write_report(table, out, "compare", preamble=note.rstrip("\n"))
        print(text, end="")
        print(f"wrote {os.path.join(out, 'compare.csv')}, compare_summary.csv, compare_paired.csv and compare.md")
    elif args.command == "plot":
        from .plots import poincare_report

        for path in poincare_report(args.run_dir, out_dir=args.out, seed=args.seed, per_class=args.per_class,
                                    data_root=args.data_root, device=resolve_device(args.device)):
            print(f"wrote {path}")
    elif args.command == "centroids":
        from .analysis import class_features, compare_centroids
        from .data import load_dataset
        from .rundir import write_csv

        if not (args.k > 0):
            raise ValueError(f"k must be positive, got {args.k}")
        if os.path.isdir(args.out):
            raise ValueError(f"--out {args.out} is a directory; name the CSV file to write, e.g. "
                             f"{os.path.join(args.out, 'centroids.csv')}")
        device = resolve_device(args.device)
        dataset = load_dataset(args.dataset, data_root=args.data_root)
        df = compare_centroids(class_features(dataset, seed=args.seed, device=device), k=args.k, max_norm=args.max_norm,
                               feature_scale=args.feature_scale)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_csv(args.out, df)
        cols = ["class", "n", "feature_norm_mean", "radius_mean", "radius_std", "d_law_karcher", "d_tangent_karcher",
                "radius_law", "radius_karcher", "karcher_iterations"]
        print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        print(f"wrote {args.out}")
    return 0


def run_main(main, argv=None, prog: str = "", interrupted: str = "interrupted") -> int:
    """``main(argv)`` as a command (``hddgeo`` and every study script): its status (0 when it returns no
    integer); bad input (``ValueError``: a flag, a file, a study cell that holds another run, a run directory
    another process owns) or a folder that cannot be written is one line on stderr and status 2."""
    prog = prog or os.path.basename(sys.argv[0])
    try:
        status = main(argv)
    except (ValueError, FileNotFoundError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder that cannot be written, a file that cannot be read
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"{prog}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_main(lambda _: _run(args, _given(parser.commands[args.command], args)), prog="hddgeo",
                    interrupted="interrupted; a distill run can be continued with --resume")


if __name__ == "__main__":
    sys.exit(main())
