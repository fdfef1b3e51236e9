"""Distillation: the synthetic set, the methods on one shared step, presets, and resumable runs.

Modules, lowest first (each imports only those before it; ``tests/test_architecture.py`` checks it):
``synset`` (the synthetic images), ``memory`` and ``methods`` (the shared step and DM/IDM; ``dance``, ``geodm``),
``config`` (:class:`DistillConfig`), ``distributed`` (torchrun), ``runner`` (one run), ``results`` (finished runs
read back as tables), ``cell`` (one cell of a study), ``executors`` (where cells run), ``study`` (a grid of cells),
``spec`` (a study as a TOML file), ``presets``.
"""
from .methods import METHODS, DistillMethod, build_method, register_method
from . import dance, geodm  # noqa: F401  (importing them registers the "dance" and "geodm" methods)
from .config import DistillConfig, describe
from .presets import paper_preset
from .runner import evaluate_run, prepare, run_distillation
from .synset import SyntheticSet, partition_expand, partition_pack

__all__ = ["METHODS", "DistillMethod", "build_method", "register_method", "paper_preset",
           "DistillConfig", "describe", "evaluate_run", "prepare", "run_distillation",
           "SyntheticSet", "partition_expand", "partition_pack"]
