"""Figures over sweeps (sweep.py's folders): a sweep's skip count and benchmark accuracy per epoch with
Fig. 1 as mean ± std over seeds (sweep.py draws these when it ends), and the data ladder: final cell
quality against the weight steps of a run (one rung per number of search images, the paper's Table 2 at
its steps), every seed a dot, the mean per option a line; beside it how far α moved from uniform over
each run (sweep_table.alpha_separation) against the weight steps taken and against the epoch; and how
α orders every NB201 cell against the benchmark over each run (harness/alpha_rank.py).
"""
import os

import matplotlib.pyplot as plt
import numpy as np

from harness.figure_style import OPTION_STYLE, PAPER_NB201, on_cifar10, save
from harness.rundir import BENCH201_NAMES, bench_acc, bench_label
from harness.ladder import PAPER_STEPS, ladder
from harness.sweep_table import alpha_separation


def sweep_figures(sweep_runs, out, dpi=120):
    """A seed sweep (sweep.py): skip count and benchmark accuracy per epoch (thin: each seed, thick:
    the mean over seeds, per option; without any benchmark accuracy, how far α moved instead) and Fig. 1
    (sweep_fig1.png) twice: in the paper's layout (fig1_bars) and as a scatter, each with mean ± sample std
    over seeds."""
    os.makedirs(out, exist_ok=True)
    by = {}
    for r in sweep_runs:
        by.setdefault(str(r.config.get("option", "?")).upper(), []).append(r)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4))
    points = {}
    # No benchmark accuracy in any run (DARTS-style spaces; NB201 without --bench201): the right panel shows
    # how far α moved from uniform instead, which every space has (sweep_table.alpha_separation).
    benched = any(bench_acc(r, row, None) is not None for r in sweep_runs for row in r.rows)
    seps = {} if benched else {id(r): alpha_separation(r.alphas) for r in sweep_runs}  # each run's, read once
    for option, rs in sorted(by.items()):
        colour = OPTION_STYLE.get(option, ("tab:gray", "x"))[0]
        for ax, get in ((left, lambda r, row: row["skip_count"]), (right, lambda r, row: bench_acc(r, row, None))):
            if ax is right and not benched:
                curves = [list(seps[id(r)]["curve"]) for r in rs if seps[id(r)]]
            else:
                curves = [[(row["epoch"], get(r, row)) for row in r.rows] for r in rs]
            curves = [c for c in ([(e, v) for e, v in c if v is not None] for c in curves) if c]
            for c in curves:
                ax.plot(*zip(*c), color=colour, lw=0.7, alpha=0.45)
            if curves:  # per epoch, the mean over the seeds that have a value there (an epoch without one,
                # e.g. a session run without --bench201, leaves that seed out of that epoch's mean only)
                by_epoch = {}
                for c in curves:
                    for e, v in c:
                        by_epoch.setdefault(e, []).append(v)
                epochs = sorted(by_epoch)
                ax.plot(epochs, [np.mean(by_epoch[e]) for e in epochs],
                        color=colour, lw=2.4, label=f"option {option}: mean of {len(curves)} seeds")
        last = [(100 * r.rows[-1]["valid_acc"], bench_acc(r, r.rows[-1], None)) for r in rs]
        points[option] = [(x, y) for x, y in last if y is not None]
    for ax in (left, right):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    darts = any(str(r.config.get("space", "nb201")).lower() != "nb201" for r in sweep_runs)
    left.set(ylabel=f"skip_connect edges in the {'normal' if darts else 'derived'} cell",
             title="skip_connect count per epoch")
    if benched:
        right.set(ylabel=bench_label(sweep_runs), title="benchmark accuracy of each epoch's cell")
    else:
        uniform = [sep["uniform"] for sep in seps.values() if sep]
        if uniform:
            right.axhline(uniform[0], color="black", ls=":", lw=1, label=f"uniform α ({uniform[0]:.2f})")
            right.legend()
            # from 0 to twice uniform (as Fig. 5): a barely moving α stays a flat line, not a panel-filling trend
            right.set_ylim(0, min(1.0, max(2 * uniform[0], 1.05 * max(right.get_ylim()[1], uniform[0]))))
        right.set(ylabel="largest softmax(α) of an edge, mean over edges",
                  title="how far α moved from uniform (no benchmark for these cells)")
    fig.tight_layout()
    paths = [save(fig, out, "sweep_skip_and_bench.png", dpi)]
    if any(points.values()):
        fig, (bars, ax) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw=dict(width_ratios=(1, 1.3)))
        fig1_bars(bars, points, f"found cell: {bench_label(sweep_runs)}")
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
        fig.tight_layout()
        paths.append(save(fig, out, "sweep_fig1.png", dpi))
    return paths


def fig1_bars(ax, points, cell_label="found cell"):
    """Paper Fig. 1's own layout on `ax`: per option (points: {option: [(supernet acc., found cell acc.)]}),
    the supernet's accuracy (blue) beside its found cell's (orange), mean over seeds with the sample std as an
    error bar. -> {option: (supernet mean, found cell mean)}."""
    options, means = [o for o in sorted(points) if points[o]], {}
    for i, option in enumerate(options):
        for offset, values, colour, label in zip((-0.2, 0.2), np.array(points[option], dtype=float).T,
                                                 ("tab:blue", "tab:orange"), ("supernet", cell_label)):
            ax.bar(i + offset, values.mean(), 0.4, yerr=values.std(ddof=1) if len(values) > 1 else 0.0,
                   color=colour, capsize=3, label=label if i == 0 else None)
        means[option] = tuple(float(v) for v in np.array(points[option], dtype=float).mean(0))
    ax.set_xticks(range(len(options)), [f"option {o} (n={len(points[o])})" for o in options])
    ax.set(ylabel="accuracy (%)", title="paper Fig. 1's layout: mean ± std over seeds", ylim=(0, 118))
    ax.legend(fontsize=8, loc="upper center", ncol=2)  # above 100 %, clear of every bar
    return means


def ladder_points(sweep_dirs, search):
    """{option: {search images (weight + alpha): [(final benchmark acc., final skip count) per finished
    seed]}} over sweep folders (harness/ladder.ladder; search: the search script's module)."""
    return points(ladder(sweep_dirs, search))


def points(by_size):
    """ladder.ladder's {option: {(weight, α images): [records]}} -> ladder_points' form."""
    by = {}
    for option, rungs in by_size.items():
        for size, recs in rungs.items():
            by.setdefault(option, {}).setdefault(sum(size), []).extend((r["acc"], r["skip"]) for r in recs)
    return by


# Table 2's rows as points of the ladder (CIFAR-10 test acc. %, sample std over 3 runs, final skip edges
# where the paper says: DARTS ends in the all-skip cell); drawn at the paper's PAPER_STEPS weight steps
PAPER_POINTS = {"B": ("DARTS", PAPER_NB201[0][1], 0.0, 6), "C": ("RF-DARTS", PAPER_NB201[1][1], 0.15, None)}
OPTION_NAMES = {"B": "DARTS", "C": "RF-DARTS"}
SPREAD = 0.035  # decades between the options' dots at one rung; a rung's seeds spread over a third of it


def ladder_figure(by_size, cfg):
    """The data ladder (ladder.ladder's dict, read once for this and ladder.md): final benchmark
    accuracy and final skip count against the weight steps of a run (log x: the rungs and the paper's
    PAPER_STEPS on one scale); every seed a dot, the mean per option a line; on NB201 CIFAR-10 the
    paper's Table 2 as hollow points at its steps and the benchmark's optimum as a line. The dots of a
    rung are spread sideways (options apart, then seeds) so none hides another; the title says so. A
    panel with no values (no benchmark accuracy: a sweep without --bench201, a DARTS-space or SVHN
    search; no finished run at all) says that instead of drawing."""
    recs = [r for rungs in by_size.values() for rs in rungs.values() for r in rs]
    nb201_c10 = bool(recs) and all(r["space"] == "nb201" and r["bench201_dataset"] == "cifar10" for r in recs)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    options = sorted(by_size)
    rung_steps = {}  # x tick -> its label's two lines (the steps, the images)
    for i, option in enumerate(options):
        colour, marker = OPTION_STYLE.get(option, ("tab:gray", "x"))
        shift = 10 ** (SPREAD * (i - (len(options) - 1) / 2))
        name = f"option {option}" + (f" ({OPTION_NAMES[option]})" if option in OPTION_NAMES else "")
        for ax, key in zip(axes, ("acc", "skip")):
            means = []
            for size, rs in sorted(by_size[option].items(), key=lambda kv: kv[1][0]["steps"]):
                x = rs[0]["steps"] * shift
                rung_steps[rs[0]["steps"]] = (f"{rs[0]['steps']:,}", f"{size[0]:,} / {size[1]:,} img")
                vals = [r[key] for r in rs if r[key] is not None]
                if not vals:
                    continue
                spread = 10 ** (np.linspace(-SPREAD / 3, SPREAD / 3, len(vals)) if len(vals) > 1 else np.zeros(1))
                ax.scatter(x * spread, vals, color=colour, marker=marker, s=30, alpha=0.6)
                means.append((x, np.mean(vals)))
            if means:
                ax.plot(*zip(*means), color=colour, lw=2, marker=marker, ms=8, label=f"{name}: mean over seeds")
            if nb201_c10 and option in PAPER_POINTS:
                paper, acc, std, skip = PAPER_POINTS[option]
                y = acc if key == "acc" else skip
                if y is not None:
                    ax.errorbar(PAPER_STEPS * shift, y, yerr=std if key == "acc" else None, color=colour,
                                marker=marker, ms=10, mfc="white", mew=1.8, capsize=4, ls="none",
                                label=f"{paper}, paper Table 2: {acc:.2f} ± {std:.2f}" if key == "acc" else
                                f"{paper}, paper: the all-skip cell")
    if nb201_c10:
        optimum = PAPER_NB201[2][1]
        axes[0].axhline(optimum, color="black", ls=":", lw=1, label=f"best NB201 cell: {optimum:.2f}")
        for ax in axes:
            ax.axvline(PAPER_STEPS, color="gray", lw=0.8, alpha=0.5)
        near = [t for t in rung_steps if abs(t / PAPER_STEPS - 1) < 0.05]  # e.g. 19,500 (the last batch dropped)
        if near:  # one tick: two labels a few percent apart on a log axis print over each other
            steps, images = rung_steps[near[0]]
            rung_steps[near[0]] = (f"{steps} (paper: {PAPER_STEPS:,})", images)
        else:
            rung_steps[PAPER_STEPS] = (f"{PAPER_STEPS:,}", "paper: 25,000 / 25,000")
    columns = {r["bench201_dataset"] for r in recs if r["acc"] is not None}  # one, unless no run has an accuracy
    column = next((BENCH201_NAMES.get(c, c) + " " for c in columns), "") if len(columns) == 1 else ""
    axes[0].set(ylabel=f"NAS-Bench-201 {column}test acc. (%)", title="benchmark accuracy of the final cell")
    nb201 = bool(recs) and all(r["space"] == "nb201" for r in recs)
    axes[1].set(ylabel="skip_connect edges" + (" (of 6)" if nb201 else " (normal cell)"),
                title="final skip count: skip_connect edges of the final cell")
    skips = [r["skip"] for r in recs if r["skip"] is not None]
    axes[1].set_ylim(-0.3, (6 if nb201 else max(skips, default=1)) + 0.3)  # counts from 0: a flat 2 is no trend
    axes[1].yaxis.get_major_locator().set_params(integer=True)
    epochs = sorted({r["epochs"] for r in recs})
    for ax, key in zip(axes, ("acc", "skip")):
        if not any(r[key] is not None for r in recs):
            ax.text(0.5, 0.5, "no benchmark accuracy in these runs\n(searched without --bench201, or a space or\n"
                    "dataset NAS-Bench-201 has no column for)" if recs else "no finished run in these sweeps",
                    transform=ax.transAxes, ha="center", va="center", fontsize=9, color="dimgray")
            ax.set_yticks([])  # an empty panel's 0-1 scale would read as data
        ax.set_xscale("log")
        ticks = sorted(rung_steps)
        ax.set_xticks(ticks, ["\n".join(rung_steps[t]) for t in ticks], fontsize=8)
        ax.minorticks_off()
        if ticks:
            ax.set_xlim(ticks[0] / 10 ** (3 * SPREAD), ticks[-1] * 10 ** (3 * SPREAD))
        ax.set_xlabel("weight steps per run (log scale)")
        if ax.get_legend_handles_labels()[0]:  # below the axes: inside, it hid the dots of a mid-range seed
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)
    fig.suptitle(f"Data ladder: {', '.join(map(str, epochs)) or '?'} epochs per run, the same settings but the "
                 "number of images; each seed a dot, the mean a line\n(a rung's dots are spread sideways, options "
                 "apart, then seeds, only so that none hides another)", fontsize=10)
    fig.tight_layout()
    return save(fig, cfg.out, "ladder.png", cfg.dpi)


RUNG_LINES = (":", "--", "-", "-.")  # the ladder's rungs, fewest weight steps first


def separation_figure(by_size, cfg):
    """How far α moved over a search (ladder.ladder's records' "separation", sweep_table.alpha_separation:
    the largest softmax(α) per edge, averaged over the edges), a line per finished run: against the weight
    steps taken (log x, the rungs on one scale with the paper's PAPER_STEPS) and against the epoch (each
    rung's schedule on one scale). Colour by option, line style by rung. Without alphas, says so. Where
    runs recorded α's gradient (harness/alpha_grads.py), a third panel: its signal-to-noise ratio per
    epoch (alpha_grads.gradient_snr_curve), what sets how fast α can move."""
    snr = any(r.get("snr_curve") for rungs in by_size.values() for rs in rungs.values() for r in rs)
    fig, axes = plt.subplots(1, 3 if snr else 2, figsize=(18 if snr else 12, 4.6))
    by_steps, by_epoch, by_snr = (*axes, None)[:3]
    rungs = sorted({size: rs[0]["steps"] or 0 for rungs in by_size.values() for size, rs in rungs.items()}.items(),
                   key=lambda kv: kv[1])  # steps None: a run without epochs in config.json (ladder refuses it)
    line = {size: RUNG_LINES[i % len(RUNG_LINES)] for i, (size, _) in enumerate(rungs)}
    uniform = set()
    for option in sorted(by_size):
        colour = OPTION_STYLE.get(option, ("tab:gray", "x"))[0]
        name = f"option {option}" + (f" ({OPTION_NAMES[option]})" if option in OPTION_NAMES else "")
        for size, rs in sorted(by_size[option].items(), key=lambda kv: kv[1][0]["steps"] or 0):
            label = f"{name}, {size[0]:,} / {size[1]:,} img"
            for r in rs:
                sep = r.get("separation")
                if not sep or not r["steps"]:
                    continue
                uniform.add(round(sep["uniform"], 3))
                epochs, values = zip(*sep["curve"])
                per_epoch = r["steps"] / r["epochs"]
                by_steps.plot([e * per_epoch for e in epochs], values, color=colour, ls=line[size], lw=1.2,
                              alpha=0.75, label=label)
                by_epoch.plot(epochs, values, color=colour, ls=line[size], lw=1.2, alpha=0.75, label=label)
                if r.get("snr_curve"):
                    by_snr.plot(*zip(*r["snr_curve"]), color=colour, ls=line[size], lw=1.2, alpha=0.75)
                label = None  # one legend entry per option and rung
    for level in uniform:
        for ax in (by_steps, by_epoch):
            ax.axhline(level, color="black", ls=":", lw=0.8)
    if not uniform:
        for ax in (by_steps, by_epoch):
            ax.text(0.5, 0.5, "no alphas.json in these runs", transform=ax.transAxes, ha="center",
                    va="center", fontsize=9, color="dimgray")
            ax.set_yticks([])
    else:
        by_steps.axvline(PAPER_STEPS, color="gray", lw=0.8, alpha=0.5)
        by_steps.text(PAPER_STEPS, 0.98, f"paper: {PAPER_STEPS:,} ", transform=by_steps.get_xaxis_transform(),
                      ha="right", va="top", fontsize=8, color="dimgray")
        by_steps.set_xscale("log")
        by_epoch.xaxis.get_major_locator().set_params(integer=True)
        by_epoch.legend(fontsize=8, loc="upper left")
    levels = ", ".join(map(str, sorted(uniform)))
    ylabel = "largest softmax(α) per edge, mean over edges" + (f"\n(uniform α: {levels})" if uniform else "")
    by_steps.set(xlabel="weight steps (log scale)", ylabel=ylabel, title="against the weight steps taken")
    by_epoch.set(xlabel="epoch", title="against the epoch of each run's schedule")
    if by_snr is not None:
        by_snr.set(xlabel="epoch", ylabel="α gradient: RMS over entries of mean / std\nover an epoch's steps",
                   title="α's gradient signal-to-noise ratio (runs that recorded it)")
        by_snr.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("How far α moved from uniform during the search, a line per finished seed", fontsize=10)
    fig.tight_layout()
    return save(fig, cfg.out, "alpha_separation.png", cfg.dpi)


def rank_figure(by_size, cfg):
    """How α orders every NB201 cell over a search (ladder.ladder's records' "rank", harness/alpha_rank.py),
    a line per finished run: colour by option, line style by rung (rank_curves). None where no run was
    ranked (no NB201 runs, no table, no alphas)."""
    steps = sorted({size: rs[0]["steps"] or 0 for sizes in by_size.values() for size, rs in sizes.items()}.items(),
                   key=lambda kv: kv[1])
    line = {size: RUNG_LINES[i % len(RUNG_LINES)] for i, (size, _) in enumerate(steps)}
    curves, labelled = [], set()
    for option in sorted(by_size):
        for size in sorted(by_size[option]):
            for r in by_size[option][size]:
                if r.get("rank"):
                    name = f"option {option}" + (f" ({OPTION_NAMES[option]})" if option in OPTION_NAMES else "")
                    label = None if (option, size) in labelled else f"{name}, {size[0]:,} / {size[1]:,} img"
                    labelled.add((option, size))
                    curves.append((label, OPTION_STYLE.get(option, ("tab:gray", "x"))[0], line[size], r["rank"]))
    return rank_curves(curves, cfg, "a line per finished seed")


def rank_curves(curves, cfg, what):
    """alpha_rank.png: Spearman's ρ between the cells' scores under each epoch's softmax(α) and their
    benchmark accuracy, one line per (legend label or None, colour, line style, alpha_rank record with
    its table's chance and params_rho: rank_table.ranked); chance (i.i.d. normal α: mean ± 2 std) shaded, the
    parameter count's ρ dotted. A run whose α stayed uniform has no order: no line. None without curves."""
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for label, colour, ls, rank in curves:
        points = [(e, rho) for e, rho in rank["curve"] if rho is not None]  # uniform α: no order
        if points:
            ax.plot(*zip(*points), color=colour, ls=ls, lw=1.2, alpha=0.8, label=label)
    tables = {rank["table"]: rank for *_, rank in curves}
    for i, rank in enumerate(tables.values()):  # one table in practice; each drawn if several
        chance, note = rank["chance"], f" ({rank['table']})" if len(tables) > 1 else ""
        if chance is not None:  # None: a table whose cells cannot be ranked (alpha_rank.chance_rho)
            ax.axhspan(chance["mean"] - 2 * chance["std"], chance["mean"] + 2 * chance["std"], color="gray",
                       alpha=0.15, label=f"random α: mean ± 2 std{note}")
        if rank["params_rho"] is not None:
            ax.axhline(rank["params_rho"], color="black", ls=(0, (1, 2 + i)), lw=1,
                       label=f"parameter count alone: {rank['params_rho']:+.2f}{note}")
    ax.axhline(0, color="black", lw=0.6)
    ax.set(xlabel="epoch", ylabel="Spearman's ρ: score Σ_e log softmax(α_e)[op_e]\nagainst CIFAR-10 test accuracy",
           ylim=(-1, 1), title=f"How α orders all NAS-Bench-201 cells, {what}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return save(fig, cfg.out, "alpha_rank.png", cfg.dpi)
