"""What every figure shares: matplotlib set to write files only, one colour per op and per Table 1
option, the paper's Table 2 reference accuracies, saving a figure, edge titles, a run's line style.

Imported by plot.py and the figure modules beside this one (`cell_figure`, `sweep_figures`,
`analysis_figures`, `bnnas_figure`); matplotlib is needed by these only.
"""
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from harness.rundir import bench_dataset  # noqa: E402
from spaces import DARTS_OPS, NB201_OPS  # noqa: E402

# One colour per op name in every panel of every figure: the 11 ops of all spaces on tab10, then black.
_ALL_OPS = dict.fromkeys(NB201_OPS + DARTS_OPS + ("noise",))
OP_COLOURS = {op: f"C{i}" if i < 10 else "black" for i, op in enumerate(_ALL_OPS)}
OPTION_STYLE = {"A": ("tab:green", "o"), "B": ("tab:red", "s"), "C": ("tab:blue", "^"),
                "D": ("tab:purple", "D")}  # Table 1's options: colour and marker
SEED_LINES = ("-", "--", ":", "-.")
# CIFAR-10 test accuracies (%) on NAS-Bench-201 (paper Table 2), drawn on CIFAR-10 axes only
PAPER_NB201 = (("DARTS 1st order (paper)", 54.30), ("RF-DARTS (paper)", 94.27), ("optimum", 94.37))


def on_cifar10(runs_):
    """Whether every run's benchmark accuracies are CIFAR-10's (PAPER_NB201 holds CIFAR-10 numbers)."""
    return all(bench_dataset(r, r.rows[-1] if r.rows else None) == "cifar10" for r in runs_)


def save(fig, out, name, dpi):
    """Write `fig` to out/name (tight bounding box), close it -> the path."""
    path = os.path.join(out, name)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def edge_title(space, e):
    """A panel title for edge e of a space's cell: 'edge 0→2' (NB201) or with the DARTS input names."""
    i, j = space.edges[e]  # node i takes input j (spaces.py)
    if space.cell == "nb201":
        return f"edge {j}→{i}"
    return f"edge {('$c_{k-2}$', '$c_{k-1}$')[j] if j < 2 else j - 2}→{i}"


def style_key(run):
    """What tells runs of one option apart in a figure: the seed, then the folder (Run.where)."""
    return run.config.get("seed"), run.where


def run_style(run, keys=()):
    """Colour and marker by option (Table 1), line style by the run's style_key rank among `keys`."""
    colour, marker = OPTION_STYLE.get(str(run.config.get("option", "")).upper(), ("tab:gray", "x"))
    key = style_key(run)
    rank = sorted(keys, key=str).index(key) if key in keys else 0
    return colour, marker, SEED_LINES[rank % len(SEED_LINES)]
