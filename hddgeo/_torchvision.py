"""The one place that imports torchvision.

PyPI only ships CUDA builds of torchvision 0.28.0. Beside a CPU build of torch 2.13.0 its C
extension cannot register its operators, and ``import torchvision`` fails with
``RuntimeError: operator torchvision::nms does not exist`` while building the meta kernels for
``nms``. Declaring the two missing operator schemas (never calling them) lets the pure-Python
parts load: datasets, transforms, ``utils.make_grid`` / ``save_image`` and ``models``.
``torchvision.ops`` and ``torchvision.io`` stay unusable in that setting; hddgeo uses neither.
The workaround runs only when the plain import fails.
"""
import sys

import torch

try:
    import torchvision
except RuntimeError as err:  # pragma: no cover - depends on the installed wheel
    if "torchvision::nms" not in str(err):
        raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _lib = torch.library.Library("torchvision", "FRAGMENT")
    _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision

import torchvision.datasets
import torchvision.models
import torchvision.utils

__all__ = ["torchvision"]
