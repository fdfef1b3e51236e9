"""Distillation: the synthetic set, the methods on one shared step, presets, and resumable runs."""
from .methods import METHODS, DistillMethod, build_method, register_method
from . import dance, geodm  # noqa: E402,F401  (register the "dance" and "geodm" methods)
from .presets import paper_preset
from .runner import DistillConfig, RunInterrupted, describe, evaluate_run, prepare, run_distillation
from .synset import SyntheticSet, partition_expand, partition_pack

__all__ = ["METHODS", "DistillMethod", "build_method", "register_method", "paper_preset",
           "DistillConfig", "RunInterrupted", "describe", "evaluate_run", "prepare", "run_distillation",
           "SyntheticSet", "partition_expand", "partition_pack"]
