"""Figures over sweeps (sweep.py's folders): a sweep's skip count and benchmark accuracy per epoch with
Fig. 1 as mean ± std over seeds (sweep.py draws these when it ends), and the data ladder: final cell
quality against the number of search images, every seed a dot, the mean per option a line.
"""
import os

import matplotlib.pyplot as plt
import numpy as np

from harness.figure_style import OPTION_STYLE, PAPER_NB201, on_cifar10, save
from harness.rundir import bench_acc, bench_label
from harness.sweep_table import ladder


def sweep_figures(sweep_runs, out, dpi=120):
    """A seed sweep (sweep.py): skip count and benchmark accuracy per epoch (thin: each seed, thick:
    the mean over seeds, per option) and Fig. 1 with error bars (mean ± sample std over seeds)."""
    os.makedirs(out, exist_ok=True)
    by = {}
    for r in sweep_runs:
        by.setdefault(str(r.config.get("option", "?")).upper(), []).append(r)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4))
    points = {}
    for option, rs in sorted(by.items()):
        colour = OPTION_STYLE.get(option, ("tab:gray", "x"))[0]
        for ax, get in ((left, lambda r, row: row["skip_count"]), (right, lambda r, row: bench_acc(r, row, None))):
            curves = [[(row["epoch"], get(r, row)) for row in r.rows] for r in rs]
            curves = [c for c in ([(e, v) for e, v in c if v is not None] for c in curves) if c]
            for c in curves:
                ax.plot(*zip(*c), color=colour, lw=0.7, alpha=0.45)
            if curves:
                n = min(len(c) for c in curves)  # the epochs every seed has
                ax.plot([e for e, _ in curves[0][:n]], np.mean([[v for _, v in c[:n]] for c in curves], 0),
                        color=colour, lw=2.4, label=f"option {option}: mean of {len(curves)} seeds")
        last = [(100 * r.rows[-1]["valid_acc"], bench_acc(r, r.rows[-1], None)) for r in rs]
        points[option] = [(x, y) for x, y in last if y is not None]
    for ax in (left, right):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    left.set(ylabel="skip_connect edges in the derived cell", title="skip_connect count per epoch")
    right.set(ylabel=bench_label(sweep_runs), title="benchmark accuracy of each epoch's cell")
    fig.tight_layout()
    paths = [save(fig, out, "sweep_skip_and_bench.png", dpi)]
    if any(points.values()):
        fig, ax = plt.subplots(figsize=(6.5, 4.8))
        for option, pts in sorted(points.items()):
            if not pts:
                continue
            colour, marker = OPTION_STYLE.get(option, ("tab:gray", "x"))
            xs, ys = np.array(pts).T
            ax.scatter(xs, ys, s=18, color=colour, marker=marker, alpha=0.4)
            sd = (lambda v: v.std(ddof=1) if len(v) > 1 else 0.0)
            ax.errorbar(xs.mean(), ys.mean(), xerr=sd(xs), yerr=sd(ys), color=colour, marker=marker, ms=9,
                        capsize=4, lw=1.6, label=f"option {option} (n={len(pts)})")
        if on_cifar10(sweep_runs):
            ax.axhline(PAPER_NB201[2][1], color="black", ls=":", lw=1, label=f"NB201 optimum {PAPER_NB201[2][1]}")
        ax.set(xlabel="supernet accuracy (%) on the α half, last epoch",
               ylabel=f"found cell: {bench_label(sweep_runs)}",
               title="Supernet fit vs. found cell (paper Fig. 1), mean ± std over seeds")
        ax.legend()
        paths.append(save(fig, out, "sweep_fig1.png", dpi))
    return paths


def ladder_points(sweep_dirs):
    """{option: {search images (weight + alpha): [(final benchmark acc., final skip count) per finished
    seed]}} over sweep folders (sweep_table.ladder)."""
    return points(ladder(sweep_dirs))


def points(by_size):
    """sweep_table.ladder's {option: {(weight, α images): [records]}} -> ladder_points' form."""
    by = {}
    for option, rungs in by_size.items():
        for size, recs in rungs.items():
            by.setdefault(option, {}).setdefault(sum(size), []).extend((r["acc"], r["skip"]) for r in recs)
    return by


def ladder_figure(by_size, cfg):
    """The data ladder (sweep_table.ladder's dict, read once for this and ladder.md): final benchmark
    accuracy and final skip count against the number of search images; every seed a dot, the mean per
    option a line (the paper's Table 2 numbers as references)."""
    by = points(by_size)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for option, rungs in sorted(by.items()):
        colour, marker = OPTION_STYLE.get(option, ("tab:gray", "x"))
        xs = sorted(rungs)
        for ax, k in zip(axes, (0, 1)):
            for x in xs:
                vals = [v[k] for v in rungs[x] if v[k] is not None]
                jitter = np.linspace(-0.012, 0.012, len(vals)) * x if len(vals) > 1 else [0.0]  # seeds side by side
                ax.scatter(x + np.asarray(jitter), vals, color=colour, marker=marker, s=30, alpha=0.6)
            means = [(x, np.mean([v[k] for v in rungs[x] if v[k] is not None])) for x in xs]
            ax.plot(*zip(*means), color=colour, lw=2, marker=marker,
                    label=f"option {option}" + (" (DARTS)" if option == "B" else " (RF-DARTS)" if option == "C" else ""))
    for (name, value), style in zip(PAPER_NB201, ("--", "-.", ":")):
        axes[0].axhline(value, color="black", ls=style, lw=1, label=f"{name} {value:.2f}")
    axes[0].set(ylabel="final cell: NAS-Bench-201 test acc. (%)", title="benchmark accuracy of the final cell")
    axes[1].set(ylabel="skip_connect edges of the final cell (of 6)", title="final skip count")
    rungs_all = sorted({x for rungs in by.values() for x in rungs})
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(rungs_all, [f"{x:,}" for x in rungs_all])
        ax.minorticks_off()
        ax.set_xlabel("search images (weight + α halves)")
        # below the axes: inside, it hid the dots of whichever seed landed mid-range
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig.suptitle("Data ladder at 50 epochs: each seed a dot, the mean a line", fontsize=10)
    fig.tight_layout()
    return save(fig, cfg.out, "ladder.png", cfg.dpi)
