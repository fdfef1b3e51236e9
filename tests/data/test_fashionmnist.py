"""Fashion-MNIST: the three folder layouts, the system default, corrupt files, and the real Debian files."""
import gzip

import numpy as np
import pytest
import torch

from hddgeo.cli import main
from hddgeo.data import load_dataset
from hddgeo.data import datasets as datasets_module

from conftest import REAL_FASHIONMNIST, make_fashionmnist, requires_real_fashionmnist


def _expected(u8):
    return (torch.as_tensor(u8, dtype=torch.float32)[:, None] / 255.0 - 0.2861) / 0.3530


@pytest.mark.parametrize("layout", ["flat", "torchvision", "torchvision-folder"])
@pytest.mark.parametrize("compress", [(True, True), (False, False), (False, True)])
def test_layouts(tmp_path, layout, compress):
    folder = {"flat": tmp_path, "torchvision": tmp_path / "FashionMNIST" / "raw",
              "torchvision-folder": tmp_path / "FashionMNIST" / "raw"}[layout]
    data = make_fashionmnist(folder, np.random.default_rng(3), per_class=(3, 2), compress=compress)
    root = tmp_path / "FashionMNIST" if layout == "torchvision-folder" else tmp_path
    ds = load_dataset("fashionmnist", data_root=root)
    assert ds.train_images.shape == (30, 1, 28, 28) and ds.test_images.shape == (20, 1, 28, 28)
    torch.testing.assert_close(ds.train_images, _expected(data["train"][0]))
    torch.testing.assert_close(ds.test_images, _expected(data["t10k"][0]))
    assert ds.train_labels.tolist() == data["train"][1].tolist()


def test_plain_file_wins_over_gz(tmp_path):
    make_fashionmnist(tmp_path, np.random.default_rng(0), compress=(True, True))
    plain = make_fashionmnist(tmp_path, np.random.default_rng(1), compress=(False, False))
    ds = load_dataset("fashionmnist", data_root=tmp_path)
    torch.testing.assert_close(ds.train_images, _expected(plain["train"][0]))


def test_default_root_is_the_system_folder(tmp_path, monkeypatch):
    data = make_fashionmnist(tmp_path / "sys", np.random.default_rng(4))
    monkeypatch.setitem(datasets_module.SYSTEM_DATA_ROOTS, "fashionmnist", tmp_path / "sys")
    ds = load_dataset("fashionmnist")
    assert ds.train_labels.tolist() == data["train"][1].tolist()


def test_missing_names_both_fixes(tmp_path, monkeypatch, capsys):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("fashionmnist", data_root=tmp_path)
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--download" in msg and "train-images-idx3-ubyte" in msg
    monkeypatch.setitem(datasets_module.SYSTEM_DATA_ROOTS, "fashionmnist", tmp_path / "nowhere")
    out = tmp_path / "run"
    assert main(["distill", "--dataset", "fashionmnist", "--out", str(out), "--iterations", "1"]) == 2
    err_text = capsys.readouterr().err.strip()
    assert len(err_text.splitlines()) == 1 and "apt-get install dataset-fashion-mnist" in err_text
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "not-gzip", "bad-crc"])
def test_corrupt_gz_is_one_line_naming_the_file(tmp_path, capsys, damage):
    make_fashionmnist(tmp_path, np.random.default_rng(5), per_class=(3, 1), compress=(True, True))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "not-gzip":
        path.write_bytes(b"this is not gzip data at all")
    else:
        body = bytearray(raw)
        body[-8] ^= 0xFF  # the CRC32 in the gzip trailer
        path.write_bytes(bytes(body))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        load_dataset("fashionmnist", data_root=tmp_path)
    out = tmp_path / "run"
    assert main(["distill", "--dataset", "fashionmnist", "--data-root", str(tmp_path), "--out", str(out)]) == 2
    err_text = capsys.readouterr().err.strip()
    assert len(err_text.splitlines()) == 1 and "train-images-idx3-ubyte.gz" in err_text
    assert "Traceback" not in err_text and not out.exists()


def test_gzip_module_agrees_on_the_fake_files(tmp_path):
    # independent check of the gzip path: decompress by hand and compare with the plain reader
    make_fashionmnist(tmp_path / "gz", np.random.default_rng(6), compress=(True, True))
    plain = tmp_path / "plain"
    plain.mkdir()
    for p in (tmp_path / "gz").iterdir():
        (plain / p.name[:-3]).write_bytes(gzip.decompress(p.read_bytes()))
    a = load_dataset("fashionmnist", data_root=tmp_path / "gz")
    b = load_dataset("fashionmnist", data_root=plain)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)


# ----------------------------------------------------------------------------- the real files (Debian package)
@pytest.fixture(scope="module")
def real():
    return load_dataset("fashionmnist")


@requires_real_fashionmnist
def test_real_files_shapes_counts_and_statistics(real):
    assert real.train_images.shape == (60000, 1, 28, 28) and real.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(real.train_labels, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(real.test_labels, minlength=10).tolist() == [1000] * 10
    pixels = real.train_images.double() * 0.3530 + 0.2861  # undo the normalisation, no clamp
    assert abs(float(pixels.mean()) - 0.2861) < 1e-3 and abs(float(pixels.std()) - 0.3530) < 1e-3
    assert float(pixels.min()) >= -1e-6 and float(pixels.max()) <= 1 + 1e-6
    assert real.class_names[9] == "Ankle boot"


@requires_real_fashionmnist
def test_real_files_distil_a_few_iterations(tmp_path, capsys):
    out = tmp_path / "fm"
    rc = main(["distill", "--dataset", "fashionmnist", "--ipc", "1", "--iterations", "3", "--batch-real", "8",
               "--matcher", "hdd", "--final-eval-epochs", "0", "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    import pandas as pd

    log = pd.read_csv(out / "log.csv")
    assert len(log) == 3 and np.isfinite(log["loss"]).all()
    syn = torch.load(out / "synset.pt", weights_only=True)
    assert syn["images"].shape == (10, 1, 28, 28)
    assert REAL_FASHIONMNIST.is_dir()


def test_test_subset_is_the_first_images_of_each_class(tmp_path):
    data = make_fashionmnist(tmp_path, np.random.default_rng(7), per_class=(2, 4))
    ds = load_dataset("fashionmnist", data_root=tmp_path)
    sub = ds.test_subset(3)
    labels = data["t10k"][1]
    keep = sorted(i for c in range(10) for i in np.flatnonzero(labels == c)[:3])
    assert sub.test_labels.tolist() == labels[keep].tolist()
    assert torch.equal(sub.test_images, ds.test_images[keep]) and torch.equal(sub.train_images, ds.train_images)
    with pytest.raises(ValueError, match="per_class"):
        ds.test_subset(0)


def test_runs_evaluate_on_the_configured_test_subset(tmp_path, fashionmnist_root, monkeypatch):
    from hddgeo.distill import DistillConfig, run_distillation
    from hddgeo.distill import runner

    seen = []
    real = runner.evaluate_synset
    monkeypatch.setattr(runner, "evaluate_synset", lambda *a, **kw: seen.append(len(a[3])) or real(*a, **kw))
    cfg = DistillConfig(dataset="fashionmnist", data_root=str(fashionmnist_root), ipc=1, batch_real=4, iterations=1,
                        final_eval_nets=1, final_eval_epochs=1, eval_test_per_class=2)
    run_distillation(cfg, str(tmp_path / "run"), progress=False)
    assert seen == [20]  # 2 of each of the 10 classes, not the fixture's 30 test images
