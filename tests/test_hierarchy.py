"""Per-sample hierarchical weights, spread over settings, root/leaf selection and hierarchical pruning."""
import math
import warnings

import numpy as np
import pytest
import torch

from hddgeo.hierarchy import kept_count, prune_by_level, root_and_leaf, sample_table, spread_samples, spread_table


def features(sizes=(7, 10, 13), d=6, seed=0, norm_range=(0.5, 4.0)):
    """Per-class features with distinct norms spread over ``norm_range``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for c, n in enumerate(sizes):
        direction = torch.randn(n, d, generator=g, dtype=torch.float64) + 2.0 * torch.eye(d, dtype=torch.float64)[c]
        direction = direction / direction.norm(dim=-1, keepdim=True)
        norms = torch.empty(n, 1, dtype=torch.float64).uniform_(*norm_range, generator=g)
        out.append(direction * norms)
    return out


def test_sample_table_weights_radii_and_shares():
    k = 2.0
    feats = features()
    table = sample_table(feats, k=k, max_norm=None)
    assert len(table) == sum(len(f) for f in feats)
    columns = {"class", "index", "feature_norm", "clipped", "radius", "weight", "tangent_share", "dist_karcher"}
    assert columns <= set(table)
    t = table["radius"].to_numpy() / math.sqrt(k)
    np.testing.assert_allclose(table["weight"], t / np.sinh(t), rtol=1e-12)
    # without a clip the radius is the feature norm (|Log_o(z)| = |v|)
    np.testing.assert_allclose(table["radius"], table["feature_norm"], rtol=1e-12)
    np.testing.assert_allclose(table.groupby("class")["tangent_share"].sum(), 1.0, atol=1e-12)
    assert (table["dist_karcher"] >= 0).all()
    for c, f in enumerate(feats):
        assert table.loc[table["class"] == c, "index"].tolist() == list(range(len(f)))


def test_sample_table_clip_and_dict_input():
    feats = {3: features((5,), norm_range=(2.0, 6.0))[0], 7: features((4,), seed=1, norm_range=(0.1, 0.5))[0]}
    table = sample_table(feats, k=1.0, max_norm=3.0, feature_scale=1.0)
    assert sorted(table["class"].unique()) == [3, 7]
    np.testing.assert_allclose(table["radius"], np.minimum(table["feature_norm"], 3.0), rtol=1e-12)
    assert (table["clipped"] == (table["feature_norm"] > 3.0)).all()


def test_spread_table_clip_erases_the_spread():
    feats = features(norm_range=(25.0, 30.0))  # every norm exceeds max_norm * sqrt(k) = 10
    tab = spread_table(feats, ks=(1.0,), max_norms=(10.0, None), feature_scales=(1.0, 0.1))
    assert len(tab) == 4
    clipped = tab[(tab["max_norm"] == 10.0) & (tab["feature_scale"] == 1.0)].iloc[0]
    assert clipped["clipped_fraction"] == 1.0
    assert clipped["radius_std"] == pytest.approx(0.0, abs=1e-12)
    assert clipped["weight_ratio"] == pytest.approx(1.0, abs=1e-10)
    assert clipped["radius_max"] == pytest.approx(10.0)
    unclipped = tab[tab["max_norm"].isna() & (tab["feature_scale"] == 1.0)].iloc[0]
    assert unclipped["radius_std"] > 1.0 and unclipped["weight_ratio"] > 10
    # rescaling the features below the clip brings the spread back even with the clip
    rescaled = tab[(tab["max_norm"] == 10.0) & (tab["feature_scale"] == 0.1)].iloc[0]
    assert rescaled["clipped_fraction"] == 0.0 and rescaled["radius_std"] > 0.1
    samples = spread_samples(feats, ks=(1.0, 4.0), max_norms=(10.0,), feature_scales=(1.0,))
    assert samples["setting"].nunique() == 2 and len(samples) == 2 * sum(len(f) for f in feats)
    # with k = 4 the clip sits at 10 * sqrt(4) = 20 < 25: still no spread
    assert spread_table(None, samples=samples)["radius_std"].max() == pytest.approx(0.0, abs=1e-12)


def test_root_and_leaf_order_and_ties():
    feats = features()
    table = sample_table(feats, max_norm=None)
    root, leaf = root_and_leaf(table, n=3)
    for c, f in enumerate(feats):
        order = torch.argsort(f.norm(dim=-1)).tolist()
        assert root[c] == order[:3]
        assert leaf[c] == order[::-1][:3]
    # all radii tied by the clip: the unclipped norm still orders them
    tied = sample_table(features(norm_range=(12.0, 20.0)), max_norm=10.0)
    assert tied["radius"].nunique() <= 3 or np.ptp(tied["radius"]) < 1e-9
    r2, l2 = root_and_leaf(tied, n=2)
    f0 = features(norm_range=(12.0, 20.0))[0]
    assert r2[0] == torch.argsort(f0.norm(dim=-1)).tolist()[:2]
    rw, _ = root_and_leaf(table, n=3, by="weight")
    assert rw == root
    with pytest.raises(ValueError, match="by must be"):
        root_and_leaf(table, by="nope")


@pytest.mark.parametrize("fraction", [0.2, 0.3, 0.5, 1.0])
def test_prune_by_level_keeps_ceil_fraction_smallest_radii(fraction):
    feats = features()
    keep = prune_by_level(feats, fraction, k=1.0, max_norm=None)
    for f, kept in zip(feats, keep):
        n = len(f)
        assert len(kept) == math.ceil(round(fraction * n, 9)) == kept_count(n, fraction)
        smallest = torch.argsort(f.norm(dim=-1))[: len(kept)]
        assert sorted(kept.tolist()) == sorted(smallest.tolist())


def test_kept_count_rounding():
    assert kept_count(100, 0.2) == 20  # 0.2 * 100 is 20.000000000000004 in floating point
    assert kept_count(7, 0.3) == 3 and kept_count(1, 0.01) == 1 and kept_count(10, 1.0) == 10


def test_prune_pool_embedding_and_centroid_level():
    feats = features()
    labels = torch.cat([torch.full((len(f),), c) for c, f in enumerate(feats)])
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))
    pool, pool_labels = torch.cat(feats)[perm], labels[perm]
    keep = prune_by_level(pool, 0.3, labels=pool_labels, max_norm=None)
    assert keep.tolist() == sorted(keep.tolist())
    per_class = prune_by_level(feats, 0.3, max_norm=None)
    offsets = np.cumsum([0] + [len(f) for f in feats])
    inverse = torch.argsort(perm)  # position in the pool of the i-th concatenated sample
    expected = sorted(inverse[offsets[c] + i].item() for c, kept in enumerate(per_class) for i in kept)
    assert keep.tolist() == expected
    # centroid level: keeps the samples nearest to the class's Karcher mean
    table = sample_table(feats, max_norm=None)
    central = prune_by_level(feats, 0.5, level="centroid_distance", max_norm=None)
    for c, kept in enumerate(central):
        d = table.loc[table["class"] == c, "dist_karcher"].to_numpy()
        assert sorted(kept.tolist()) == sorted(np.argsort(d, kind="stable")[: len(kept)].tolist())


def test_prune_warns_when_clip_ties_every_radius_and_checks_input():
    feats = features(norm_range=(12.0, 20.0))
    with pytest.warns(UserWarning, match="same radius"):
        keep = prune_by_level(feats, 0.5, max_norm=10.0)
    assert keep[0].tolist() == sorted(torch.argsort(feats[0].norm(dim=-1))[:4].tolist())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prune_by_level(feats, 0.5, max_norm=None)
    with pytest.raises(ValueError, match="fraction"):
        prune_by_level(feats, 0.0)
    with pytest.raises(ValueError, match="level"):
        prune_by_level(feats, 0.5, level="curvature")
    with pytest.raises(ValueError, match="labels"):
        prune_by_level(torch.cat(feats), 0.5)
    with pytest.raises(ValueError, match="k must be positive"):
        sample_table(feats, k=-1.0)
    with pytest.raises(ValueError, match="features must have shape"):
        sample_table([torch.zeros(0, 3)])


def test_random_pruning_is_the_control_a_uniform_share_of_each_class():
    """prune_level random keeps as many images per class as hierarchical pruning, drawn from the run's own stream."""
    from conftest import tiny_config

    from hddgeo.distill import prepare
    from hddgeo.hierarchy import kept_count

    full = prepare(tiny_config())[1]
    pools = {}
    for level, seed in (("random", 0), ("random", 1), ("radius", 0)):
        pools[level, seed] = prepare(tiny_config(prune_fraction=0.2, prune_level=level, seed=seed))[1]
    for pool in pools.values():
        assert [pool.count(c) for c in range(10)] == [kept_count(full.count(c), 0.2) for c in range(10)]
    again = prepare(tiny_config(prune_fraction=0.2, prune_level="random", seed=0))[1]
    assert torch.equal(again.images, pools["random", 0].images)
    assert not torch.equal(pools["random", 0].images, pools["random", 1].images)
    assert not torch.equal(pools["random", 0].images, pools["radius", 0].images)
