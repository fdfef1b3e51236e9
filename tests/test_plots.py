"""Poincare-disk projection (exact on a geodesic plane), figure writers, and the run report."""
import json
import math
import os

import geoopt
import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from hddgeo import lift
from hddgeo.geometry import dist
from hddgeo.geometry._math import _frame_exp, _with_time
from hddgeo.hierarchy import root_and_leaf, sample_table, spread_samples
from hddgeo.plots import (
    plot_poincare_disk,
    clip_note,
    clip_radius,
    plot_radius_histograms,
    plot_root_leaf_images,
    plot_weight_spread,
    poincare_projection,
    poincare_report,
    save_table_md,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: more threads only contend


def assert_png(path, min_bytes=5_000):
    assert os.path.exists(path), path
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
    assert os.path.getsize(path) > min_bytes


def save(fig, path):
    fig.savefig(path, dpi=80)
    matplotlib.pyplot.close(fig)
    return path


def poincare_dist(p, q, k):
    """Distance in the Poincare ball of radius sqrt(k) (curvature -1/k)."""
    num = 2 * k * ((p[:, None, :] - q[None, :, :]) ** 2).sum(-1)
    den = (k - (p ** 2).sum(-1))[:, None] * (k - (q ** 2).sum(-1))[None, :]
    return math.sqrt(k) * np.arccosh(1 + num / den)


def plane_points(k, n, d=7, seed=0, base_norm=3.0, spread=1.2):
    """Points on the totally geodesic plane Exp_x(span(e1, e2)) through a base point away from the origin."""
    g = torch.Generator().manual_seed(seed)
    sk = math.sqrt(k)
    base = torch.randn(d, generator=g, dtype=torch.float64)
    x = lift(base / base.norm() * base_norm, geoopt.Lorentz(k)).as_subclass(torch.Tensor)
    q, _ = torch.linalg.qr(torch.randn(d, 2, generator=g, dtype=torch.float64))
    shift = torch.tensor([0.4, -0.2], dtype=torch.float64)
    coeffs = torch.randn(n, 2, generator=g, dtype=torch.float64) * spread + shift
    xs = _frame_exp(x[1:].expand(n, d), coeffs @ q.T, sk)
    return _with_time(xs, k)


@pytest.mark.parametrize("k", [1.0, 2.5])
def test_projection_is_exact_on_a_geodesic_plane(k):
    M = geoopt.Lorentz(k)
    z_all = plane_points(k, 45)  # 40 "real" and 5 "synthetic" points on one geodesic plane
    z_real, z_syn = z_all[:40], z_all[40:]
    proj = poincare_projection(z_real, z_syn, M)
    assert proj.explained == pytest.approx(1.0, abs=1e-10)
    pts = np.concatenate([proj.real, proj.syn])
    d_true = dist(z_all.unsqueeze(1), z_all.unsqueeze(0), M).numpy()
    np.testing.assert_allclose(poincare_dist(pts, pts, k), d_true, atol=1e-7, rtol=1e-7)
    # the centre of the disk is the real Karcher mean
    np.testing.assert_allclose(proj.karcher_real, 0.0, atol=1e-9)
    # the synthetic Karcher mean lies on the plane too: its disk position is exact
    d_centroids = poincare_dist(proj.karcher_real[None], proj.karcher_syn[None], k)[0, 0]
    assert d_centroids == pytest.approx(proj.d_karcher, rel=1e-7) and proj.d_law > 0
    # "root" axes are exact on a plane that also holds the origin (its first axis points to the root)
    z_all = plane_points(k, 45, base_norm=0.0)
    root = poincare_projection(z_all[:40], z_all[40:], M, axes="root")
    assert root.explained == pytest.approx(1.0, abs=1e-10)
    pts = np.concatenate([root.real, root.syn, root.origin[None]])
    z_o = torch.cat([z_all, lift(torch.zeros(1, 7, dtype=torch.float64), M)])
    d_true = dist(z_o.unsqueeze(1), z_o.unsqueeze(0), M).numpy()
    np.testing.assert_allclose(poincare_dist(pts, pts, k), d_true, atol=1e-7, rtol=1e-7)


def test_projected_points_lie_inside_the_disk_and_far_points_stay_finite():
    k = 0.5
    M = geoopt.Lorentz(k)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(60, 32, generator=g, dtype=torch.float64)
    z_real = lift(v / v.norm(dim=-1, keepdim=True) * 8.0, M, max_norm=None)  # radius 8, far from the origin
    z_syn = lift(torch.randn(3, 32, generator=g, dtype=torch.float64) * 3.0, M)
    for axes in ("pca", "root"):
        proj = poincare_projection(z_real, z_syn, M, axes=axes)
        pts = np.concatenate([proj.real, proj.syn, proj.origin[None], proj.law_real[None], proj.law_syn[None],
                              proj.karcher_syn[None]])
        assert np.isfinite(pts).all()
        assert (np.linalg.norm(pts, axis=1) < math.sqrt(k)).all()
        assert 0 < proj.explained < 1
        assert proj.directions.shape == (32, 2)
        np.testing.assert_allclose(proj.directions.T @ proj.directions, np.eye(2), atol=1e-10)
    # in "root" axes the origin lies on the first axis at its true distance from the Karcher mean
    root = poincare_projection(z_real, z_syn, M, axes="root")
    assert abs(root.origin[1]) < 1e-9 and root.origin[0] > 0
    # no synthetic points: centroids of the synthetic set are NaN, the rest works
    alone = poincare_projection(z_real, None, M)
    assert alone.syn.shape == (0, 2) and np.isnan(alone.karcher_syn).all()
    with pytest.raises(ValueError, match="axes"):
        poincare_projection(z_real, z_syn, M, axes="tsne")
    with pytest.raises(ValueError, match="not on the Lorentz manifold"):
        poincare_projection(torch.ones(5, 33, dtype=torch.float64), z_syn, M)


def test_disk_and_histogram_figures(tmp_path):
    import matplotlib.pyplot as plt

    k = 1.0
    M = geoopt.Lorentz(k)
    z_all = plane_points(k, 50, d=5)
    proj = poincare_projection(z_all[:45], z_all[45:], M)
    fig, ax = plt.subplots(figsize=(4, 4))
    plot_poincare_disk(ax, proj, title="class 0", legend=True)
    assert_png(save(fig, tmp_path / "disk.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    g = torch.Generator().manual_seed(0)
    plot_radius_histograms(ax, 5 + 0.1 * torch.randn(300, generator=g), 4.9 + 0.1 * torch.randn(10, generator=g))
    assert_png(save(fig, tmp_path / "hist.png"))
    # identical (clipped) radii still give a readable histogram, which says the clip put them there
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_radius_histograms(ax, np.full(100, 10.0), np.full(5, 10.0), clip=clip_radius(1.0, 10.0))
    assert any("the clip put every point" in t.get_text() for t in ax.texts)
    assert ax.get_legend() is not None
    assert_png(save(fig, tmp_path / "hist_flat.png"))


def test_clip_note_counts_the_points_at_the_clip():
    assert clip_radius(4.0, 10.0) == 20.0 and clip_radius(1.0, None) is None
    assert "every point" in clip_note(np.full(4, 20.0), np.full(2, 20.0), 20.0)
    part = clip_note(np.array([20.0, 19.0, 18.0, 20.0]), np.array([17.0]), 20.0)
    assert "50% of real" in part and "0% of synthetic" in part
    assert clip_note(np.array([5.0, 6.0]), np.array([5.5]), 20.0) is None  # nothing reaches the clip
    assert clip_note(np.full(3, 20.0), np.full(1, 20.0), None) is None  # no clip


def test_weight_spread_root_leaf_and_table(tmp_path):
    from hddgeo.data import load_dataset

    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(12, 6, generator=g, dtype=torch.float64) * (1 + c) for c in range(3)]
    samples = spread_samples(feats, ks=(1.0,), max_norms=(10.0, None), feature_scales=(1.0, 20.0))
    assert_png(save(plot_weight_spread(samples), tmp_path / "spread.png"))

    ds = load_dataset("digits")
    images = [ds.train_images[ds.train_labels == c][:12] for c in range(3)]
    root, leaf = root_and_leaf(sample_table(feats, max_norm=None), n=3)
    assert_png(save(plot_root_leaf_images(images, ds, root, leaf), tmp_path / "root_leaf.png"))

    md = save_table_md(pd.DataFrame({"setting": ["a|b", "c"], "radius_std": [0.5, float("nan")]}), tmp_path / "t.md")
    assert md.splitlines()[0] == "| setting | radius_std |"
    assert "a\\|b" in md and (tmp_path / "t.md").read_text() == md


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from hddgeo.distill import DistillConfig, run_distillation

    out = str(tmp_path_factory.mktemp("runs") / "dm")
    torch.set_num_threads(1)
    run_distillation(DistillConfig(dataset="digits", ipc=1, iterations=1, batch_real=8, final_eval_epochs=0), out,
                     progress=False)
    return out


def test_poincare_report_writes_pngs(tiny_run, tmp_path):
    paths = poincare_report(tiny_run, classes=[0, 1, 2], per_class=20)
    assert paths == [os.path.join(tiny_run, "plots", name)  # default out_dir: RUN_DIR/plots
                     for name in ("poincare_disk.png", "radius_hist.png", "root_leaf.png")]
    for p in paths:
        assert_png(p, min_bytes=10_000)


def test_poincare_report_rejects_unfinished_runs(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        poincare_report(str(tmp_path / "missing"))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    with open(tiny_run + "/config.json") as fh:
        (unfinished / "config.json").write_text(json.dumps(json.load(fh)))
    with pytest.raises(ValueError, match="not a finished run directory: synset.pt missing"):
        poincare_report(str(unfinished))
    with pytest.raises(ValueError, match="classes"):
        poincare_report(tiny_run, classes=[42])
