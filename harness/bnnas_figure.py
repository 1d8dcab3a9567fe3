"""The BN indicator of a BN-NAS run (bnnas_search.py) drawn per edge against the epoch, as Fig. 5 draws
softmax(alpha) for RF-DARTS: what the per-edge argmax (the found cell) is taken from.

Reads OUT/indicators.json and OUT/config.json only; writes OUT/indicators.png (plot.py: its --out). Epoch 0 is the init,
where every BN's gamma is 1 (every op ties, and the tie goes to `none`, the first op).
"""
import os

import matplotlib.pyplot as plt
import numpy as np

from harness.checkpoints import read_json
from harness.figure_style import OP_COLOURS, edge_title, save
from spaces import NB201_OPS, get_space


def indicator_figure(out, dpi=120, to=None, name="indicators.png"):
    """OUT/indicators.png (or to/name): one panel per NB201 edge, mean |gamma| of each candidate's last BN (mean over
    the cells) per epoch, one colour per op; the title names the run's setting and final cell -> path."""
    rows, cfg = read_json(os.path.join(out, "indicators.json")), read_json(os.path.join(out, "config.json"))
    space = get_space("nb201")
    epochs = [0] + [r["epoch"] for r in rows]
    ind = np.array([np.ones((6, len(NB201_OPS)))] + [r["indicators"] for r in rows])  # (epochs + 1, 6, 5)
    fig, axes = plt.subplots(2, 3, figsize=(10.2, 5.0), sharex=True, sharey=True)  # one y scale for all edges
    handles = {}
    for e, ax in enumerate(axes.flat):
        for k, op in enumerate(NB201_OPS):
            handles[op], = ax.plot(epochs, ind[:, e, k], color=OP_COLOURS[op], lw=1.6, label=op)
        winner = NB201_OPS[int(ind[-1, e].argmax())]
        ax.set(title=f"{edge_title(space, e)}: {winner}", ylabel="mean |γ| of the op's last BN" if e % 3 == 0 else "")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.ticklabel_format(axis="y", useOffset=False)  # gamma itself on the axis, not an offset from 1
        if e >= 3:
            ax.set_xlabel("epoch")
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5, 0.0))  # its top at the figure's bottom: below the x labels
    setting = {"A": "conv + BN", "C": "only BN"}.get(cfg.get("option"), cfg.get("option"))
    fig.suptitle(f"BN-NAS indicator per edge (paper Sec. 5.1, Table 3): {os.path.basename(os.path.normpath(out))}, "
                 f"{setting}, {cfg.get('epochs')} epochs, seed {cfg.get('seed')}")
    fig.tight_layout()
    return save(fig, to or out, name, dpi)
