"""The labels runs are known by in every table: ``dm``, ``dm+hdd/law``, ``dm+clipped_euclidean``, ``dm@lr10``, and
``random`` for a seed's initial images.  Kept apart from :mod:`hddgeo.stats` so that what needs only a label
(the losses, the configuration) does not import pandas."""
from __future__ import annotations

RANDOM = "random"  # the seed's randomly drawn real images: what every synthetic set starts from
CENTROID_MATCHERS = ("hdd", "both")  # the matchers whose label names a centroid


def method_label(method: str, matcher: str = "euclidean", centroid: str = "", tag: str = "") -> str:
    """The label a run is known by: ``dm``, ``dm+hdd/law``, ``idm+both/karcher``, and with a variant's tag
    ``dm@lr10`` or ``dm+hdd/law@noclip`` (the form parsed below)."""
    if matcher == "euclidean":
        label = method
    elif matcher in CENTROID_MATCHERS:
        label = f"{method}+{matcher}/{centroid}"
    else:
        label = f"{method}+{matcher}"
    return f"{label}@{tag}" if tag else label


def base_method(label: str) -> str:
    """The distillation method a label names: ``idm`` of ``idm+hdd/law@k2``, ``dm`` of ``dm@lr10``."""
    return label.partition("@")[0].partition("+")[0]


def is_random(label: str) -> bool:
    """Whether ``label`` is a random row: ``random``, or ``random@TAG`` (a pruned pool's initial images)."""
    return label.partition("@")[0] == RANDOM


def method_rank(method: str) -> tuple:
    """Sort key that lists ``random`` first, then each method before its matcher variants (Law, Karcher, tangent),
    and a label before its tagged variants (``dm`` before ``dm@lr10``)."""
    label, _, tag = method.partition("@")
    base, _, variant = label.partition("+")
    matcher, _, centroid = variant.partition("/")
    return (not is_random(method), base, variant != "", matcher, {"law": 0, "karcher": 1, "tangent": 2}.get(centroid, 3),
            centroid, tag != "", tag)
