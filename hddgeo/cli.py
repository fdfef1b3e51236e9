"""The ``hddgeo`` command.

    hddgeo demo                         the README's main job: digits table (DM vs DM+HDD law/karcher)
    hddgeo study SPEC [--quick] [--executor local|ray]   a study file (TOML grid): cells, then the compare tables
    hddgeo distill --dataset digits --ipc 10 --method dm --matcher hdd --centroid karcher --out runs/x
    hddgeo distill --out runs/x --resume
    hddgeo evaluate runs/x [--model resnet18]
    hddgeo evaluate runs/x res_DM_FashionMNIST_ConvNet_1ipc.pt --protocol paper --out eval   any sets, one protocol
    hddgeo export runs/x OUT            PNG class folders + float set + dataset card
    hddgeo centroids                    Law vs Karcher vs tangent centroids per class, as CSV
    hddgeo compare RUN_DIR...           per-method accuracy and paired differences over seeds
    hddgeo compare STUDY/results.csv --claims SPEC   ... and the verdict of a spec's claims, from a long table

Bad input exits with status 2 and a one-line message; nothing is written before the input is checked.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from . import __version__
from .device import AMP_MODES, resolve_device
from .distill import distributed
from .distill.config import RESUMABLE_FIELDS, DistillConfig
from .errors import HddgeoError
from .evaluate import PROTOCOLS
from .extras import missing_extra_message

DEFAULTS = DistillConfig()


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        self.exit(2, f"hddgeo: error: {message} (see {self.prog} --help)\n")


def _max_norm(text: str):
    if text.lower() in ("none", "off", "inf"):
        return None
    return float(text)


def _on_off(text: str):
    value = {"auto": None, "on": True, "off": False}.get(text.lower())
    if value is None and text.lower() != "auto":
        raise argparse.ArgumentTypeError(f"expected auto, on or off, got {text!r}")
    return value


def _add_distill_options(p):
    """One flag per :class:`DistillConfig` field, with its help, group and choices from the field's metadata:
    a new field is a new flag. Values are validated by ``DistillConfig.validate``, in one place."""
    groups = {}
    for f in dataclasses.fields(DistillConfig):
        meta = f.metadata
        g = groups.get(meta["group"]) or groups.setdefault(meta["group"], p.add_argument_group(meta["group"]))
        flag, default = "--" + f.name.replace("_", "-"), getattr(DEFAULTS, f.name)
        choices = meta["choices"]() if meta["choices"] else None
        text = meta["help"] + (f" ({' | '.join(map(str, choices))})" if choices else "")
        if str(f.type) == "Optional[bool]":  # auto (None) | on | off; a bare flag means on
            g.add_argument(flag, type=_on_off, nargs="?", const=True, default=default, metavar="auto|on|off",
                           help=text + " [default: auto]")
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
    groups["method"].add_argument("--opt", dest="options", action="append", default=[], metavar="KEY=VALUE",
                                  help="an option of the run's method: the field METHOD_KEY (repeatable), e.g. "
                                       "--method geodm --opt ot_weight=0.5 for --geodm-ot-weight 0.5")
    groups["method"].add_argument(
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
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("distill", help="distil a dataset into a run directory")
    _add_distill_options(d)
    d.add_argument("--out", required=True, help="run directory (must not exist unless --resume)")
    d.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    d.add_argument("--quiet", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="re-evaluate a run's synthetic set, or evaluate any sets under a declared "
                                         "protocol (--protocol, --out)")
    e.add_argument("paths", nargs="+", metavar="SET",
                   help="a run directory; with --protocol or --out also a reference .pt (official DM/IDM-HDD layout), "
                        "an {images, labels} .pt or an image folder (one sub-folder per class), several at once")
    e.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                   help="evaluate the sets under a declared protocol: paper (20 networks x 1000 epochs, DSA, as the "
                        "official code) or default (5 x 300); the flags below change it")
    e.add_argument("--out", default=None, help="folder for evaluation.csv, protocol.json and evaluation.md (protocol "
                                               "mode; must be new or empty)")
    e.add_argument("--dataset", default=None, help="the sets' dataset (default: the run directories' own)")
    e.add_argument("--seed", type=int, default=None, help="seeds the protocol's evaluation networks [default: 0]")
    e.add_argument("--test-per-class", type=int, default=None,
                   help="test on the first N test images of each class (0: all) [default: 0]")
    e.add_argument("--no-dsa", action="store_true", help="train the evaluation networks without DSA")
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the run directories' own; "
                                                             "a CPU result repeats only at the same count)")
    e.add_argument("--model", default=None, help="convnet | alexnet | vgg11 | resnet18 (default: the run's)")
    e.add_argument("--nets", type=int, default=None, help="evaluation networks [default: 3, or the protocol's]")
    e.add_argument("--epochs", type=int, default=None)
    e.add_argument("--data-root", default=None, help="folder holding the run's dataset (default: the run's own)")
    _add_device_option(e)
    e.add_argument("--amp", choices=AMP_MODES, default=None, help="bf16 autocast of the evaluation networks "
                                                                  "(default: the run's own --amp)")
    e.add_argument("--quiet", action="store_true")

    x = sub.add_parser("export", help="write a run's synthetic set as class folders of PNGs, the float set and a "
                                       "dataset card (loads with torchvision's ImageFolder and hddgeo evaluate)")
    x.add_argument("run_dir")
    x.add_argument("out", help="folder to write (must be new or empty)")
    x.add_argument("--format", choices=["imagefolder"], default="imagefolder")
    x.add_argument("--data-root", default=None, help="folder holding the run's dataset (default: the run's own)")

    m = sub.add_parser("demo", help="the main job: digits, IPC 1 and 10, DM vs DM+HDD (law, karcher), short budget "
                                     "(the shipped spec demo.toml; hddgeo study demo runs the same cells)")
    m.add_argument("--out", default=None, help="study folder (default: the spec's, results/demo)")
    demo_flags = (("--iterations", "iterations", int), ("--scale", "scale", float), ("--batch-real", "batch_real", int),
                  ("--nets", "final_eval_nets", int), ("--epochs", "final_eval_epochs", int))
    for flag, name, kind in demo_flags:
        m.add_argument(flag, dest=name, type=kind, default=None, help=f"{name} of every cell (default: demo.toml's)")
    m.add_argument("--ipc", type=int, nargs="+", default=None, help="IPCs (default: demo.toml's, 1 10)")
    m.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="distillation seeds (default 0 1 2); differences are paired by seed and their intervals taken "
                        "over seeds")
    m.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="cells run at a time, each in a one-thread process (at most the cores; 2 suits a 2-core machine)")
    _add_device_option(m)
    m.add_argument("--quiet", action="store_true")

    st = sub.add_parser("study", help="run a study spec (a TOML grid of distill fields): every cell a run directory, "
                                      "then the compare tables")
    st.add_argument("spec", help="a TOML spec file, or a shipped one by name (hddgeo/specs/: demo, "
                                 "fashionmnist_verdict_v2, ...; an unknown name lists them all)")
    st.add_argument("--out", default=None, help="study folder (default: the spec's out)")
    st.add_argument("--quick", action="store_true", help="the spec's quick profile: seconds-long settings")
    st.add_argument("--profile", default=None, help="a profile of the spec (e.g. paper)")
    st.add_argument("--stage", default=None, help="a stage of the spec (some variants, own seeds and report)")
    st.add_argument("--seeds", type=int, nargs="+", default=None, help="distillation seeds (default: the spec's)")
    st.add_argument("--ipc", type=int, nargs="+", default=None, help="IPCs (default: the spec's)")
    st.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: one process per GPU, or one-thread processes on the CPU; ray: a Ray task per cell")
    st.add_argument("--ray-address", default=None, help="Ray cluster to use (default: RAY_ADDRESS, else a new local "
                                                        "instance)")
    st.add_argument("--jobs", type=int, default=None, help="local executor: GPUs to use (default all), or one-thread "
                                                           "CPU processes (default: the cores)")
    _add_device_option(st)
    st.add_argument("--data-root", default=None, help="folder holding the dataset files (every cell)")
    st.add_argument("--tensorboard", action="store_true", help="TensorBoard event files in every run directory")
    st.add_argument("--dry-run", action="store_true", help="check every cell, print them and the cost, run nothing")
    st.add_argument("--quiet", action="store_true")

    cmp = sub.add_parser("compare", help="per-method accuracy and paired differences (95%% t intervals over seeds) "
                                         "of finished run directories")
    cmp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                     help="run directories, or folders holding them (a study's output folder), or one study's "
                          "long table (its results.csv), or folders written by hddgeo evaluate --out (compared by "
                          "evaluation network)")
    cmp.add_argument("--out", default=None, help="folder for compare.csv, compare_summary.csv, compare_paired.csv, "
                                                 "compare_verdict.csv (with --claims) and compare.md "
                                                 "(default: the current folder)")
    cmp.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"),
                     help="also report A - B (method labels as the table shows them, e.g. dm+hdd/law dm@lr0.3); "
                          "repeatable")
    cmp.add_argument("--claims", default=None, metavar="SPEC",
                     help="also the verdict table of a study spec's [[claims]] (a TOML file or a shipped spec, e.g. "
                          "fashionmnist_verdict): compare_verdict.csv, and a section of compare.md")

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


def _run_spec(args, given: set) -> None:
    """``hddgeo demo`` (the shipped demo spec) and ``hddgeo study SPEC``: check every cell, print their count and
    cost, run them, print the compare tables."""
    from .distill.spec import describe_estimate, estimate, load_spec
    from .distill.study import check_seeds_and_jobs, check_study, run_cells

    demo = args.command == "demo"
    spec = load_spec("demo" if demo else args.spec)
    check_seeds_and_jobs(args.seeds, 1 if args.jobs is None else args.jobs)
    overrides = {"device": args.device} if args.device != DEFAULTS.device or demo else {}
    if demo:
        overrides.update({name: getattr(args, name) for name in ("iterations", "scale", "batch_real", "final_eval_nets",
                                                                 "final_eval_epochs") if getattr(args, name) is not None})
        stage, profile = None, None
    else:
        stage, profile = args.stage, "quick" if args.quick else args.profile
        if args.quick and args.profile:
            raise ValueError("give --quick or --profile, not both")
        if args.data_root is not None:
            overrides["data_root"] = args.data_root
        if args.tensorboard:
            overrides["tensorboard"] = True
    out = args.out or spec.out
    cells = spec.cells(out_dir=out, stage=stage, profile=profile, seeds=args.seeds, ipcs=args.ipc, overrides=overrides)
    name = spec.report_name(stage)
    executor = "local" if demo else args.executor
    check_study(cells, out, name, jobs=args.jobs, executor=executor)  # every check of the run, before it (and --dry-run)
    print(f"{spec.name}{f' ({stage})' if stage else ''}: {describe_estimate(estimate(cells, out))} -> {out}", flush=True)
    if not demo and args.dry_run:
        for cell in cells:
            print(f"  {cell.name}")
        return
    table = run_cells(cells, out, name, jobs=args.jobs, progress=not args.quiet,
                      executor=executor, ray_address=None if demo else args.ray_address)
    with open(os.path.join(out, f"{name}.md")) as fh:  # written by run_cells
        print(fh.read())
    sec = table.groupby(["method", "ipc"], sort=False)["seconds_per_iteration"].mean().dropna()
    print("seconds per iteration: " + ", ".join(f"{m} IPC {i}: {v:.3f}" for (m, i), v in sec.items()))
    print(f"wrote {os.path.join(out, f'{name}.csv')} (one row per method, IPC, seed and network) and {name}.md")


def _protocol(args):
    """The declared protocol of ``hddgeo evaluate``: a named one (default: ``default``) with the flags given."""
    from .evaluate import PROTOCOLS

    changes = {"model": args.model, "networks": args.nets, "epochs": args.epochs, "seed": args.seed,
               "test_per_class": args.test_per_class}
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.no_dsa:
        changes["dsa"] = False
    for name in ("networks", "epochs"):
        if name in changes and changes[name] < 1:
            raise ValueError(f"--{'nets' if name == 'networks' else name} must be at least 1, got {changes[name]}")
    if changes.get("test_per_class", 0) < 0 or changes.get("seed", 0) < 0:
        raise ValueError("--test-per-class and --seed must be non-negative")
    base = PROTOCOLS[args.protocol or "default"]
    if "model" in changes:
        from .models import MODEL_NAMES

        if changes["model"] not in MODEL_NAMES:
            raise ValueError(f"unknown model {changes['model']!r}; choose one of {', '.join(MODEL_NAMES)}")
    return dataclasses.replace(base, **changes)


def _check_seed(seed: int) -> None:
    from .distill.config import MAX_SEED

    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--seed must lie in 0..{MAX_SEED}, got {seed}")


def _distill(args, given: set) -> None:
    from .distill.runner import run_distillation

    if args.resume:
        _refuse_flags_with_resume(given)
    cfg = _config_from_args(args, given)
    try:
        metrics = run_distillation(cfg, args.out, resume=args.resume, progress=not args.quiet)
    finally:
        distributed.cleanup()
    acc = f"{100 * metrics['acc_mean']:.2f} ± {100 * metrics['acc_std']:.2f}" if "acc_mean" in metrics else "n/a"
    print(f"{metrics['method']} on {metrics['dataset']} IPC {metrics['ipc']}: accuracy {acc} %, "
          f"{metrics['seconds_per_iteration']:.3f} s/iteration -> {args.out}")


def _evaluate(args, given: set) -> None:
    from .rundir import CHECKPOINT, CONFIG, LOG, METRICS

    one_run = len(args.paths) == 1 and any(os.path.exists(os.path.join(args.paths[0], name))  # complete or damaged
                                           for name in (CONFIG, LOG, CHECKPOINT, METRICS))
    if args.protocol or args.out or not one_run:  # any sets, under one declared protocol
        from .synset_files import evaluate_files

        res = evaluate_files(args.paths, args.out or "evaluation", _protocol(args), dataset_name=args.dataset,
                             data_root=args.data_root, device=resolve_device(args.device), progress=not args.quiet,
                             amp=args.amp or "none", threads=args.threads)
        print(res["text"])
        print(f"wrote {os.path.join(args.out or 'evaluation', 'evaluation.csv')}, protocol.json and evaluation.md")
        return
    from .distill.runner import evaluate_run

    res = evaluate_run(args.paths[0], model=args.model, num_nets=args.nets or 3, epochs=args.epochs,
                       progress=not args.quiet, data_root=args.data_root, device=args.device, amp=args.amp,
                       threads=args.threads)
    print(f"{res['model']}: {100 * res['acc_mean']:.2f} ± {100 * res['acc_std']:.2f} % over {len(res['accs'])} networks")


def _export(args, given: set) -> None:
    from .synset_files import export_run

    info = export_run(args.run_dir, args.out, data_root=args.data_root)
    print(f"wrote {info['images']} images to {args.out} (PNG class folders, synset.pt, README.md); the PNGs are "
          f"8-bit: largest pixel error {info['max_pixel_error']:.4f}, {100 * info['clipped']:.2f} % of pixels "
          f"clipped to [0, 1] (synset.pt holds the exact set)")


def _compare(args, given: set) -> None:
    from .compare import compare

    result = compare(args.run_dirs, args.out or ".", claims=args.claims, pairs=args.pair)
    print(result.text, end="")
    first, *rest = result.files
    print(f"wrote {first}" + (", " + ", ".join(os.path.basename(f) for f in rest[:-1]) if rest[:-1] else "")
          + (f" and {os.path.basename(rest[-1])}" if rest else ""))


def _plot(args, given: set) -> None:
    from .plots import poincare_report
    from .rundir import read_json

    _check_seed(args.seed)
    config = os.path.join(args.run_dir, "config.json")
    if os.path.isfile(os.path.join(args.run_dir, "synset.pt")):  # checked as `hddgeo evaluate` checks it
        DistillConfig.from_json(read_json(config), source=config)
    for path in poincare_report(args.run_dir, out_dir=args.out, seed=args.seed, per_class=args.per_class,
                                data_root=args.data_root, device=resolve_device(args.device)):
        print(f"wrote {path}")


def _centroids(args, given: set) -> None:
    from .analysis import class_features, compare_centroids
    from .data import load_dataset
    from .rundir import write_csv

    if not (args.k > 0):
        raise ValueError(f"k must be positive, got {args.k}")
    _check_seed(args.seed)
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


# each command's function: (parsed arguments, the flags given) -> None; it parses nothing more and prints the result
COMMANDS = {"distill": _distill, "evaluate": _evaluate, "export": _export, "demo": _run_spec, "study": _run_spec,
            "compare": _compare, "plot": _plot, "centroids": _centroids}


def _run(args, given: set) -> int:
    COMMANDS[args.command](args, given)
    return 0


def run_main(main, argv=None, prog: str = "", interrupted: str = "interrupted") -> int:
    """``main(argv)`` as a command (``hddgeo`` and every study script): its status (0 when it returns no integer); bad
    input (``ValueError``: a flag, a file; :class:`~hddgeo.errors.HddgeoError`: a study cell that holds another
    run, a run directory another process owns, a run that diverged), a folder that cannot be written or an
    optional package that is not installed (:func:`hddgeo.extras.missing_extra_message`) is one line on stderr
    and status 2."""
    prog = prog or os.path.basename(sys.argv[0])
    try:
        status = main(argv)
    except (HddgeoError, ValueError, FileNotFoundError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except ImportError as err:  # an optional package (an extra) that a command needs and is not installed
        msg = missing_extra_message(err)
        if msg is None:
            raise
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
    """Run the ``hddgeo`` command with ``argv`` (default ``sys.argv[1:]``) and return its exit status: 0 on
    success, 2 for bad input (one line on stderr, nothing written)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    status = run_main(lambda _: _run(args, _given(parser.commands[args.command], args)), prog="hddgeo",
                      interrupted="interrupted; a distill run can be continued with --resume")
    distributed.end_failed_rank(status)  # under torchrun, a failed rank leaves now (see there)
    from .distill.executors import stopped_by_interrupt

    if status == 130 and stopped_by_interrupt():
        # Ctrl-C killed a study's workers after its line was printed; the interpreter's exit would join the process
        # pools' manager threads, which can wait for ever on a dead worker's pipe: leave now (every file is written).
        # First the finalizers the exit would run at priority >= 0: they unlink the pools' semaphores, else
        # multiprocessing's resource tracker warns of leaked ones under the one line.  The queue-joining finalizers
        # (priority < 0) are the ones that can hang, and are skipped.
        from multiprocessing import util as mp_util

        mp_util._run_finalizers(0)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    return status


if __name__ == "__main__":
    sys.exit(main())
