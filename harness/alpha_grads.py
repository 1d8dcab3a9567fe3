"""How much signal alpha's gradient carries: its mean and spread per entry over an epoch's alpha steps.

A first-order alpha step (Eq. 7, xi = 0) is Adam with betas (0.5, 0.999): with beta1 = 0.5 its step is
about arch_lr * g_t / RMS(g), so over T steps an entry of alpha moves about arch_lr * T * mu / RMS(g),
where mu is the mean of its gradient over those steps. The ratio |mu| / sigma (sigma: the gradient's
standard deviation from batch to batch) is the part of each step that adds up instead of cancelling:
it sets how many steps alpha needs to separate the ops of an edge. Per epoch this records, per entry of
alpha (edge, op): the mean m and the standard deviation s of the gradient the alpha optimiser was given
(after --arch_grad_clip) over the epoch's T alpha steps, and one summary, `snr`: the root mean square
of m / s over the entries, sqrt(mean(m^2 / s^2)). No noise floor is taken off: an epoch's alpha batches
are whole passes without replacement over the alpha set (one pass with the default halves), so the
batch-sampling noise cancels in m, which is the epoch's full-data gradient (over its moving weights; only
the augmentation's randomness stays). (Batches drawn i.i.d. would add 1 / (T - 3) to m^2 / s^2 from noise
alone, 1 / sqrt(T - 3) to a pure-noise reading: 0.05 at T = 390, 0.19 at 31; a full pass of noise reads ~0;
subtracting that floor, as this module once did, biased these runs' readings low, to 0 at small ratios.)

Reading the gradient costs two small in-place sums per alpha step on the device, no host sync, and does
not change the search (nothing is written back). Betas (PC-DARTS' edge normalisation) are not recorded.

Read back from a run's alphas.json (the sweep table and the ladder): `gradient_snr` pools the last
epochs, `gradient_snr_curve` gives one value per epoch, and `adam_drift` / `agreement` check that alpha
moved as Adam with this gradient predicts (each epoch's change against arch_lr * T * m / sqrt(m^2 + s^2)):
m being the realised epoch mean, that checks the bookkeeping (a gradient of pure noise agrees too), not
the size of the signal.
"""
import math
import statistics

import torch


def snr(ratios_sq):
    """The root mean square signal-to-noise ratio sqrt(mean(ratios_sq)); ratios_sq: (m / s)^2 per alpha
    entry (and epoch, when pooled: epochs are pooled before the root). None without ratios."""
    if not ratios_sq:
        return None
    return math.sqrt(sum(ratios_sq) / len(ratios_sq))


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
        the root mean square signal-to-noise ratio; None with fewer than 2 steps (no spread)."""
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
        return (snr(ratios) if n > 1 else None), per_kind


def _round(rows, digits):
    """Nested lists of floats with `digits` significant digits (JSON stays small)."""
    def sig(x):
        return 0.0 if x == 0 else round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return [[sig(x) for x in row] for row in rows]


# Read back: the records of a finished run (alphas.json rows), as the sweep table and ladder use them

def gradient_snr(alphas, last=10):
    """α's gradient signal-to-noise ratio over a run's last `last` epochs that recorded it (alphas.json's
    "alpha_grad": each α entry's gradient mean m and std s per epoch, from AlphaGrads.summary), pooled as
    one epoch is (`snr` over those epochs' and entries' (m / s)^2). None for runs from before the record."""
    rows = [r["alpha_grad"] for r in alphas or [] if r.get("alpha_grad")][-last:]
    ratios = [(m / sd) ** 2 for grad in rows for kind in grad.values()
              for ms, ss in zip(kind["mean"], kind["std"]) for m, sd in zip(ms, ss) if sd > 0]
    return snr(ratios)


def gradient_snr_curve(alphas):
    """[(epoch, gradient_snr of that epoch alone)] over the alphas.json rows that recorded α's gradient."""
    return [(r["epoch"], gradient_snr([r])) for r in alphas or [] if r.get("alpha_grad")]


def adam_drift(alphas, steps_per_epoch, arch_lr):
    """Does α move as its recorded gradient says? First-order Adam with beta1 = 0.5 steps each entry by
    about arch_lr * g_t / RMS(g), so over an epoch of T steps by about -arch_lr * T * m / sqrt(m^2 + s^2)
    (m, s: the gradient's mean and std over the epoch, alphas.json's "alpha_grad"). -> [(that predicted
    change, the actual change)] per epoch and α entry, both centred per edge (alphas.json holds
    softmax(α): its log is α up to a constant per edge); [] without records. Weight decay on α and
    Adam's bias correction are left out: a check of the mechanism, not a replay."""
    pairs = []
    for before, row in zip(alphas or [], (alphas or [])[1:]):
        for kind, grad in (row.get("alpha_grad") or {}).items():
            for p0, p1, ms, ss in zip(before["alphas"][kind], row["alphas"][kind], grad["mean"], grad["std"]):
                if min(p0 + p1) <= 0:  # a softmax rounded to 0 (6 decimals) has no log
                    continue
                change = [math.log(b) - math.log(a) for a, b in zip(p0, p1)]
                step = [-arch_lr * steps_per_epoch * m / math.hypot(m, sd) if m or sd else 0.0
                        for m, sd in zip(ms, ss)]
                pairs += zip(_centred(step), _centred(change))
    return pairs


def agreement(pairs):
    """(Pearson r, least-squares slope through 0 of actual on predicted, n) over adam_drift's pairs;
    None with fewer than 3 or no spread."""
    if len(pairs) < 3:
        return None
    x, y = zip(*pairs)
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxy = sum((a - mx) * (b - my) for a, b in pairs)
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    if not sxx or not syy:
        return None
    return sxy / math.sqrt(sxx * syy), sum(a * b for a, b in pairs) / sum(a * a for a in x), len(pairs)


def _centred(values):
    mean = statistics.fmean(values)
    return [v - mean for v in values]
