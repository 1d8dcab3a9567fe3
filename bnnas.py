"""BN-NAS (Chen et al., ICCV 2021) ported to NAS-Bench-201 as the RF-DARTS paper describes it (Sec. 5.1,
Table 3): the closest prior method, which also trains only BatchNorm, but in a single-path supernet, and
ranks architectures by a BN indicator instead of learning alpha.

Owns
  WithBN, NON_PARAMETRIC   the port's one change to the NB201 search cell (Sec. 5.1: "a BN layer after
                           each none-parametric operation"): an extra BN after `none`, `skip_connect` and
                           `avg_pool_3x3`, so that every candidate has a BN whose gamma can be read; the
                           conv ops end in their own BN already (ReLU -> Conv -> BN)
  BNNASSupernet            the NB201 search network of supernet.py with that cell, run single-path:
                           forward(x, path) runs one op per edge (SPOS, Guo et al. 2020), the same op on
                           that edge in every cell (one NB201 cell is searched: NB201's single-path
                           baselines in AutoDL sample one cell for the whole network too)
  build_bnnas_supernet     seeded: a seed gives the random features (every conv weight, the classifier)
                           of supernet.build_supernet's RF-DARTS supernet of that seed
  sample_paths             SPOS uniform sampling: one op per edge per step, each op with probability 1/5
  indicators               the BN indicator of BN-NAS: per cell, edge and op, mean_c |gamma_c| of
                           the op's last BN; BN-NAS's ea.py reads the same mean |weight| of the block's
                           last BN (indicator_parameters: those BNs' gamma and beta)
  best_cell, cell_score    an architecture's score is the sum of its ops' indicators (BN-NAS);
                           the exact best NB201 cell is the per-edge argmax (below)
  evolve                   BN-NAS's evolution (its search/ea.py: population 50, top 10, 25 mutations with
                           p = 0.1, 25 crossovers, 20 generations), without its FLOPs limit

Why the per-edge argmax is the exact best cell. On NB201 an architecture is one op per edge, the same in
all 3N cells, so its BN score is sum_cells sum_e s[cell, e, op_e] = 3N * sum_e sbar[e, op_e], with sbar
the mean over cells. A sum of per-edge terms over a product space is maximised edge by edge: for any
cell, replacing op_e by argmax_o sbar[e, o] never lowers the score, so the per-edge argmax scores at
least as high as each of the 5^6 = 15,625 cells (tests: a brute force agrees). There is no interaction
between edges for evolution to discover: every mutation towards an edge's argmax raises the fitness and
crossover combines such edges, so the top-k population climbs to that cell; a search that converges can
only converge to it (ties aside), and BN-NAS's own budget (about 1,000 cells scored) reaches it in
practice: `evolve` is run beside the argmax and the run records whether the two agree.

Why `none` wins when it does. The extra BN after `none` normalises an all-zero tensor (B, C, H, W): batch
mean 0, variance 0, so x_hat = (0 - 0) / sqrt(0 + eps) = 0 exactly and its output is beta, whatever gamma
is. Its gamma therefore gets an exactly zero loss gradient (dL/dgamma = sum dL/dy * x_hat = 0), under
"conv + BN" and "only BN" alike: the only force on it is weight decay, applied on the steps where `none`
is on that edge's path (on other steps the parameter has no gradient at all and SGD leaves it and its
momentum alone). With SGD momentum mu the momentum buffer settles at lambda * gamma / (1 - mu), so each
such step multiplies gamma by about (1 - lr * lambda / (1 - mu)), and after T steps
    |gamma_none| ~ exp(-lambda / (1 - mu) * sum over the ~T/5 steps that sample `none` of lr_t),
independent of the data and of the setting, starting at 1. With the NB201 settings (lambda 5e-4, mu 0.9,
cosine lr 0.025 -> 0.001) that is 0.95, 0.77 and 0.28 after 10, 50 and 250 epochs of 390-391 steps (25k images),
but 0.996, 0.98 and 0.90 at the project's reduced 4k size (31 steps an epoch; 16k: 0.98, 0.92, 0.67).
Without decay on BN (`--bn_decay=0`, implied by `--trained_bn=indicators`) it stays exactly 1, as in BN-NAS's
public code: it builds its optimiser as SPOS does (weight decay on conv and classifier weights only) and sets
an exactly-zero gradient to None, so SGD skips that gamma altogether. The other ops' gamma follow their loss
gradients and the same decay: on an edge where every one of them ends below gamma_none, `none`, the op that
contributes nothing, has the highest indicator and is taken, and where that happens on all six edges the cell
is all-`none` (10% on CIFAR-10), as Table 3 reports for 3 of its 6 configurations (the short ones and only-BN
at 50 epochs: the fewer the steps, the less decay has pulled gamma_none below 1). At init every gamma is 1 and
the tie goes to `none` too (the first op). `none`'s beta does get gradients (it is a learned bias of the
edge), but the indicator does not read beta.

Imports only torch, numpy and the paper's modules (ops, spaces, supernet, genotypes); the loop that trains it
is bnnas_search.py's.
"""
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genotypes import NB201Cell
from ops import bn
from spaces import NB201_OPS, get_space
from supernet import NB201SearchCell, NB201Supernet, init_convs

NON_PARAMETRIC = ("none", "skip_connect", "avg_pool_3x3")  # the NB201 candidates without a BN of their own


class WithBN(nn.Module):
    """A non-parametric candidate followed by the port's extra BN (affine, batch statistics only, as
    every cell BN of this project): (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, op, C):
        super().__init__()
        self.op, self.bn = op, bn(C, affine=True, track=False)

    def forward(self, x):
        return self.bn(self.op(x))


def single_path_cell(cell, x, path):
    """One NB201 search cell run single-path: node_i = sum_{j<i} o_{path[e]}(node_j) over the edges e into
    node i. x: (B, C, H, W) -> node 3 (B, C, H, W); path: 6 op indices into NB201_OPS."""
    nodes = [x]
    for i in range(1, 4):
        nodes.append(sum(cell.mixed[e].ops[path[e]](nodes[j]) for e, (node, j) in enumerate(cell.edges) if node == i))
    return nodes[-1]


class BNNASSupernet(NB201Supernet):
    """The NB201 search network (stem, 3 stages of N cells joined by residual blocks, BN-ReLU, pool,
    linear) whose cells carry an extra BN on every non-parametric candidate, and no alpha."""

    def __init__(self, num_classes, C=16, N=5):
        space = get_space("nb201")
        super().__init__(space, num_classes, C, N, track=False)
        # BN-NAS has no architecture parameters. NB201Supernet drew alpha from the RNG before this line,
        # which keeps the draws of a seed, hence the random features, those of the RF-DARTS supernet.
        del self.alphas_normal
        for cell in self.search_cells():
            C_cell = last_bn(cell.mixed[0].ops[NB201_OPS.index("nor_conv_3x3")]).num_features
            for mixed in cell.mixed:
                for k, name in enumerate(NB201_OPS):
                    if name in NON_PARAMETRIC:
                        mixed.ops[k] = WithBN(mixed.ops[k], C_cell)

    def alphas(self):
        """{}: BN-NAS has no architecture logits (its cell comes from the BN indicators)."""
        return {}

    def search_cells(self):
        """The 3N NB201 search cells, in order (the residual reduction blocks left out)."""
        return [c for c in self.cells if isinstance(c, NB201SearchCell)]

    def forward(self, x, path):  # x: (B, 3, H, W), path: 6 op indices -> logits (B, num_classes)
        x = self.stem(x)
        for block in self.cells:
            x = single_path_cell(block, x, path) if isinstance(block, NB201SearchCell) else block(x)
        x = F.adaptive_avg_pool2d(self.lastact(x), 1).flatten(1)
        return self.classifier(x)


def build_bnnas_supernet(num_classes, C=16, N=5, init="kaiming", seed=0):
    """The BN-NAS supernet, seeded as supernet.build_supernet (a private RNG, the caller's left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))  # the CPU one only: the caller's CUDA RNG is left alone too
        model = BNNASSupernet(num_classes, C, N)
        init_convs(model, init)
    return model


def sample_paths(generator, steps):
    """SPOS uniform sampling: (steps, 6) op indices, each uniform over the 5 NB201 ops, from `generator`
    (a torch.Generator: the caller seeds it per epoch, so a path is a function of seed, epoch and step)."""
    return torch.randint(0, len(NB201_OPS), (steps, 6), generator=generator)


def last_bn(op):
    """The last BatchNorm2d of a candidate op: a conv op's own, a non-parametric op's extra one."""
    return [m for m in op.modules() if isinstance(m, nn.BatchNorm2d)][-1]


def indicator_parameters(model):
    """The gamma and beta of every candidate op's last BN (what BN-NAS's code alone trains)."""
    return [p for cell in model.search_cells() for mixed in cell.mixed for op in mixed.ops
            for p in last_bn(op).parameters()]


@torch.no_grad()
def indicators(model):
    """BN-NAS's indicator of every candidate: mean |gamma| of its last BN -> float64 (3N cells, 6 edges,
    5 ops), ops in NB201_OPS order."""
    return torch.tensor([[[last_bn(op).weight.abs().mean().item() for op in mixed.ops] for mixed in cell.mixed]
                         for cell in model.search_cells()], dtype=torch.float64)


def cell_score(ind, cell):
    """The BN score of an NB201 cell (NB201Cell or 6 op indices): sum over edges of ind[e, op_e].
    ind: (6, 5), the indicators averaged over the cells."""
    ind = np.asarray(ind, dtype=np.float64)
    idx = cell.indices if isinstance(cell, NB201Cell) else cell
    return float(sum(ind[e, k] for e, k in enumerate(idx)))


def best_cell(ind):
    """The exact best cell under the BN score: the per-edge argmax of ind (6, 5) (ties: the lower op
    index, as genotypes.derive)."""
    return NB201Cell.from_indices(np.asarray(ind, dtype=np.float64).argmax(axis=1))


def evolve(ind, seed=0, generations=20, population=50, select=10, mutations=25, crossovers=25, m_prob=0.1):
    """BN-NAS's evolution (search/ea.py) on the NB201 cell with the BN score as fitness and no FLOPs limit
    -> (best cell found, number of distinct cells scored). Each generation: keep the top `select` of
    everything seen, breed `mutations` (each edge redrawn with probability m_prob) and `crossovers` (each
    edge from one of two parents) unseen cells, fill up to `population` with unseen random cells."""
    ind, rng, seen, top = np.asarray(ind, dtype=np.float64), random.Random(seed), set(), []

    def score(c):
        return cell_score(ind, c)

    def unseen(make, n, tries):  # up to n new cells, giving up after `tries` draws (ea.py's max_iters)
        out = []
        while len(out) < n and tries > 0:
            tries, c = tries - 1, make()
            if c not in seen:
                seen.add(c)
                out.append(c)
        return out

    def draw():
        return tuple(rng.randrange(len(NB201_OPS)) for _ in range(6))

    candidates = unseen(draw, population, float("inf"))
    for generation in range(generations):
        top = sorted(top + candidates, key=score, reverse=True)[:select]  # stable: first seen wins ties
        if generation == generations - 1:  # ea.py ranks no offspring of the last generation: none are bred
            break
        candidates = unseen(lambda: tuple(rng.randrange(len(NB201_OPS)) if rng.random() < m_prob else k
                                          for k in rng.choice(top)), mutations, 10 * mutations)
        candidates += unseen(lambda: tuple(rng.choice(ks) for ks in zip(rng.choice(top), rng.choice(top))),
                             crossovers, 10 * crossovers)
        candidates += unseen(draw, population - len(candidates), float("inf"))
    return NB201Cell.from_indices(top[0]), len(seen)
