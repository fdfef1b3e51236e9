"""Distilled sets as files: read the layouts other code saves, write one that other code loads.

Four layouts are read, all as data (``.pt`` files with ``weights_only=True``, images with Pillow; nothing in
them is run):

* ``run``: an hddgeo run directory (``config.json`` + ``synset.pt``);
* ``reference``: the ``.pt`` that the official DM-HDD / IDM-HDD scripts and DatasetCondensation save,
  ``{"data": [[image_syn, label_syn], ...], "accs_all_exps": ...}``, one set per experiment;
* ``tensors``: a ``.pt`` holding ``{"images": (N, C, H, W), "labels": (N,)}``;
* ``imagefolder``: one sub-folder per class holding image files (torchvision's ``ImageFolder`` layout); a
  ``synset.pt`` beside the folders (what :func:`export_imagefolder` writes) gives the exact float images.

Tensor layouts hold images in the dataset's normalised space (what the reference code and hddgeo train on);
image files hold pixels in [0, 1], normalised here with the dataset's mean and std.  Every set is checked
against the dataset before anything is evaluated: four dimensions, the dataset's channels and size, finite
values, integer labels of its classes; a failure is one ``ValueError`` naming the file.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional

import torch

from hddgeo.rundir import load_tensors, read_json, save_tensors, write_file, write_text

LAYOUTS = ("run", "reference", "tensors", "imagefolder")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MAX_IMAGES = 200_000  # per set: far beyond any distilled set (CIFAR-100 at IPC 50 is 5,000)
MAX_FILES = 200_000   # entries an image folder may hold before reading stops


@dataclass
class LoadedSet:
    """One synthetic set read from a file: ``images`` ``(N, C, H, W)`` float32 in the dataset's normalised space,
    ``labels`` ``(N,)`` int64; ``name`` labels it in tables, ``meta`` holds what the file says of its origin."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    source: str
    layout: str
    meta: dict = field(default_factory=dict)


def detect_layout(path: str) -> str:
    """The layout of ``path`` (see the module doc); ``ValueError`` naming it when it is none of them."""
    if os.path.islink(path):
        raise ValueError(f"{path} is a symbolic link; name the file or folder itself")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(os.path.join(path, "synset.pt")):
            return "run"
        return "imagefolder"
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist")
    if not path.endswith(".pt"):
        raise ValueError(f"{path}: not a synthetic set (a run directory, a .pt file or an image folder)")
    return "tensors"  # or reference: told apart by the contents


def load_sets(path: str, dataset, name: Optional[str] = None) -> list[LoadedSet]:
    """Every synthetic set in ``path`` (a reference ``.pt`` holds one per experiment), checked against
    ``dataset`` (an :class:`hddgeo.data.ImageDataset`)."""
    layout = detect_layout(path)
    base = name or os.path.basename(os.path.normpath(path))
    if layout == "run":
        state = load_tensors(os.path.join(path, "synset.pt"), "synthetic set")
        cfg = read_json(os.path.join(path, "config.json"))
        if not isinstance(cfg, dict):
            raise ValueError(f"{os.path.join(path, 'config.json')} is not a JSON object")
        images, labels = _entry(state, ("images", "train_labels"), path)
        from hddgeo.labels import method_label

        meta = {k: cfg.get(k) for k in ("dataset", "method", "matcher", "centroid", "k", "scale", "max_norm", "ipc",
                                         "iterations", "seed", "seed_scheme", "tag") if k in cfg}
        meta["method_label"] = method_label(str(cfg.get("method", "?")), str(cfg.get("matcher", "euclidean")),
                                            str(cfg.get("centroid", "")), str(cfg.get("tag", "")))
        if meta.get("dataset") not in (None, dataset.name):
            raise ValueError(f"{path} was distilled from {meta['dataset']}, not {dataset.name}; name the dataset it "
                             f"was distilled from")
        return [LoadedSet(base, *_check(images, labels, dataset, path), path, layout, meta)]
    if layout == "imagefolder":
        images, labels = _read_imagefolder(path, dataset)
        return [LoadedSet(base, images, labels, path, layout)]
    blob = load_tensors(path, "synthetic-set file")
    if "data" in blob:
        data = blob["data"]
        if not isinstance(data, (list, tuple)) or not data:
            raise ValueError(f"{path}: 'data' must be a non-empty list of [images, labels] pairs (one per experiment)")
        out = []
        for i, pair in enumerate(data):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"{path}: data[{i}] must be an [images, labels] pair")
            images, labels = _check(pair[0], pair[1], dataset, f"{path} data[{i}]")
            out.append(LoadedSet(f"{base}#{i}" if len(data) > 1 else base, images, labels, path, "reference",
                                 {"experiment": i, "method_label": base}))  # experiments pool as seeds
        return out
    images, labels = _entry(blob, ("images", "labels"), path)
    return [LoadedSet(base, *_check(images, labels, dataset, path), path, "tensors")]


def _entry(blob: dict, keys: tuple, where: str):
    missing = [k for k in keys if k not in blob]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(map(repr, missing))}: a synthetic set holds "
                         f"{' and '.join(map(repr, keys))} (or the reference layout's 'data')")
    return blob[keys[0]], blob[keys[1]]


def _check(images, labels, dataset, where: str):
    """``(images float32, labels int64)`` of one set, checked against ``dataset``; ``ValueError`` naming ``where``."""
    if not torch.is_tensor(images) or not torch.is_tensor(labels):
        raise ValueError(f"{where}: images and labels must be tensors, got {type(images).__name__} and "
                         f"{type(labels).__name__}")
    shape = tuple(dataset.train_images.shape[1:])
    if images.dim() != 4 or tuple(images.shape[1:]) != shape:
        raise ValueError(f"{where}: images are {tuple(images.shape)}; {dataset.name} needs (N, {', '.join(map(str, shape))})")
    if not images.dtype.is_floating_point:
        raise ValueError(f"{where}: images must be floating point (the dataset's normalised space), got {images.dtype}")
    if not 1 <= len(images) <= MAX_IMAGES:
        raise ValueError(f"{where}: {len(images)} images; a set holds 1 to {MAX_IMAGES}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"{where}: labels are {tuple(labels.shape)}; need one per image ({len(images)},)")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{where}: labels must be integers, got {labels.dtype}")
    images = images.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{where}: the images hold NaN or infinite values")
    labels = labels.detach().to("cpu", torch.int64)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= dataset.num_classes:
        raise ValueError(f"{where}: labels span [{low}, {high}]; {dataset.name} has classes 0-{dataset.num_classes - 1}")
    return images.contiguous(), labels


# ----------------------------------------------------------------------------- image folders
def _class_folders(root: str, dataset) -> list[tuple[int, str]]:
    """``(class index, folder)`` pairs: folders named by the dataset's class names, or by a class index (``03`` or
    ``03_dress``); a name that is neither would make the label depend on alphabetical order, and is refused."""
    names = {n: i for i, n in enumerate(dataset.class_names)}
    out = []
    with os.scandir(root) as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_FILES:
                raise ValueError(f"{root} holds more than {MAX_FILES} entries; not a synthetic set")
            if entry.name.startswith(".") or entry.name in ("README.md", "synset.pt", "evaluation.json"):
                continue
            if entry.is_symlink():
                raise ValueError(f"{entry.path} is a symbolic link; an image folder holds its own files")
            if not entry.is_dir():
                raise ValueError(f"{entry.path}: an image folder holds one sub-folder per class, not files")
            m = re.fullmatch(r"(\d+)(?:_.*)?", entry.name)
            index = names.get(entry.name, int(m.group(1)) if m else None)
            if index is None or not 0 <= index < dataset.num_classes:
                raise ValueError(f"{entry.path}: name class folders by {dataset.name}'s class names or by a class index "
                                 f"0-{dataset.num_classes - 1} (e.g. 03 or 03_{_slug(dataset.class_names[0])})")
            out.append((index, entry.path))
    if not out:
        raise ValueError(f"{root} holds no class folders: not a synthetic set")
    indices = [i for i, _ in out]
    if len(set(indices)) != len(indices):
        raise ValueError(f"{root}: two folders name the same class")
    return sorted(out)


def _read_imagefolder(root: str, dataset):
    from PIL import Image, UnidentifiedImageError

    folders = _class_folders(root, dataset)
    exact = os.path.join(root, "synset.pt")
    pixels, labels, total = [], [], 0
    for index, folder in folders:
        with os.scandir(folder) as entries:
            files = []
            for entry in entries:
                total += 1
                if total > MAX_FILES:
                    raise ValueError(f"{root} holds more than {MAX_FILES} files; not a synthetic set")
                if entry.is_symlink():
                    raise ValueError(f"{entry.path} is a symbolic link; an image folder holds its own files")
                if not entry.is_file() or not entry.name.lower().endswith(IMAGE_SUFFIXES):
                    raise ValueError(f"{entry.path} is not an image file ({', '.join(IMAGE_SUFFIXES)})")
                files.append(entry.path)
        for path in sorted(files):
            try:
                with Image.open(path) as im:
                    if im.width * im.height > 4096 * 4096:
                        raise ValueError(f"{path}: {im.width}x{im.height} pixels is no distilled image")
                    im = im.convert("L" if dataset.train_images.shape[1] == 1 else "RGB")
                    x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
                    x = x.reshape(im.height, im.width, -1).permute(2, 0, 1)
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"{path} is not a readable image ({str(err)[:80]})") from None
            if tuple(x.shape[1:]) != tuple(dataset.train_images.shape[2:]):
                raise ValueError(f"{path} is {x.shape[2]}x{x.shape[1]} pixels; {dataset.name}'s images are "
                                 f"{dataset.train_images.shape[3]}x{dataset.train_images.shape[2]}")
            pixels.append(x)
            labels.append(index)
    if not pixels:
        raise ValueError(f"{root}: the class folders hold no images")
    labels = torch.tensor(labels, dtype=torch.int64)
    images = _normalise(torch.stack(pixels).float() / 255.0, dataset)
    if os.path.isfile(exact):  # the float images export_imagefolder saved beside the PNGs: the exact set
        state = load_tensors(exact, "synthetic set")
        exact_images, exact_labels = _check(*_entry(state, ("images", "labels"), exact), dataset, exact)
        if not torch.equal(exact_labels, labels) or not torch.allclose(
                _quantise(exact_images, dataset), images, atol=1e-5):
            raise ValueError(f"{exact} does not hold the images of the folders beside it; delete it to read the "
                             f"image files alone")
        images = exact_images
    return _check(images, labels, dataset, root)


def _normalise(x: torch.Tensor, dataset) -> torch.Tensor:
    mean = torch.tensor(dataset.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(dataset.std, dtype=torch.float32).reshape(1, -1, 1, 1)
    return (x - mean) / std


def _to_pixels(images: torch.Tensor, dataset) -> torch.Tensor:
    """uint8 pixels of normalised images (clipped to [0, 1] first: what an 8-bit file can hold)."""
    return (dataset.denormalise(images.detach().cpu().float()).clamp(0, 1) * 255).round().to(torch.uint8)


def _quantise(images: torch.Tensor, dataset) -> torch.Tensor:
    """What the 8-bit PNGs of ``images`` read back as."""
    return _normalise(_to_pixels(images, dataset).float() / 255.0, dataset)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", str(name)).strip("-") or "class"


# ----------------------------------------------------------------------------- export
def export_imagefolder(images: torch.Tensor, labels: torch.Tensor, dataset, out: str, card: str) -> dict:
    """Write a synthetic set as one PNG per image in class folders (``00_<name>``, ``01_<name>``, ...: sorted order
    is class order, as torchvision's ``ImageFolder`` reads it), the float images as ``synset.pt`` beside them (PNGs
    are 8-bit: pixels outside [0, 1] are clipped and the rest rounded to 1/255), and ``card`` as ``README.md``.
    ``out`` must not exist or be an empty folder.  Returns ``{"images", "max_pixel_error", "clipped"}``."""
    from hddgeo._torchvision import torchvision

    images, labels = _check(images, labels, dataset, "the synthetic set")
    if os.path.lexists(out) and (not os.path.isdir(out) or os.path.islink(out) or os.listdir(out)):
        raise ValueError(f"{out} exists and is not an empty folder; choose a new --out")
    os.makedirs(out, exist_ok=True)
    pixels = _to_pixels(images, dataset)
    counts = {}
    for x, y in zip(pixels, labels.tolist()):
        folder = os.path.join(out, f"{y:02d}_{_slug(dataset.class_names[y])}")
        os.makedirs(folder, exist_ok=True)
        counts[y] = counts.get(y, 0) + 1
        path = os.path.join(folder, f"{counts[y] - 1:05d}.png")
        write_file(path, lambda fh, x=x: torchvision.utils.save_image(x.float() / 255.0, fh, format="png"),
                   binary=True)
    save_tensors({"images": images, "labels": labels}, os.path.join(out, "synset.pt"))
    write_text(os.path.join(out, "README.md"), card)
    pixel = dataset.denormalise(images)
    return {"images": len(images), "max_pixel_error": float((pixel.clamp(0, 1) - pixels.float() / 255).abs().max()),
            "clipped": float(((pixel < 0) | (pixel > 1)).float().mean())}


def dataset_card(*, name: str, dataset, source_dataset: str, images: int, ipc: int, details: dict,
                 accuracy: Optional[dict] = None, license: str = "mit") -> str:
    """A ``README.md`` with the YAML header the Hugging Face hub reads (license, task, size, source dataset) and
    what made the set: method, centroid, k, lambda, budget, seed (``details``), the evaluation protocol and the
    accuracies with their interval (``accuracy``)."""
    size = "n<1K" if images < 1000 else "1K<n<10K" if images < 10_000 else "10K<n<100K"
    header = ["---", f"license: {license}", "task_categories:", "- image-classification", "size_categories:",
              f"- {size}", "source_datasets:", f"- {source_dataset}", "tags:", "- dataset-distillation",
              "- synthetic", "---", ""]
    lines = [f"# {name}", "",
             f"A distilled version of {source_dataset}: {images} synthetic images, {ipc} per class, made by hddgeo. "
             "One PNG per image in class folders (`00_<name>`, `01_<name>`, ...; torchvision's `ImageFolder` reads "
             "them in class order); `synset.pt` holds the same images as float tensors in the dataset's normalised "
             "space (the PNGs are 8-bit: values outside [0, 1] clipped, the rest rounded).", "",
             "## How it was made", ""]
    lines += [f"- {k}: {v}" for k, v in details.items()]
    if accuracy:
        lines += ["", "## Accuracy", ""] + [f"- {k}: {v}" for k, v in accuracy.items()]
    lines += ["", "## Load", "", "```python", "import torchvision", "ds = torchvision.datasets.ImageFolder('.')",
              "# or the exact float images: torch.load('synset.pt', weights_only=True)", "```",
              "", "`hddgeo evaluate THIS_FOLDER --dataset NAME` evaluates it under a declared protocol.", ""]
    return "\n".join(header + lines)



def export_run(run_dir: str, out: str, data_root: Optional[str] = None) -> dict:
    """:func:`export_imagefolder` of a finished run directory, with a card stating how the set was made and how it
    scored (``metrics.json``'s final evaluation: the networks' mean, std and 95 % t interval)."""
    from hddgeo.data import load_dataset
    from hddgeo.stats import t_interval

    cfg = read_json(os.path.join(run_dir, "config.json"))
    if not isinstance(cfg, dict) or "dataset" not in cfg:
        raise ValueError(f"{os.path.join(run_dir, 'config.json')} is not a run's configuration")
    dataset = load_dataset(cfg["dataset"], data_root=data_root or cfg.get("data_root"))
    [s] = load_sets(run_dir, dataset)
    label = s.meta.get("method", "?")
    if s.meta.get("matcher") in ("hdd", "both"):
        label += f" + {s.meta['matcher']} ({s.meta.get('centroid')} centroid)"
    elif s.meta.get("matcher") not in (None, "euclidean"):
        label += f" + {s.meta['matcher']}"
    details = {"method": label, "k (geoopt's; curvature -1/k)": cfg.get("k"), "lambda (HDD loss scale)": cfg.get("scale"),
               "feature clip max_norm": cfg.get("max_norm"), "iterations": cfg.get("iterations"),
               "real images per class per iteration": cfg.get("batch_real"), "image learning rate": cfg.get("lr_img"),
               "seed (scheme)": f"{cfg.get('seed')} ({cfg.get('seed_scheme', 1)})", "run directory": os.path.abspath(run_dir)}
    accuracy = None
    metrics_path = os.path.join(run_dir, "metrics.json")
    if os.path.isfile(metrics_path):
        metrics = read_json(metrics_path)
        accs = metrics.get("accs") if isinstance(metrics, dict) else None
        if accs:
            low, high = t_interval(accs)
            interval = f"[{100 * low:.2f}, {100 * high:.2f}] %" if low == low else "n/a (one network)"
            accuracy = {"protocol": f"{len(accs)} x {metrics.get('eval_model', cfg.get('model'))} trained "
                                    f"{metrics.get('eval_epochs')} epochs (SGD 0.01, momentum 0.9, lr x0.1 at half"
                                    f"{', DSA' if cfg.get('dsa', True) else ''}), "
                                    + (f"first {cfg['eval_test_per_class']} test images per class"
                                       if cfg.get("eval_test_per_class") else "whole test split"),
                        "accuracy (mean ± std over networks)": f"{100 * sum(accs) / len(accs):.2f} ± "
                                                                f"{100 * float(torch.tensor(accs).std(unbiased=False)):.2f} %",
                        "95 % interval over networks (evaluation noise only)": interval}
        if accuracy and cfg.get("seed_scheme", 1) == 2:  # the declared protocol meets the run's own networks
            flags = [f"--dataset {dataset.name}", f"--nets {len(accs)}", f"--epochs {metrics.get('eval_epochs')}",
                     f"--seed {cfg.get('seed')}"]
            if metrics.get("eval_model", "convnet") != "convnet":
                flags.append(f"--model {metrics['eval_model']}")
            if cfg.get("eval_test_per_class"):
                flags.append(f"--test-per-class {cfg['eval_test_per_class']}")
            if not cfg.get("dsa", True):
                flags.append("--no-dsa")
            accuracy["the same networks again"] = f"`hddgeo evaluate THIS_FOLDER {' '.join(flags)}`"
    card = dataset_card(name=f"{dataset.name} distilled by {label}, IPC {cfg.get('ipc')}", dataset=dataset,
                        source_dataset=dataset.name, images=len(s.images), ipc=int(cfg.get("ipc", 0)),
                        details=details, accuracy=accuracy)
    return export_imagefolder(s.images, s.labels, dataset, out, card)


def evaluate_files(paths, out: str, protocol, dataset_name: Optional[str] = None, data_root: Optional[str] = None,
                   device=None, progress: bool = False, amp: str = "none", threads: Optional[int] = None) -> dict:
    """``hddgeo evaluate PATH... --protocol P --out OUT``: every set in ``paths`` (any layout) under one declared
    protocol, with the same evaluation networks for all of them.  Every file is read and checked before the first
    network trains; ``out`` (a new or empty folder) then gets ``evaluation.csv`` (one row per set and network),
    ``protocol.json`` and ``evaluation.md``: each set's accuracy, and each pair of methods' difference paired by
    evaluation network (several sets of one method, e.g. from several seeds, averaged per network first).  That
    pairing removes the evaluation networks' noise from a difference; it says nothing of the distillation's own
    spread over seeds, which only sets from several seeds measure.  ``threads`` (default: the run directories' own
    count when they agree) is torch's CPU thread count: a CPU result repeats only at the same count."""
    import dataclasses

    import pandas as pd

    from hddgeo.data import load_dataset
    from hddgeo.evaluate import evaluate_sets
    from hddgeo.rundir import write_csv, write_json
    from hddgeo.stats import t_interval
    from hddgeo.tables import markdown_table

    if not paths:
        raise ValueError("name at least one synthetic set (a run directory, a .pt file or an image folder)")
    if os.path.lexists(out) and (not os.path.isdir(out) or os.path.islink(out) or os.listdir(out)):
        raise ValueError(f"--out {out} exists and is not an empty folder; choose a new one")
    if dataset_name is None:  # the run directories' own (the other sets are checked against it)
        names = {read_json(os.path.join(p, "config.json")).get("dataset") for p in paths if detect_layout(p) == "run"}
        if len(names) != 1:
            raise ValueError("name the dataset the sets were distilled from (--dataset)"
                             + (f": the run directories name {', '.join(sorted(map(str, names)))}" if names else ""))
        dataset_name = names.pop()
    if threads is None:
        counts = {read_json(os.path.join(p, "config.json")).get("threads") for p in paths if detect_layout(p) == "run"}
        threads = counts.pop() if len(counts) == 1 else None
    if threads is not None and (type(threads) is not int or not 1 <= threads <= (os.cpu_count() or 1)):
        raise ValueError(f"--threads must lie in 1..{os.cpu_count()}, got {threads!r}")
    dataset = load_dataset(dataset_name, data_root=data_root)
    sets, seen = [], set()
    for path in paths:
        for s in load_sets(path, dataset):
            if s.name in seen:
                s.name = f"{s.name} ({path})"
            seen.add(s.name)
            sets.append(s)
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        rows = evaluate_sets(sets, dataset, protocol, device=device, progress=progress, amp=amp)
    finally:
        torch.set_num_threads(before)
    by_name = {s.name: s for s in sets}
    for r in rows:
        s = by_name[r["set"]]
        r.update(method=s.meta.get("method_label", s.meta.get("method", s.name)), ipc=len(s.labels) // dataset.num_classes,
                 seed=s.meta.get("seed", s.meta.get("experiment", 0)), source=s.source, layout=s.layout)
    table = pd.DataFrame(rows)[["set", "method", "ipc", "seed", "network", "net_seed", "acc", "source", "layout"]]
    per_set = table.groupby("set", sort=False)["acc"].agg(["mean", "std", "count"]).reset_index()
    lines = [f"Protocol {protocol.describe()}; dataset {dataset.name}.", "",
             "Accuracy (%) of each set over the evaluation networks (95 % t interval: evaluation noise only):", ""]
    view = [{"set": r.set, "networks": int(r.count), "mean": f"{100 * r.mean:.2f}",
             "95% CI": "[{:.2f}, {:.2f}]".format(*(100 * v for v in t_interval(table[table.set == r.set].acc)))}
            for r in per_set.itertuples()]
    lines.append(markdown_table(pd.DataFrame(view)))
    diffs = network_paired(table)
    if len(diffs):
        lines += ["", PAIRED_NOTE, "", markdown_table(diffs.round(3))]
    os.makedirs(out, exist_ok=True)
    write_csv(os.path.join(out, "evaluation.csv"), table)
    write_json(os.path.join(out, "protocol.json"), {**dataclasses.asdict(protocol), "dataset": dataset.name,
                                                    "threads": threads or before, "description": protocol.describe()})
    write_text(os.path.join(out, "evaluation.md"), "\n".join(lines) + "\n")
    return {"table": table, "differences": diffs, "text": "\n".join(lines)}


PAIRED_NOTE = ("Differences (points), paired by evaluation network (the same networks trained on each set; this covers "
               "evaluation noise only, not the spread of distillation over seeds):")


def network_paired(table):
    """Every pair of methods' difference (points) paired by evaluation network: per network the mean over the
    method's sets (several seeds or experiments pool), then the mean and 95 % t interval over networks."""
    import pandas as pd

    from hddgeo.stats import t_interval

    per_net = table.groupby(["method", "network"], sort=False)["acc"].mean().unstack("network")
    methods, rows = list(per_net.index), []
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            d = 100 * (per_net.loc[a] - per_net.loc[b]).dropna()
            low, high = t_interval(d.values)
            rows.append({"a": a, "b": b, "networks": len(d), "diff_mean": float(d.mean()), "ci_low": low,
                         "ci_high": high})
    return pd.DataFrame(rows, columns=["a", "b", "networks", "diff_mean", "ci_low", "ci_high"])


def is_evaluation(path: str) -> bool:
    """Whether ``path`` is a folder written by ``hddgeo evaluate --out`` (``evaluation.csv`` + ``protocol.json``)."""
    return os.path.isfile(os.path.join(path, "evaluation.csv")) and os.path.isfile(os.path.join(path, "protocol.json"))


def compare_evaluations(paths, out: str) -> str:
    """``hddgeo compare EVAL_DIR...``: the sets of several ``hddgeo evaluate`` folders, which must share one protocol
    (the same networks), compared by evaluation network; ``compare_evaluation.csv`` and ``.md`` into ``out``."""
    import pandas as pd

    from hddgeo.rundir import csv_text, write_csv
    from hddgeo.tables import markdown_table

    tables, protocol = [], None
    for path in paths:
        spec = read_json(os.path.join(path, "protocol.json"))
        if not isinstance(spec, dict):
            raise ValueError(f"{os.path.join(path, 'protocol.json')} is not a protocol")
        mine = {k: v for k, v in spec.items() if k not in ("description", "threads")}
        if protocol is None:
            protocol, first = mine, path
        elif mine != protocol:
            changed = sorted(k for k in set(mine) | set(protocol) if mine.get(k) != protocol.get(k))
            raise ValueError(f"{path} and {first} were evaluated under different protocols ({', '.join(changed)}); "
                             f"evaluate every set under one protocol to compare them")
        t = pd.read_csv(os.path.join(path, "evaluation.csv"))
        missing = [c for c in ("set", "method", "network", "acc") if c not in t.columns]
        if missing:
            raise ValueError(f"{os.path.join(path, 'evaluation.csv')} lacks {', '.join(missing)}")
        acc = pd.to_numeric(t["acc"], errors="coerce")
        net = pd.to_numeric(t["network"], errors="coerce")
        if t["acc"].dtype == bool or not acc.between(0, 1).all() or not (net.notna() & (net % 1 == 0) & (net >= 0)).all():
            raise ValueError(f"{os.path.join(path, 'evaluation.csv')}: accuracies must be numbers in [0, 1] and networks "
                             f"non-negative integers")
        t = t.assign(acc=acc, network=net.astype(int), method=[csv_text(m) for m in t["method"]])
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)
    diffs = network_paired(table)
    text = f"{len(table['set'].unique())} sets, one protocol ({protocol.get('name')}, {protocol.get('networks')} " \
           f"networks, {protocol.get('epochs')} epochs, dataset {protocol.get('dataset')}).\n\n{PAIRED_NOTE}\n\n" \
           + markdown_table(diffs.round(3))
    os.makedirs(out, exist_ok=True)
    write_csv(os.path.join(out, "compare_evaluation.csv"), diffs)
    write_text(os.path.join(out, "compare_evaluation.md"), text + "\n")
    return text
