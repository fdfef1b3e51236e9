"""One command that checks hddgeo on a CUDA GPU and times it, within a time budget (default 540 s).

    PYTHONPATH=$PWD python benchmarks/gpu_check.py --fashionmnist-root data/fashion-mnist

Steps, each timed, each in its own ``try`` (one failure does not lose the others) and each skipped with
the reason printed when it cannot run or the budget (``--budget-s``, checked before each step) is spent:

a. the CUDA test cases: ``pytest -q -k cuda tests`` in a subprocess, with a timeout; pass/fail counts
   (the whole output goes to ``pytest_cuda.txt``).
b. CPU-vs-device agreement in float64 of ``lift``, ``law_centroid``, ``karcher_mean`` and ``hdd_loss``
   (law and karcher): values and gradients w.r.t. the features, as the relative error
   ``|cpu - device| / |cpu|`` (Frobenius norms; target <= 1e-10), on random features (10 classes x 256 x
   2048 real, 10 x 10 x 2048 synthetic) whose norms are spread over [2, 20], so that about half of the
   lifts clip at ``max_norm`` 10 and the rest do not.
c. seconds per DM iteration of euclidean, hdd/law and hdd/karcher (``bench_iterations.bench``, the three
   interleaved), IPC 10, 256 real images per class, on Fashion-MNIST (random 1x28x28 tensors when its
   files are not found) and on random 3x32x32 (CIFAR-sized) tensors, and the ratios to euclidean
   (targets: hdd/law <= 1.05x, hdd/karcher <= 1.2x); the three again on a CIFAR-100-shaped case (100 classes of
   random 3x32x32 tensors, IPC 50, 256 real per class: what its peak memory is); then the same under ``--amp bf16`` for euclidean and
   hdd/law, and with ``--deterministic`` (torch's deterministic kernels) for euclidean and hdd/law on the first
   shape, to say what that flag costs.  Every timer is read after ``torch.cuda.synchronize()``.
d. in the time left: DM and DM+HDD (law; the paper's Fashion-MNIST IPC 10 settings: k 1, lambda 40,
   lr_img 1) on Fashion-MNIST, IPC 10, 20,000 iterations, 256 real images per class, final evaluation
   with 5 ConvNets of 1000 epochs (``run_distillation``).  The run lengths are estimated beforehand from
   step c's seconds per iteration and a short timed evaluation; when both runs do not fit, the
   evaluation epochs are lowered first (not below 300), then the iteration count, each with a printed
   note.  Prints the accuracies, the seconds per iteration and whether 20,000 DM iterations take at
   most 10 minutes.

``--tf32 auto|on|off`` (default auto: torch's own defaults, TF32 for convolutions and not for matmuls; ``off`` for
float32 parity with the CPU) is set for every step at the start, with cuBLAS's workspace setting for step c's
deterministic rows (torch reads it when cuBLAS first allocates its workspace); the table's ``settings`` row says
what they ran under, and the ``environment`` row what ran them (torch, CUDA, cuDNN, the GPU, the CPU model, hddgeo's
version and git commit).  On CUDA every row records ``torch.cuda.max_memory_allocated`` since the row before it
(``max_mem_gib``).

The last thing printed is a short table (step, check, status, value, target, met, seconds); the full
rows are in ``--out`` (default ``results/gpu_check/``): ``gpu_check.csv`` (with a ``detail`` column),
``table.txt``, ``bench_iterations.csv`` (step c's rows), ``pytest_cuda.txt`` and the two run directories
under ``runs/``.  A status is ``ok``, ``FAILED: <message>`` or ``skipped: <reason>``; ``met`` says whether a
value meets its target.  The exit status is 1 when a step FAILED, else 0.

``--quick`` shrinks everything (2 classes' worth of features and images, a few iterations, one network of
a few epochs, a few test images per class) so that ``--quick --device cpu`` runs in well under a minute on
a laptop CPU; it checks the script, not the library.

What a bare GPU machine needs besides a CUDA build of PyTorch (and torchvision)
--------------------------------------------------------------------------------
hddgeo is not installed there: run from the repository root with ``PYTHONPATH=$PWD`` (the script also
puts the repository root on ``sys.path`` itself; no ``pip install -e`` is needed).  Of hddgeo's
dependencies a typical CUDA PyTorch image lacks **geoopt** and **POT**; numpy, scipy, pandas, seaborn,
matplotlib, scikit-learn, tqdm, pyyaml (and pytest, hypothesis for step a) are usually there.  POT
(``import ot``) is only imported by GeoDM, so steps b-d run without it, but step a's GeoDM case
(``test_every_tensor_of_a_run_is_on_the_configured_device[cuda-geodm-euclidean]``) is skipped without it; its
wheel is about 33 MB, so it may be left behind when the transfer has to be small.  On a machine with pip and network
access, in the repository root (versions as installed in the development virtualenv; check with
``.venv/bin/pip show geoopt pot``)::

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl geoopt==0.5.1 pot==0.9.7.post1

(``--python-version`` is the GPU machine's Python; geoopt's wheel is pure Python, POT's is compiled.)
On the GPU machine, in the repository root::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD

The four Fashion-MNIST idx files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``, 30 MB together; Debian's
``dataset-fashion-mnist`` puts them in ``/usr/share/datasets/fashion-mnist``) must travel with the
repository: copy them into a folder of it that git ignores and pass ``--fashionmnist-root`` that folder.
Without them step c times random tensors of the same shape and step d is skipped.
"""

import argparse
import functools
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

STARTED = time.perf_counter()  # the budget counts from here, torch's import included

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # hddgeo importable from the repository root without pip install -e
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

STEPS = {"a": "CUDA tests", "b": "CPU-vs-device agreement", "c": "seconds per DM iteration",
         "d": "DM and DM+HDD distillation"}
AGREEMENT_TARGET = 1e-10
RATIO_TARGETS = {"hdd/law": 1.05, "hdd/karcher": 1.2}
FULL_ITERATIONS = 20000
TF32 = {"auto": None, "on": True, "off": False}  # --tf32 -> a run's tf32 field
DM_MINUTES = 10.0


@dataclass
class Sizes:
    """Everything that ``--quick`` shrinks."""

    agree: tuple = (10, 256, 10, 2048)   # classes, real per class, synthetic per class, feature dim
    bench_classes: int = 10
    bench_per_class: int = 300           # random data's images per class (>= the real batch)
    bench_ipc: int = 10
    bench_batch_real: int = 256
    bench_iterations: int = 20
    bench_warmup: int = 2
    cifar100: tuple = (100, 256, 50, 256, 5)  # the CIFAR-100-shaped case: classes, images/class, IPC, real/class, its
                                              # iterations (random 3x32x32 data; what matters is its peak memory)
    ipc: int = 10
    batch_real: int = 256
    iterations: int = FULL_ITERATIONS
    min_iterations: int = 500
    eval_nets: int = 5
    eval_epochs: int = 1000
    min_eval_epochs: int = 300
    eval_test_per_class: int = 0         # 0: the whole test set
    probe_epochs: int = 20               # epochs of the timed evaluation probe
    tests_timeout_s: float = 150.0
    run_startup_s: float = 15.0          # per run: loading the data, writing the run directory, the grid
    overhead: float = 1.15               # the runner's seconds per iteration over the benchmark's
    need_s: tuple = (30.0, 20.0, 20.0, 60.0)  # least budget each step a-d needs to be started
    margin_s: float = 20.0               # kept back: the table at the end, estimates that were short


QUICK = Sizes(agree=(2, 16, 3, 64), bench_classes=2, bench_per_class=20, bench_ipc=2, bench_batch_real=16,
              bench_iterations=2, bench_warmup=1, cifar100=(3, 6, 2, 4, 1), ipc=1, batch_real=8, iterations=3, min_iterations=2,
              eval_nets=1, eval_epochs=2, min_eval_epochs=1, eval_test_per_class=5, probe_epochs=1,
              tests_timeout_s=120.0, run_startup_s=1.0, need_s=(5.0, 1.0, 1.0, 2.0), margin_s=1.0)


class Clock:
    """The budget: seconds since the start and seconds left."""

    def __init__(self, budget_s: float, start: float = None):
        self.start, self.budget = (time.perf_counter() if start is None else start), float(budget_s)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()


class Report:
    """The rows of the table; each is printed as it is added."""

    COLUMNS = ["step", "check", "status", "value", "target", "met", "seconds", "max_mem_gib", "detail"]

    def __init__(self, device=None):
        self.rows = []
        self.device = device  # on CUDA each row records the peak memory since the row before it

    def peak_gib(self):
        """``torch.cuda.max_memory_allocated`` in GiB since the previous row (whose peak is then reset), or ``None``
        off CUDA."""
        if self.device is None or self.device.type != "cuda":
            return None
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30
        torch.cuda.reset_peak_memory_stats(self.device)
        return round(peak, 3)

    def add(self, step, check, status="ok", value="", target="", met="", seconds=None, detail=""):
        row = {"step": step, "check": check, "status": status, "value": value, "target": target, "met": met,
               "seconds": None if seconds is None else round(float(seconds), 3), "max_mem_gib": self.peak_gib(),
               "detail": detail}
        self.rows.append(row)
        bits = [f"[{step}] {check}: {status}"] + [x for x in (value, f"target {target}" if target else "",
                                                            f"met {met}" if met else "") if x]
        print("  ".join(bits) + (f"  ({seconds:.1f} s)" if seconds is not None else "")
              + (f"  [peak {row['max_mem_gib']:.2f} GiB]" if row["max_mem_gib"] is not None else ""), flush=True)

    def failed(self) -> bool:
        return any(r["status"].startswith("FAILED") for r in self.rows)

    def table(self, width=64) -> str:
        cols = self.COLUMNS[:-1]
        cells = [[_cut(_cell(r[c]), width if c in ("status", "value") else 40) for c in cols] for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
        line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
        return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(row) for row in cells])


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 0.1 or value == 0 else f"{value:.3f}"
    return str(value)


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _error(err: BaseException) -> str:
    return f"FAILED: {type(err).__name__}: {' '.join(str(err).split())[:200]}"


def _fmt_seconds(s: float) -> str:
    return f"{s * 1e3:.2f} ms/it" if s < 1 else f"{s:.3f} s/it"


@functools.lru_cache(maxsize=None)
def load_bench():
    """benchmarks/bench_iterations.py as a module (benchmarks/ is no package), loaded once."""
    spec = importlib.util.spec_from_file_location("hddgeo_bench_iterations", Path(__file__).with_name("bench_iterations.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def environment(device) -> str:
    import geoopt

    from hddgeo.device import provenance

    prov = provenance(device)
    bits = [f"python {sys.version.split()[0]}", f"torch {prov['torch']}", f"geoopt {geoopt.__version__}",
            f"hddgeo {prov['hddgeo']} (commit {(prov['git_commit'] or 'unknown')[:12]})", f"CPU {prov['cpu']}"]
    if device is not None and device.type == "cuda":
        bits += [f"CUDA {prov['cuda']}", f"cuDNN {prov['cudnn']}", f"{device}: {prov['gpu']}"]
    else:
        bits += [f"device {device or 'none'}", f"{torch.get_num_threads()} CPU threads"]
    return ", ".join(bits + [settings()])


def settings() -> str:
    """The float32 and determinism settings every step ran under (set at the start, before any CUDA work)."""
    from hddgeo.device import tf32_settings

    tf32 = tf32_settings()
    return (f"TF32 conv {'on' if tf32['tf32_conv'] else 'off'}, TF32 matmul {'on' if tf32['tf32_matmul'] else 'off'}; "
            f"CUBLAS_WORKSPACE_CONFIG {os.environ.get('CUBLAS_WORKSPACE_CONFIG', 'unset')}; deterministic kernels "
            f"only in step c's 'deterministic' rows (step d's runs: off)")


# ------------------------------------------------------------------------------------------------ a
def step_tests(report: Report, clock: Clock, sizes: Sizes, out: Path) -> None:
    """``pytest -q -k cuda tests`` in its own process group, killed at the timeout."""
    timeout = max(10.0, min(sizes.tests_timeout_s, clock.left() - sum(sizes.need_s[1:])))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-k", "cuda", "--continue-on-collection-errors",
           "-p", "no:cacheprovider", "tests"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)  # the pytest process and whatever it started
        output, _ = proc.communicate()
    seconds = time.perf_counter() - t0
    (out / "pytest_cuda.txt").write_text(output)
    counts = {k: 0 for k in ("passed", "failed", "skipped", "errors", "deselected")}
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output.splitlines()[-1] if output else ""):
        counts["errors" if word.startswith("error") else word] = int(n)
    value = f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped, {counts['errors']} errors"
    bad = [ln for ln in output.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    detail = " | ".join(bad[:10])
    if timed_out:
        status = f"FAILED: timed out after {timeout:.0f} s (counts from the partial output)"
    elif proc.returncode == 5:
        status = "skipped: no test matches -k cuda"
    elif proc.returncode == 0:
        status = "ok"
    else:
        status = f"FAILED: pytest exit status {proc.returncode}; {bad[0] if bad else 'see pytest_cuda.txt'}"
    report.add("a", "pytest -q -k cuda tests", status, value, "0 failed, 0 errors",
               "yes" if counts["failed"] == counts["errors"] == 0 and not timed_out else "NO", seconds, detail)


# ------------------------------------------------------------------------------------------------ b
def agreement_features(classes, n, m, d, seed=0):
    """Random float64 features whose norms are uniform on [2, 20]: about half clip at max_norm 10."""
    g = torch.Generator().manual_seed(seed)

    def draw(count):
        v = torch.randn(classes, count, d, generator=g, dtype=torch.float64)
        r = torch.empty(classes, count, 1, dtype=torch.float64).uniform_(2.0, 20.0, generator=g)
        return v / v.norm(dim=-1, keepdim=True) * r

    return draw(n), draw(m)


def relative_error(ref: torch.Tensor, got: torch.Tensor) -> float:
    ref, got = ref.double().cpu(), got.double().cpu()
    scale = float(ref.norm())
    return float((ref - got).norm()) / (scale if scale > 0 else 1.0)


def _evaluate(fn, v_real, v_syn, device):
    """``(value, grad real, grad syn)`` of ``fn`` on ``device``; the cotangent of a non-scalar value is drawn on
    the CPU from a fixed seed, so both devices back-propagate the same one."""
    from hddgeo.geometry.lorentz import plain

    # each pass makes its own leaves: the caller's tensors are never marked, and no pass shares a tensor (or its
    # .grad) with another ("cpu" to "cpu" would otherwise hand back the caller's own tensor)
    vr = v_real.detach().to(device, copy=True).requires_grad_(True)
    vs = v_syn.detach().to(device, copy=True).requires_grad_(True)
    value = plain(fn(vr, vs))
    if value.dim() == 0:
        value.backward()
    else:
        cot = torch.randn(value.shape, generator=torch.Generator().manual_seed(1), dtype=value.dtype)
        (value * cot.to(device)).sum().backward()
    grads = [g.detach().to("cpu", copy=True) if g is not None else None for g in (vr.grad, vs.grad)]
    return value.detach().to("cpu", copy=True), grads[0], grads[1]


def step_agreement(report: Report, sizes: Sizes, device) -> None:
    import geoopt

    from hddgeo import lift
    from hddgeo.geometry.centroids import karcher_mean, law_centroid
    from hddgeo.losses import hdd_loss

    M = geoopt.Lorentz(k=1.0)
    C, n, m, d = sizes.agree
    v_real, v_syn = agreement_features(C, n, m, d)
    clipped = float(torch.cat([v_real.norm(dim=-1).flatten(), v_syn.norm(dim=-1).flatten()]).gt(10.0).double().mean())
    where = f"{C}x{n}x{d} real, {C}x{m}x{d} syn, {clipped:.0%} of lifts clipped at max_norm 10; cpu vs {device}"
    cases = [
        ("lift", lambda vr, vs: lift(vr, M, max_norm=10.0)),
        ("law_centroid", lambda vr, vs: law_centroid(lift(vr, M, max_norm=10.0), M)),
        ("karcher_mean", lambda vr, vs: karcher_mean(lift(vr, M, max_norm=10.0), M)),
        ("hdd_loss law", lambda vr, vs: hdd_loss(vr, vs, M, scale=40.0, centroid="law", max_norm=10.0)),
        ("hdd_loss karcher", lambda vr, vs: hdd_loss(vr, vs, M, scale=40.0, centroid="karcher", max_norm=10.0)),
    ]
    target = f"<= {AGREEMENT_TARGET:.0e}"
    for name, fn in cases:
        t0 = time.perf_counter()
        try:
            ref = _evaluate(fn, v_real, v_syn, torch.device("cpu"))
            got = _evaluate(fn, v_real, v_syn, device)
            seconds = time.perf_counter() - t0
            value_err = relative_error(ref[0], got[0])
            grad_errs = {w: relative_error(r, g) for w, r, g in (("real", ref[1], got[1]), ("syn", ref[2], got[2]))
                         if r is not None}
            grad_err = max(grad_errs.values())
            report.add("b", f"{name} value", "ok", f"rel err {value_err:.2e}", target,
                       "yes" if value_err <= AGREEMENT_TARGET else "NO", seconds,
                       f"{where}; value shape {tuple(ref[0].shape)}")
            report.add("b", f"{name} grad", "ok", f"rel err {grad_err:.2e}", target,
                       "yes" if grad_err <= AGREEMENT_TARGET else "NO", None,
                       f"{where}; gradient w.r.t. the {' and '.join(grad_errs)} features: "
                       + ", ".join(f"{w} {e:.3e}" for w, e in grad_errs.items()))
        except Exception as err:  # noqa: BLE001 - one function failing must not lose the others
            report.add("b", name, _error(err), seconds=time.perf_counter() - t0, detail=traceback.format_exc()[-1500:])


# ------------------------------------------------------------------------------------------------ c
def subset_classes(dataset, classes: int, per_class: int):
    """The first ``per_class`` train images of each of the first ``classes`` classes."""
    from hddgeo.data.datasets import ImageDataset

    keep = torch.cat([torch.nonzero(dataset.train_labels == c).flatten()[:per_class] for c in range(classes)])
    test = torch.nonzero(dataset.test_labels < classes).flatten()
    return ImageDataset(dataset.name, dataset.train_images[keep], dataset.train_labels[keep],
                        dataset.test_images[test], dataset.test_labels[test], classes,
                        list(dataset.class_names[:classes]), dataset.mean, dataset.std)


def bench_datasets(sizes: Sizes, fashionmnist):
    """``[(label, dataset)]``: Fashion-MNIST (or random tensors of its shape) and random CIFAR-sized tensors."""
    bench = load_bench()
    if fashionmnist is not None:
        fm = fashionmnist
        if sizes.bench_classes < fm.num_classes:
            fm = subset_classes(fm, sizes.bench_classes, sizes.bench_per_class)
        fm_label = "fashionmnist"
    else:
        fm = bench.random_images((1, 28, 28), "random-fashionmnist", sizes.bench_per_class, sizes.bench_classes)
        fm_label = "random 1x28x28"
    cifar = bench.random_images((3, 32, 32), "random-cifar", sizes.bench_per_class, sizes.bench_classes)
    return bench, [(fm_label, fm), ("random 3x32x32", cifar)]


def step_timing(report: Report, clock: Clock, sizes: Sizes, device, fashionmnist, out: Path) -> dict:
    """Step c; returns ``{(dataset label, amp, matcher): seconds per iteration}``."""
    bench, datasets = bench_datasets(sizes, fashionmnist)
    measured, all_rows, last = {}, [], 0.0
    from hddgeo.device import deterministic

    # fp32 and bf16 on both shapes; then the cost of --deterministic, on the first shape only
    classes, per_class, c_ipc, c_real, c_iters = sizes.cifar100
    cifar100 = [(f"random CIFAR-100 shape ({classes} classes, IPC {c_ipc})",
                 bench.random_images((3, 32, 32), "random-cifar100", per_class, classes))]
    passes = [("none", bench.MATCHERS, False, datasets), ("none", bench.MATCHERS, False, cifar100),
              ("bf16", bench.MATCHERS[:2], False, datasets), ("none", bench.MATCHERS[:2], True, datasets[:1])]
    for amp, matchers, det, pass_datasets in passes:
        for label, dataset in pass_datasets:
            big = pass_datasets is cifar100
            ipc, batch_real, iterations = ((c_ipc, c_real, c_iters) if big else
                                           (sizes.bench_ipc, sizes.bench_batch_real, sizes.bench_iterations))
            tag = f"{label}" + (" bf16" if amp != "none" else "") + (" deterministic" if det else "")
            # a pass is left out rather than eating into step d: the bf16 passes leave d its share, and none
            # starts that would not end in time if it took 1.5x the last one
            reserve = sizes.need_s[3] + sizes.margin_s if (amp != "none" or det) else sizes.margin_s
            if clock.left() < reserve + max(sizes.need_s[2] / 2, 1.5 * last):
                report.add("c", tag, f"skipped: {clock.left():.0f} s of the budget left"
                                     + (" (kept for step d)" if (amp != "none" or det) else ""))
                continue
            t0 = time.perf_counter()
            try:
                with deterministic(det):
                    rows = bench.bench(dataset, ipc, iterations, batch_real, warmup=min(sizes.bench_warmup, 1) if big
                                       else sizes.bench_warmup, device=device, amp=amp, matchers=matchers)
            except Exception as err:  # noqa: BLE001
                report.add("c", tag, _error(err), seconds=time.perf_counter() - t0,
                           detail=traceback.format_exc()[-1500:])
                continue
            seconds = last = time.perf_counter() - t0
            for i, r in enumerate(rows):
                r["label"], r["deterministic"] = label, det
                all_rows.append(r)
                measured[(label, amp + ("-deterministic" if det else ""), r["matcher"])] = r["seconds_per_iteration"]
                ratio = r["ratio_to_euclidean"]
                goal = None if det else RATIO_TARGETS.get(r["matcher"])
                value = _fmt_seconds(r["seconds_per_iteration"]) + ("" if r["matcher"] == "euclidean" else f", {ratio:.3f}x")
                plain = measured.get((label, amp, r["matcher"]))
                if det and plain:  # what --deterministic costs: against the same step without it
                    value += f"; {r['seconds_per_iteration'] / plain:.3f}x the non-deterministic step"
                report.add("c", f"{tag} {r['matcher']}", "ok", value, f"<= {goal}x" if goal else "",
                           ("yes" if ratio <= goal else "NO") if goal else "", seconds if i == 0 else None,
                           f"IPC {r['ipc']}, {r['batch_real']} real/class, {dataset.num_classes} classes, median of "
                           f"{iterations} after the warm-up, {r['device']}, amp {amp}; "
                           f"conv floor {r['floor_seconds'] * 1e3:.2f} ms ({r['ratio_to_floor']:.1f}x), "
                           f"fp32 matmul {r['matmul_gflops']:.0f} GFLOP/s"
                           + f" (TF32 {'on' if r['tf32_matmul'] else 'off'})")
    if all_rows:
        pd.DataFrame(all_rows).to_csv(out / "bench_iterations.csv", index=False)
    return measured


# ------------------------------------------------------------------------------------------------ d
def distill_configs(sizes: Sizes, device: str, data_root, iterations: int, epochs: int):
    from hddgeo.distill import DistillConfig, paper_preset

    paper = paper_preset("dm", "fashionmnist", 10)  # k 1, lambda 40, lr_img 1, 20,000 iterations
    common = dict(dataset="fashionmnist", data_root=data_root, ipc=sizes.ipc, method="dm", iterations=iterations,
                  batch_real=sizes.batch_real, lr_img=paper["lr_img"], final_eval_nets=sizes.eval_nets,
                  final_eval_epochs=epochs, eval_test_per_class=sizes.eval_test_per_class, checkpoint_every=0,
                  device=device, tf32=tf32_field())  # as the check's --tf32 set it
    return [("DM", DistillConfig(matcher="euclidean", **common)),
            ("DM+HDD law", DistillConfig(matcher="hdd", centroid="law", k=paper["k"], scale=paper["scale"], **common))]


def tf32_field():
    """The run field that reproduces the TF32 settings the check runs under (None: torch's defaults)."""
    from hddgeo.device import _TORCH_TF32, tf32_settings

    now = tuple(tf32_settings().values())
    return None if now == _TORCH_TF32 else now[0]


def probe_evaluation(sizes: Sizes, device, fashionmnist) -> tuple:
    """``(fixed seconds, seconds per epoch)`` of training and testing one evaluation network on a
    real-initialised IPC set: one network of 1 epoch, then one of ``1 + probe_epochs``."""
    from hddgeo.data import ClassPool
    from hddgeo.distill.runner import DistillConfig, eval_augment
    from hddgeo.evaluate import evaluate_synset

    ds = fashionmnist.test_subset(sizes.eval_test_per_class) if sizes.eval_test_per_class else fashionmnist
    images, labels = ClassPool(ds.train_images, ds.train_labels, ds.num_classes).real_init(
        sizes.ipc, torch.Generator().manual_seed(0))
    augment = eval_augment(DistillConfig())
    times = []
    for epochs in (1, 1 + sizes.probe_epochs):
        load_bench()._sync(device)
        t0 = time.perf_counter()
        evaluate_synset(images, labels, ds.test_images, ds.test_labels, ds.num_classes, num_nets=1, epochs=epochs,
                        augment=augment, device=device, progress=False)
        load_bench()._sync(device)
        times.append(time.perf_counter() - t0)
    per_epoch = max(times[1] - times[0], 0.0) / sizes.probe_epochs
    return max(times[0] - per_epoch, 0.0), per_epoch


def plan_runs(left: float, spi: list, eval_cost, sizes: Sizes, overhead: float = None, startup: float = None) -> tuple:
    """``(iterations, epochs, notes)`` of runs with benchmark seconds per iteration ``spi`` (one entry per run)
    that fit in ``left`` seconds; ``eval_cost(epochs)`` is one run's final evaluation, ``overhead`` the runner's
    seconds per iteration over the benchmark's and ``startup`` a run's fixed seconds (defaults: ``sizes``').

    The full iterations with fewer evaluation epochs (not below ``min_eval_epochs``) when that is enough;
    else fewer iterations (whole hundreds, not below ``min_iterations``) with the full evaluation, or failing
    that with the shortest; ``(0, 0, notes)`` when nothing fits."""
    overhead = sizes.overhead if overhead is None else overhead
    startup = sizes.run_startup_s if startup is None else startup
    runs, rate = len(spi), sum(spi) * overhead

    def need(iters, epochs):
        return runs * startup + iters * rate + runs * eval_cost(epochs)

    def epochs_note(epochs):
        return [f"final evaluation shortened to {epochs} epochs (not {sizes.eval_epochs}) to fit the budget"]

    full_it, full_ep = sizes.iterations, sizes.eval_epochs
    if need(full_it, full_ep) <= left:
        return full_it, full_ep, []
    epochs = full_ep
    while epochs > sizes.min_eval_epochs and need(full_it, epochs) > left:
        epochs = max(sizes.min_eval_epochs, int(epochs * 0.9) // 10 * 10)
    if need(full_it, epochs) <= left:
        return full_it, epochs, epochs_note(epochs)
    for epochs in (full_ep, sizes.min_eval_epochs):
        room = left - runs * startup - runs * eval_cost(epochs)
        iters = max(int(room / rate), 0)
        iters = iters // 100 * 100 if full_it >= 1000 else iters
        if iters >= sizes.min_iterations:
            return iters, epochs, (epochs_note(epochs) if epochs < full_ep else []) + [
                f"iterations shortened to {iters} (not {full_it}) to fit the budget"]
    return 0, 0, [f"{left:.0f} s left: not enough for {sizes.min_iterations} iterations of each run and "
                  f"{sizes.min_eval_epochs}-epoch evaluations ({need(sizes.min_iterations, sizes.min_eval_epochs):.0f} s)"]


def step_distill(report: Report, clock: Clock, sizes: Sizes, device, fashionmnist, data_root, measured: dict,
                 out: Path) -> None:
    from hddgeo.distill import run_distillation

    if fashionmnist is None:
        report.add("d", STEPS["d"], "skipped: Fashion-MNIST files not found (pass --fashionmnist-root)")
        return
    t0 = time.perf_counter()
    spi = [measured.get(("fashionmnist", "none", m)) for m in ("euclidean", "hdd/law")]
    source = "step c"
    if None in spi:  # step c did not run: measure the two here, briefly
        bench, datasets = bench_datasets(sizes, fashionmnist)
        rows = bench.bench(datasets[0][1], sizes.bench_ipc, max(2, sizes.bench_iterations // 4), sizes.bench_batch_real,
                           warmup=1, device=device, matchers=bench.MATCHERS[:2])
        spi = [r["seconds_per_iteration"] for r in rows]
        source = "a short benchmark"
    fixed, per_epoch = probe_evaluation(sizes, device, fashionmnist)
    eval_cost = lambda epochs: sizes.eval_nets * (fixed + epochs * per_epoch)  # noqa: E731
    iters, epochs, notes = plan_runs(clock.left() - sizes.margin_s, spi, eval_cost, sizes)
    plan = (f"seconds/iteration from {source}: DM {_fmt_seconds(spi[0])}, DM+HDD {_fmt_seconds(spi[1])}; one "
            f"evaluation network {fixed:.1f} s + {per_epoch * 1e3:.1f} ms/epoch")
    print(f"[d] plan: {iters} iterations, {sizes.eval_nets} nets x {epochs} epochs; {plan}", flush=True)
    for note in notes:
        print(f"[d] note: {note}", flush=True)
    report.add("d", "plan", "ok" if iters else f"skipped: {notes[-1]}",
               f"{iters} it, {sizes.eval_nets} nets x {epochs} epochs" if iters else "",
               f"{sizes.iterations} it, {sizes.eval_nets} x {sizes.eval_epochs} epochs",
               "yes" if (iters, epochs) == (sizes.iterations, sizes.eval_epochs) else "NO",
               time.perf_counter() - t0, "; ".join([plan] + notes))
    if not iters:
        return
    runs_dir = out / "runs"
    results, overhead, startup = {}, None, None
    for i, (name, cfg) in enumerate(distill_configs(sizes, str(device), data_root, iters, epochs)):
        if i > 0 and overhead is not None:  # re-plan the second run with what the first one really took
            left = clock.left() - sizes.margin_s
            need = startup + iters * spi[i] * overhead + eval_cost(epochs)
            if need > left:
                it2, ep2, notes2 = plan_runs(left, [spi[i]], eval_cost, sizes, overhead, startup)
                if not it2:
                    report.add("d", name, f"skipped: {notes2[-1]}")
                    continue
                print(f"[d] note: {name} shortened to {it2} iterations, {ep2} epochs (not {iters}, {epochs}): the "
                      f"first run took longer than estimated (runner/benchmark {overhead:.2f}x)", flush=True)
                cfg = distill_configs(sizes, str(device), data_root, it2, ep2)[i][1]
        run_dir = runs_dir / name.lower().replace("+", "_").replace(" ", "_")
        if (run_dir / "config.json").exists():  # this script's own run directory from an earlier check
            shutil.rmtree(run_dir)
        print(f"[d] {name}: {cfg.iterations} iterations, IPC {cfg.ipc}, {cfg.batch_real} real/class, "
              f"{cfg.final_eval_nets} nets x {cfg.final_eval_epochs} epochs -> {run_dir}", flush=True)
        t1 = time.perf_counter()
        try:
            metrics = run_distillation(cfg, str(run_dir), progress=False)
        except Exception as err:  # noqa: BLE001
            report.add("d", name, _error(err), seconds=time.perf_counter() - t1, detail=traceback.format_exc()[-1500:])
            continue
        seconds = time.perf_counter() - t1
        results[name] = metrics
        if i == 0:  # what the runner really costs over the benchmark, and beside its iterations
            overhead = metrics["seconds_per_iteration"] / spi[0]
            startup = max(seconds - metrics["seconds_per_iteration"] * cfg.iterations - eval_cost(cfg.final_eval_epochs), 0.0)
        shortened = cfg.iterations < sizes.iterations or cfg.final_eval_epochs < sizes.eval_epochs
        report.add("d", f"{name} accuracy", "ok",
                   f"{metrics['acc_mean']:.4f} +- {metrics['acc_std']:.4f}",
                   "", "", seconds,
                   f"{cfg.iterations} iterations, {cfg.final_eval_nets} nets x {cfg.final_eval_epochs} epochs"
                   + (" (shortened)" if shortened else "") + f"; accs {metrics['accs']}; {run_dir}")
        spi_run = metrics["seconds_per_iteration"]
        report.add("d", f"{name} seconds/iteration", "ok", _fmt_seconds(spi_run), "", "", None,
                   f"mean over {cfg.iterations} iterations (runner's per-iteration timer, read after the loss "
                   f"and image checks came back from the device)")
        if name == "DM":
            total = spi_run * FULL_ITERATIONS
            how = "measured" if cfg.iterations == FULL_ITERATIONS else f"projected from {cfg.iterations}"
            report.add("d", f"{FULL_ITERATIONS} DM iterations", "ok", f"{total:.0f} s ({how})",
                       f"<= {DM_MINUTES * 60:.0f} s", "yes" if total <= DM_MINUTES * 60 else "NO", None,
                       f"{FULL_ITERATIONS} x {spi_run:.5f} s")
    if len(results) == 2:
        dm, hdd = results["DM"], results["DM+HDD law"]
        report.add("d", "DM+HDD minus DM", "ok", f"{hdd['acc_mean'] - dm['acc_mean']:+.4f} accuracy, "
                   f"{hdd['seconds_per_iteration'] / dm['seconds_per_iteration']:.3f}x time/iteration")


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, cpu (a smoke run) or auto")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (2 classes' worth, a few iterations, one small evaluation): checks the script")
    p.add_argument("--fashionmnist-root", default=None,
                   help="folder with the four Fashion-MNIST idx .gz files (default: Debian's "
                        "/usr/share/datasets/fashion-mnist)")
    p.add_argument("--out", default="results/gpu_check", help="folder of the CSV, the table and the runs")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="seconds the whole check may take (checked before each step; step d fits itself in)")
    p.add_argument("--skip-tests", action="store_true", help="leave out step a (pytest -k cuda)")
    p.add_argument("--tf32", default="auto", choices=["auto", "on", "off"],
                   help="TF32 for float32 CUDA work in every step, a run's tf32 field: auto (default; torch's: "
                        "convolutions in TF32, matmuls not), on (both), off (neither: float32 as on the CPU)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    clock = Clock(args.budget_s, STARTED if __name__ == "__main__" else None)
    sizes = QUICK if args.quick else Sizes()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report()

    from hddgeo.data import load_dataset
    from hddgeo.device import configure_process, resolve_device

    # first, before this process's first cuBLAS call (torch reads the workspace setting when cuBLAS allocates its
    # workspace, not when CUDA starts): cuBLAS's setting for step c's deterministic rows, and TF32 for every step.
    # Resolving the device starts CUDA; that is fine.
    configure_process(deterministic_kernels=True, tf32=TF32[args.tf32])
    try:
        device = resolve_device(args.device)
        no_device = None
    except ValueError as err:
        device, no_device = None, str(err)
    report.device = device
    env = environment(device)
    print(f"gpu_check: {env}; budget {args.budget_s:.0f} s{' (quick sizes)' if args.quick else ''}", flush=True)
    report.add("-", "environment", "ok" if device is not None else f"FAILED: {no_device}", str(device or ""), detail=env)
    report.add("-", "settings", "ok", settings())

    def run(step, fn):
        if clock.left() < sizes.need_s["abcd".index(step)]:
            report.add(step, STEPS[step], f"skipped: budget spent ({clock.left():.0f} s left, the step needs "
                                          f"about {sizes.need_s['abcd'.index(step)]:.0f} s)")
            return None
        print(f"[{step}] {STEPS[step]} ...", flush=True)
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - a failed step must not lose the others
            report.add(step, STEPS[step], _error(err), seconds=time.perf_counter() - t0,
                       detail=traceback.format_exc()[-1500:])
            return None

    if args.skip_tests:
        report.add("a", STEPS["a"], "skipped: --skip-tests")
    else:
        run("a", lambda: step_tests(report, clock, sizes, out))

    fashionmnist, measured = None, {}
    if device is None:
        for step in "bcd":
            report.add(step, STEPS[step], f"skipped: no device {args.device}")
    else:
        try:
            fashionmnist = load_dataset("fashionmnist", data_root=args.fashionmnist_root)
        except (FileNotFoundError, ValueError, OSError) as err:
            print(f"Fashion-MNIST not loaded ({str(err).splitlines()[0][:160]}): step c times random 1x28x28 "
                  f"tensors, step d is skipped", flush=True)
        run("b", lambda: step_agreement(report, sizes, device))
        measured = run("c", lambda: step_timing(report, clock, sizes, device, fashionmnist, out)) or {}
        run("d", lambda: step_distill(report, clock, sizes, device, fashionmnist, args.fashionmnist_root, measured,
                                      out))

    df = pd.DataFrame(report.rows, columns=Report.COLUMNS)
    df.to_csv(out / "gpu_check.csv", index=False)
    table = report.table()
    footer = (f"total {clock.elapsed():.0f} s of a {args.budget_s:.0f} s budget; "
              f"{'some step FAILED' if report.failed() else 'no step failed'}; "
              f"full rows: {out / 'gpu_check.csv'}")
    (out / "table.txt").write_text(f"{env}\n\n{table}\n\n{footer}\n")
    with open(out / "summary.json", "w") as fh:
        json.dump({"environment": env, "seconds": clock.elapsed(), "failed": report.failed()}, fh)
    print(f"\n{env}\n{table}\n{footer}", flush=True)
    return 1 if report.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
