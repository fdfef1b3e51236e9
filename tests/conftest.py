"""Shared fixtures: small files in real on-disk formats, made by the tests themselves."""
import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

REAL_FASHIONMNIST = Path("/usr/share/datasets/fashion-mnist")

# Every device a test that builds tensors runs on: the CPU always, CUDA where torch sees a GPU (elsewhere those
# cases skip with the reason).  ``pytest -k cuda`` selects the CUDA cases (benchmarks/gpu_check.py runs them).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="torch sees no CUDA GPU"))]


def tiny_config(**kw):
    """A seconds-long digits run (overrides in ``kw``), the distillation tests' common setting."""
    from hddgeo.distill import DistillConfig

    base = dict(dataset="digits", ipc=2, iterations=4, batch_real=16, final_eval_nets=1, final_eval_epochs=2,
                checkpoint_every=2, idm_queue=2, threads=2)
    base.update(kw)
    return DistillConfig(**base)


def interrupted_run(cfg, out, at, **kw):
    """Run ``cfg`` into the folder ``out`` and stop it right after its checkpoint at iteration ``at``, as a killed
    process stops; ``kw`` goes to ``run_distillation``."""
    from hddgeo.distill import run_distillation
    from hddgeo.distill._hooks import RunInterrupted, stop_after

    with pytest.raises(RunInterrupted), stop_after(at):
        run_distillation(cfg, str(out), progress=False, **kw)


def synset_params(folder: Path) -> torch.Tensor:
    """The learned synthetic images (``params``) a run saved in ``folder``."""
    return torch.load(Path(folder) / "synset.pt", weights_only=True)["params"]


def assert_resume_reproduces(cfg, tmp_path: Path, at=2, **kw):
    """Run ``cfg`` whole into ``tmp_path/full`` and, interrupted at ``at`` then resumed, into ``tmp_path/part``;
    assert both saved the same synthetic images bit for bit and return the two folders."""
    from hddgeo.distill import run_distillation

    full, part = tmp_path / "full", tmp_path / "part"
    run_distillation(cfg, str(full), progress=False, **kw)
    interrupted_run(cfg, part, at, **kw)
    run_distillation(cfg, str(part), resume=True, progress=False, **kw)
    assert torch.equal(synset_params(full), synset_params(part))
    return full, part


@pytest.fixture(scope="session")
def _small_run(tmp_path_factory):
    """A finished two-iteration digits run (IPC 1, checkpoints at both iterations, no final evaluation)."""
    from hddgeo.cli import main

    out = tmp_path_factory.mktemp("small") / "run"
    assert main(["distill", "--dataset", "digits", "--ipc", "1", "--batch-real", "4", "--iterations", "2",
                 "--checkpoint-every", "1", "--final-eval-epochs", "0", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(_small_run, tmp_path):
    """A fresh copy of the small finished run, for a test to damage or extend."""
    dst = tmp_path / "run"
    shutil.copytree(_small_run, dst)
    return dst


@pytest.fixture(params=DEVICES)
def device(request):
    """A device to build tensors on (see ``DEVICES``)."""
    return torch.device(request.param)


@pytest.fixture
def one_thread():
    """One torch thread for the test: on shared cores, small tensors only lose by more (restored after the test)."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Scripts and runs set torch's thread count; no test leaves it changed for the next one."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    """An unsigned-byte IDX file (MNIST family), gzipped to ``path.gz`` when ``compress``."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = Path(str(path) + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def make_fashionmnist(folder: Path, rng, per_class=(2, 1), compress=(True, False)) -> dict:
    """Fake Fashion-MNIST files directly in ``folder``: ``per_class`` train / test images per class,
    the train files gzipped and the test files plain unless ``compress`` says otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, n, gz in (("train", per_class[0], compress[0]), ("t10k", per_class[1], compress[1])):
        labels = np.arange(10 * n) % 10
        images = rng.integers(0, 256, (10 * n, 28, 28))
        write_idx(folder / f"{split}-images-idx3-ubyte", images, compress=gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, compress=gz)
        data[split] = (images, labels)
    return data


@pytest.fixture
def fashionmnist_root(tmp_path):
    """A Debian-layout folder (four ``.gz`` files flat) with 12 train and 3 test images per class."""
    root = tmp_path / "fashion-mnist"
    make_fashionmnist(root, np.random.default_rng(0), per_class=(12, 3), compress=(True, True))
    return root


requires_real_fashionmnist = pytest.mark.skipif(
    not (REAL_FASHIONMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST is not installed in {REAL_FASHIONMNIST} (apt-get install dataset-fashion-mnist)")
