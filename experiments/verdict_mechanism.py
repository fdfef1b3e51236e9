"""The paper's mechanism claims, measured on the verdict study's Fashion-MNIST cells, over seeds.

    python experiments/verdict_mechanism.py                 # the committed study folder, 3 feature networks
    python experiments/verdict_mechanism.py --study DIR --nets 3 --real-per-class 512

* **Root-centric bias** (the paper: HDD's synthetic points lie nearer the root than the real class).  For every
  finished distilled cell whose ``synset.pt`` is at hand, the synthetic images of each class and the first
  ``--real-per-class`` training images of that class go through ``--nets`` randomly initialised ConvNets (the
  DM protocol's feature maps, seeds 0, 1, ...); each feature is lifted with the cell's k *without* the clip (with
  the reference clip of 10 every Fashion-MNIST feature lies at radius exactly 10, so a clipped radius says
  nothing) and its geodesic radius taken.  A cell's bias is the mean over classes and networks of (mean
  synthetic radius - mean real radius); the paired differences over seeds say whether HDD's bias differs from
  DM's.  The same networks and real images serve every cell, so cells of one seed are compared on equal terms.
  Beside them: the radius of each real class's Law centroid and Karcher mean, where an IPC 1 set is pulled to.
* **Hierarchical weights** (Eq. 17, ``w = r / sinh r`` of the geodesic radius ``r``): for the same real images
  and networks, with the reference clip and without it, each class's share of features the clip reaches, its
  radius spread and the relative spread of its weights (coefficient of variation, std / mean: the absolute
  weights are ~1e-10 at radius 25, so only the relative spread says how unequal they are).  The cells' own
  ``gap_every`` diagnostics (``log.csv``: clip share of the real batch, the Law-Karcher distance of its class
  centroids) go beside each cell, and the distance is summarised by clip setting.
* **Weights against per-image test difficulty** (``--difficulty N``): ConvNets are trained on the DM synthetic
  sets of the largest IPC with the study's evaluation protocol (one network per seed, seeds of up to N cells);
  a test image's difficulty is the share of them that misclassify it.  Within each class the Spearman
  correlation of the test images' unclipped radius (mean over the feature networks) with their difficulty says
  whether the images the weights favour (small radius: ``r / sinh r`` falls with ``r``) are the easy ones.

Writes ``mechanism_cells.csv`` (a row per cell; one without ``synset.pt`` gets its log's diagnostics only),
``mechanism_weights.csv``, ``mechanism_paired.csv`` and ``mechanism.md`` into the study folder; where no cell's
``synset.pt`` is at hand (a checkout commits no tensors) it stops, and the files already there stay as they are.
"""
from __future__ import annotations

import argparse
import os
import sys

import geoopt
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from studyfolder import finished_cells

import hddgeo
from hddgeo import stats
from hddgeo.data import load_dataset
from hddgeo.models import embed, fresh_network
from hddgeo.rundir import write_csv, write_text
from hddgeo.tables import markdown_table

DEFAULT_STUDY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "fashionmnist_verdict")
NETWORK_SEED = 900_000  # the feature networks' seeds: NETWORK_SEED + j, apart from every run's own streams
PAIRS = (("dm+hdd/law", "dm"), ("dm+hdd/karcher", "dm"), ("dm+hdd/karcher", "dm+hdd/law"), ("dm+hdd/law@k9", "dm"))


def diagnostics(run_dir: str) -> dict:
    """Means over the logged diagnostic iterations: weight spread and clip share of the real batch."""
    path = os.path.join(run_dir, "log.csv")
    if not os.path.isfile(path):
        return {}
    log = pd.read_csv(path)
    if "wstd_real" not in log:
        return {}
    rows = log.dropna(subset=["wstd_real"])
    return {"clip_share_real": float(rows["clip_real"].mean()), "logged_radius_real": float(rows["radius_real"].mean()),
            "law_karcher_gap_real": float(rows["gap_real"].mean())}


@torch.no_grad()
def weight_spread(images_by_class: dict, nets: list, k: float, clips: tuple) -> pd.DataFrame:
    """Per clip setting, network and class: clip share, radius mean and std, the weights' coefficient of variation."""
    M, sk = geoopt.Lorentz(k), k ** 0.5
    rows = []
    for j, net in enumerate(nets):
        for c, images in images_by_class.items():
            v = embed(net, images).double()
            for clip in clips:
                z = hddgeo.lift(v, M, max_norm=clip)
                r, w = hddgeo.radius(z, M), hddgeo.hierarchical_weights(z, M)
                rows.append({"clip": "none" if clip is None else clip, "network": j, "class": c,
                             "clip_share": float((v.norm(dim=-1) / sk >= clip).double().mean()) if clip else 0.0,
                             "radius_mean": float(r.mean()), "radius_std": float(r.std()),
                             "weight_cv": float(w.std() / w.mean())})
    return pd.DataFrame(rows)


@torch.no_grad()
def radii(images_by_class: dict, nets: list, k: float, of: tuple = ("points",)) -> dict:
    """``{what: (nets, classes)}`` unclipped geodesic radius of each class's images under each network (embedded
    once): for ``points`` their mean radius, for a centroid method (``law``, ``karcher``) the class centroid's."""
    M = geoopt.Lorentz(k)
    out = {what: np.zeros((len(nets), len(images_by_class))) for what in of}
    for j, net in enumerate(nets):
        for i, images in enumerate(images_by_class.values()):
            z = hddgeo.lift(embed(net, images).double(), M, max_norm=None)
            for what in of:  # the centroid: where a one-image-per-class set is pulled to
                out[what][j, i] = float(hddgeo.radius(z if what == "points" else hddgeo.centroid(z, M, method=what), M).mean())
    return out


def weights_and_difficulty(cells: list, dataset, nets: list, most: int) -> pd.DataFrame:
    """Per class: Spearman's rho of the test images' unclipped radius with their difficulty (the share of networks,
    trained on DM synthetic sets of the largest IPC, that misclassify them)."""
    from scipy.stats import spearmanr

    from hddgeo.distill.runner import eval_augment
    from hddgeo.distill.synset import SyntheticSet
    from hddgeo.evaluate import train_and_test
    from hddgeo.seeds import RunSeeds

    dm = [(d, c) for d, c, m in cells if m["method"] == "dm" and os.path.isfile(os.path.join(d, "synset.pt"))]
    if not dm:
        return pd.DataFrame()
    ipc = max(c.ipc for _, c in dm)
    dm = [(d, c) for d, c in dm if c.ipc == ipc][:most]
    wrong = torch.zeros(len(dataset.test_labels))
    for run_dir, cfg in dm:
        syn = SyntheticSet.load(os.path.join(run_dir, "synset.pt"))
        res = train_and_test(syn["images"].float(), syn["train_labels"].long(), dataset.test_images,
                             dataset.test_labels, model=cfg.model, num_classes=dataset.num_classes,
                             epochs=cfg.final_eval_epochs, augment=eval_augment(cfg),
                             seed=RunSeeds.of(cfg).eval_networks("final", 1)[0],
                             per_image=True)
        wrong += (~res["correct"]).float()
    wrong /= len(dm)
    M = geoopt.Lorentz(float(dm[0][1].k))
    with torch.no_grad():
        r = torch.stack([hddgeo.radius(hddgeo.lift(embed(net, dataset.test_images).double(), M, max_norm=None), M)
                         for net in nets]).mean(0)
    rows = []
    for c in range(dataset.num_classes):
        mask = dataset.test_labels == c
        rho = spearmanr(r[mask].numpy(), wrong[mask].numpy()).correlation
        rows.append({"class": c, "ipc": ipc, "networks": len(dm), "test_images": int(mask.sum()),
                     "difficulty_mean": float(wrong[mask].mean()), "spearman_radius_difficulty": float(rho)})
    return pd.DataFrame(rows)


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default=DEFAULT_STUDY, help="the verdict study's folder (its runs/ hold the cells)")
    p.add_argument("--nets", type=int, default=3, help="random feature networks")
    p.add_argument("--real-per-class", type=int, default=512, help="real training images per class")
    p.add_argument("--data-root", default=None, help="folder of the Fashion-MNIST files (default: the cells')")
    p.add_argument("--difficulty", type=int, default=0, metavar="N",
                   help="also relate the weights to per-image test difficulty, from networks trained on up to N DM "
                        "synthetic sets (0: not measured; each network costs as much as one of a cell's evaluation)")
    args = p.parse_args(argv)
    if args.nets < 1 or args.real_per_class < 2:
        raise ValueError("--nets must be at least 1 and --real-per-class at least 2")
    torch.set_num_threads(1)  # the measures were made on one thread (sums in another order round differently)
    cells = finished_cells(args.study, baselines=False)
    if not any(os.path.isfile(os.path.join(d, "synset.pt")) for d, _, _ in cells):  # would overwrite with no radii
        raise ValueError(f"no cell of {args.study} has its synset.pt at hand (a checkout commits none): nothing to measure")
    dataset = None
    real_radius = {}  # k -> (nets, classes)
    centroid_radius = {}  # (k, centroid method) -> the real classes' centroid radius, mean over classes and networks
    rows = []
    for run_dir, cfg, metrics in cells:
        row = {"cell": os.path.basename(run_dir), "method": metrics["method"], "ipc": cfg.ipc, "seed": cfg.seed,
               "k": cfg.k, "max_norm": cfg.max_norm, **diagnostics(run_dir)}
        synset = os.path.join(run_dir, "synset.pt")
        if os.path.isfile(synset):
            from hddgeo.distill.synset import SyntheticSet

            if dataset is None:
                dataset = load_dataset(cfg.dataset, data_root=args.data_root or cfg.data_root)
                nets = [fresh_network(cfg.model, dataset, NETWORK_SEED + j).eval() for j in range(args.nets)]
                real = {c: dataset.train_images[dataset.train_labels == c][:args.real_per_class]
                        for c in range(dataset.num_classes)}
            k = float(cfg.k)
            if k not in real_radius:
                found = radii(real, nets, k, ("points", "law", "karcher"))
                real_radius[k] = found["points"]
                centroid_radius.update({(k, of): float(found[of].mean()) for of in ("law", "karcher")})
            syn = SyntheticSet.load(synset)
            images, labels = syn["images"].float(), syn["train_labels"].long()
            r_syn = radii({c: images[labels == c] for c in range(dataset.num_classes)}, nets, k)["points"]
            row.update({"radius_real": float(real_radius[k].mean()), "radius_syn": float(r_syn.mean()),
                        "root_bias": float((r_syn - real_radius[k]).mean()),
                        "radius_real_law": centroid_radius[k, "law"], "radius_real_karcher": centroid_radius[k, "karcher"]})
        rows.append(row)
    table = pd.DataFrame(rows)
    write_csv(os.path.join(args.study, "mechanism_cells.csv"), table)
    weights = pd.DataFrame()
    if dataset is not None:
        clips = tuple(dict.fromkeys([10.0] + [c for c in table["max_norm"] if c == c and c is not None] + [None]))
        weights = weight_spread(real, nets, float(cells[0][1].k), clips)
        write_csv(os.path.join(args.study, "mechanism_weights.csv"), weights)

    difficulty = pd.DataFrame()
    if args.difficulty and dataset is not None:
        difficulty = weights_and_difficulty(cells, dataset, nets, args.difficulty)
        write_csv(os.path.join(args.study, "mechanism_difficulty.csv"), difficulty)

    paired = []

    def interval(ipc, of, values):  # the mean root bias over seeds, with its 95 % t interval
        low, high = stats.t_interval(values.values)
        paired.append({"quantity": "synthetic - real radius", "ipc": ipc, "of": of, "seeds": len(values),
                       "mean": float(values.mean()), "ci_low": low, "ci_high": high})

    for ipc in sorted(table["ipc"].unique()) if "root_bias" in table else []:
        at = table[table["ipc"] == ipc].pivot_table(index="seed", columns="method", values="root_bias")
        for method in at.columns:
            interval(ipc, method, at[method].dropna())
        same_tag = [(m, m.replace("/karcher@", "/law@")) for m in at.columns if "/karcher@" in m]  # Karcher - Law
        for a, b in dict.fromkeys(PAIRS + tuple(same_tag)):
            if a in at and b in at and len((at[a] - at[b]).dropna()):
                interval(ipc, f"{a} − {b}", (at[a] - at[b]).dropna())
    paired = pd.DataFrame(paired)
    write_csv(os.path.join(args.study, "mechanism_paired.csv"), paired)
    shown = paired.copy()
    for c in ("mean", "ci_low", "ci_high"):
        shown[c] = shown[c].map(lambda x: f"{x:.4g}")
    text = (f"Cells: {len(table)} distilled ({int(table['root_bias'].notna().sum()) if 'root_bias' in table else 0} "
            f"with their synthetic set at hand); {args.nets} random ConvNets, {args.real_per_class} real images per "
            f"class, radii unclipped.\n\n" + markdown_table(shown))
    if "radius_syn" in table:
        at = table.dropna(subset=["radius_syn"]).groupby(["ipc", "k", "method"])
        where = at[["radius_real", "radius_real_law", "radius_real_karcher", "radius_syn"]].mean().assign(cells=at.size())
        text += ("\n\nWhere the synthetic features lie (unclipped radius, mean over cells, classes and networks): the "
                 "real images, the radius of the real class's Law centroid and Karcher mean, the synthetic images:\n\n"
                 + markdown_table(where.reset_index().round(3)))
    if "law_karcher_gap_real" in table:
        gaps = table.groupby(["ipc", "k", "max_norm"], dropna=False)["law_karcher_gap_real"].agg(
            ["mean", "min", "max", "count"])
        if "clip_share_real" in table:
            gaps["clip_share_real"] = table.groupby(["ipc", "k", "max_norm"], dropna=False)["clip_share_real"].mean()
        text += ("\n\nLaw-Karcher distance of the real batch's class centroids (the cells' gap_every diagnostics, mean "
                 "over classes and logged iterations; by k and clip, `nan` = none), and the share of real features "
                 "the clip reaches:\n\n" + markdown_table(gaps.reset_index().round(4)))
    if len(weights):
        by_clip = weights.groupby("clip", sort=False)[["clip_share", "radius_mean", "radius_std", "weight_cv"]].agg(
            ["mean", "min", "max"])
        by_clip.columns = [f"{a} {b}" for a, b in by_clip.columns]
        text += ("\n\nHierarchical weights of the real images (per class and network; k of the cells):\n\n"
                 + markdown_table(by_clip.reset_index().round(4)))
    if len(difficulty):
        rho = difficulty["spearman_radius_difficulty"]
        low, high = stats.t_interval(rho.values)
        text += (f"\n\nRadius against test difficulty ({int(difficulty['networks'].iloc[0])} networks trained on DM "
                 f"synthetic sets at IPC {int(difficulty['ipc'].iloc[0])}; Spearman's rho within each class): mean "
                 f"{rho.mean():+.3f} over {len(rho)} classes, 95% CI [{low:+.3f}, {high:+.3f}], from {rho.min():+.3f} "
                 f"to {rho.max():+.3f}.\n\n" + markdown_table(difficulty.round(4)))
    write_text(os.path.join(args.study, "mechanism.md"), text)
    print(text)
    return table


if __name__ == "__main__":
    from hddgeo.cli import run_main

    sys.exit(run_main(main))
