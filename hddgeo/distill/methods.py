"""Distillation methods on one shared step structure.

Every iteration of every method does the same five things (:meth:`DistillMethod.step`):
pick a feature network, draw a real batch per class, augment real and synthetic images of each class
with the same DSA draw, embed both, and score them with the :class:`~hddgeo.losses.Matcher`
(euclidean / hdd with any centroid).  Methods differ only in the network they pick, how the synthetic
images are laid out, and optional extra terms:

* ``dm``  (Zhao & Bilen 2023): a fresh randomly initialised ConvNet every iteration.
* ``idm`` (Zhao et al. 2023): partition-and-expansion (each stored image holds 4 half-scale images),
  a queue of semi-trained networks (each trained a few steps on real data as it is used), and a
  class-aware cross-entropy regulariser on the synthetic images.

All randomness of iteration ``it`` comes from generators seeded by ``(seed, it)``; together with the
state in :meth:`state_dict` this makes an interrupted run resume to exactly the same result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F

from hddgeo.data import dsa
from hddgeo.data.augment import dsa_apply, dsa_apply_blocks, dsa_draw, upload
from hddgeo.device import autocast, on_accelerator, resolve_device, to_device
from hddgeo.models import fresh_network  # noqa: F401  (re-exported: methods build their networks with it)
from hddgeo.seeds import IDM_TRAIN, RunSeeds
from hddgeo.training import sgd_epochs

from .memory import activation_bytes, budget_bytes, checkpointed, plan_forward
from .synset import SyntheticSet

_CPU_CHUNK_BYTES = 4 << 20  # one chunk's activations per layer when the CPU embeds real images (real_chunk)


@dataclass
class Step:
    """What one iteration drew and computed, handed to the method's later hooks (``extra_loss``,
    ``after_step``) instead of being kept on the method between calls."""

    it: int
    net: torch.nn.Module
    draw: dict = field(default_factory=dict)  # the method's own draws: IDM's queue index, DANCE's expert, ...
    f_real: Optional[torch.Tensor] = None     # (C', n, d) features of this process's classes
    f_syn: Optional[torch.Tensor] = None      # (C', m, d)


def _joined(parts: list) -> torch.Tensor:
    """``torch.cat(parts)``, without the copy when there is one part."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class DistillMethod:
    """Base class: the shared step; subclasses choose the network and extra terms."""

    name = "base"
    factor = 1  # partition factor of the synthetic images

    def __init__(self, cfg, dataset, pool, matcher):
        self.device = resolve_device(getattr(cfg, "device", "auto"))  # networks, images and state live here
        # a pool built elsewhere is uploaded once, not copied batch by batch every iteration
        self.cfg, self.dataset, self.pool, self.matcher = cfg, dataset, pool.to(self.device), matcher
        self.n_real = min(int(cfg.batch_real), min(pool.count(c) for c in range(pool.num_classes)))
        self.classes = list(range(pool.num_classes))  # this process's classes (all, unless sharded)
        self.seeds = RunSeeds(cfg.seed, getattr(cfg, "seed_scheme", 1))

    @staticmethod
    def parse_options(options: Optional[dict]) -> dict:
        """The method's options (:meth:`DistillConfig.method_options`: its ``METHOD_*`` fields), checked;
        ``ValueError`` naming a bad value.  Every method's options are configuration fields, typed there; a method
        whose values need more checks than their types (DANCE, GeoDM) replaces this."""
        return dict(options or {})

    # -- hooks ------------------------------------------------------------------------------------
    def network(self, it: int, gen: torch.Generator, draw: Optional[dict] = None) -> torch.nn.Module:
        """The feature network of iteration ``it``; what else it draws goes into ``draw`` (becomes ``Step.draw``)."""
        raise NotImplementedError

    def extra_loss(self, step: Step, syn_images, syn_labels, total: int):
        """Extra terms on this process's synthetic images; per-image terms are summed and divided by
        ``total`` (the image count of all classes) so that shards add up to the full mean."""
        return None, {}

    def after_step(self, step: Step) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # -- the shared step --------------------------------------------------------------------------
    def init_synset(self, gen: torch.Generator) -> SyntheticSet:
        if self.cfg.init == "noise":
            syn = SyntheticSet.from_noise(self.dataset.train_images.shape[1:], self.pool.num_classes, self.cfg.ipc, gen,
                                          self.factor)
        else:
            syn = SyntheticSet.from_real(self.pool, self.cfg.ipc, gen, self.factor)
        return syn.to(self.device)

    def embed(self, net, images: torch.Tensor) -> torch.Tensor:
        """``net.embed(images)`` under the run's autocast, as float32 (the losses' input)."""
        with autocast(self.device, self.cfg.amp):
            return net.embed(images).float()

    def features(self, net, syn: SyntheticSet, gen: torch.Generator):
        """Real and synthetic features ``(C', n, d)`` / ``(C', m, d)`` of this process's classes.

        Random draws are made for every class, in class order, whichever classes this process embeds,
        so that all processes (and a single process) see the same batches and augmentations.
        """
        C = self.pool.num_classes
        syn_by_class = syn.by_class()
        seeds = self.seeds.draw(gen, C)
        real_idx = torch.stack([self.pool.sample_indices(c, self.n_real, gen) for c in range(C)])
        real_idx = to_device(real_idx, self.device)  # one copy to the device for all classes
        mine = len(self.classes)
        accelerator = on_accelerator(self.device)
        if accelerator:  # every class in one block: one gather, and DSA in one call per operation
            own = real_idx.flatten() if mine == C else torch.cat([real_idx[c] for c in self.classes])
            real = [self.pool.images[own]]
            syn_sel = [syn_by_class.flatten(0, 1) if mine == C else torch.cat([syn_by_class[c] for c in self.classes])]
        else:
            real = [self.pool.images[real_idx[c]] for c in self.classes]
            syn_sel = [syn_by_class[c] for c in self.classes]
        if self.cfg.dsa:
            # one siamese draw per class (the same for its real and synthetic images), all copied at once
            draws = [dsa_draw(seeds[c], self.cfg.dsa_strategy, self.pool.images.shape) for c in self.classes]
            params = upload(draws, self.device)
            if accelerator:
                real = [dsa_apply_blocks(real[0], [self.n_real] * mine, draws, params)]
                syn_sel = [dsa_apply_blocks(syn_sel[0], [syn_by_class.shape[1]] * mine, draws, params)]
            else:
                real = [dsa_apply(x, d, q) for x, d, q in zip(real, draws, params)]
                syn_sel = [dsa_apply(x, d, q) for x, d, q in zip(syn_sel, draws, params)]
        # Real images without autograd.  On the CPU class by class, in chunks whose activations stay in cache
        # (see real_chunk); on an accelerator one batch of all classes (every layer of the instance-norm
        # ConvNet treats images independently, so the features are the same).  The clone leaves inference
        # mode, so the features can enter the loss's graph.
        with torch.inference_mode():
            if accelerator and self._per_image(net):
                # in chunks that fit the run's memory budget (hddgeo/distill/memory.py)
                f_real = self.forward(net.embed, _joined(real), grad=False).reshape(mine, self.n_real, -1)
            elif accelerator:  # batch norm: each class's statistics of its own
                f_real = torch.stack([self.embed(net, x) for x in real[0].split(self.n_real)])
            else:
                f_real = torch.stack([torch.cat([self.embed(net, part) for part in x.split(self.real_chunk(net, x))])
                                      for x in real])
        f_real = f_real.clone()
        f_syn = self.forward(net.embed, _joined(syn_sel), grad=True).reshape(mine, syn_by_class.shape[1], -1)
        return f_real, f_syn

    def forward(self, fn, images: torch.Tensor, grad: bool) -> torch.Tensor:
        """``fn(images)`` (``net.embed`` or ``net``) under the run's autocast, as float32.  On an accelerator, with a
        network that treats images independently, in chunks that fit the run's ``memory_budget_gb``: without
        autograd (``grad=False``) chunk by chunk, with it under activation checkpointing when keeping every
        activation would not fit (:func:`hddgeo.distill.memory.plan_forward`).  Elsewhere in one call."""
        net = getattr(fn, "__self__", fn)
        if not (on_accelerator(self.device) and self._per_image(net)) or len(images) <= 1:
            return self._apply(fn, images)
        plan = plan_forward(len(images), self._image_bytes(fn, images), budget_bytes(self.cfg), grad)
        if plan.chunks == 1:
            return self._apply(fn, images)
        if grad:
            return checkpointed(partial(self._apply, fn), images, plan.chunk)
        return torch.cat([self._apply(fn, part) for part in images.split(plan.chunk)])

    def _apply(self, fn, images: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.cfg.amp):
            return fn(images).float()

    def _image_bytes(self, fn, images: torch.Tensor):
        """Per-image activation bytes of ``fn`` at ``images``' size, measured once per architecture and size."""
        net = getattr(fn, "__self__", fn)
        key = (type(net), getattr(fn, "__name__", "forward"), tuple(images.shape[1:]), images.dtype, self.cfg.amp)
        cache = self.__dict__.setdefault("_bytes_cache", {})
        if key not in cache:
            cache[key] = activation_bytes(fn, images[:1].detach(), self.cfg.amp, self.device)
        return cache[key]

    def _own_images(self, labels: torch.Tensor) -> torch.Tensor:
        """Indices of this process's classes among the expanded synthetic labels (the same every iteration: found
        once, kept on the device; a boolean mask would make the device wait every iteration for its size)."""
        key = (tuple(labels.shape), labels.device, tuple(self.classes))
        if getattr(self, "_own_key", None) != key:
            classes = torch.tensor(self.classes, device=labels.device)
            self._own_index = torch.nonzero(torch.isin(labels, classes)).flatten()
            self._own_key = key
        return self._own_index

    @staticmethod
    def _per_image(net) -> bool:
        """Whether every layer of ``net`` treats images independently (no batch norm in train mode)."""
        return not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())

    def real_chunk(self, net, images: torch.Tensor) -> int:
        """Images per forward pass of a class's real batch.

        On the CPU the activations of a chunk should fit in cache: a class of 256 Fashion-MNIST images makes
        134 MB per activation of ConvNet's first block, streamed through memory by the norm, ReLU and pooling
        that follow each convolution, and chunks of 8 (4 MiB) embedded 1.6x faster on this project's machine,
        bitwise the same (every layer of the instance-norm ConvNet treats images independently; chunks of 1
        switch the convolution to another algorithm and are avoided).  An accelerator wants the whole batch.
        Batch norm in train mode takes statistics over the batch, so such networks get the whole class, as
        in the reference DM loop."""
        if on_accelerator(self.device) or not self._per_image(net):
            return len(images)
        per_image = 4 * 128 * images[0, 0].numel()  # float32 activations of 128 channels at the input's size
        return max(4, _CPU_CHUNK_BYTES // per_image)

    def step(self, it: int, syn: SyntheticSet, diagnose: bool = False):
        """``(loss, logged parts, Step)`` of iteration ``it``: the loss is to be back-propagated into
        ``syn.images``, the :class:`Step` passed to :meth:`after_step`.  ``diagnose`` also logs the
        Law-Karcher centroid gaps."""
        gen = self.seeds.iteration(it)
        draw = {}
        net = self.network(it, gen, draw)
        f_real, f_syn = self.features(net, syn, gen)
        state = Step(it=it, net=net, draw=draw, f_real=f_real, f_syn=f_syn)
        loss, parts = self.matcher(f_real, f_syn, diagnose=diagnose)
        images, labels = syn.expanded()
        total = len(labels)
        if len(self.classes) < self.pool.num_classes:
            mine = self._own_images(labels)
            images, labels = images.index_select(0, mine), labels.index_select(0, mine)
        extra, extra_parts = self.extra_loss(state, images, labels, total)
        if extra is not None:
            loss = loss + extra
        parts.update(extra_parts)
        return loss, parts, state


class DM(DistillMethod):
    name = "dm"

    def network(self, it, gen, draw=None):
        net = fresh_network(self.cfg.model, self.dataset, self.seeds.draw(gen), device=self.device)
        net.train()  # instance norm has no running statistics: train/eval give the same features
        for p in net.parameters():
            p.requires_grad_(False)
        return net


class IDM(DistillMethod):
    """IDM with a small queue of semi-trained networks (sizes are options; defaults suit a CPU)."""

    name = "idm"
    factor = 2

    def __init__(self, cfg, dataset, pool, matcher):
        super().__init__(cfg, dataset, pool, matcher)
        self.nets = []
        self.opts = []
        self.ages = []
        for i in range(cfg.idm_queue):
            self._reset(i, seed=self.seeds.idm_queue(i))

    def _reset(self, i: int, seed: int) -> None:
        net = fresh_network(self.cfg.model, self.dataset, seed, device=self.device)
        opt = torch.optim.SGD(net.parameters(), lr=self.cfg.idm_net_lr, momentum=0.9, weight_decay=5e-4)
        if i < len(self.nets):
            self.nets[i], self.opts[i], self.ages[i] = net, opt, 0
        else:
            self.nets.append(net)
            self.opts.append(opt)
            self.ages.append(0)

    def network(self, it, gen, draw=None):
        index = int(torch.randint(0, len(self.nets), (), generator=gen))
        if draw is not None:
            draw["queue_index"] = index
        return self.nets[index]

    def extra_loss(self, step, syn_images, syn_labels, total):
        if self.cfg.idm_ce_weight <= 0:
            return None, {}
        logits = self.forward(step.net, syn_images, grad=True)  # chunked to the memory budget on an accelerator
        ce = F.cross_entropy(logits, syn_labels, reduction="sum") / total
        return self.cfg.idm_ce_weight * ce, {"ce": ce.detach()}

    def after_step(self, step):
        """Train the network just used for a few steps on real data; renew it when it is old."""
        i, it, net = step.draw["queue_index"], step.it, step.net
        gen = self.seeds.iteration(it, stream=IDM_TRAIN)
        net.zero_grad(set_to_none=True)  # what the distillation loss left in the network's gradients
        augment = partial(dsa, strategy=self.cfg.dsa_strategy, siamese=False) if self.cfg.dsa else None
        for _ in range(self.cfg.idm_train_steps):  # each step: one fresh batch drawn with replacement
            idx = torch.randint(0, len(self.pool), (min(256, len(self.pool)),), generator=gen)
            sgd_epochs(net, self.pool.images[to_device(idx, self.device)],
                       to_device(self.pool.labels[idx], self.device), self.opts[i], gen, epochs=1, batch_size=len(idx),
                       augment=augment, amp=self.cfg.amp, read=False)
        self.opts[i].zero_grad(set_to_none=True)
        self.ages[i] += 1
        if self.ages[i] >= self.cfg.idm_net_age:
            self._reset(i, seed=self.seeds.draw(gen))

    def state_dict(self):
        return {"nets": [n.state_dict() for n in self.nets], "opts": [o.state_dict() for o in self.opts],
                "ages": list(self.ages)}

    def load_state_dict(self, state):
        for i, (ns, os_) in enumerate(zip(state["nets"], state["opts"])):
            self.nets[i].load_state_dict(ns)
            self.opts[i].load_state_dict(os_)
        self.ages = list(state["ages"])


METHODS = {"dm": DM, "idm": IDM}


def build_method(name: str, cfg, dataset, pool, matcher) -> DistillMethod:
    try:
        cls = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None
    return cls(cfg, dataset, pool, matcher)


def register_method(name: str, cls: Optional[type]) -> None:
    """Add a method (used by DANCE / GeoDM modules) under ``name``."""
    METHODS[name] = cls
