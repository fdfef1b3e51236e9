"""Seconds per DM iteration: the official DM-HDD loop against hddgeo's, alternating in one process.

The official code is imported from a checkout that you name (``--official PATH``, the public HDD
repository's root or its ``DM-HDD`` folder); nothing of it is copied here.  From it come the ConvNet
(``get_network``) and the augmentation (``DiffAugment``, ``ParamDiffAug``); its iteration is rebuilt here as
its ``main_DM.py`` runs it: per class, a random real batch and the class's synthetic images through one DSA
draw, the embedding of each, and either DM's squared distance of feature means or HDD's geodesic distance
between Law centroids (``expmap0`` of the padded features, ``projx``, the clamped Law formula, ``dist`` x 20),
summed over classes, then one SGD step on the images.  geoopt is the installed one, not the checkout's copy.
hddgeo's iteration is ``DistillMethod.step`` with the same IPC, real batch and lambda.

    python benchmarks/compare_official.py --official ~/src/HDD --dataset fashionmnist --iterations 5

Prints the median seconds per iteration of each loop and matcher and the official/hddgeo ratios, and writes a CSV.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import types

import pandas as pd
import torch
import torch.nn.functional as F


def import_official(path: str):
    """``(utils, networks)`` modules of the official DM-HDD code at ``path``."""
    folder = os.path.join(path, "DM-HDD") if os.path.isdir(os.path.join(path, "DM-HDD")) else path
    if not os.path.isfile(os.path.join(folder, "utils.py")) or not os.path.isfile(os.path.join(folder, "networks.py")):
        raise SystemExit(f"{folder} holds no DM-HDD utils.py / networks.py: pass the HDD checkout with --official")
    import hddgeo._torchvision  # noqa: F401  (the official utils import torchvision)

    try:
        importlib.import_module("scipy.ndimage.interpolation")
    except ImportError:  # removed from newer SciPy; the official utils import rotate from it
        import scipy.ndimage

        shim = types.ModuleType("scipy.ndimage.interpolation")
        shim.rotate = scipy.ndimage.rotate
        sys.modules["scipy.ndimage.interpolation"] = shim
    # appended, not prepended: the checkout's vendored geoopt must not shadow the installed one
    sys.path.append(folder)
    return importlib.import_module("utils"), importlib.import_module("networks")


def official_centroid(x: torch.Tensor, k: float, eps: float = 1e-8) -> torch.Tensor:
    avg = x.mean(dim=-2)
    q = (avg[..., 1:] ** 2).sum(-1, keepdim=True) - avg[..., :1] ** 2  # Minkowski <avg, avg>
    return (k ** 0.5) * avg / (-q).abs().clamp_min(eps).sqrt()


def official_step(utils, dataset, pool, syn, opt, ipc, batch_real, matcher, gen, manifold, k, scale):
    C, (ch, h, w) = dataset.num_classes, dataset.train_images.shape[1:]
    net = utils.get_network("ConvNet", ch, C, (h, w))
    net.train()
    for p in net.parameters():
        p.requires_grad_(False)
    param = utils.ParamDiffAug()
    loss = torch.zeros(())
    for c in range(C):
        real = pool.images[pool.sample_indices(c, batch_real, gen)]
        img_syn = syn[c * ipc:(c + 1) * ipc]
        seed = int(torch.randint(0, 100000, (), generator=gen))
        # plain NCHW copies: after DSA newer torch can hand the official ConvNet's .view a channels-last tensor
        # (a one-channel tensor counts as contiguous in both layouts, so .contiguous() would keep its strides)
        real = utils.DiffAugment(real, "color_crop_cutout_flip_scale_rotate", seed=seed, param=param)
        img_syn = utils.DiffAugment(img_syn, "color_crop_cutout_flip_scale_rotate", seed=seed, param=param)
        real, img_syn = (t.clone(memory_format=torch.contiguous_format) for t in (real, img_syn))
        out_real = net.embed(real).detach()
        out_syn = net.embed(img_syn)
        if matcher == "euclidean":
            loss = loss + ((out_real.mean(0) - out_syn.mean(0)) ** 2).sum()
        else:
            x = manifold.projx(manifold.expmap0(F.pad(out_real.double(), (1, 0))))
            y = manifold.projx(manifold.expmap0(F.pad(out_syn.double(), (1, 0))))
            loss = loss + manifold.dist(official_centroid(x, k), official_centroid(y, k)) * scale
    opt.zero_grad()
    loss.backward()
    opt.step()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", required=True, help="checkout of the public HDD repository (or its DM-HDD folder)")
    p.add_argument("--dataset", default="fashionmnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="results/compare_official.csv")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    utils, _ = import_official(os.path.expanduser(args.official))
    import geoopt

    from hddgeo.data import ClassPool, load_dataset
    from hddgeo.distill import DistillConfig, build_method
    from hddgeo.losses import Matcher

    dataset = load_dataset(args.dataset, data_root=args.data_root)
    pool = ClassPool(dataset.train_images, dataset.train_labels, dataset.num_classes)
    k, scale = 1.0, 20.0
    manifold = geoopt.Lorentz(k=k)
    setups = []
    for matcher in ("euclidean", "hdd"):
        cfg = DistillConfig(dataset=args.dataset, ipc=args.ipc, matcher=matcher, batch_real=args.batch_real, scale=scale)
        method = build_method("dm", cfg, dataset, pool, Matcher(matcher, "law", k=k, scale=scale,
                                                                num_classes=dataset.num_classes))
        syn = method.init_synset(torch.Generator().manual_seed(0))
        setups.append(("hddgeo", matcher, method, syn, torch.optim.SGD([syn.images], lr=1.0, momentum=0.5), []))
        images = syn.images.detach().clone().requires_grad_(True)
        setups.append(("official", matcher, None, images, torch.optim.SGD([images], lr=1.0, momentum=0.5), []))
    n_real = setups[0][2].n_real  # the batch hddgeo draws (capped by the smallest class)
    gen = torch.Generator().manual_seed(0)
    for it in range(args.warmup + args.iterations):
        for code, matcher, method, syn, opt, times in setups:
            t0 = time.perf_counter()
            if code == "hddgeo":
                loss, _, _ = method.step(it, syn)
                opt.zero_grad()
                loss.backward()
                opt.step()
            else:
                official_step(utils, dataset, pool, syn, opt, args.ipc, n_real, matcher, gen, manifold, k, scale)
            if it >= args.warmup:
                times.append(time.perf_counter() - t0)
    rows = [{"code": code, "matcher": "hdd/law" if m == "hdd" else m, "dataset": dataset.name, "ipc": args.ipc,
             "batch_real": args.batch_real, "seconds_per_iteration": sorted(t)[len(t) // 2]}
            for code, m, _, _, _, t in setups]
    df = pd.DataFrame(rows)
    wide = df.pivot(index="matcher", columns="code", values="seconds_per_iteration")
    wide["official / hddgeo"] = wide["official"] / wide["hddgeo"]
    from hddgeo.rundir import write_csv

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_csv(args.out, df)
    print(f"{dataset.name}, IPC {args.ipc}, {args.batch_real} real images per class, {torch.get_num_threads()} "
          f"thread(s), median of {args.iterations} iterations:")
    print(wide.to_string(float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {args.out}")
    return df


if __name__ == "__main__":
    main()
