"""Figures from run directories: the paper's Fig. 1-5, the DARTS-collapse curve, cell drawings (no Graphviz).

    python plot.py RUN_DIR [RUN_DIR ...] --out=DIR [--bench201=../shared/data/nb201/nb201-public.csv]
    python plot.py SWEEP_DIR [SWEEP_DIR ...] --out=DIR      # the data ladder (ladder.png) over sweeps

Reads only what a run writes (through rundir.py), never a checkpoint. search.py runs (config.json has
"space"): history.json (older runs: log.txt's epoch lines), alphas.json, genotype.json ->
fig5_alphas_<run>[_<kind>].png (Fig. 5, softmax(alpha) per edge per epoch), op_scale_<run>[_<kind>].png
(softmax(alpha) beside each conv op's mean |gamma| and eta per edge: why a cell collapses or not),
cell_<run>.png, and over all runs skip_and_bench.png (skip_connect edges of each epoch's cell and its
NAS-Bench-201 test accuracy beside Table 2; the axes name the benchmark dataset, the searched one's:
rundir.bench_dataset) and fig1_supernet_vs_cell.png (Fig. 1, one marker per option of Table 1).
analysis.py runs (config.json has "exp"): history.json -> fig2_plain.png (Fig. 2), fig3_lambda.png
(Fig. 3, lambda of Eq. 9), fig4_eta.png (Fig. 4, eta of Eq. 17-18). Benchmark accuracy: the run's logged
"bench201", else the --bench201=PATH table.
matplotlib is needed by this file only; no module imports it.
"""
import os
import sys
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import genotypes as G  # noqa: E402
from harness import runs  # noqa: E402
from harness.checkpoints import read_json as read_json_file  # noqa: E402
from harness.rundir import BENCH201_NAMES, bench_acc, bench_dataset, bench_label, load_run  # noqa: E402
from spaces import DARTS_OPS, NB201_OPS, get_space  # noqa: E402


@dataclass
class PlotConfig:
    out: str = "figures"       # folder for the PNGs (created)
    bench201: str = ""         # NB201 table (any bench201.py format) for runs that did not log accuracies
    dpi: int = 120


# One colour per op name in every panel of every figure: the 11 ops of all spaces on tab10, then black.
_ALL_OPS = dict.fromkeys(NB201_OPS + DARTS_OPS + ("noise",))
OP_COLOURS = {op: f"C{i}" if i < 10 else "black" for i, op in enumerate(_ALL_OPS)}
OPTION_STYLE = {"A": ("tab:green", "o"), "B": ("tab:red", "s"), "C": ("tab:blue", "^"),
                "D": ("tab:purple", "D")}  # Table 1's options: colour and marker
SEED_LINES = ("-", "--", ":", "-.")
# CIFAR-10 test accuracies (%) on NAS-Bench-201 (paper Table 2), drawn on CIFAR-10 axes only
PAPER_NB201 = (("DARTS 1st order (paper)", 54.30), ("RF-DARTS (paper)", 94.27), ("optimum", 94.37))
SETTINGS = {"convbn": "Conv+BN", "bn": "only BN"}


def _on_cifar10(runs_):
    """Whether every run's benchmark accuracies are CIFAR-10's (PAPER_NB201 holds CIFAR-10 numbers)."""
    return all(bench_dataset(r, r.rows[-1] if r.rows else None) == "cifar10" for r in runs_)

def _save(fig, out, name, dpi):
    path = os.path.join(out, name)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _edge_title(space, e):
    i, j = space.edges[e]  # node i takes input j (spaces.py)
    if space.cell == "nb201":
        return f"edge {j}→{i}"
    return f"edge {('$c_{k-2}$', '$c_{k-1}$')[j] if j < 2 else j - 2}→{i}"


def fig5_alphas(run, cfg):
    """Fig. 5: per edge, softmax(alpha) of each candidate op against the epoch (one figure per cell kind)."""
    space, paths = get_space(run.config["space"]), []
    epochs = [a["epoch"] for a in run.alphas]
    for kind in space.cell_kinds:
        probs = np.array([a["alphas"][kind] for a in run.alphas])  # (epochs, edges, ops)
        n, cols = probs.shape[1], 3 if probs.shape[1] <= 6 else 5
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.5 * rows), sharex=True, sharey=True,
                                 squeeze=False)  # one y scale: edges compare honestly
        handles = {}
        for e, ax in enumerate(axes.flat):
            ax.set_visible(e < n)
            for k, op in enumerate(space.ops(kind)[e] if e < n else ()):
                handles[op], = ax.plot(epochs, probs[:, e, k], color=OP_COLOURS[op], lw=1.6, label=op)
            ax.set(title=_edge_title(space, e) if e < n else "", ylabel="softmax(α)" if e % cols == 0 else "")
            ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs
            if n - cols <= e < n:  # the lowest panel of each column carries the epoch axis
                ax.set_xlabel("epoch")
                ax.tick_params(labelbottom=True)
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6),
                   bbox_to_anchor=(0.5, -0.06 if rows < 3 else -0.02), frameon=False, fontsize=10)
        cell = f"{kind} cell, " if len(space.cell_kinds) > 1 else ""
        fig.suptitle(f"softmax(α) per edge over the search (paper Fig. 5): {cell}run {run.name} "
                     f"({space.name}, option {run.label})")
        fig.tight_layout()
        suffix = f"_{kind}" if len(space.cell_kinds) > 1 else ""
        paths.append(_save(fig, cfg.out, f"fig5_alphas_{run.name}{suffix}.png", cfg.dpi))
    return paths


def op_scale_figure(run, cfg):
    """Why a cell collapses or not: per edge (columns), softmax(alpha) of every op, the mean |gamma| of
    each conv op's last BN (what option C trains) and its eta (Eq. 17-18) against the epoch (search.py
    logs both in alphas.json, harness/op_scale.py). One figure per cell kind."""
    space, paths = get_space(run.config["space"]), []
    rows_ = [a for a in run.alphas if "op_scale" in a]
    epochs = [a["epoch"] for a in rows_]
    for kind in space.cell_kinds:
        n = len(space.edges)
        fig, axes = plt.subplots(3, n, figsize=(2.6 * n, 6.6), sharex=True, sharey="row", squeeze=False)
        handles = {}
        for e in range(n):
            for k, op in enumerate(space.ops(kind)[e]):
                handles[op], = axes[0, e].plot(epochs, [a["alphas"][kind][e][k] for a in rows_],
                                               color=OP_COLOURS[op], lw=1.4, label=op)
                for r, stat in ((1, "gamma"), (2, "eta")):
                    values = rows_[0]["op_scale"][kind][stat].get(op) if rows_ else None
                    if values is not None and values[e] is not None:
                        axes[r, e].plot(epochs, [a["op_scale"][kind][stat][op][e] for a in rows_],
                                        color=OP_COLOURS[op], lw=1.4)
            axes[0, e].set_title(_edge_title(space, e))
            axes[2, e].set_xlabel("epoch")
            axes[2, e].xaxis.get_major_locator().set_params(integer=True)  # whole epochs
        for r, label in enumerate(("softmax(α)", "mean |γ| of the op's BN", "η = Var[Wγ/σ] / Var[W₀]")):
            axes[r, 0].set_ylabel(label)
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 8),
                   bbox_to_anchor=(0.5, -0.04), frameon=False, fontsize=10)
        cell = f"{kind} cell, " if len(space.cell_kinds) > 1 else ""
        fig.suptitle(f"what competes with skip_connect: {cell}run {run.name} ({space.name}, option {run.label})")
        fig.tight_layout()
        suffix = f"_{kind}" if len(space.cell_kinds) > 1 else ""
        paths.append(_save(fig, cfg.out, f"op_scale_{run.name}{suffix}.png", cfg.dpi))
    return paths


def _run_style(run, seeds=()):
    """Colour and marker by option (Table 1), line style by the seed's rank among `seeds`."""
    colour, marker = OPTION_STYLE.get(str(run.config.get("option", "")).upper(), ("tab:gray", "x"))
    rank = sorted(seeds).index(run.config.get("seed")) if run.config.get("seed") in seeds else 0
    return colour, marker, SEED_LINES[rank % len(SEED_LINES)]


def skip_and_bench(search_runs, table, cfg):
    """Per epoch and run: skip_connect edges of the derived cell and its benchmark test accuracy (Table 2)."""
    accs = {r.name: [bench_acc(r, row, table) for row in r.rows] for r in search_runs}
    with_acc = [r for r in search_runs if any(a is not None for a in accs[r.name])]
    fig, axes = plt.subplots(1, 2 if with_acc else 1, figsize=(13 if with_acc else 6.5, 4.2), squeeze=False)
    left, seeds, n = axes[0, 0], {r.config.get("seed") for r in search_runs}, len(search_runs)
    for k, r in enumerate(search_runs):  # integer counts: shift each run a little so equal lines stay visible
        colour, _, ls = _run_style(r, seeds)
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
            colour, _, ls = _run_style(r, seeds)
            pts = [(row["epoch"], a) for row, a in zip(r.rows, accs[r.name]) if a is not None]
            right.plot(*zip(*pts), ls, color=colour, lw=1.6, marker=".", label=r.label)
        for (name, value), style in zip(PAPER_NB201 if _on_cifar10(with_acc) else (), ("--", "-.", ":")):
            right.axhline(value, color="black", ls=style, lw=1, label=f"{name} {value:.2f}")
        right.set(xlabel="epoch", ylabel=bench_label(with_acc),
                  title="benchmark accuracy of each epoch's cell")
        right.legend()
    about = ", ".join(f"{r.name} ({r.config.get('epochs')} ep)" for r in search_runs)
    fig.suptitle(f"DARTS collapse watch: {about}", fontsize=10)
    fig.tight_layout()
    return _save(fig, cfg.out, "skip_and_bench.png", cfg.dpi)


def fig1(points, cfg):
    """Fig. 1: final supernet accuracy (x) against the found cell's benchmark accuracy (y), per option."""
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for run, x, y in points:
        colour, marker, _ = _run_style(run)
        ax.scatter(x, y, s=70, color=colour, marker=marker, label=f"option {run.config.get('option')}")
        ax.annotate(run.label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if _on_cifar10([run for run, _, _ in points]):
        ax.axhline(PAPER_NB201[2][1], color="black", ls=":", lw=1, label=f"NB201 optimum {PAPER_NB201[2][1]}")
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))  # one legend entry per option
    ax.legend(handles.values(), handles.keys())
    ax.set(xlabel="supernet accuracy (%) on the α half, last epoch (mean over its α batches)",
           ylabel=f"found cell: {bench_label([run for run, _, _ in points])}",
           title="Supernet fit vs. found cell (paper Fig. 1)")
    return _save(fig, cfg.out, "fig1_supernet_vs_cell.png", cfg.dpi)


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
    paths = [_save(fig, out, "sweep_skip_and_bench.png", dpi)]
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
        if _on_cifar10(sweep_runs):
            ax.axhline(PAPER_NB201[2][1], color="black", ls=":", lw=1, label=f"NB201 optimum {PAPER_NB201[2][1]}")
        ax.set(xlabel="supernet accuracy (%) on the α half, last epoch",
               ylabel=f"found cell: {bench_label(sweep_runs)}",
               title="Supernet fit vs. found cell (paper Fig. 1), mean ± std over seeds")
        ax.legend()
        paths.append(_save(fig, out, "sweep_fig1.png", dpi))
    return paths


def search_images(run_dir):
    """(weight, alpha) image counts of a search, from the first line of its log.txt; None if absent."""
    import re
    path = os.path.join(run_dir, "log.txt")
    if os.path.isfile(path):
        with open(path) as f:
            m = re.search(r"(\d+) weight / (\d+) alpha images", f.read())
        if m:
            return int(m[1]), int(m[2])
    return None


def ladder_points(sweep_dirs):
    """{option: {search images (weight + alpha): [(final benchmark acc., final skip count) per finished
    seed]}} over sweep folders (sweep.py's table.json; the image count from each run's log.txt)."""
    by = {}
    for d in sweep_dirs:
        for option, s in read_json_file(os.path.join(d, "table.json")).items():
            for r in s["seeds"]:
                if r.get("state") != "finished":
                    continue
                n = search_images(os.path.join(d, f"{option}_s{r['seed']}"))
                if n is not None:
                    by.setdefault(option, {}).setdefault(sum(n), []).append((r["bench_test_acc"], r["skip_count"]))
    return by


def ladder_figure(sweep_dirs, cfg):
    """The data ladder: final benchmark accuracy and final skip count against the number of search
    images; every seed a dot, the mean per option a line (the paper's Table 2 numbers as references)."""
    by = ladder_points(sweep_dirs)
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
        ax.legend(fontsize=8)
    fig.suptitle("Data ladder at 50 epochs: each seed a dot, the mean a line", fontsize=10)
    fig.tight_layout()
    return _save(fig, cfg.out, "ladder.png", cfg.dpi)


def draw_cell(run, cfg, acc=None):
    """The final cell as a graph: circles for nodes, arrows labelled with the op."""
    g = G.load_genotype(run.genotype)
    kinds = ("normal",) if isinstance(g, G.NB201Cell) else ("normal", "reduce")
    fig, axes = plt.subplots(len(kinds), 1, figsize=(7 if len(kinds) == 1 else 11, 3.6 * len(kinds)),
                             squeeze=False)
    for ax, kind in zip(axes.flat, kinds):
        _draw_nb201(ax, g) if isinstance(g, G.NB201Cell) else _draw_darts(ax, g, kind)
    index = f", NB201 index {run.genotype['nb201_index']}" if "nb201_index" in run.genotype else ""
    name = BENCH201_NAMES.get(bench_dataset(run, run.rows[-1] if run.rows else None), "?")
    acc = "" if acc is None else f", {name} test acc. {acc:.2f}% (NB201)"
    arch = f"\n{run.genotype['arch']}" if "arch" in run.genotype else ""
    fig.suptitle(f"Final cell of {run.name} (option {run.label}){index}{acc}{arch}", fontsize=9)
    fig.tight_layout()
    return _save(fig, cfg.out, f"cell_{run.name}.png", cfg.dpi)


def _draw_graph(ax, names, edges, gap, radius, shaded):
    """States `names` left to right, `gap` apart; edges (src, dst, op, side): side 0 straight, -1 bent
    above, +1 below (matplotlib's arc3); `none` edges dotted grey; `shaded` states: cell inputs/output."""
    for src, dst, op, side in edges:
        x1, x2, rad, dim = gap * src, gap * dst, 0.42 * side, op == "none"
        ax.annotate("", (x2, 0), (x1, 0), arrowprops=dict(
            arrowstyle="-|>", mutation_scale=14, lw=1.6, shrinkA=16, shrinkB=16, ls=":" if dim else "-",
            color="0.6" if dim else "black", connectionstyle=f"arc3,rad={rad}"))
        # arc3's control point lies rad * dx off the chord's middle; the curve passes half-way to it.
        # A straight arrow keeps its label just above it, so the arrow stays visible.
        style = dict(va="center", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none")) if rad \
            else dict(va="bottom")
        ax.text((x1 + x2) / 2, -rad * (x2 - x1) / 2 if rad else 0.07, op, ha="center", fontsize=8,
                color="0.5" if dim else "black", **style)
    for s, name in enumerate(names):
        ax.add_patch(plt.Circle((gap * s, 0), radius, fc="#d9e8f5" if s in shaded else "white", ec="black",
                                lw=1.3, zorder=3))
        ax.text(gap * s, 0, name, ha="center", va="center", fontsize=9, zorder=4)
    ax.set_aspect("equal")
    ax.axis("off")


def _draw_nb201(ax, cell):
    # node 0 = cell input, node 3 = cell output; 0->2 and 0->3 bend above, 1->3 below: no arcs cross
    edges = [(j, i, op, 0 if i - j == 1 else (-1 if j == 0 else 1))
             for (i, j), op in zip(G.NB201_EDGES, cell.ops)]
    _draw_graph(ax, ["0", "1", "2", "3"], edges, 1.6, 0.22, shaded=(0, 3))
    ax.set(xlim=(-0.5, 5.3), ylim=(-1.4, 1.4), title="NB201 cell: 0 = input, 3 = output (dotted: none)")


def _draw_darts(ax, g, kind):
    pairs, concat = (g.normal, g.normal_concat) if kind == "normal" else (g.reduce, g.reduce_concat)
    names = ["$c_{k-2}$", "$c_{k-1}$", "0", "1", "2", "3"]  # state s: the two inputs, then node s - 2
    # pairs 2n, 2n+1 feed node n (state n + 2): the first bends above, the second below
    edges = [(j, p // 2 + 2, op, 0 if p // 2 + 2 - j == 1 else (-1 if p % 2 == 0 else 1))
             for p, (op, j) in enumerate(pairs)]
    _draw_graph(ax, names, edges, 2.6, 0.4, shaded=(0, 1))
    ax.text(13.6, 0, f"$c_{{k}}$ = concat({', '.join(names[s] for s in concat)})", va="center", fontsize=9)
    ax.set(xlim=(-0.6, 18.5), ylim=(-3, 3))
    ax.set_title(f"{kind} cell", fontsize=10)


def analysis_figures(runs_, cfg):
    """Fig. 2 (plain nets' errors), Fig. 3 (lambda on the skips), Fig. 4 (eta per layer) from analysis.py."""
    paths = []
    for exp, name, draw in (("plain", "fig2_plain.png", _fig2), ("lambda", "fig3_lambda.png", _fig3)):
        chosen = [r for r in runs_ if r.config["exp"] == exp and r.rows]
        settings = [s for s in SETTINGS if any(r.config.get("setting") == s for r in chosen)]
        if not settings:
            continue
        fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 4.2), squeeze=False,
                                 sharey=True)  # one panel per training setting
        for ax, setting in zip(axes.flat, settings):
            draw(ax, [r for r in chosen if r.config.get("setting") == setting])
            ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs
            ax.set_title(SETTINGS[setting])
            ax.legend()
        fig.suptitle(f"paper Fig. {name[3]}: " + ", ".join(r.name for r in chosen), fontsize=9)
        fig.tight_layout()
        paths.append(_save(fig, cfg.out, name, cfg.dpi))
    with_eta = [r for r in runs_ if r.rows and r.rows[-1].get("eta")]
    return paths + ([_fig4(with_eta, cfg)] if with_eta else [])


def _fig2(ax, chosen):
    widths = {r.config.get("width") for r in chosen}  # several widths: say which line is which
    for k, r in enumerate(sorted(chosen, key=lambda r: (r.config.get("width", 1), r.config.get("depth", 0)))):
        epochs, label = [x["epoch"] for x in r.rows], f"{r.config.get('depth')} layers"
        label += f", width {r.config.get('width')}" if len(widths) > 1 else ""
        ax.plot(epochs, [100 * x["train_err"] for x in r.rows], "-", color=f"C{k}", label=f"{label}, train")
        ax.plot(epochs, [100 * x["test_err"] for x in r.rows], "--", color=f"C{k}", label=f"{label}, test")
    ax.set(xlabel="epoch", ylabel="error (%)")


def _fig3(ax, chosen):
    for k, r in enumerate(sorted(chosen, key=lambda r: r.config.get("lambda_init", 0))):
        init = float(r.config.get("lambda_init", 0))
        epochs = [0] + [x["epoch"] for x in r.rows]  # epoch 0: every lambda at its initial value
        # (1 + epochs, blocks)
        lam = np.array([[init] * len(r.rows[0]["lambda"])] + [x["lambda"] for x in r.rows])
        ax.plot(epochs, lam.mean(1), color=f"C{k}", lw=1.8, label=f"λ init {init:g} (mean over blocks)")
        # min-max over 16 blocks spans ~[0, 1] after one epoch in every run: the quartiles say more
        q1, q3 = np.percentile(lam, [25, 75], axis=1)
        ax.fill_between(epochs, q1, q3, color=f"C{k}", alpha=0.15, lw=0)
    ax.set(xlabel="epoch", ylabel="λ on the skips (band: quartiles over blocks)")


def _fig4(chosen, cfg):
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    etas = [np.array(r.rows[-1]["eta"], dtype=float) for r in chosen]  # (conv layers,) per run
    for r, eta in zip(chosen, etas):
        setting = SETTINGS.get(r.config.get("setting"), r.config.get("setting"))
        ax.plot(np.arange(1, len(eta) + 1), eta, marker=".", label=f"{setting}, {r.config.get('depth')} "
                f"layers ({r.config['exp']}, epoch {r.rows[-1]['epoch']})")
    ax.axhline(1.0, color="black", ls="--", lw=1)
    flat = np.concatenate(etas)
    if flat.min() > 0 and flat.max() / flat.min() > 50:  # eta ~ 0 next to ~ 1: a log axis shows both
        ax.set_yscale("log")
    ax.set(xlabel="conv layer (network order)", ylabel="η = Var[W γ/σ] / Var[W_init]",
           title="Relative variance η per conv layer at the last epoch (paper Fig. 4)")
    ax.legend()
    return _save(fig, cfg.out, "fig4_eta.png", cfg.dpi)


def draw_all(loaded, table, cfg):
    """Every figure the loaded runs allow; returns the PNG paths."""
    search_runs, paths = [r for r in loaded if "space" in r.config and r.rows], []
    for r in search_runs:
        paths += fig5_alphas(r, cfg) if r.alphas else []
        paths += op_scale_figure(r, cfg) if any("op_scale" in a for a in r.alphas or ()) else []
        paths += [draw_cell(r, cfg, bench_acc(r, r.rows[-1], table))] if r.genotype else []
    if search_runs:
        paths.append(skip_and_bench(search_runs, table, cfg))
        points = [(r, 100 * r.rows[-1]["valid_acc"], bench_acc(r, r.rows[-1], table)) for r in search_runs]
        points = [p for p in points if p[2] is not None]
        if points:
            paths.append(fig1(points, cfg))
        elif any(get_space(r.config["space"]).name == "nb201" for r in search_runs):
            print("note: no benchmark accuracy (runs without --bench201 and no --bench201=PATH here): "
                  "benchmark curve and Fig. 1 skipped")
    return paths + analysis_figures([r for r in loaded if "exp" in r.config], cfg)


def main(argv=None):
    """`RUN_DIR ... --key=value ...` -> draw every applicable figure; returns (and prints) the PNG paths."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    cfg = runs.parse_config(PlotConfig, [a for a in argv if a.startswith("--")])
    dirs = [a for a in argv if not a.startswith("--")]
    if not dirs:
        raise runs.ConfigError("usage: python plot.py RUN_DIR [RUN_DIR ...] --out=DIR [--bench201=PATH]")
    # sweep folders (table.json, no config.json of their own) give the data-ladder figure
    sweeps = [d for d in dirs if os.path.isfile(os.path.join(d, "table.json"))
              and not os.path.isfile(os.path.join(d, "config.json"))]
    dirs = [d for d in dirs if d not in sweeps]
    ladder = []
    if sweeps:
        os.makedirs(cfg.out, exist_ok=True)
        ladder = [ladder_figure(sweeps, cfg)]
        print(ladder[0])
        if not dirs:
            return ladder
    loaded = [load_run(d) for d in dirs]
    names = [r.name for r in loaded]
    for r in loaded:  # two runs called B_s1 in different folders: prefix the folder
        if names.count(r.name) > 1:
            r.name = f"{os.path.basename(os.path.dirname(os.path.normpath(r.path)))}_{r.name}"
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
    runs.cli(main)
