"""The final cell drawn as a graph (no Graphviz): circles for the states, arrows labelled with the op,
for an NB201 cell and for a DARTS genotype's normal and reduction cells (cell_<run>.png).
"""
import matplotlib.pyplot as plt

import genotypes as G
from harness.figure_style import save
from harness.rundir import BENCH201_NAMES, bench_dataset


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
    fig.suptitle(f"Final cell of {run.name} (option {run.option_seed}){index}{acc}{arch}", fontsize=9)
    fig.tight_layout()
    return save(fig, cfg.out, f"cell_{run.name}.png", cfg.dpi)


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
