"""The host-read audit (tests/host_audit.py): what one iteration makes a GPU wait for, counted on the CPU with the
accelerator-only branches forced on (hddgeo.device.force_accelerator).  The table of host waits in docs/gpus.md
states these numbers; ``python tests/test_host_reads.py`` prints them."""
import pytest
import torch
from conftest import tiny_config
from host_audit import HostAudit

from hddgeo.device import force_accelerator
from hddgeo.distill import run_distillation
from hddgeo.distill.methods import DistillMethod

# the numbers of docs/gpus.md's table: (reads, copies) per iteration at most, no blocking copy anywhere in an iteration
LIMITS = {"dm euclidean": (1, 2), "dm hdd/law": (1, 2), "idm euclidean": (1, 4), "dance euclidean": (1, 2),
          "geodm euclidean": (1, 2)}


def audit_iteration(tmp_path, it=1, setup=None, **kw):
    """``(reads, copies, blocking copies, events)`` of iteration ``it`` of a tiny run, from the start of its step to
    the start of the next one (so the runner's read-back, ``after_step`` and logging are inside)."""
    cfg = tiny_config(**{"iterations": it + 2, "checkpoint_every": 0, "threads": 1, "device": "cpu", **kw})
    marks = []
    original = DistillMethod.step
    audit = HostAudit()
    if setup is not None:
        setup(audit)

    def step(self, i, syn, diagnose=False):
        audit.track(self)  # what the method holds (parameters made as nn.Parameter, ...) is on the device
        audit.track(syn)
        marks.append((audit.reads, audit.copies, audit.blocking, len(audit.where)))
        return original(self, i, syn, diagnose)

    DistillMethod.step = step
    try:
        with force_accelerator(), audit:
            run_distillation(cfg, str(tmp_path / "run"), progress=False, final_eval=False)
    finally:
        DistillMethod.step = original
    (r0, c0, b0, w0), (r1, c1, b1, w1) = marks[it], marks[it + 1]
    return r1 - r0, c1 - c0, b1 - b0, audit.where[w0:w1]


@pytest.mark.parametrize("case", list(LIMITS))
def test_an_iteration_reads_once_and_copies_without_waiting(tmp_path, case):
    method, matcher = case.split()
    kw = {"method": method, "matcher": "euclidean" if matcher == "euclidean" else "hdd", "centroid": "law"}
    if method == "dance":
        kw["options"] = {"num_experts": 1, "expert_epochs": 1}
    reads, copies, blocking, where = audit_iteration(tmp_path, **kw)
    most_reads, most_copies = LIMITS[case]
    assert reads <= most_reads, where
    assert copies <= most_copies and blocking == 0, where


def test_the_karcher_matcher_reads_once_more_for_its_newton_test(tmp_path):
    """The real and synthetic means in one solve (losses._karcher_together): one read for its Newton convergence
    test after _NEWTON_STEPS_ACCELERATOR steps, none in the conjugate-gradient solves (fixed length there)."""
    for ipc in (1, 2):
        reads, copies, blocking, where = audit_iteration(tmp_path / f"ipc{ipc}", matcher="hdd", centroid="karcher",
                                                         ipc=ipc)
        outside = [w for w in where if w.startswith("read") and "_karcher_math.py" not in w]
        assert len(outside) == 1 and reads <= 2, where
        assert copies <= 2 and blocking == 0, where


def test_the_audit_sees_a_read_and_a_blocking_copy():
    """The audit itself: a read of a device tensor counts, a read of a host tensor does not."""
    x = torch.ones(3)
    with HostAudit(x) as audit:
        float(x.sum())
        int(torch.ones(()))  # a host tensor: free
        y = torch.zeros(2).to(torch.device("cpu"))
        z = torch.zeros(2).to("cpu", non_blocking=True)
        bool((y + z).sum() > 0)
    assert (audit.reads, audit.copies, audit.blocking) == (2, 2, 1)


def test_an_evaluation_reads_a_fixed_number_of_times_whatever_its_epochs():
    from hddgeo.evaluate import evaluate_synset

    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(6, 1, 8, 8, generator=gen), torch.arange(3).repeat(2)
    counts = []
    for epochs in (1, 4):
        audit = HostAudit()
        with force_accelerator(), audit:
            evaluate_synset(images.to("cpu"), labels.to("cpu"), images.to("cpu"), labels.to("cpu"), 3, epochs=epochs,
                            num_nets=2, batch_size=2, progress=False)
        counts.append(audit.reads)
    assert counts[0] == counts[1] <= 2, counts


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    for case in list(LIMITS) + ["dm hdd/karcher"]:
        method, matcher = case.split()
        kw = {"method": method, "matcher": "euclidean" if matcher == "euclidean" else "hdd",
              "centroid": matcher.split("/")[-1] if "/" in matcher else "law"}
        if method == "dance":
            kw["options"] = {"num_experts": 1, "expert_epochs": 1}
        with tempfile.TemporaryDirectory() as tmp:
            reads, copies, blocking, _ = audit_iteration(Path(tmp), **kw)
        print(f"{case:18s} reads {reads:3d}  host-to-device copies {copies} ({blocking} blocking)")


def test_an_iteration_under_torchrun_reads_once(tmp_path, monkeypatch):
    """Two ranks, the collectives stubbed (each rank's sums are its own values): the logged values' sum over ranks
    comes back in the iteration's one read (runner.read_back with distributed.sum_), not in a second transfer
    after it (sum_floats made a tensor of the floats, all-reduced it and read it again)."""
    from hddgeo.distill import distributed

    monkeypatch.setattr(distributed, "setup", lambda device="auto": (0, 2))
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: None)
    monkeypatch.setattr(distributed, "gather", lambda obj: [obj, obj])

    def setup(audit):  # an all-reduced tensor is on the device (NCCL's), whatever it was made from
        monkeypatch.setattr(distributed.dist, "all_reduce", lambda tensor, op=None: audit.mark(tensor))

    reads, copies, blocking, where = audit_iteration(tmp_path, setup=setup, matcher="euclidean")
    assert reads == 1, where
    assert blocking == 0, where
