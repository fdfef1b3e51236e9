"""Coreset selection baselines: real training images chosen by a rule, evaluated like a distilled set.

These are the "coreset" rows of the distillation benchmarks (HDD paper, Table 1): pick ``ipc`` real
images per class and train fresh networks on them with the same protocol as a synthetic set
(:func:`hddgeo.evaluate.evaluate_synset`, DSA during training).

* ``random``: ``ipc`` distinct images per class, uniformly (seeded ``torch.Generator``).
* ``herding`` (Welling 2009; the greedy form used by iCaRL and the DC benchmarks): per class, add
  one image at a time, the one that brings the mean feature of the selected images closest to the
  mean feature of the whole class.
* ``kcenter`` (greedy k-center / farthest-point, Sener & Savarese 2018): per class, start from the
  image whose feature is closest to the class mean, then repeatedly add the image farthest from
  everything selected so far.
* ``forgetting`` (Toneva et al. 2019): train a network on the whole real training set, record for
  each image whether it was classified correctly each time it was presented (once per epoch), count
  *forgetting events* (correct at one presentation, wrong at the next) and keep, per class, the
  ``ipc`` images forgotten most often. Ties, which dominate after a few epochs, are broken by a
  seeded random order. Toneva et al. additionally rank never-learned images as forgotten infinitely
  often; here they count their actual events (0), as the DC benchmark tables describe the rule.

Features for herding and k-center. The DC-benchmark code embeds images with a ConvNet *trained*
on the full training set. Here the default (``feature_model="random"``) is a randomly initialised
ConvNet from :func:`hddgeo.distill.methods.fresh_network`, the same kind of feature map that DM
and HDD match with, which needs no training and keeps selection cheap on a CPU.
``feature_model="trained"`` trains that network on the real set for ``feature_epochs`` epochs first
(closer to the benchmark, not identical: the benchmark trains to convergence), and ``features=``
accepts any precomputed ``(N, d)`` matrix aligned with ``dataset.train_images``.

Seeds. ``seed`` drives the random draws of the selection (random order, tie-breaking), the feature
network, the network trained for forgetting and the evaluation networks, each through a stream of its own
(:class:`hddgeo.seeds.RunSeeds`; ``seed_scheme=1`` gives the derivation of earlier versions), so a selection
network never shares its initial weights with an evaluated one. The caller's global RNG state is never touched.
"""
from __future__ import annotations

from functools import partial
from typing import Optional, Union

import torch
from torch import Tensor

from hddgeo.data import ClassPool, ImageDataset, dsa as dsa_augment, load_dataset
from hddgeo.models import embed, fresh_network
from hddgeo.seeds import DEFAULT_SCHEME, RunSeeds
from hddgeo.training import sgd_epochs
from hddgeo.evaluate import evaluate_synset

__all__ = [
    "CORESET_METHODS",
    "FEATURE_MODELS",
    "evaluate_coreset",
    "embed_dataset",
    "forgetting_counts",
    "herding_order",
    "kcenter_order",
    "select_coreset",
    "train_on_real",
]

CORESET_METHODS = ("random", "herding", "kcenter", "forgetting")
FEATURE_MODELS = ("random", "trained")

# Stream numbers of the seeds derived from the user's seed (see the module docstring and hddgeo.seeds).
_FEATURE_NET_STREAM = 1
_FORGETTING_NET_STREAM = 2


def _evaluation_seeds(seed: int, seed_scheme: int, num_nets: int):
    """Scheme 1 evaluated coresets with networks ``seed .. seed + num_nets - 1``; scheme 2 with a run's final
    evaluation networks."""
    return seed if seed_scheme == 1 else RunSeeds(seed, seed_scheme).eval_networks("final", num_nets)


# ------------------------------------------------------------------------------------------------
# Pure selection rules on feature matrices / correctness histories
# ------------------------------------------------------------------------------------------------

def _check_features(features: Tensor, n: int, name: str = "features") -> Tensor:
    features = torch.as_tensor(features)
    if features.dim() == 1:
        features = features.unsqueeze(1)
    if features.dim() != 2:
        raise ValueError(f"{name} must be an (N, d) matrix (or (N,) for 1-D features), got shape {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or inf; compute features from finite images or clean them first")
    if not 1 <= n <= features.shape[0]:
        raise ValueError(f"cannot select {n} of {features.shape[0]} points; choose 1 <= n <= {features.shape[0]}")
    return features.to(torch.float64)


def herding_order(features: Tensor, n: int) -> Tensor:
    """Positions (rows of ``features``) of ``n`` points chosen by greedy herding, in pick order.

    At step ``k`` (1-based) the pick is the unselected ``x`` minimising
    ``|mu - (sum of the k-1 picks + f(x)) / k|`` with ``mu`` the mean of all rows, i.e. the
    selected mean tracks the full mean as closely as possible. Ties go to the lowest position.
    """
    f = _check_features(features, n)
    mu = f.mean(0)
    chosen = torch.zeros(f.shape[0], dtype=torch.bool)
    running = torch.zeros_like(mu)
    order = []
    for k in range(1, n + 1):
        # |mu - (running + f)/k| = |k*mu - running - f| / k: the /k does not change the argmin.
        dist = (k * mu - running - f).norm(dim=1)
        dist[chosen] = float("inf")
        i = int(torch.argmin(dist))
        order.append(i)
        chosen[i] = True
        running += f[i]
    return torch.tensor(order, dtype=torch.int64)


def kcenter_order(features: Tensor, n: int) -> Tensor:
    """Positions of ``n`` points chosen by greedy k-center (farthest-point traversal), in pick order.

    The first pick is the point closest to the mean of all rows; each next pick maximises the
    Euclidean distance to its nearest already-picked point. Ties go to the lowest position.
    """
    f = _check_features(features, n)
    first = int(torch.argmin((f - f.mean(0)).norm(dim=1)))
    order = [first]
    nearest = (f - f[first]).norm(dim=1)
    nearest[first] = -1.0
    for _ in range(n - 1):
        i = int(torch.argmax(nearest))
        order.append(i)
        # Picked points stay at -1 (below any distance) so duplicates of them cannot re-pick them.
        nearest = torch.minimum(nearest, (f - f[i]).norm(dim=1))
        nearest[i] = -1.0
    return torch.tensor(order, dtype=torch.int64)


def forgetting_counts(history: Tensor) -> Tensor:
    """Number of forgetting events of each sample, ``(N,)`` int64.

    ``history`` is a boolean ``(presentations, N)`` tensor: ``history[t, i]`` says whether sample
    ``i`` was classified correctly at its ``t``-th presentation. A forgetting event is a
    correct -> incorrect transition between consecutive presentations (Toneva et al. 2019);
    incorrect -> correct (learning) events are not counted.
    """
    history = torch.as_tensor(history)
    if history.dtype != torch.bool:
        raise ValueError(f"history must be a boolean tensor (correct / incorrect), got dtype {history.dtype}; "
                         f"compare predictions with labels to get one")
    if history.dim() != 2:
        raise ValueError(f"history must be (presentations, N), got shape {tuple(history.shape)}")
    if history.shape[0] < 2:
        return torch.zeros(history.shape[1], dtype=torch.int64)
    return (history[:-1] & ~history[1:]).sum(0).to(torch.int64)


def _most_forgotten(counts: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """Positions of the ``n`` largest counts, ties in a random order drawn from ``generator``."""
    perm = torch.randperm(counts.numel(), generator=generator)
    ranked = torch.sort(counts[perm], descending=True, stable=True).indices
    return perm[ranked[:n]]


# ------------------------------------------------------------------------------------------------
# Networks: features and training on the real set
# ------------------------------------------------------------------------------------------------

@torch.no_grad()
def embed_dataset(net: torch.nn.Module, images: Tensor, batch_size: int = 512, device="cpu") -> Tensor:
    """``net.embed`` of every image, ``(N, d)`` float32 on the CPU (:func:`hddgeo.models.embed`)."""
    return embed(net.eval(), images.cpu(), batch_size, device=device).float()


def train_on_real(dataset: ImageDataset, model: str = "convnet", epochs: int = 3, seed: int = 0,
                  batch_size: int = 64, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
                  device="cpu", **model_kw) -> tuple[torch.nn.Module, Tensor]:
    """Train a fresh ``model`` on the whole real training set (no augmentation), recording correctness.

    Returns the trained network and a boolean ``(epochs, N)`` history: ``history[e, i]`` says
    whether training image ``i`` was classified correctly in the forward pass of the minibatch that
    presented it in epoch ``e`` (before that step's update, as in Toneva et al.). Runs inside
    ``fork_rng``; everything random comes from ``seed``.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    device = torch.device(device)
    images, labels = dataset.train_images, dataset.train_labels
    n = len(labels)
    history = torch.zeros(epochs, n, dtype=torch.bool, device=device)  # on the device: no copy per batch
    fork_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        net = fresh_network(model, dataset, seed, device=device, **model_kw)
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)

        def record(epoch, idx, logits, y):
            history[epoch, idx] = logits.argmax(1) == y

        sgd_epochs(net, images.to(device), labels.to(device), optimizer, gen, epochs, batch_size, on_batch=record)
    return net, history.cpu()


# ------------------------------------------------------------------------------------------------
# Selection and evaluation
# ------------------------------------------------------------------------------------------------

def _as_dataset(dataset: Union[str, ImageDataset]) -> ImageDataset:
    if isinstance(dataset, ImageDataset):
        return dataset
    if isinstance(dataset, str):
        return load_dataset(dataset)
    raise ValueError(f"dataset must be an ImageDataset or a dataset name, got {type(dataset).__name__}")


def _check_method(method: str) -> str:
    key = str(method).lower().replace("-", "").replace("_", "")
    if key not in CORESET_METHODS:
        raise ValueError(f"unknown coreset method {method!r}; valid methods: {', '.join(CORESET_METHODS)}")
    return key


def _check_ipc(ipc, pool: ClassPool, name: str) -> int:
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
        raise ValueError(f"ipc must be a positive integer (images per class), got {ipc!r}")
    for c in range(pool.num_classes):
        if pool.count(c) < ipc:
            smallest = min(pool.count(k) for k in range(pool.num_classes))
            raise ValueError(f"ipc {ipc} is larger than class {c} of {name} ({pool.count(c)} training images); "
                             f"lower ipc to at most {smallest}")
    return ipc


def select_coreset(method: str, dataset: Union[str, ImageDataset], ipc: int, seed: int = 0,
                   model: str = "convnet", features: Optional[Tensor] = None, forgetting_epochs: int = 3,
                   feature_model: str = "random", feature_epochs: int = 3, batch_size: int = 64,
                   device="cpu", seed_scheme: int = DEFAULT_SCHEME, **model_kw) -> tuple[Tensor, Tensor]:
    """Choose ``ipc`` real training images of every class by ``method`` (see :data:`CORESET_METHODS`).

    Returns ``(indices, labels)``: int64 indices into ``dataset.train_images``, class-major (all of
    class 0 first, each class in pick order), and their labels. ``dataset`` is an
    :class:`ImageDataset` or the name of one that :func:`load_dataset` reads without files
    (``"digits"``); load the others yourself to pass ``data_root``.

    ``features`` (``(N, d)``, one row per training image) replaces the network features of herding
    and k-center; otherwise they come from ``model``'s ``embed``, randomly initialised
    (``feature_model="random"``) or trained on the real set for ``feature_epochs`` epochs
    (``"trained"``). ``forgetting_epochs`` is how long the forgetting network trains (each epoch
    is one presentation of every image; at least 2 are needed to observe an event).
    ``batch_size`` is the training batch of those networks; ``model_kw`` goes to the model
    constructor (e.g. ``width``, ``depth``).
    """
    method = _check_method(method)
    dataset = _as_dataset(dataset)
    pool = ClassPool(dataset.train_images, dataset.train_labels, dataset.num_classes)
    ipc = _check_ipc(ipc, pool, dataset.name)
    if features is not None and method not in ("herding", "kcenter"):
        raise ValueError(f"features are only used by herding and kcenter, not {method!r}; drop the features argument")
    if model_kw:
        # Extra keywords go to the model constructor; check them now so that a misspelt option
        # fails loudly even for methods that never build a network (random).
        try:
            fresh_network(model, dataset, 0, **model_kw)
        except TypeError as err:
            raise ValueError(f"unexpected keyword(s) {', '.join(sorted(model_kw))}: neither an option of "
                             f"select_coreset nor an argument of model {model!r} ({err}); check the spelling") from None
    if feature_model not in FEATURE_MODELS:
        raise ValueError(f"unknown feature_model {feature_model!r}; valid values: {', '.join(FEATURE_MODELS)}")
    if method == "forgetting" and (isinstance(forgetting_epochs, bool) or not isinstance(forgetting_epochs, int)
                                   or forgetting_epochs < 2):
        raise ValueError(f"forgetting_epochs must be an integer >= 2 (an event needs two presentations), "
                         f"got {forgetting_epochs!r}")

    run_seeds = RunSeeds(seed, seed_scheme)
    generator = run_seeds.init()
    per_class: list[Tensor] = []
    if method == "random":
        per_class = [pool.sample_indices(c, ipc, generator) for c in range(pool.num_classes)]
    elif method in ("herding", "kcenter"):
        if features is None:
            net_seed = run_seeds.coreset(_FEATURE_NET_STREAM)
            if feature_model == "trained":
                net, _ = train_on_real(dataset, model, feature_epochs, net_seed, batch_size=batch_size,
                                       device=device, **model_kw)
            else:
                net = fresh_network(model, dataset, net_seed, **model_kw)
            features = embed_dataset(net, dataset.train_images, device=device)
        else:
            features = torch.as_tensor(features)
            if features.shape[0] != len(pool):
                raise ValueError(f"features has {features.shape[0]} rows but {dataset.name} has {len(pool)} "
                                 f"training images; pass one feature row per training image, in dataset order")
        features = _check_features(features, 1)
        rule = herding_order if method == "herding" else kcenter_order
        per_class = [pool.indices[c][rule(features[pool.indices[c]], ipc)] for c in range(pool.num_classes)]
    else:  # forgetting
        _, history = train_on_real(dataset, model, forgetting_epochs, run_seeds.coreset(_FORGETTING_NET_STREAM),
                                   batch_size=batch_size, device=device, **model_kw)
        counts = forgetting_counts(history)
        per_class = [pool.indices[c][_most_forgotten(counts[pool.indices[c]], ipc, generator)]
                     for c in range(pool.num_classes)]
    indices = torch.cat(per_class).to(torch.int64)
    return indices, dataset.train_labels[indices].clone()


def evaluate_coreset(method: str, dataset: Union[str, ImageDataset], ipc: int, num_nets: int = 3,
                     epochs: int = 1000, seed: int = 0, dsa: bool = True, model: str = "convnet",
                     device="cpu", progress: bool = False, select_kwargs: Optional[dict] = None,
                     seed_scheme: int = DEFAULT_SCHEME) -> dict:
    """Select a coreset and evaluate it with the distilled-set protocol.

    ``num_nets`` fresh ``model`` networks (a distilled run's final evaluation networks of ``seed``) are trained on the
    selected images for ``epochs`` epochs with :func:`hddgeo.evaluate.evaluate_synset` (SGD 0.01,
    momentum 0.9, lr x0.1 at half) and per-image DSA when ``dsa`` is true, then tested on the real
    test split. ``select_kwargs`` go to :func:`select_coreset` (``feature_model``,
    ``forgetting_epochs``, ...).

    Returns ``{"mean", "std", "accs", "indices", "labels"}`` with accuracies in [0, 1] and the
    population std over networks.
    """
    dataset = _as_dataset(dataset)
    indices, labels = select_coreset(method, dataset, ipc, seed=seed, model=model, device=device,
                                     seed_scheme=seed_scheme, **(select_kwargs or {}))
    augment = partial(dsa_augment, siamese=False) if dsa else None
    res = evaluate_synset(dataset.train_images[indices], labels, dataset.test_images, dataset.test_labels,
                          dataset.num_classes, model=model, num_nets=num_nets, epochs=epochs, augment=augment,
                          seed=_evaluation_seeds(seed, seed_scheme, num_nets), device=device, progress=progress)
    return {"mean": res["mean"], "std": res["std"], "accs": res["accs"], "indices": indices, "labels": labels}
