"""DANCE, DANCE+HDD and GeoDM on digits at IPC 10, with the demo's budget (compare with `hddgeo demo`).

    python experiments/methods_table.py      # writes results/methods/results.csv and results.md
"""
import torch

from hddgeo.distill import DistillConfig
from hddgeo.distill.study import format_table, run_study

VARIANTS = [
    {"method": "dance", "matcher": "euclidean"},
    {"method": "dance", "matcher": "hdd", "centroid": "law"},
    {"method": "dance", "matcher": "hdd", "centroid": "karcher"},
    {"method": "geodm", "matcher": "euclidean"},
    {"method": "geodm", "matcher": "hdd", "centroid": "law"},
]


def main():
    torch.set_num_threads(1)  # one thread was several times faster than two on the shared 2-core machine
    base = DistillConfig(dataset="digits", method="dm", iterations=100, batch_real=64, scale=1.0, final_eval_nets=3,
                         final_eval_epochs=200, checkpoint_every=50)
    table = run_study(base, "results/methods", ipcs=[10], variants=VARIANTS, baseline=False, progress=False)
    print(format_table(table).to_string(index=False))


if __name__ == "__main__":
    main()
