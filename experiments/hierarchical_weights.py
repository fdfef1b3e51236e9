"""Per-sample hierarchical weights on real features (paper §3.3): radii, weights, tangent shares, clips.

Embeds every training image with one randomly initialised ConvNet (the DM protocol's feature map), lifts the
features onto ``Lorentz(k)`` as ``expmap0(feature_scale * v)`` with ``|v|/sqrt(k)`` clipped at ``max_norm``, and
writes, with :mod:`hddgeo.hierarchy`: ``class_table.csv`` / ``.md`` (per class and setting, the spread of radii
``r = d(o, z)``, of weights ``w(r) = (r/sqrt k)/sinh(r/sqrt k)`` (Eq. 17) and of each sample's share of the tangent
centroid (Eq. 18), and the rank correlation of a sample's radius with its distance to the class's Karcher mean);
``samples.csv`` (one row per sample and setting); ``spread_table.csv`` / ``.md`` (all classes pooled, per
``max_norm`` x ``feature_scale``: with the reference clip every feature beyond ``max_norm sqrt(k)`` sits at one
radius and weighs the same); ``weight_spread.png``, and ``root_leaf.png`` / ``root_leaf_centroid.png`` (the real
images with the smallest / largest radius, and closest to / farthest from their class's Karcher mean).

    python experiments/hierarchical_weights.py                       # digits, about a minute
    python experiments/hierarchical_weights.py --quick --out /tmp/hw  # smoke test
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import torch

from hddgeo.analysis import class_features
from hddgeo.device import resolve_device
from hddgeo.data import load_dataset
from hddgeo.hierarchy import root_and_leaf, sample_table, spread_samples, spread_table
from hddgeo.plots import plot_root_leaf_images, plot_weight_spread, save_figure, save_table_md
from hddgeo.rundir import write_csv, write_text

MODEL = "convnet"  # the randomly initialised feature network (the DM protocol's)


def _max_norm(text: str) -> Optional[float]:
    return None if text.lower() in ("none", "off", "inf") else float(text)


def clip_label(max_norm) -> str:
    return "none" if max_norm is None or (isinstance(max_norm, float) and np.isnan(max_norm)) else f"{max_norm:g}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/hierarchical_weights")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the random feature network")
    p.add_argument("--per-class", type=int, default=None, help="first N training images per class (default: all)")
    p.add_argument("--k", type=float, default=1.0)
    p.add_argument("--max-norm", type=_max_norm, nargs="+", default=[10.0, None], help="clips ('none' = no clip)")
    p.add_argument("--feature-scale", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    p.add_argument("--quick", action="store_true", help="smoke setting: 20 images per class, 3 classes' images shown")
    p.add_argument("--device", default="auto", help="where the network embeds: auto, cpu, cuda or cuda:N")
    return p


def class_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, class): radius / weight / tangent-share spread and radius-vs-centrality correlation."""
    rows = []
    keys = ["k", "max_norm", "feature_scale", "class"]
    for key, g in samples.groupby(keys, sort=False, dropna=False):
        n = len(g)
        r, w, s = g["radius"].to_numpy(), g["weight"].to_numpy(), g["tangent_share"].to_numpy()
        # rank correlation: does "near the root" mean "near the class centre"?  (NaN when every radius ties)
        rho = g["radius"].rank().corr(g["dist_karcher"].rank()) if np.ptp(r) > 1e-12 else np.nan
        rows.append({**dict(zip(keys, key)), "clip": clip_label(key[1]), "n": n,
                     "feature_norm_mean": float(g["feature_norm"].mean()), "clipped_fraction": float(g["clipped"].mean()),
                     "radius_mean": float(r.mean()), "radius_std": float(r.std()), "radius_min": float(r.min()),
                     "radius_max": float(r.max()),
                     "weight_mean": float(w.mean()), "weight_min": float(w.min()), "weight_max": float(w.max()),
                     "weight_ratio": float(w.max() / w.min()) if w.min() > 0 else np.inf,
                     "share_x_n_min": float(n * s.min()), "share_x_n_max": float(n * s.max()),
                     "share_x_n_std": float(n * s.std()), "negative_shares": int((s < 0).sum()),
                     "spearman_radius_vs_dist_karcher": float(rho) if rho == rho else np.nan,
                     "dist_karcher_mean": float(g["dist_karcher"].mean())})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = build_parser()
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(per_class=20)  # flags given explicitly still win
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # one thread: the tables repeat bit for bit on one machine
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    dataset = load_dataset(args.dataset, data_root=args.data_root)
    feats = class_features(dataset, model=MODEL, seed=args.seed, per_class=args.per_class,
                           device=resolve_device(args.device))
    images = [dataset.train_images[dataset.train_labels == c][: len(feats[c])] for c in range(dataset.num_classes)]

    # per-sample tables at every setting (the Karcher distance column needs sample_table, not spread_samples)
    frames = []
    for max_norm in args.max_norm:
        for scale in args.feature_scale:
            t = sample_table(feats, k=args.k, max_norm=max_norm, feature_scale=scale)
            t.insert(0, "feature_scale", scale)
            t.insert(0, "max_norm", np.nan if max_norm is None else float(max_norm))
            t.insert(0, "k", args.k)
            frames.append(t)
    samples = pd.concat(frames, ignore_index=True)
    write_csv(os.path.join(args.out, "samples.csv"), samples)

    classes = class_summary(samples)
    write_csv(os.path.join(args.out, "class_table.csv"), classes)

    spread_rows = spread_samples(feats, ks=[args.k], max_norms=args.max_norm, feature_scales=args.feature_scale)
    spread = spread_table(feats, samples=spread_rows)
    spread.insert(2, "clip", [clip_label(m) for m in spread["max_norm"]])
    write_csv(os.path.join(args.out, "spread_table.csv"), spread)

    # markdown: spread over settings, and the per-class table at the reference setting
    ref = classes[(classes["clip"] == clip_label(args.max_norm[0])) & (classes["feature_scale"] == args.feature_scale[0])]
    cols = ["class", "n", "feature_norm_mean", "clipped_fraction", "radius_mean", "radius_std", "radius_min", "radius_max",
            "weight_min", "weight_max", "weight_ratio", "share_x_n_min", "share_x_n_max", "negative_shares",
            "spearman_radius_vs_dist_karcher"]
    spread_cols = ["k", "clip", "feature_scale", "n", "feature_norm_mean", "clipped_fraction", "radius_mean", "radius_std",
                   "radius_min", "radius_max", "weight_mean", "weight_std", "weight_min", "weight_max", "weight_ratio"]
    text = "\n".join([
        f"# Hierarchical weights on {args.dataset}\n",
        f"Features: training images ({'all' if args.per_class is None else f'first {args.per_class}'} per class) through one "
        f"random {MODEL} (seed {args.seed}), lifted onto Lorentz(k={args.k:g}) as expmap0(feature_scale · v) with "
        f"|v|/√k clipped at `clip`. Radius r = d(o, z); weight w = (r/√k)/sinh(r/√k); share × n = a sample's share of "
        "its class's tangent centroid times the class size (1 = an average sample); spearman = rank correlation of a "
        "sample's radius with its distance to the class's Karcher mean.\n",
        "## Spread over settings (all classes pooled)\n",
        save_table_md(spread[spread_cols]),
        f"\n## Per class, reference setting (k={args.k:g}, clip={clip_label(args.max_norm[0])}, "
        f"feature_scale={args.feature_scale[0]:g})\n",
        save_table_md(ref[cols]),
    ])
    write_text(os.path.join(args.out, "class_table.md"), text)
    save_table_md(spread[spread_cols], os.path.join(args.out, "spread_table.md"))

    fig = plot_weight_spread(spread_rows)
    save_figure(fig, os.path.join(args.out, "weight_spread.png"))

    shown = list(range(3)) if args.quick else list(range(dataset.num_classes))
    ref_table = samples[(samples["max_norm"].isna() if args.max_norm[0] is None else samples["max_norm"] == args.max_norm[0])
                        & (samples["feature_scale"] == args.feature_scale[0])]
    setting = (f"{args.dataset} · random {MODEL} (seed {args.seed}) · k={args.k:g}, clip={clip_label(args.max_norm[0])}, "
               f"feature_scale={args.feature_scale[0]:g}")
    for by, name, titles, what in (
            ("radius", "root_leaf.png", ("root-level\n(smallest radius first)", "leaf-level\n(largest radius first)"),
             "smallest and largest hyperbolic radius"),
            ("dist_karcher", "root_leaf_centroid.png",
             ("central\n(closest to the class's Karcher mean)", "peripheral\n(farthest from it)"),
             "smallest and largest distance to their class's Karcher mean")):
        root, leaf = root_and_leaf(ref_table, n=8, by=by)
        fig = plot_root_leaf_images(images, dataset, root, leaf, classes=shown, root_title=titles[0], leaf_title=titles[1])
        # above the column titles (the grid fills the figure up to its top margin)
        fig.suptitle(f"Real images with the {what}, per class (one row per class)\n{setting}", fontsize=12,
                     y=fig.subplotpars.top + 0.75 / fig.get_figheight(), va="bottom")
        save_figure(fig, os.path.join(args.out, name))
    print(text)
    print(f"wrote {args.out}: samples.csv, class_table.csv/.md, spread_table.csv/.md, weight_spread.png, "
          f"root_leaf.png, root_leaf_centroid.png ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
