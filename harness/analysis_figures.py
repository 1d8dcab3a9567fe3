"""The Sec. 4 figures from analysis.py's run folders: Fig. 2 (plain ResNets' train and test error, Conv+BN
vs only BN), Fig. 3 (lambda on the skips, Eq. 9), Fig. 4 (eta per conv layer, Eq. 17-18).
"""
import matplotlib.pyplot as plt
import numpy as np

from harness.figure_style import save

SETTINGS = {"convbn": "Conv+BN", "bn": "only BN"}  # analysis.py --setting: what trains


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
        paths.append(save(fig, cfg.out, name, cfg.dpi))
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
    widths = {r.config.get("width") for r in chosen}  # several widths: say which line is which (as _fig2)
    for r, eta in zip(chosen, etas):
        setting = SETTINGS.get(r.config.get("setting"), r.config.get("setting"))
        width = f", width {r.config.get('width')}" if len(widths) > 1 else ""
        ax.plot(np.arange(1, len(eta) + 1), eta, marker=".", label=f"{setting}, {r.config.get('depth')} "
                f"layers{width} ({r.config['exp']}, epoch {r.rows[-1]['epoch']})")
    ax.axhline(1.0, color="black", ls="--", lw=1)
    flat = np.concatenate(etas)
    if flat.min() > 0 and flat.max() / flat.min() > 50:  # eta ~ 0 next to ~ 1: a log axis shows both
        ax.set_yscale("log")
    ax.set(xlabel="conv layer (network order)", ylabel="η = Var[W γ/σ] / Var[W_init]",
           title="Relative variance η per conv layer at the last epoch (paper Fig. 4: plain ResNet-50)")
    ax.legend()
    return save(fig, cfg.out, "fig4_eta.png", cfg.dpi)
