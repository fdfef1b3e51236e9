"""Dataset loaders (on tiny fake files in each real on-disk format) and class pools."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from hddgeo.data import (
    DATASET_NAMES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassPool,
    ImageDataset,
    load_dataset,
    read_idx,
)
from hddgeo.data import datasets as datasets_module

from conftest import make_fashionmnist, write_idx


def _normalised(u8, mean, std):
    """Expected normalised value of uint8 pixels ``(N, C, H, W)``."""
    x = torch.as_tensor(np.asarray(u8), dtype=torch.float32) / 255.0
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


# ---------------------------------------------------------------------------------------------
# Fake files in the real formats
# ---------------------------------------------------------------------------------------------

def _make_fashionmnist(root: Path, rng):
    # torchvision's layout; train gzipped, test plain: both forms torchvision may leave in raw/
    return make_fashionmnist(root / "FashionMNIST" / "raw", rng, per_class=(2, 1))


def _make_svhn(root: Path, rng):
    data = {}
    for split, n in (("train", 12), ("test", 7)):
        x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)  # (H, W, C, N) as in the real file
        digits = np.arange(n) % 10
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)  # digit 0 stored as 10
        scipy.io.savemat(str(root / f"{split}_32x32.mat"), {"X": x, "y": y})
        data[split] = (x, digits)
    return data


def _make_cifar10(root: Path, rng):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = []
    for i in range(1, 6):
        data = rng.integers(0, 256, (4, 3072)).astype(np.uint8)
        labels = [(4 * i + j) % 10 for j in range(4)]
        batches.append((data, labels))
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i} of 5", "data": data, "labels": labels}, f)
    test = (rng.integers(0, 256, (6, 3072)).astype(np.uint8), [9, 8, 7, 6, 5, 4])
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": test[0], "labels": test[1]}, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": 4}, f)
    return batches, test, names


def _make_cifar100(root: Path, rng):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train = (rng.integers(0, 256, (8, 3072)).astype(np.uint8), [0, 99, 5, 50, 7, 1, 2, 3])
    test = (rng.integers(0, 256, (3, 3072)).astype(np.uint8), [99, 0, 42])
    for name, (data, fine) in (("train", train), ("test", test)):
        with open(folder / name, "wb") as f:
            # the real files use byte-string keys (Python 2 pickles); check we cope with them
            pickle.dump({b"data": data, b"fine_labels": fine, b"coarse_labels": [0] * len(fine)}, f)
    names = [f"class_{i:02d}" for i in range(100)]
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": names, "coarse_label_names": [f"super_{i}" for i in range(20)]}, f)
    return train, test, names


def _solid(path: Path, size, colour, mode="RGB"):
    Image.new(mode, size, colour).save(path, format="JPEG", quality=95)


TINY_COLOURS = {"n01443537": (200, 30, 30), "n01629819": (30, 200, 30), "n01641577": (30, 30, 200)}


def _make_tinyimagenet(root: Path):
    base = root / "tiny-imagenet-200"
    wnids = list(TINY_COLOURS)
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # order must not matter
    (base / "words.txt").write_text(
        "n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n"
    )
    for wnid, colour in TINY_COLOURS.items():
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        for j in range(2):
            _solid(images / f"{wnid}_{j}.JPEG", (64, 64), colour)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    # one grayscale training image, as TinyImageNet really contains some
    _solid(base / "train" / wnids[0] / "images" / f"{wnids[0]}_2.JPEG", (64, 64), 128, mode="L")
    lines = []
    for i, wnid in enumerate([wnids[2], wnids[0], wnids[1], wnids[2]]):
        _solid(base / "val" / "images" / f"val_{i}.JPEG", (64, 64), TINY_COLOURS[wnid])
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


WOOF = {"n02086240": (250, 250, 0), "n02115641": (0, 250, 250)}


def _make_imagewoof(root: Path, folder="imagewoof2-160", size=(200, 160)):
    base = root / folder
    for split, n in (("train", 3), ("val", 1)):
        for wnid, colour in WOOF.items():
            d = base / split / wnid
            d.mkdir(parents=True)
            for j in range(n):
                _solid(d / f"{wnid}_{j}.JPEG", size, colour)
    return base


# ---------------------------------------------------------------------------------------------
# Loader tests
# ---------------------------------------------------------------------------------------------

def test_digits_fixed_stratified_split_and_train_normalisation():
    ds = load_dataset("digits")
    assert isinstance(ds, ImageDataset)
    assert ds.train_images.shape == (1437, 1, 8, 8) and ds.test_images.shape == (360, 1, 8, 8)
    assert ds.train_images.dtype == torch.float32 and ds.train_labels.dtype == torch.int64
    assert ds.channels == 1 and ds.image_size == (8, 8) and ds.num_classes == 10
    assert ds.class_names == [str(i) for i in range(10)]
    # statistics come from the train split
    assert abs(float(ds.train_images.mean())) < 1e-5
    assert abs(float(ds.train_images.std(unbiased=False)) - 1.0) < 1e-5
    # stratified: every class has roughly 20% of its images in the test split
    train_counts = torch.bincount(ds.train_labels, minlength=10).float()
    test_counts = torch.bincount(ds.test_labels, minlength=10).float()
    assert torch.all((test_counts / (train_counts + test_counts) - 0.2).abs() < 0.02)
    # fixed: a second load gives the same split
    again = load_dataset("digits")
    assert torch.equal(again.train_labels, ds.train_labels)
    assert torch.equal(again.test_images, ds.test_images)
    # pixels were 0..16, scaled to [0, 1]
    pixels = ds.denormalise(ds.train_images)
    assert float(pixels.min()) == 0.0 and abs(float(pixels.max()) - 1.0) < 1e-5


def test_digits_resize():
    ds = load_dataset("digits", image_size=16)
    assert ds.image_size == (16, 16)


def test_fashionmnist(tmp_path):
    data = _make_fashionmnist(tmp_path, np.random.default_rng(0))
    ds = load_dataset("fashionmnist", data_root=tmp_path)
    assert ds.train_images.shape == (20, 1, 28, 28) and ds.test_images.shape == (10, 1, 28, 28)
    assert ds.mean == (0.2861,) and ds.std == (0.3530,)
    assert ds.class_names[0] == "T-shirt/top" and ds.num_classes == 10
    torch.testing.assert_close(ds.train_images, _normalised(data["train"][0][:, None], ds.mean, ds.std))
    torch.testing.assert_close(ds.test_images, _normalised(data["t10k"][0][:, None], ds.mean, ds.std))
    assert ds.train_labels.tolist() == data["train"][1].tolist()
    assert ds.test_labels.tolist() == data["t10k"][1].tolist()


def test_idx_reader_agrees_with_torchvision(tmp_path):
    # torchvision's FashionMNIST checks only that the raw files exist (no md5), so its own IDX
    # parser can serve as an independent check of ours on an uncompressed file.
    from hddgeo._torchvision import torchvision

    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28))
    write_idx(tmp_path / "x-idx3-ubyte", images, compress=False)
    theirs = torchvision.datasets.mnist.read_image_file(str(tmp_path / "x-idx3-ubyte"))
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte"), theirs.numpy())


def test_svhn_orientation_and_label_10_is_zero(tmp_path):
    data = _make_svhn(tmp_path, np.random.default_rng(2))
    ds = load_dataset("svhn", data_root=tmp_path)
    assert ds.train_images.shape == (12, 3, 32, 32) and ds.test_images.shape == (7, 3, 32, 32)
    x, digits = data["train"]
    assert ds.train_labels.tolist() == digits.tolist()
    assert 0 in ds.train_labels.tolist() and 10 not in ds.train_labels.tolist()
    expected = _normalised(np.transpose(x, (3, 2, 0, 1)), ds.mean, ds.std)  # X[h, w, c, n] -> [n, c, h, w]
    torch.testing.assert_close(ds.train_images, expected)
    assert float(ds.train_images[3, 1, 5, 7]) == pytest.approx(
        (x[5, 7, 1, 3] / 255.0 - ds.mean[1]) / ds.std[1], abs=1e-5
    )


def test_cifar10(tmp_path):
    batches, test, names = _make_cifar10(tmp_path, np.random.default_rng(3))
    ds = load_dataset("cifar10", data_root=tmp_path)
    assert ds.train_images.shape == (20, 3, 32, 32) and ds.test_images.shape == (6, 3, 32, 32)
    assert ds.class_names == names and ds.mean == (0.4914, 0.4822, 0.4465)
    assert ds.train_labels.tolist() == [label for _, labels in batches for label in labels]
    train_u8 = np.concatenate([d for d, _ in batches]).reshape(-1, 3, 32, 32)
    torch.testing.assert_close(ds.train_images, _normalised(train_u8, ds.mean, ds.std))
    # row layout: first 1024 values are the red plane, row-major
    first = batches[0][0][0]
    assert float(ds.denormalise(ds.train_images[0])[0, 1, 2]) == pytest.approx(first[32 + 2] / 255.0, abs=1e-5)
    assert float(ds.denormalise(ds.train_images[0])[2, 0, 0]) == pytest.approx(first[2048] / 255.0, abs=1e-5)
    assert ds.test_labels.tolist() == test[1]


def test_cifar100_bytes_keys_and_fine_labels(tmp_path):
    train, test, names = _make_cifar100(tmp_path, np.random.default_rng(4))
    ds = load_dataset("cifar100", data_root=tmp_path)
    assert ds.num_classes == 100 and ds.class_names == names
    assert ds.train_labels.tolist() == train[1] and ds.test_labels.tolist() == test[1]
    torch.testing.assert_close(ds.test_images, _normalised(test[0].reshape(-1, 3, 32, 32), ds.mean, ds.std))


def test_tinyimagenet(tmp_path):
    _make_tinyimagenet(tmp_path)
    ds = load_dataset("tinyimagenet", data_root=tmp_path)
    wnids = sorted(TINY_COLOURS)
    assert ds.num_classes == 3 and ds.extra["wnids"] == wnids
    assert ds.class_names == ["goldfish", "European fire salamander", "n01641577"]
    assert ds.train_images.shape == (7, 3, 64, 64) and ds.test_images.shape == (4, 3, 64, 64)
    assert ds.mean == IMAGENET_MEAN and ds.std == IMAGENET_STD
    assert ds.train_labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert ds.test_labels.tolist() == [2, 0, 1, 2]
    pixels = ds.denormalise(ds.test_images)
    for i, wnid in enumerate([wnids[2], wnids[0], wnids[1], wnids[2]]):
        colour = torch.tensor(TINY_COLOURS[wnid], dtype=torch.float32) / 255
        assert torch.allclose(pixels[i].mean(dim=(1, 2)), colour, atol=0.03)
    grey = ds.denormalise(ds.train_images[2])  # the grayscale file, converted to RGB
    assert torch.allclose(grey.mean(dim=(1, 2)), torch.full((3,), 128 / 255), atol=0.02)


def test_imagewoof_resize_and_variant_choice(tmp_path):
    _make_imagewoof(tmp_path, "imagewoof2-320", size=(20, 20))  # wrong content: must not be chosen
    _make_imagewoof(tmp_path)
    ds = load_dataset("imagewoof", data_root=tmp_path)
    assert ds.image_size == (128, 128) and ds.channels == 3
    assert ds.class_names == ["Shih-Tzu", "dingo"]
    assert ds.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.test_labels.tolist() == [0, 1]
    pixels = ds.denormalise(ds.train_images)
    assert torch.allclose(pixels[4].mean(dim=(1, 2)), torch.tensor(WOOF["n02115641"]) / 255.0, atol=0.03)
    small = load_dataset("imagewoof", data_root=tmp_path, image_size=24)
    assert small.train_images.shape == (6, 3, 24, 24)


def test_missing_files_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="--download") as err:
        load_dataset("cifar10", data_root=tmp_path)
    assert "cifar-10-batches-py" in str(err.value)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_dataset("fashionmnist", data_root=tmp_path)
    with pytest.raises(FileNotFoundError, match="train_32x32.mat"):
        load_dataset("svhn", data_root=tmp_path)
    with pytest.raises(FileNotFoundError, match="val_annotations.txt"):
        load_dataset("tinyimagenet", data_root=tmp_path)
    with pytest.raises(FileNotFoundError, match="imagewoof"):
        load_dataset("imagewoof", data_root=tmp_path, download=True)


def test_bad_names_and_missing_root():
    with pytest.raises(ValueError, match="cifar10"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="--data-root"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("digits", image_size=0)
    assert "digits" in DATASET_NAMES and len(DATASET_NAMES) == 7


def test_download_only_when_asked(tmp_path, monkeypatch):
    calls = []

    def fake_download(name, root):
        calls.append(name)
        _make_cifar10(root, np.random.default_rng(5))

    monkeypatch.setattr(datasets_module, "_download_torchvision", fake_download)
    with pytest.raises(FileNotFoundError):
        load_dataset("cifar10", data_root=tmp_path)
    assert calls == []
    ds = load_dataset("cifar10", data_root=tmp_path, download=True)
    assert calls == ["cifar10"] and ds.train_images.shape[0] == 20
    load_dataset("cifar10", data_root=tmp_path, download=True)  # present now: no second fetch
    assert calls == ["cifar10"]


def test_corrupt_labels_are_reported(tmp_path):
    _make_cifar10(tmp_path, np.random.default_rng(6))
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [10]}, f)
    with pytest.raises(ValueError, match="labels must lie in"):
        load_dataset("cifar10", data_root=tmp_path)


def test_denormalise_clamps_and_checks_channels():
    ds = load_dataset("digits")
    x = torch.full((2, 1, 8, 8), 100.0)
    assert torch.all(ds.denormalise(x) == 1.0)
    assert torch.all(ds.denormalise(-x) == 0.0)
    with pytest.raises(ValueError):
        ds.denormalise(torch.zeros(2, 3, 8, 8))


# ---------------------------------------------------------------------------------------------
# ClassPool
# ---------------------------------------------------------------------------------------------

def _pool():
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 8)
    images = torch.arange(16, dtype=torch.float32).view(16, 1, 1, 1).expand(16, 1, 2, 2).clone()
    return ClassPool(images, labels, 3), labels


def test_pool_indices_and_counts():
    pool, labels = _pool()
    assert [pool.count(c) for c in range(3)] == [5, 3, 8]
    for c in range(3):
        assert torch.all(labels[pool.indices[c]] == c)
    with pytest.raises(ValueError):
        pool.count(3)


def test_pool_sample_deterministic_distinct_and_all_when_short():
    pool, labels = _pool()
    a = pool.sample(2, 4, torch.Generator().manual_seed(7))
    b = pool.sample(2, 4, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == (4, 1, 2, 2)
    ids = a[:, 0, 0, 0].long()
    assert len(set(ids.tolist())) == 4 and torch.all(labels[ids] == 2)
    short = pool.sample(1, 10, torch.Generator().manual_seed(0))
    assert sorted(short[:, 0, 0, 0].long().tolist()) == [5, 6, 7]
    orders = {tuple(pool.sample(2, 8, torch.Generator().manual_seed(s))[:, 0, 0, 0].tolist()) for s in range(5)}
    assert len(orders) > 1  # shuffled, not in dataset order


def test_pool_leaves_global_rng_alone():
    pool, _ = _pool()
    state = torch.get_rng_state()
    pool.sample(0, 3, torch.Generator().manual_seed(1))
    pool.real_init(2, torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.get_rng_state())


def test_real_init():
    pool, labels = _pool()
    images, init_labels = pool.real_init(3, torch.Generator().manual_seed(0))
    assert images.shape == (9, 1, 2, 2) and init_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    ids = images[:, 0, 0, 0].long()
    assert torch.equal(labels[ids], init_labels) and len(set(ids.tolist())) == 9
    images += 1000  # a copy: the pool is untouched
    assert float(pool.images.max()) == 15.0
    with pytest.raises(ValueError, match=r"IPC 4 is larger than class 1 \(3 images\)"):
        pool.real_init(4, torch.Generator().manual_seed(0))


def test_pool_subset():
    pool, labels = _pool()
    keep = torch.tensor([0, 2, 5, 8, 9, 15])
    sub = pool.subset(keep)
    assert len(sub) == 6 and [sub.count(c) for c in range(3)] == [2, 1, 3]
    assert sub.images[:, 0, 0, 0].tolist() == keep.float().tolist()
    assert torch.equal(sub.labels, labels[keep])
    with pytest.raises(ValueError, match="IPC 2 is larger than class 1"):
        sub.real_init(2)
    with pytest.raises(ValueError):
        pool.subset([0, 0])
