"""Labelled image datasets held entirely in memory as normalised tensors.

Distillation touches every real image thousands of times (a class batch of 256 per iteration
for 20,000 iterations), so each split is decoded once into one float32 tensor and the hot path
only indexes it; there are no per-item transforms.

On-disk formats are read by small readers written here rather than through torchvision's
dataset classes: torchvision refuses SVHN and CIFAR files whose md5 differs from the official
archives, which would make the loaders impossible to test on small fake files and adds a full
md5 pass over hundreds of megabytes at every start. torchvision is used only to *download*
(``download=True``), where its md5 checks are exactly what we want. The readers check the
structure instead (shapes, dtypes, label ranges) and fail with a message naming the file.

Datasets and where they are looked for (``data_root`` is the ``--data-root`` directory):

- ``digits``: scikit-learn's bundled 8x8 digits, 1x8x8, no files; statistics of the train split.
- ``fashionmnist``: ``{train,t10k}-images-idx3-ubyte`` and ``...-labels-idx1-ubyte`` (each plain or
  gzipped) directly in ``data_root`` (Debian's ``dataset-fashion-mnist`` layout) or in
  ``FashionMNIST/raw/`` (torchvision's), 1x28x28. Without ``data_root``:
  ``/usr/share/datasets/fashion-mnist`` (where ``apt-get install dataset-fashion-mnist`` puts them).
- ``svhn``: ``train_32x32.mat`` and ``test_32x32.mat`` directly in ``data_root`` (where
  torchvision puts them), 3x32x32.
- ``cifar10``: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``, 3x32x32.
- ``cifar100``: ``cifar-100-python/{train, test, meta}``, 3x32x32 (fine labels).
- ``tinyimagenet``: ``tiny-imagenet-200/train/<wnid>/images/*.JPEG``, ``val/images`` and
  ``val/val_annotations.txt``, 3x64x64, ImageNet statistics.
- ``imagewoof``: ``imagewoof*/{train,val}/<wnid>/*.JPEG``, resized to 3x128x128 by default,
  ImageNet statistics.

The torchvision datasets use the reference mean/std of the public distillation code bases.
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DATASET_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGEWOOF_DEFAULT_SIZE",
    "ImageDataset",
    "load_dataset",
    "read_cifar_batch",
    "read_idx",
    "read_svhn_mat",
]

DATASET_NAMES = ("digits", "fashionmnist", "svhn", "cifar10", "cifar100", "tinyimagenet", "imagewoof")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ImageWoof images come at 160/320 px or full size; 128x128 is the resolution that the
# ImageNet-subset distillation literature (MTT, GLaD, HDD's tables) reports for it and keeps a
# ConvNet of depth 5 meaningful while leaving 9k training images at ~1.8 GB in float32.
IMAGEWOOF_DEFAULT_SIZE = 128
TINYIMAGENET_SIZE = 64

# Reference normalisation statistics of the public distillation code bases.
_REFERENCE_STATS = {
    "fashionmnist": ((0.2861,), (0.3530,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
}

_FASHIONMNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

# ImageNet synset names of the ten ImageWoof breeds, so that plots and tables read as breeds
# rather than WordNet ids. Folders not listed keep their folder name.
_IMAGEWOOF_NAMES = {
    "n02086240": "Shih-Tzu",
    "n02087394": "Rhodesian ridgeback",
    "n02088364": "beagle",
    "n02089973": "English foxhound",
    "n02093754": "Border terrier",
    "n02096294": "Australian terrier",
    "n02099601": "golden retriever",
    "n02105641": "Old English sheepdog",
    "n02111889": "Samoyed",
    "n02115641": "dingo",
}

_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}

# Where a dataset is looked for when no data_root is given: system-wide installs by a package.
SYSTEM_DATA_ROOTS = {"fashionmnist": Path("/usr/share/datasets/fashion-mnist")}

PathLike = Union[str, os.PathLike]


@dataclass
class ImageDataset:
    """A train/test pair of normalised image tensors with the statistics that undo it.

    Images are ``(N, C, H, W)`` float32, already normalised with ``mean``/``std`` per channel;
    labels are int64 in ``[0, num_classes)``. Keeping the statistics next to the tensors lets
    plots and saved synthetic sets be mapped back to pixels without knowing the dataset.
    ``extra`` holds loader-specific metadata (the WordNet ids of the image-folder datasets).
    """

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    extra: dict = field(default_factory=dict, repr=False)

    # the dataset as loaded stays in host memory; a run copies what it computes on (its class pool, the test
    # split of an evaluation) to its device (see hddgeo.device.tensors_off_device)
    _host_tensors = ("train_images", "train_labels", "test_images", "test_labels")

    def __post_init__(self) -> None:
        # A loader bug that mixes up layouts would otherwise only surface deep inside a
        # network as a shape error; check the contract once, here.
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.dim() != 4:
                raise ValueError(f"{self.name}: {split}_images must be (N, C, H, W), got {tuple(images.shape)}")
            if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
                raise ValueError(
                    f"{self.name}: {split}_labels must be (N,) with N = {images.shape[0]}, "
                    f"got {tuple(labels.shape)}"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(
                f"{self.name}: train and test images differ in shape: "
                f"{tuple(self.train_images.shape[1:])} vs {tuple(self.test_images.shape[1:])}"
            )
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"{self.name}: mean/std need one value per channel ({self.channels})")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.train_images.shape[2]), int(self.train_images.shape[3])

    def test_subset(self, per_class: int) -> "ImageDataset":
        """The same dataset with only the first ``per_class`` test images of each class (in file order).

        A fixed, stratified subset keeps every evaluation of a study on the same images, so paired
        comparisons stay paired; it only trades test-set size for time (CPU budgets)."""
        if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
            raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
        keep = torch.cat([torch.nonzero(self.test_labels == c).flatten()[:per_class] for c in range(self.num_classes)])
        keep = keep.sort().values
        return dataclasses.replace(self, test_images=self.test_images[keep], test_labels=self.test_labels[keep])

    def denormalise(self, x: Tensor) -> Tensor:
        """Map normalised images (``(C, H, W)`` or ``(..., C, H, W)``) back to ``[0, 1]``.

        Synthetic images drift outside the range of real pixels during distillation, hence the
        clamp: the result is always displayable.
        """
        if x.dim() < 3 or x.shape[-3] != self.channels:
            raise ValueError(f"denormalise expects (..., {self.channels}, H, W) images, got {tuple(x.shape)}")
        shape = (self.channels, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x * std + mean).clamp(0.0, 1.0)


def load_dataset(
    name: str,
    data_root: Optional[PathLike] = None,
    download: bool = False,
    image_size: Optional[int] = None,
) -> ImageDataset:
    """Load one of :data:`DATASET_NAMES` into memory.

    ``image_size`` resizes to square ``image_size x image_size`` images (bilinear with
    antialiasing for tensors; shorter side then centre crop for image folders); ``None`` keeps
    each dataset's native size (ImageWoof: :data:`IMAGEWOOF_DEFAULT_SIZE`). ``download=True``
    fetches the torchvision datasets when their files are missing; nothing is downloaded
    otherwise.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    if key == "digits":
        return _check_images(_load_digits(image_size), "digits (embedded)")
    if data_root is None and key in SYSTEM_DATA_ROOTS:
        data_root = SYSTEM_DATA_ROOTS[key]
    if data_root is None:
        raise ValueError(
            f"dataset {key!r} is read from disk: pass --data-root DIR (data_root=DIR) naming the "
            f"directory that holds it"
        )
    root = Path(data_root).expanduser()
    return _check_images(_DISK_LOADERS[key](root, download, image_size), f"{key} under {root}")


MIN_IMAGE_SIZE = 8  # ConvNet (depth 3) halves the side three times; the digits are 8x8


def _check_images(dataset: ImageDataset, where: str) -> ImageDataset:
    """``dataset`` if its splits hold images of one shape, at least ``MIN_IMAGE_SIZE`` on a side, and both
    splits are non-empty; ``ValueError`` naming the dataset and folder otherwise (checked when the dataset is
    loaded, before a run directory is created)."""
    train, test = tuple(dataset.train_images.shape), tuple(dataset.test_images.shape)
    if len(train) != 4 or train[1:] != test[1:] or not train[0] or not test[0]:
        raise ValueError(f"{where}: train images {train} and test images {test} are not two non-empty sets of "
                         f"images of one shape (N, C, H, W); restore the dataset's files")
    if min(train[2:]) < MIN_IMAGE_SIZE:
        raise ValueError(f"{where}: images of {train[2]}x{train[3]} pixels are too small for the networks (at least "
                         f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}: ConvNet halves the side three times)")
    return dataset


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------

def _normalise(images: Union[np.ndarray, Tensor], mean, std, image_size: Optional[int]) -> Tensor:
    """uint8 ``(N, C, H, W)`` -> normalised float32, resized first so the statistics apply to
    the pixels the network actually sees. Works in place to avoid a second full-size copy."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    x = images.to(torch.float32).div_(255.0)
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True).clamp_(0.0, 1.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(m).div_(s).contiguous()


def _labels(values, num_classes: int, source: Path) -> Tensor:
    labels = torch.as_tensor(np.asarray(values, dtype=np.int64)).reshape(-1)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{source}: labels must lie in [0, {num_classes}), found range "
            f"[{int(labels.min())}, {int(labels.max())}]; the file is corrupt or not this dataset"
        )
    return labels


def _require(title: str, root: Path, required: Sequence[Sequence[Path]], hint: str,
             download: bool, fetch: Optional[Callable[[Path], None]]) -> list[Path]:
    """Return the first existing alternative of each required file, downloading when allowed.

    ``required`` holds, for every file, the paths it may be found at (e.g. with or without
    ``.gz``), so that one error message can list everything that is missing at once.
    """

    def resolve() -> tuple[list[Path], list[Path]]:
        found, missing = [], []
        for alternatives in required:
            hit = next((p for p in alternatives if p.is_file()), None)
            if hit is None:
                missing.append(alternatives[0])
            else:
                found.append(hit)
        return found, missing

    found, missing = resolve()
    if missing and download and fetch is not None:
        fetch(root)
        found, missing = resolve()
    if missing:
        shown = ", ".join(str(p) for p in missing[:6]) + (" ..." if len(missing) > 6 else "")
        raise FileNotFoundError(f"{title} not found under {root}: missing {shown}. {hint}")
    return found


def _download_hint(folder_desc: str) -> str:
    return (
        f"Pass --download (download=True) to fetch it with torchvision, or point --data-root at "
        f"the directory that holds {folder_desc}."
    )


def _download_torchvision(name: str, root: Path) -> None:
    """Let torchvision download (and md5-check) the official files into ``root``.

    The dataset objects it builds are discarded; our own readers then load the files.
    """
    from hddgeo._torchvision import torchvision  # lazy: importing torchvision is slow

    tvd = torchvision.datasets
    root.mkdir(parents=True, exist_ok=True)
    if name == "fashionmnist":
        tvd.FashionMNIST(str(root), train=True, download=True)
    elif name == "svhn":
        for split in ("train", "test"):
            tvd.SVHN(str(root), split=split, download=True)
    elif name == "cifar10":
        tvd.CIFAR10(str(root), train=True, download=True)
    elif name == "cifar100":
        tvd.CIFAR100(str(root), train=True, download=True)
    else:  # pragma: no cover - guarded by the callers
        raise ValueError(f"torchvision does not provide {name!r}")


# --------------------------------------------------------------------------------------------
# digits (scikit-learn, no files)
# --------------------------------------------------------------------------------------------

def _load_digits(image_size: Optional[int]) -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits: the dataset every test and demo can run on offline.

    The split is fixed (stratified 80/20, ``random_state=0``) so that results are comparable
    across runs and machines. The data set has no published statistics, so mean and std are
    computed over all pixels of the train split (population std), after any resizing.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    targets = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(targets)), test_size=0.2, random_state=0, stratify=bunch.target
    )
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    if image_size is not None and image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear",
                               align_corners=False, antialias=True).clamp_(0.0, 1.0)
    train = images[train_idx]
    mean = float(train.mean())
    std = float(train.std(unbiased=False))
    return ImageDataset(
        name="digits",
        train_images=((train - mean) / std).contiguous(),
        train_labels=targets[train_idx],
        test_images=((images[test_idx] - mean) / std).contiguous(),
        test_labels=targets[test_idx],
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        mean=(mean,),
        std=(std,),
    )


# --------------------------------------------------------------------------------------------
# FashionMNIST (IDX files)
# --------------------------------------------------------------------------------------------

MAX_IDX_BYTES = 2**31  # an idx file's data may declare at most this (Fashion-MNIST's largest holds 47 MB)


def read_idx(path: PathLike) -> np.ndarray:
    """Read an unsigned-byte IDX file (the MNIST family's format), gzipped or not.

    Layout: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then each
    dimension as a big-endian uint32, then the data in C order. A truncated or corrupt file
    raises ``ValueError`` naming it.  The header is checked before the body is read: a file whose
    dimensions declare more than :data:`MAX_IDX_BYTES`, or more than the file holds (its size, or for a
    gzipped file the uncompressed size its gzip trailer records), is refused without reading the rest.
    """
    path = Path(path)
    gz = path.suffix == ".gz"
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[0:2] != b"\x00\x00":
                raise ValueError(f"{path} is not an IDX file (bad magic number)")
            type_code, ndim = head[2], head[3]
            if type_code != 0x08:
                raise ValueError(f"{path}: expected unsigned-byte IDX data (type 0x08), found type {type_code:#04x}")
            raw = f.read(4 * ndim)
            if len(raw) < 4 * ndim:
                raise ValueError(f"{path}: truncated IDX header")
            dims = struct.unpack(">" + "I" * ndim, raw)
            header, count = 4 + 4 * ndim, math.prod(dims)
            if count > MAX_IDX_BYTES:
                raise ValueError(f"{path}: IDX header announces shape {dims} ({count:,} values), more than the "
                                 f"{MAX_IDX_BYTES:,} an idx file may hold here; replace it with an intact copy")
            _check_idx_size(path, gz, header + count, dims)
            data = f.read(count + 1)  # one byte more than announced: trailing data is an error too
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ValueError(f"{path} is truncated or not a valid gzip file ({err}); replace it with an intact "
                         f"copy (reinstall the package or download it again)") from None
    except OSError as err:
        raise ValueError(f"{path} cannot be read ({err.strerror or err})") from None
    if len(data) != count:
        raise ValueError(f"{path}: IDX header announces shape {dims} but holds {len(data)} values"
                         + (" or more" if len(data) > count else ""))
    values = np.frombuffer(bytearray(data), dtype=np.uint8)  # writable, for torch
    return values.reshape(dims)


def _check_idx_size(path: Path, gz: bool, total: int, dims) -> None:
    """``ValueError`` when an idx file of ``total`` bytes (header and data) cannot be ``path``: a plain file of
    another size, or a gzip file whose trailer (ISIZE: the uncompressed size modulo 2**32) says otherwise."""
    size = path.stat().st_size
    if not gz:
        if size != total:
            raise ValueError(f"{path}: IDX header announces shape {dims} ({total:,} bytes) but the file holds "
                             f"{size:,} bytes; replace it with an intact copy")
        return
    if size < 18:  # a gzip member's header and trailer alone
        raise EOFError("shorter than a gzip header")
    with open(path, "rb") as raw:
        raw.seek(size - 4)
        isize = struct.unpack("<I", raw.read(4))[0]
    if isize != total % 2**32:
        raise ValueError(f"{path}: IDX header announces shape {dims} ({total:,} bytes) but the gzip trailer records "
                         f"{isize:,} uncompressed bytes; replace it with an intact copy")


_FASHIONMNIST_STEMS = tuple(f"{split}-{kind}" for split in ("train", "t10k")
                            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))


def _idx_files(folder: Path) -> Optional[list[Path]]:
    """The four Fashion-MNIST files in ``folder`` (each plain or ``.gz``), or ``None`` if any is missing.

    The plain file wins over the gzipped one: torchvision leaves both after a download, and the plain
    one needs no decompression."""
    found = []
    for stem in _FASHIONMNIST_STEMS:
        hit = next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found


def fashionmnist_available(data_root: Optional[PathLike] = None) -> bool:
    """Whether the four Fashion-MNIST files are in ``data_root`` (default Debian's folder), in either layout
    that :func:`load_dataset` reads without downloading: the notebooks use it to pick their dataset."""
    root = Path(data_root) if data_root is not None else SYSTEM_DATA_ROOTS["fashionmnist"]
    return any(_idx_files(folder) is not None for folder in _fashionmnist_folders(root))


def _fashionmnist_folders(root: Path) -> list[Path]:
    # Three layouts: the files flat in root (Debian's dataset-fashion-mnist, any hand-made folder),
    # torchvision's root/FashionMNIST/raw, and root naming torchvision's FashionMNIST folder itself.
    return [root, root / "FashionMNIST" / "raw", root / "raw"]


def _load_fashionmnist(root: Path, download: bool, image_size: Optional[int]) -> ImageDataset:
    folders = _fashionmnist_folders(root)
    paths = next((hit for hit in map(_idx_files, folders) if hit is not None), None)
    if paths is None and download:
        _download_torchvision("fashionmnist", root)
        paths = _idx_files(root / "FashionMNIST" / "raw")
    if paths is None:
        raise FileNotFoundError(
            f"Fashion-MNIST not found under {root}: none of {', '.join(str(f) for f in folders)} holds "
            f"{_FASHIONMNIST_STEMS[0]}[.gz] and the other three idx files. Install Debian's package "
            f"(apt-get install dataset-fashion-mnist, files in {SYSTEM_DATA_ROOTS['fashionmnist']}) or "
            f"pass --download with --data-root DIR to fetch them with torchvision"
        )
    train_x, train_y, test_x, test_y = (read_idx(p) for p in paths)
    for images, labels, path in ((train_x, train_y, paths[0]), (test_x, test_y, paths[2])):
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{path}: expected (N, H, W) images and N labels, got {images.shape} and {labels.shape}"
            )
        if images.shape[1:] != (28, 28) or images.shape[0] == 0:
            raise ValueError(f"{path}: Fashion-MNIST holds 28x28 images, this file {images.shape[0]} of "
                             f"{'x'.join(map(str, images.shape[1:]))}; replace it with an intact copy")
    mean, std = _REFERENCE_STATS["fashionmnist"]
    return ImageDataset(
        name="fashionmnist",
        train_images=_normalise(train_x[:, None], mean, std, image_size),
        train_labels=_labels(train_y, 10, paths[1]),
        test_images=_normalise(test_x[:, None], mean, std, image_size),
        test_labels=_labels(test_y, 10, paths[3]),
        num_classes=10,
        class_names=list(_FASHIONMNIST_CLASSES),
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------------------------
# SVHN (MATLAB files)
# --------------------------------------------------------------------------------------------

def read_svhn_mat(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN cropped-digits ``.mat`` file into ``(N, 3, H, W)`` uint8 and labels 0..9.

    The file stores ``X`` as ``(H, W, 3, N)`` and ``y`` as ``(N, 1)`` with the digit 0
    labelled 10; labels are remapped so that class ``d`` is digit ``d``.
    """
    import scipy.io

    path = Path(path)
    mat = scipy.io.loadmat(str(path))
    if "X" not in mat or "y" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: expected MATLAB variables 'X' and 'y', found {found}")
    x, y = mat["X"], np.asarray(mat["y"]).astype(np.int64).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != y.shape[0]:
        raise ValueError(f"{path}: expected X of shape (H, W, 3, N) with N = {y.shape[0]}, got {x.shape}")
    y = np.where(y == 10, 0, y)
    return np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)).astype(np.uint8, copy=False)), y


def _load_svhn(root: Path, download: bool, image_size: Optional[int]) -> ImageDataset:
    required = [[root / "train_32x32.mat"], [root / "test_32x32.mat"]]
    train_path, test_path = _require("SVHN", root, required, _download_hint("train_32x32.mat and test_32x32.mat"),
                                     download, lambda r: _download_torchvision("svhn", r))
    train_x, train_y = read_svhn_mat(train_path)
    test_x, test_y = read_svhn_mat(test_path)
    mean, std = _REFERENCE_STATS["svhn"]
    return ImageDataset(
        name="svhn",
        train_images=_normalise(train_x, mean, std, image_size),
        train_labels=_labels(train_y, 10, train_path),
        test_images=_normalise(test_x, mean, std, image_size),
        test_labels=_labels(test_y, 10, test_path),
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickles)
# --------------------------------------------------------------------------------------------

class _DataUnpickler(pickle.Unpickler):
    """Unpickles plain data only: numbers, strings, bytes, lists, tuples, dicts and numpy arrays.

    The CIFAR batches are pickles, and a pickle can name any callable to run while loading. Only the
    few numpy functions that rebuild an array (and latin1 decoding of Python 2 byte strings) may be named
    here; anything else, ``os.system`` say, is refused before it is looked up."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain arrays, lists, dicts, "
                                         f"strings and bytes are read from dataset files")
        if module == "numpy.core.multiarray":  # numpy 2 moved it; the old path only warns
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _no_objects(value, path: Path) -> None:
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise ValueError(f"{path}: holds an array of Python objects; dataset files must hold plain numbers")
    if isinstance(value, dict):
        for v in value.values():
            _no_objects(v, path)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _no_objects(v, path)


def _unpickle(path: Path) -> dict:
    # The official batches are Python 2 pickles; latin1 decodes their byte strings losslessly.
    try:
        with open(path, "rb") as f:
            entry = _DataUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f"{path} is not a readable CIFAR batch ({str(err)[:160]})") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(entry).__name__}")
    _no_objects(entry, path)
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in entry.items()}


def read_cifar_batch(path: PathLike, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch into ``(N, 3, 32, 32)`` uint8 and int64 labels.

    Each row of ``data`` is 1024 red, then 1024 green, then 1024 blue values, row-major.
    """
    path = Path(path)
    entry = _unpickle(path)
    if "data" not in entry or label_key not in entry:
        raise ValueError(f"{path}: expected keys 'data' and {label_key!r}, found {sorted(entry)}")
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64).reshape(-1)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: expected data of shape (N, 3072) with N = {labels.shape[0]}, got {data.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def _read_names(path: Path, key: str) -> list[str]:
    entry = _unpickle(path)
    if key not in entry:
        raise ValueError(f"{path}: expected key {key!r}, found {sorted(entry)}")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in entry[key]]


def _load_cifar(name: str, root: Path, download: bool, image_size: Optional[int]) -> ImageDataset:
    if name == "cifar10":
        title, folder = "CIFAR-10", root / "cifar-10-batches-py"
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_file, meta_file, num_classes = "test_batch", "batches.meta", 10
        label_key, names_key = "labels", "label_names"
    else:
        title, folder = "CIFAR-100", root / "cifar-100-python"
        train_files = ["train"]
        test_file, meta_file, num_classes = "test", "meta", 100
        label_key, names_key = "fine_labels", "fine_label_names"
    required = [[folder / f] for f in (*train_files, test_file, meta_file)]
    paths = _require(title, root, required, _download_hint(folder.name + "/"), download,
                     lambda r: _download_torchvision(name, r))
    train = [read_cifar_batch(p, label_key) for p in paths[: len(train_files)]]
    test_x, test_y = read_cifar_batch(paths[-2], label_key)
    class_names = _read_names(paths[-1], names_key)
    if len(class_names) != num_classes:
        raise ValueError(f"{paths[-1]}: expected {num_classes} class names, found {len(class_names)}")
    mean, std = _REFERENCE_STATS[name]
    return ImageDataset(
        name=name,
        train_images=_normalise(np.concatenate([x for x, _ in train]), mean, std, image_size),
        train_labels=_labels(np.concatenate([y for _, y in train]), num_classes, folder),
        test_images=_normalise(test_x, mean, std, image_size),
        test_labels=_labels(test_y, num_classes, paths[-2]),
        num_classes=num_classes,
        class_names=class_names,
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------------------------
# Image folders (TinyImageNet, ImageWoof)
# --------------------------------------------------------------------------------------------

def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)


def _decode(path: Path, size: int) -> np.ndarray:
    """One image as ``(3, size, size)`` uint8: shorter side resized to ``size``, centre crop.

    Grayscale and CMYK files (TinyImageNet has some) are converted to RGB so every image has
    three channels.
    """
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        if (w, h) != (size, size):
            scale = size / min(w, h)
            new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
            img = img.resize((new_w, new_h), Image.BILINEAR)
            left, top = (new_w - size) // 2, (new_h - size) // 2
            img = img.crop((left, top, left + size, top + size))
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _decode_all(paths: Sequence[Path], size: int) -> np.ndarray:
    """Decode into one preallocated array; threads help because PIL releases the GIL while
    decoding JPEGs, which dominates loading 100k TinyImageNet files."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def work(i: int) -> None:
        out[i] = _decode(paths[i], size)

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, range(len(paths))))
    return out


def _folder_dataset(name: str, classes: list[str], class_names: list[str],
                    train: list[tuple[Path, int]], test: list[tuple[Path, int]], size: int) -> ImageDataset:
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    return ImageDataset(
        name=name,
        train_images=_normalise(_decode_all([p for p, _ in train], size), mean, std, None),
        train_labels=torch.tensor([c for _, c in train], dtype=torch.int64),
        test_images=_normalise(_decode_all([p for p, _ in test], size), mean, std, None),
        test_labels=torch.tensor([c for _, c in test], dtype=torch.int64),
        num_classes=len(classes),
        class_names=class_names,
        mean=mean,
        std=std,
        extra={"wnids": list(classes)},
    )


def _load_tinyimagenet(root: Path, download: bool, image_size: Optional[int]) -> ImageDataset:
    """TinyImageNet-200: the test split is the labelled ``val`` folder (the official test
    images carry no labels), as in the distillation literature."""
    base = root / "tiny-imagenet-200"
    hint = (
        f"Expected {base}/train/<wnid>/images/*.JPEG, {base}/val/images/*.JPEG and "
        f"{base}/val/val_annotations.txt: download tiny-imagenet-200.zip from the Stanford CS231n "
        f"course site and unzip it into {root} (there is no automatic download)."
    )
    train_dir, val_images, annotations = base / "train", base / "val" / "images", base / "val" / "val_annotations.txt"
    if not (train_dir.is_dir() and val_images.is_dir() and annotations.is_file()):
        raise FileNotFoundError(f"TinyImageNet not found under {root}. {hint}")

    wnids_file = base / "wnids.txt"
    if wnids_file.is_file():
        classes = [w.strip() for w in wnids_file.read_text().split() if w.strip()]
    else:
        classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    classes = sorted(classes)  # one fixed class order whatever order wnids.txt lists
    if not classes:
        raise FileNotFoundError(f"TinyImageNet: no class folders in {train_dir}. {hint}")
    index = {w: i for i, w in enumerate(classes)}

    train = []
    for wnid in classes:
        folder = train_dir / wnid / "images"
        if not folder.is_dir():
            raise FileNotFoundError(f"TinyImageNet: missing {folder}. {hint}")
        train += [(p, index[wnid]) for p in _image_files(folder)]

    test = []
    for line_no, line in enumerate(annotations.read_text().splitlines(), start=1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in index:
            raise ValueError(f"{annotations}:{line_no}: expected '<file>\\t<wnid>...' with a known wnid, got {line!r}")
        path = val_images / fields[0]
        if not path.is_file():
            raise FileNotFoundError(f"TinyImageNet: {annotations} lists {fields[0]} but {path} is missing. {hint}")
        test.append((path, index[fields[1]]))

    names = _tinyimagenet_names(base / "words.txt", classes)
    return _folder_dataset("tinyimagenet", classes, names, train, test, image_size or TINYIMAGENET_SIZE)


def _tinyimagenet_names(words: Path, classes: list[str]) -> list[str]:
    """Readable names from ``words.txt`` (``wnid<TAB>name, synonym, ...``), first synonym only."""
    lookup = {}
    if words.is_file():
        for line in words.read_text(encoding="utf-8", errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            lookup[wnid.strip()] = text.split(",")[0].strip()
    return [lookup.get(w) or w for w in classes]


def _imagewoof_dirs(root: Path) -> list[Path]:
    candidates = [p for p in sorted(root.glob("imagewoof*")) if p.is_dir()]
    if root.name.startswith("imagewoof"):
        candidates.insert(0, root)
    return [p for p in candidates if (p / "train").is_dir() and (p / "val").is_dir()]


def _nominal_resolution(folder: Path) -> float:
    # fastai ships imagewoof2-160 / -320 (shorter side in px) and full-size imagewoof2.
    suffix = folder.name.rsplit("-", 1)[-1]
    return float(suffix) if suffix.isdigit() else math.inf


def _load_imagewoof(root: Path, download: bool, image_size: Optional[int]) -> ImageDataset:
    """ImageWoof (ten dog breeds). When several variants are present, the smallest one that is
    at least ``image_size`` is read, so that nothing is upsampled and decoding stays cheap."""
    size = image_size or IMAGEWOOF_DEFAULT_SIZE
    hint = (
        f"Expected {root}/imagewoof*/train/<wnid>/*.JPEG and {root}/imagewoof*/val/<wnid>/*.JPEG: "
        f"download imagewoof2-160 (or -320) from the fastai imagenette repository and extract it "
        f"into {root} (there is no automatic download)."
    )
    dirs = _imagewoof_dirs(root)
    if not dirs:
        raise FileNotFoundError(f"ImageWoof not found under {root}. {hint}")
    large_enough = [d for d in dirs if _nominal_resolution(d) >= size]
    base = min(large_enough, key=_nominal_resolution) if large_enough else max(dirs, key=_nominal_resolution)

    classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"ImageWoof: no class folders in {base / 'train'}. {hint}")
    index = {w: i for i, w in enumerate(classes)}
    train = [(p, index[w]) for w in classes for p in _image_files(base / "train" / w)]
    test = []
    for folder in sorted(p for p in (base / "val").iterdir() if p.is_dir()):
        if folder.name not in index:
            raise ValueError(f"ImageWoof: {folder} is a class that {base / 'train'} does not have")
        test += [(p, index[folder.name]) for p in _image_files(folder)]
    names = [_IMAGEWOOF_NAMES.get(w, w) for w in classes]
    return _folder_dataset("imagewoof", classes, names, train, test, size)


_DISK_LOADERS: dict[str, Callable[[Path, bool, Optional[int]], ImageDataset]] = {
    "fashionmnist": _load_fashionmnist,
    "svhn": _load_svhn,
    "cifar10": lambda root, download, size: _load_cifar("cifar10", root, download, size),
    "cifar100": lambda root, download, size: _load_cifar("cifar100", root, download, size),
    "tinyimagenet": _load_tinyimagenet,
    "imagewoof": _load_imagewoof,
}
