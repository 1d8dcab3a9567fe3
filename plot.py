"""Figures from run directories: the paper's Fig. 1-5, the DARTS-collapse curve, cell drawings (no Graphviz).

    python plot.py RUN_DIR [RUN_DIR ...] --out=DIR [--bench201=../shared/data/nb201/nb201-public.csv]
    python plot.py SWEEP_DIR [SWEEP_DIR ...] --out=DIR      # the data ladder (ladder.png, ladder.md) over sweeps

Reads only what a run writes (through rundir.py), never a checkpoint. search.py runs (config.json has
"space"): history.json (older runs: log.txt's epoch lines), alphas.json, genotype.json ->
fig5_alphas_<run>[_<kind>].png (Fig. 5, softmax(alpha) per edge per epoch), op_scale_<run>[_<kind>].png
(softmax(alpha) beside each conv op's mean |gamma| and eta per edge: why a cell collapses or not),
cell_<run>.png (harness/cell_figure.py), and over all runs skip_and_bench.png (skip_connect edges of
each epoch's cell and its NAS-Bench-201 test accuracy beside Table 2; the axes name the benchmark
dataset, the searched one's: rundir.bench_dataset), fig1_supernet_vs_cell.png (Fig. 1, one marker
per option of Table 1) and, for NB201 runs and a table, alpha_rank.png (how each epoch's alpha orders
all 15,625 cells against the benchmark, harness/alpha_rank.py; each run's last rho printed); a
bnnas_search.py run (indicators.json) has no alpha and no alpha half: its cell, skip_and_bench.png and
indicators_<run>.png (its BN indicator per edge, harness/bnnas_figure.py) instead. analysis.py
runs (config.json has "exp"): fig2_plain.png, fig3_lambda.png, fig4_eta.png (Sec. 4,
harness/analysis_figures.py). Sweep folders: ladder.png (harness/sweep_figures.py)
and ladder.md, its numbers as a table (harness/ladder.py), with each found cell's Table 2 columns,
percentiles against random cells and final top-2 margins of softmax(alpha) (looked up in --bench201=PATH,
else in the table each run recorded), alpha_separation.png (how far alpha moved from uniform, per run
against its weight steps and epochs; ladder.md's last-epoch and equal-length values; where runs recorded
it, alpha's gradient signal-to-noise ratio per epoch) and, for NB201 runs looked up in a table,
alpha_rank.png (how each epoch's alpha orders all 15,625 cells against the benchmark: harness/alpha_rank.py;
ladder.md's rank table); sweeps whose runs' settings differ in more than the number of images are refused
in one line, and a seed two sweeps hold at one rung counts once, from the first folder given (a note says
which). Benchmark accuracy: the run's logged "bench201", else the
--bench201=PATH table. matplotlib is needed by this file and the
harness/*_figure(s).py, figure_style.py it imports only.
"""
import os
import sys
from dataclasses import dataclass

import numpy as np

from harness import cli
from harness.analysis_figures import analysis_figures
from harness.bnnas_figure import indicator_figure
from harness.cell_figure import draw_cell
from harness.checkpoints import atomic_write
# plt: matplotlib.pyplot, imported there after its backend is set to Agg (files only, no display)
from harness.figure_style import OP_COLOURS, PAPER_NB201, edge_title, on_cifar10, plt, run_style, save, style_key
from harness.rundir import bench_acc, bench_label, load_run
from harness.sweep_figures import ladder_figure, rank_curves, rank_figure, separation_figure
from harness.ladder import ladder as ladder_runs, ladder_markdown, ladder_notes
from harness.rank_table import fmt_rho, ranked
from harness.sweep_table import Benchmarks
from spaces import get_space


@dataclass
class PlotConfig:
    out: str = "figures"       # folder for the PNGs (created)
    bench201: str = ""         # NB201 table (any bench201.py format) for runs that did not log accuracies
    dpi: int = 120             # resolution of the PNGs (dots per inch)


def fig5_alphas(run, cfg):
    """Fig. 5: per edge, softmax(alpha) of each candidate op against the epoch (one figure per cell kind).
    The y axis starts at 0 and reaches at least twice the uniform level 1/K (K ops on the edge; dashed),
    where α = 0 puts every op: scaled to the data, a short run's 0.1995-0.2005 would fill the panel and
    read as a strong trend."""
    space, paths = get_space(run.config["space"]), []
    epochs = [a["epoch"] for a in run.alphas]
    for kind in space.cell_kinds:
        probs = np.array([a["alphas"][kind] for a in run.alphas])  # (epochs, edges, ops)
        n, cols = probs.shape[1], 3 if probs.shape[1] <= 6 else 5
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.5 * rows), sharex=True, sharey=True,
                                 squeeze=False)  # one y scale: edges compare honestly
        handles, uniform = {}, [1 / len(ops) for ops in space.ops(kind)]
        for e, ax in enumerate(axes.flat):
            ax.set_visible(e < n)
            for k, op in enumerate(space.ops(kind)[e] if e < n else ()):
                handles[op], = ax.plot(epochs, probs[:, e, k], color=OP_COLOURS[op], lw=1.6, label=op)
            if e < n:
                handles["uniform (α = 0)"] = ax.axhline(uniform[e], color="gray", ls="--", lw=1)
            ax.set(title=edge_title(space, e) if e < n else "", ylabel="softmax(α)" if e % cols == 0 else "")
            ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs
            if n - cols <= e < n:  # the lowest panel of each column carries the epoch axis
                ax.set_xlabel("epoch")
                ax.tick_params(labelbottom=True)
        axes[0, 0].set_ylim(0, min(1.0, max(2 * max(uniform), 1.1 * probs.max())))  # shared by every panel
        # the legend's top at the figure's bottom edge: below every x label at any row count (the saved
        # bounding box is tight, so it is kept)
        fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=min(len(handles), 6),
                   bbox_to_anchor=(0.5, 0.0), frameon=False, fontsize=10)
        cell = f"{kind} cell, " if len(space.cell_kinds) > 1 else ""
        fig.suptitle(f"softmax(α) per edge over the search (paper Fig. 5): {cell}run {run.name} "
                     f"({space.name}, option {run.option_seed}); y from 0, dashed: uniform")
        fig.tight_layout()
        suffix = f"_{kind}" if len(space.cell_kinds) > 1 else ""
        paths.append(save(fig, cfg.out, f"fig5_alphas_{run.name}{suffix}.png", cfg.dpi))
    return paths


def op_scale_figure(run, cfg):
    """Why a cell collapses or not: per edge (columns), softmax(alpha) of every op, the mean |gamma| of
    each conv op's last BN (what option C trains) and its eta (Eq. 17-18) against the epoch (search.py
    logs both in alphas.json, harness/op_scale.py). One figure per cell kind; more than 7 edges (the
    DARTS cell's 14) wrap into blocks of three rows, so the figure stays page-wide."""
    space, paths = get_space(run.config["space"]), []
    rows_ = [a for a in run.alphas if "op_scale" in a]
    epochs = [a["epoch"] for a in rows_]
    labels = ("softmax(α)", "mean |γ| of the op's BN", "η = Var[Wγ/σ] / Var[W₀]")
    for kind in space.cell_kinds:
        n = len(space.edges)
        cols = n if n <= 7 else -(-n // 2)
        blocks = -(-n // cols)
        fig, axes = plt.subplots(3 * blocks, cols, figsize=(2.6 * cols, 2.2 * 3 * blocks), sharex=True,
                                 squeeze=False)
        handles = {}
        for e, (b, c) in enumerate((b, c) for b in range(blocks) for c in range(cols)):
            panels = axes[3 * b: 3 * b + 3, c]  # edge e's softmax(α), |γ| and η, top to bottom
            for r, label in enumerate(labels):
                if (b, c) != (0, 0):
                    panels[r].sharey(axes[r, 0])  # one scale per quantity over every block
                panels[r].set_ylabel(label if c == 0 else "")
                panels[r].set_visible(e < n)
            if e >= n:
                continue
            for k, op in enumerate(space.ops(kind)[e]):
                handles[op], = panels[0].plot(epochs, [a["alphas"][kind][e][k] for a in rows_],
                                              color=OP_COLOURS[op], lw=1.4, label=op)
                for r, stat in ((1, "gamma"), (2, "eta")):
                    values = rows_[0]["op_scale"][kind][stat].get(op) if rows_ else None
                    if values is not None and values[e] is not None:
                        panels[r].plot(epochs, [a["op_scale"][kind][stat][op][e] for a in rows_],
                                       color=OP_COLOURS[op], lw=1.4)
            panels[0].set_title(edge_title(space, e))
            panels[2].set_xlabel("epoch")
            panels[2].tick_params(labelbottom=True)  # every block's last row carries the epoch axis
            panels[2].xaxis.get_major_locator().set_params(integer=True)  # whole epochs
        fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=min(len(handles), 8),
                   bbox_to_anchor=(0.5, 0.0), frameon=False, fontsize=10)  # below the x labels, as Fig. 5's
        cell = f"{kind} cell, " if len(space.cell_kinds) > 1 else ""
        fig.suptitle(f"what competes with skip_connect: {cell}run {run.name} ({space.name}, option {run.option_seed})")
        fig.tight_layout()
        suffix = f"_{kind}" if len(space.cell_kinds) > 1 else ""
        paths.append(save(fig, cfg.out, f"op_scale_{run.name}{suffix}.png", cfg.dpi))
    return paths


def skip_and_bench(search_runs, table, cfg):
    """Per epoch and run: skip_connect edges of the derived cell and its benchmark test accuracy (Table 2)."""
    accs = {r.name: [bench_acc(r, row, table) for row in r.rows] for r in search_runs}
    with_acc = [r for r in search_runs if any(a is not None for a in accs[r.name])]
    fig, axes = plt.subplots(1, 2 if with_acc else 1, figsize=(13 if with_acc else 6.5, 4.2), squeeze=False)
    left, seeds, n = axes[0, 0], {style_key(r) for r in search_runs}, len(search_runs)
    for k, r in enumerate(search_runs):  # integer counts: shift each run a little so equal lines stay visible
        colour, _, ls = run_style(r, seeds)
        shift = 0.08 * (k - (n - 1) / 2) / max(n - 1, 1)
        left.plot([x["epoch"] for x in r.rows], [x["skip_count"] + shift for x in r.rows], ls, color=colour,
                  lw=1.6, marker=".", label=r.label)
    left.set(xlabel="epoch", ylabel="skip_connect edges in the derived (normal) cell",
             title="skip_connect count of each epoch's cell (lines offset by < 0.05)")
    for ax in axes.flat:
        ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs
    left.yaxis.get_major_locator().set_params(integer=True)
    left.legend()
    if with_acc:
        right = axes[0, 1]
        for r in with_acc:
            colour, _, ls = run_style(r, seeds)
            pts = [(row["epoch"], a) for row, a in zip(r.rows, accs[r.name]) if a is not None]
            right.plot(*zip(*pts), ls, color=colour, lw=1.6, marker=".", label=r.label)
        for (name, value), style in zip(PAPER_NB201 if on_cifar10(with_acc) else (), ("--", "-.", ":")):
            right.axhline(value, color="black", ls=style, lw=1, label=f"{name} {value:.2f}")
        right.set(xlabel="epoch", ylabel=bench_label(with_acc),
                  title="benchmark accuracy of each epoch's cell")
        right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8)  # below: hides no curve
    about = ", ".join(f"{r.name} ({r.config.get('epochs')} ep)" for r in search_runs)
    fig.suptitle(f"DARTS collapse watch: {about}", fontsize=10)
    fig.tight_layout()
    return save(fig, cfg.out, "skip_and_bench.png", cfg.dpi)


def fig1(points, cfg):
    """Fig. 1: final supernet accuracy (x) against the found cell's benchmark accuracy (y), per option."""
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    xs, ys = [x for _, x, _ in points], [y for _, _, y in points]
    near_x, near_y = 0.1 * (max(xs) - min(xs) or 1), 0.05 * (max(ys) - min(ys) or 1)  # a label's extent, about
    placed = []  # (x, y, level) of the labels so far
    for run, x, y in points:
        colour, marker, _ = run_style(run)
        ax.scatter(x, y, s=70, color=colour, marker=marker, label=f"option {run.config.get('option')}")
        # labels of points that sit close together go on lines of their own, not over each other
        taken = {level for px, py, level in placed if abs(x - px) < near_x and abs(y - py) < near_y}
        level = min(set(range(len(placed) + 1)) - taken)
        placed.append((x, y, level))
        ax.annotate(run.label, (x, y), textcoords="offset points", xytext=(6, 4 - 10 * level), fontsize=8)
    if on_cifar10([run for run, _, _ in points]):
        ax.axhline(PAPER_NB201[2][1], color="black", ls=":", lw=1, label=f"NB201 optimum {PAPER_NB201[2][1]}")
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))  # one legend entry per option
    ax.legend(handles.values(), handles.keys())
    ax.set(xlabel="supernet accuracy (%) on the α half, last epoch (mean over its α batches)",
           ylabel=f"found cell: {bench_label([run for run, _, _ in points])}",
           title="Supernet fit vs. found cell (paper Fig. 1)")
    return save(fig, cfg.out, "fig1_supernet_vs_cell.png", cfg.dpi)


def alpha_rank_runs(search_runs, table, cfg):
    """alpha_rank.png for the NB201 runs with alphas.json: how each epoch's α orders all 15,625 cells against
    the benchmark (harness/alpha_rank.py), a line per run; the table: --bench201=PATH, else the one each run
    recorded. Prints each run's last-epoch ρ (every cell, pool-free). [] where no run can be ranked."""
    import bench201  # the tables' errors; bench201 is the standard library only
    tables, curves = Benchmarks(table.path if table else ""), []
    seeds = {style_key(r) for r in search_runs}
    for r in search_runs:
        if get_space(r.config["space"]).name != "nb201":
            continue
        try:
            bench = tables.for_run(r.config)
            rank = ranked(bench, r.alphas) if bench is not None else None
        except (bench201.BenchmarkFileError, bench201.QueryError, OSError) as e:
            print(f"note: {r.name}: its α is not ranked ({cli.one_line(e)})")  # the other figures are still drawn
            continue
        if rank:
            colour, _, ls = run_style(r, seeds)
            curves.append((r.label, colour, ls, rank))
            print(f"{r.name}: alpha orders the NB201 cells with Spearman rho {fmt_rho(rank['rho'])} (pool-free "
                  f"{fmt_rho(rank['rho_pool_free'])}) at epoch {rank['curve'][-1][0]}")
    path = rank_curves(curves, cfg, "a line per run")
    return [path] if path else []


def is_bnnas(run):
    """A bnnas_search.py run (its config has "space" too): BN indicators in place of alpha and its half."""
    return os.path.isfile(os.path.join(run.path, "indicators.json"))


def draw_all(loaded, table, cfg):
    """Every figure the loaded runs allow; returns the PNG paths."""
    search_runs, paths = [r for r in loaded if "space" in r.config and r.rows], []
    for r in loaded:
        if "space" in r.config and not r.rows:
            print(f"note: {r.name}: no finished epoch yet, nothing to draw")
    for r in search_runs:
        paths += fig5_alphas(r, cfg) if r.alphas else []
        paths += op_scale_figure(r, cfg) if any("op_scale" in a for a in r.alphas or ()) else []
        paths += [draw_cell(r, cfg, bench_acc(r, r.rows[-1], table))] if r.genotype else []
        if is_bnnas(r):
            paths.append(indicator_figure(r.path, cfg.dpi, to=cfg.out, name=f"indicators_{r.name}.png"))
    if search_runs:
        paths.append(skip_and_bench(search_runs, table, cfg))
        paths += alpha_rank_runs([r for r in search_runs if r.alphas], table, cfg)
        points = [(r, 100 * r.rows[-1]["valid_acc"], bench_acc(r, r.rows[-1], table)) for r in search_runs
                  if not is_bnnas(r)]  # Fig. 1's x is the supernet on the alpha half: BN-NAS has none
        points = [p for p in points if p[2] is not None]
        if points:
            paths.append(fig1(points, cfg))
        elif any(get_space(r.config["space"]).name == "nb201" and not is_bnnas(r) for r in search_runs):
            print("note: no benchmark accuracy (runs without --bench201 and no --bench201=PATH here): "
                  "benchmark curve and Fig. 1 skipped")
    return paths + analysis_figures([r for r in loaded if "exp" in r.config], cfg)


def main(argv=None):
    """`RUN_DIR ... --key=value ...` -> draw every applicable figure; returns (and prints) the PNG paths.
    --help or -h: prints cli.help_text (the command lines above and every key) and draws nothing."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if cli.wants_help(argv):  # the command line holds folders beside the keys: parse_config never sees all
        print(cli.help_text(PlotConfig, __doc__, usage="python plot.py RUN_DIR|SWEEP_DIR ... --out=DIR [--key=value ...]"))
        return []
    cfg = cli.parse_config(PlotConfig, [a for a in argv if a.startswith("--")])
    cli.check_ranges(cfg, dict(dpi="[1, inf)"))
    dirs = [a for a in argv if not a.startswith("--")]
    if not dirs:
        raise cli.ConfigError("usage: python plot.py RUN_DIR [RUN_DIR ...] --out=DIR [--bench201=PATH]")
    # sweep folders (table.json, no config.json of their own) give the data-ladder figure
    sweeps = [d for d in dirs if os.path.isfile(os.path.join(d, "table.json"))
              and not os.path.isfile(os.path.join(d, "config.json"))]
    dirs = [d for d in dirs if d not in sweeps]
    ladder = []
    if sweeps:
        import search  # its SearchConfig and RUN_KEYS say what a rung's setting is; here: only a ladder needs it
        by_size = ladder_runs(sweeps, search, cfg.bench201)  # the folders read once, for the table and the figure
        os.makedirs(cfg.out, exist_ok=True)  # after the settings check: a refused ladder leaves nothing behind
        table = os.path.join(cfg.out, "ladder.md")  # the figure's numbers: mean ± std, all-skip counts
        for note in ladder_notes(by_size):  # a seed two sweeps hold: which run counted (ladder.md says it too)
            print(note)
        text = ladder_markdown(by_size)
        atomic_write(table, lambda f: f.write(text), mode="w")
        ladder = [ladder_figure(by_size, cfg), table, separation_figure(by_size, cfg)]
        ladder += [p for p in [rank_figure(by_size, cfg)] if p]  # NB201 runs looked up in a table only
        print(*ladder, sep="\n")
        if not dirs:
            return ladder
    loaded = [load_run(d) for d in dirs]
    names = [r.name for r in loaded]
    for r in loaded:  # two runs called B_s1 in different folders: prefix the folder
        if names.count(r.name) > 1:
            r.where = os.path.basename(os.path.dirname(os.path.normpath(r.path)))
            r.name = f"{r.where}_{r.name}"
    labels = [r.label for r in loaded]
    if len(set(labels)) < len(labels):  # two runs of one option and seed (ablations, another space): each legend
        for r in loaded:                # entry names its run's folder, not only the ones that collide
            r.where = r.where or r.name
    table = None
    if cfg.bench201 and any("space" in r.config and get_space(r.config["space"]).name == "nb201"
                            for r in loaded):
        import bench201
        table = bench201.NB201(cfg.bench201)
    os.makedirs(cfg.out, exist_ok=True)
    with plt.rc_context({"axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8}):
        paths = draw_all(loaded, table, cfg)
    for p in paths:
        print(p)
    return ladder + paths


if __name__ == "__main__":
    cli.run(main)
