"""How much signal alpha's gradient carries: its mean and spread per entry over an epoch's alpha steps.

A first-order alpha step (Eq. 7, xi = 0) is Adam with betas (0.5, 0.999): with beta1 = 0.5 its step is
about arch_lr * g_t / RMS(g), so over T steps an entry of alpha moves about arch_lr * T * mu / RMS(g),
where mu is the mean of its gradient over those steps. The ratio |mu| / sigma (sigma: the gradient's
standard deviation from batch to batch) is the part of each step that adds up instead of cancelling:
it sets how many steps alpha needs to separate the ops of an edge. Per epoch this records, per entry of
alpha (edge, op): the mean m and the standard deviation s of the gradient the alpha optimiser was given
(after --arch_grad_clip) over the epoch's T alpha steps, and one summary, `snr`: the root mean square
of mu / sigma over the entries, estimated as sqrt(mean(m^2 / s^2) - 1 / (T - 3)). The 1 / (T - 3) is
what noise alone adds (for Gaussian noise m / s * sqrt(T - 1) is Student's t with T - 1 degrees of
freedom, so E[m^2 / s^2] = 1 / (T - 3)), so a gradient of pure noise reads about 0 whatever the epoch's
length, and rungs with 31 or 390 steps per epoch compare.

Reading the gradient costs two small in-place sums per alpha step on the device, no host sync, and does
not change the search (nothing is written back). Betas (PC-DARTS' edge normalisation) are not recorded.
"""
import math

import torch


def snr(ratios_sq, steps):
    """The noise-corrected root mean square signal-to-noise ratio: sqrt(mean(ratios_sq) - 1 / (steps - 3)),
    0 if negative. ratios_sq: (m / s)^2 per alpha entry (and epoch, when pooled), each from `steps` alpha
    steps. None without ratios or with steps <= 3 (the noise term is undefined). Pooling epochs before
    the root, as sweep_table does, keeps the estimate unbiased."""
    if not ratios_sq or steps <= 3:
        return None
    return math.sqrt(max(sum(ratios_sq) / len(ratios_sq) - 1 / (steps - 3), 0.0))


class AlphaGrads:
    """Running sums of alpha's gradient and its square over one epoch's alpha steps, per entry.

    alphas: {cell kind: alpha tensor} (the supernet's `alphas()`). `start` begins each epoch; a resumed
    epoch starts from the sums its mid-epoch checkpoint kept, so it ends as an uninterrupted one."""

    def __init__(self, alphas):
        self.alphas = alphas
        self.start()

    def start(self, saved=None):
        """A new epoch: zero sums, or `saved` (`state()` of a mid-epoch checkpoint) for a resumed one."""
        if saved is None:
            self.steps = 0
            self.sum = {k: torch.zeros_like(a, dtype=torch.float32) for k, a in self.alphas.items()}
            self.sq = {k: torch.zeros_like(a, dtype=torch.float32) for k, a in self.alphas.items()}
        else:
            self.steps = saved["steps"]
            self.sum = {k: saved["sum"][k].to(a.device, copy=True) for k, a in self.alphas.items()}
            self.sq = {k: saved["sq"][k].to(a.device, copy=True) for k, a in self.alphas.items()}

    def add(self):
        """After an alpha step: add each alpha's .grad, the gradient its optimiser stepped with. torch's
        Adam adds weight decay out of place, so .grad holds the loss gradient alone. A tensor without a
        gradient this step (e.g. a net without normal cells) adds zeros."""
        self.steps += 1
        for k, a in self.alphas.items():
            if a.grad is not None:
                g = a.grad.detach().float()
                self.sum[k].add_(g)
                self.sq[k].addcmul_(g, g)

    def state(self):
        """The sums, for a mid-epoch checkpoint (CPU copies: later steps do not change them)."""
        return dict(steps=self.steps, sum={k: v.to("cpu", copy=True) for k, v in self.sum.items()},
                    sq={k: v.to("cpu", copy=True) for k, v in self.sq.items()})

    def summary(self, digits=4):
        """-> (snr, {kind: {"mean": [[...]], "std": [[...]]}}), or (None, {}) before any alpha step.

        snr: `snr` over the entries' (mean / std)^2 (entries whose gradient never varied are left out):
        the root mean square signal-to-noise ratio, less what noise alone adds; None with 3 steps or
        fewer."""
        if self.steps == 0:
            return None, {}
        ratios, per_kind = [], {}
        n = self.steps
        for k in self.alphas:  # on the host, in Python floats (float64; the device may have none: MPS)
            mean = [[x / n for x in row] for row in self.sum[k].tolist()]
            # E[g^2] - mean^2 from float32 sums: exact enough unless |mean| / std is in the hundreds
            std = [[math.sqrt(max(q / n - m * m, 0.0)) for q, m in zip(qs, ms)]
                   for qs, ms in zip(self.sq[k].tolist(), mean)]
            ratios += [(m / s) ** 2 for ms, ss in zip(mean, std) for m, s in zip(ms, ss) if s > 0]
            per_kind[k] = {"mean": _round(mean, digits), "std": _round(std, digits)}
        return snr(ratios, n), per_kind


def _round(rows, digits):
    """Nested lists of floats with `digits` significant digits (JSON stays small)."""
    def sig(x):
        return 0.0 if x == 0 else round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return [[sig(x) for x in row] for row in rows]
