"""The paper's hyperparameters (Tables 5 and 6): ``k`` (the tables' curvature column, geoopt's k),
``scale`` (lambda) and ``lr_img`` per method, dataset and IPC, with the reference iteration budgets
(DM 20,000; IDM and DANCE 10,000)."""
from __future__ import annotations

ITERATIONS = {"dm": 20000, "idm": 10000, "dance": 10000}

# (method, dataset) -> {ipc: (k, lambda, lr_img)}
_TABLE = {
    ("dm", "fashionmnist"): {1: (1, 20, 1), 10: (1, 40, 1), 50: (1, 60, 1)},
    ("dm", "svhn"): {1: (1, 10, 1), 10: (1, 50, 1), 50: (1, 100, 1)},
    ("dm", "cifar10"): {1: (1, 1, 1), 10: (1, 20, 1), 50: (1, 80, 1)},
    ("dm", "cifar100"): {1: (1, 10, 1), 10: (2, 100, 1), 50: (2, 120, 1)},
    ("idm", "fashionmnist"): {1: (2, 40, 0.5), 10: (2, 60, 1), 50: (2, 80, 0.2)},
    ("idm", "svhn"): {1: (2, 120, 0.5), 10: (2, 120, 1), 50: (2, 120, 0.2)},
    ("idm", "cifar10"): {1: (3, 80, 0.5), 10: (3, 100, 1), 50: (3, 120, 0.2)},
    ("idm", "cifar100"): {1: (2, 60, 0.5), 10: (2, 80, 0.2), 50: (2, 100, 0.6)},
    ("idm", "tinyimagenet"): {1: (2, 80, 0.5), 10: (2, 100, 0.5), 50: (2, 120, 0.6)},
    ("dance", "cifar10"): {1: (1.8, 20, 0.02), 10: (0.2, 40, 0.2), 50: (2, 60, 0.5)},
    ("dance", "cifar100"): {1: (2, 40, 0.02), 10: (1.5, 80, 0.1), 50: (2, 120, 0.5)},
    ("dance", "imagewoof"): {1: (0.6, 100, 0.1), 10: (0.5, 120, 0.1)},
}


def paper_preset(method: str, dataset: str, ipc: int) -> dict:
    """Settings for ``--preset paper``; raises ``ValueError`` for a combination the paper does not list."""
    try:
        k, scale, lr_img = _TABLE[(method, dataset)][ipc]
    except KeyError:
        listed = sorted({f"{m}/{d}/ipc{i}" for (m, d), rows in _TABLE.items() for i in rows})
        raise ValueError(
            f"the paper lists no settings for method={method}, dataset={dataset}, ipc={ipc}; "
            f"listed: {', '.join(listed)}"
        ) from None
    return {"k": float(k), "scale": float(scale), "lr_img": float(lr_img), "iterations": ITERATIONS[method],
            "matcher": "hdd"}
