"""How found cells compare with chance, as numbers: the 95% Wilson interval of a rate over seeds (wilson),
the chance that random cells do as well as the found ones on average (mean_uniform_sf: a random cell's
percentile is uniform, so the mean of n follows the Irwin-Hall law), and how alike the cells of two search
seeds are against two random cells (cell_agreement, random_cells_share; NB201 and DARTS-style cells),
and how many skip edges a random DARTS-style cell holds (random_skip_count).

harness/sweep_table.py and harness/ladder.py print them; pure functions of their arguments (numbers,
cells), nothing read from disk.
"""
import math
import statistics
from collections import Counter

import genotypes as G
from spaces import get_space


def wilson(k, n, z=1.959964):
    """The 95% Wilson score interval (lo, hi) of a rate from k successes in n trials; (0, 1) for n = 0.
    Wilson rather than Clopper-Pearson: a closed form (Clopper-Pearson needs beta quantiles, i.e. scipy),
    near the nominal 95% coverage at small n where the plain k/n +- 1.96 sd interval is far off."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), z / (1 + z2 / n) * (p * (1 - p) / n + z2 / (4 * n * n)) ** 0.5
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_uniform_sf(mean, n):
    """P(the mean of n independent uniform draws on [0, 1] is >= `mean`): the Irwin-Hall survival function
    at n * mean, 1 - sum_{k <= n*mean} (-1)^k C(n, k) (n*mean - k)^n / n!. Applied to percentiles: the chance
    that n random cells of the set do at least as well on average as the found ones (a random cell's
    percentile is uniform)."""
    s = n * min(max(mean, 0.0), 1.0)
    cdf = sum((-1) ** k * math.comb(n, k) * (s - k) ** n for k in range(int(s) + 1)) / math.factorial(n)
    return min(max(1.0 - cdf, 0.0), 1.0)


def cell_agreement(cells, space="nb201"):
    """How alike the seeds' found cells are (NB201 arch strings, genotype.json dicts or genotypes; None
    entries skipped), over every pair of them -> None with fewer than two cells, else for NB201 cells: the
    edges of 6 on which both chose the same op {"pairs", "mean", "identical": pairs with one cell, "edges":
    6, "chance": what two independent random cells share on average (each edge 1/5: 1.2),
    "chance_pool_free" (each edge 1/4: 1.5)}; for DARTS-style cells of `space` the same of the normal cell's
    8 (node, input, op) choices, "chance" by random_cells_share, "skip_chance" (random_skip_count: the skip
    edges of a random cell), and "reduce": the reduction cell's "mean", "identical", "chance", "skip_chance". Beside a sweep with --init_seed fixed (one draw of random features, the data
    varied) it says how much of the cell the random features decide."""
    cells = [G.load_genotype(c) for c in cells if c]
    if len(cells) < 2:
        return None
    pairs = [(a, b) for i, a in enumerate(cells) for b in cells[i + 1:]]
    if isinstance(cells[0], G.NB201Cell):
        shared = [sum(x == y for x, y in zip(a.ops, b.ops)) for a, b in pairs]
        edges = len(G.NB201_EDGES)
        return dict(pairs=len(shared), mean=statistics.fmean(shared), identical=shared.count(edges), edges=edges,
                    chance=edges / len(G.NB201_OPS), chance_pool_free=edges / (len(G.NB201_OPS) - 1))

    def kind(k):
        def choices(g):  # pair p belongs to node p // 2
            return Counter((p // 2, j, op) for p, (op, j) in enumerate(getattr(g, k)))
        shared = [sum((choices(a) & choices(b)).values()) for a, b in pairs]
        return dict(mean=statistics.fmean(shared), identical=shared.count(8), chance=random_cells_share(space, k),
                    skip_chance=random_skip_count(space, k))
    normal = kind("normal")
    return dict(pairs=len(pairs), edges=8, **normal, reduce=kind("reduce"))


def random_cells_share(space, kind="normal"):
    """How many of one DARTS-style cell kind's 8 (node, input, op) choices two independent random cells share
    on average, a random cell drawing each node's 2 inputs of its n uniformly and each input's op uniformly
    among that edge's candidates of `space` other than none (derive never picks none; derive on random α
    draws exactly such cells): per input j of a node, (2/n)^2 / K_j. DARTS: 0.73; S1-S4 (two candidates
    besides none on every edge): 2.57."""
    return _over_inputs(space, kind, lambda share, ops: share ** 2 / len(ops))


def random_skip_count(space, kind="normal"):
    """The skip_connect edges a random cell (as random_cells_share draws it) holds in one cell kind on average:
    per input j of a node, 2/n times the share of skip_connect among K_j. The level a search's skip count
    is read against: S2, S3: 4.00 of 8; DARTS: 1.14; S4 (no skip): 0."""
    return _over_inputs(space, kind, lambda share, ops: share * ops.count("skip_connect") / len(ops))


def _over_inputs(space, kind, term):
    """Sum of term(2/n, the edge's candidates other than none) over every input edge of every node."""
    sp = get_space(space)
    total = 0.0
    for node in sorted({n for n, _ in sp.edges}):
        inputs = [e for e, (n, _) in enumerate(sp.edges) if n == node]
        for e in inputs:
            total += term(2 / len(inputs), [op for op in sp.ops(kind)[e] if op != "none"])
    return total
