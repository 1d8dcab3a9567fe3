"""What option C trains, per edge and candidate op, logged every epoch next to softmax(alpha).

RF-DARTS (Table 1, option C) trains only the BN affine weights of the cells, so the one thing that can
make a parametric op (a conv op) compete with the parameter-free skip_connect is the scale its BN gives
it. `Probe.measure` reports, for every edge and every candidate op that ends in a BN:
- gamma: mean |γ| of the op's last BN (the scale of the op's output; 1 under options B and D, which
  freeze γ = 1);
- eta: the Sec. 4 quantity η = Var[W γ/σ] / Var[W_init] (Eq. 17-18, `relative_variance`, which
  analysis.py's Fig. 4 runs take from here) of the conv that feeds that BN, σ = sqrt(batch variance +
  eps) of the conv's output on a fixed probe batch: the value the BN divides by in the search, which
  uses batch statistics. None where the last BN does not follow one conv (FactorizedReduce, the skip of
  a reduction edge: two convs concatenated) or where an edge lacks the op.
Both are averaged over the cells of one kind (every normal cell shares alpha_normal, Eq. 6).

The probe is the first global batch of the alpha half (any process count), unaugmented: the same batch every
epoch, so the curves move only with the weights. It runs in train mode (batch statistics, as the
search does) under no_grad, then puts back every buffer (BN running statistics) and the RNG state (the
S4 noise op draws), so logging leaves the search bit-identical.
"""
import torch
import torch.nn as nn


@torch.no_grad()
def relative_variance(conv, bn, init_var, sigma=None):
    """η = Var[W γ/σ] / Var[W_init] (Eq. 17-18) of one conv layer: W (C_out, C_in, k, k) scaled per output
    channel by γ/σ (C_out,). σ: the BN's running statistics sqrt(running_var + eps) unless given."""
    sigma = (bn.running_var + bn.eps).sqrt() if sigma is None else sigma
    w = conv.weight.float() * (bn.weight.float() / sigma.float()).view(-1, 1, 1, 1)
    return (w.var(correction=0) / init_var).item()


def _last_conv_bn(op):
    """(conv or None, bn): a conv op's last BatchNorm2d and the conv that feeds it alone; None for an op
    without conv (skip, pooling: a pool's BN has no weight to scale) or without BN."""
    mods = [m for m in op.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    bns = [i for i, m in enumerate(mods) if isinstance(m, nn.BatchNorm2d)]
    if not bns or not any(isinstance(m, nn.Conv2d) for m in mods):
        return None
    bn, prev = mods[bns[-1]], mods[bns[-1] - 1] if bns[-1] > 0 else None
    alone = isinstance(prev, nn.Conv2d) and prev.out_channels == bn.num_features
    return (prev if alone else None), bn


class Probe:
    """Built once, right after the supernet (before a checkpoint is loaded): records Var[W_init] of each
    measured conv, so that a resumed run's η still divides by the initial variance."""

    def __init__(self, model, x):
        self.model, self.x = model, x  # x: (B, 3, H, W) normalised probe batch on the model's device
        self.ops = []  # (kind, edge, op name, conv or None, bn, Var[W_init] or None)
        space = model.space
        for cell in model.cells:
            if not hasattr(cell, "mixed"):
                continue  # NB201's residual reduction blocks
            kind = "reduce" if getattr(cell, "reduction", False) else "normal"
            for e, mixed in enumerate(cell.mixed):
                for name, op in zip(space.ops(kind)[e], mixed.ops):
                    pair = _last_conv_bn(op)
                    if pair is None:
                        continue  # parameter-free
                    conv, bn = pair
                    var0 = conv.weight.detach().float().var(correction=0).item() if conv is not None else None
                    self.ops.append((kind, e, name, conv, bn, var0))

    @torch.no_grad()
    def measure(self):
        """{kind: {"gamma": {op: [per edge]}, "eta": {op: [per edge]}}}, means over cells (None: absent)."""
        model, sigma = self.model, {}
        hooks = [bn.register_forward_hook(
            lambda m, inp, out: sigma.__setitem__(m, (inp[0].float().var((0, 2, 3), correction=0) + m.eps).sqrt()))
            for *_, bn, _ in self.ops]
        buffers = [b.clone() for b in model.buffers()]
        devices = [self.x.device] if self.x.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                was_training = model.training
                model.train()
                model(self.x)
                model.train(was_training)
        finally:
            for h in hooks:
                h.remove()
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
        sums = {}  # (kind, stat, op, edge) -> [sum, n]
        for kind, e, name, conv, bn, var0 in self.ops:
            gamma = bn.weight.detach().abs().mean().item() if bn.affine else 1.0
            # var0 0: a conv of one weight (a 1x1 conv of one channel in and out: --pc_k equal to C) has no
            # variance to compare with, so no eta (not 0 / 0's NaN, which strict JSON readers refuse)
            eta = relative_variance(conv, bn, var0, sigma[bn]) if conv is not None and var0 else None
            for stat, v in (("gamma", gamma), ("eta", eta)):
                if v is not None:
                    s = sums.setdefault((kind, stat, name, e), [0.0, 0])
                    s[0], s[1] = s[0] + v, s[1] + 1
        out, space = {}, model.space
        for kind in space.cell_kinds:
            names = sorted({n for k, _, n, *_ in self.ops if k == kind})
            out[kind] = {stat: {n: [round(sums[(kind, stat, n, e)][0] / sums[(kind, stat, n, e)][1], 6)
                                    if (kind, stat, n, e) in sums else None
                                    for e in range(len(space.edges))] for n in names}
                         for stat in ("gamma", "eta")}
        return out


def make_probe(model, loader):
    """A Probe on the first global batch of an in-memory loader's images (normalised, unaugmented): every
    rank holds them all, so the probe and the BN statistics it computes are the same for any number of
    processes. None for a streaming loader (the ImageNet search logs no op scales)."""
    if not hasattr(loader, "x"):
        return None
    x = loader.x[: loader.batch_size * loader.world_size].float().div(255)  # (B, 3, H, W), as TensorLoader normalises
    return Probe(model, (x - loader.mean) / loader.std)


def summary(scales):
    """(mean gamma, mean eta) over every logged op and edge: the epoch line's two numbers."""
    vals = {"gamma": [], "eta": []}
    for per_kind in scales.values():
        for stat, per_op in per_kind.items():
            vals[stat] += [v for edges in per_op.values() for v in edges if v is not None]
    return tuple(sum(v) / len(v) if v else float("nan") for v in (vals["gamma"], vals["eta"]))
