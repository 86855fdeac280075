"""Draw every learning-rate schedule over a 4-step run: docs/schedules.png (docs/METHODS.md).

    PYTHONPATH=src python docs/plots/schedules.py [--out docs/schedules.png]

A Sequential run (every step after the first warm-started from the previous one) of 4 steps × 100
iterations, peak LR 1e-3, warmup 10 on step 0 (the run's initial weights), none later. Each panel
plots ``Schedule.lr`` (the deployable trajectory, solid) against the run's global iteration and, for
the branched kinds, ``Schedule.trunk_lr`` past each branch point (the trajectory the next step
continues from, dashed): the very functions the trainer calls.
"""

from __future__ import annotations

import argparse

from ticlip.methods import get_method
from ticlip.train.budget import Budget
from ticlip.train.schedule import ScheduleConfig, step_position

STEPS, ITERATIONS, LR, WARMUP = 4, 100, 1e-3, 10
PANELS = [  # (title, ScheduleConfig settings)
    ("cosine (TiC-CLIP)", dict(kind="cosine")),
    ("constant; schedule-free AdamW's LR", dict(kind="constant")),
    ("const-cosine = wsd, cosine anneal", dict(kind="const-cosine")),
    ("wsd, linear anneal", dict(kind="wsd", anneal="linear")),
    ("wsd, 1-sqrt anneal", dict(kind="wsd", anneal="1-sqrt")),
    ("rsqrt (τ = warmup), 1-sqrt cooldown", dict(kind="rsqrt", anneal="1-sqrt")),
    ("cosine-decaying-peak (×0.5 per step)", dict(kind="cosine-decaying-peak", peak_decay=0.5)),
    ("global-cosine", dict(kind="global-cosine")),
]


def trajectories(settings: dict, method_name: str = "sequential"):
    """Per step: (global iterations, deployable LRs, trunk iterations, trunk LRs)."""
    method = get_method(method_name)
    budget = Budget.from_iterations(ITERATIONS, STEPS, 1.0, 1)
    sizes = [1 << 20] * STEPS
    cfg = ScheduleConfig(lr=LR, warmup=WARMUP, **settings)
    out = []
    for t in range(STEPS):
        pos = step_position(method, budget, t, sizes)
        s = cfg.for_step(ITERATIONS, method.plan(t, sizes).init, pos)
        xs = [pos.run_offset + i for i in range(ITERATIONS)]
        trunk = range(s.branch_point, ITERATIONS) if s.has_branch and t + 1 < STEPS else range(0)
        out.append((xs, [s.lr(i) for i in range(ITERATIONS)], [pos.run_offset + i for i in trunk],
                    [s.trunk_lr(i) for i in trunk]))
    return out


def main(argv=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/schedules.png")
    args = p.parse_args(argv)
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.4), sharex=True, sharey=True)
    for ax, (title, settings) in zip(axes.flat, PANELS):
        for t, (xs, ys, tx, ty) in enumerate(trajectories(settings)):
            ax.plot(xs, ys, color="C0", lw=1.6, label="deployable" if t == 0 else None)
            if tx:
                ax.plot(tx, ty, color="C3", lw=2.2, ls="--", zorder=3, label="trunk (continued)" if t == 0 else None)
            ax.axvline(xs[0], color="0.85", lw=0.8, zorder=0)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("global iteration (4 steps × 100)")
    for ax in axes[:, 0]:
        ax.set_ylabel("learning rate")
    axes.flat[0].legend(*axes.flat[2].get_legend_handles_labels(), fontsize=8, loc="upper right")
    fig.suptitle("ticlip learning-rate schedules over a 4-step Sequential run (peak 1e-3, warmup 10 on step 0)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
