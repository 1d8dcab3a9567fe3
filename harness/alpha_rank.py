"""How a search's softmax(α) orders every NAS-Bench-201 cell, against the benchmark's order: does an α that
stays near uniform (its derived cell decided by near ties) still carry the benchmark's ranking?

α scores each of the 15,625 cells by the log-probability the cell has when every edge draws its op from its
own softmax (as GDAS and SNAS sample cells): score(cell) = Σ_e log softmax(α_e)[op_e], e over the 6 edges.
As log softmax(α_e)[k] = α_e[k] - logsumexp(α_e), the score is Σ_e α_e[op_e] less a constant: its order
needs no temperature, and its best cell is the derived one, ties aside (genotypes.derive's NB201 rule, the
per-edge argmax with `none` included). Per run and epoch: Spearman's ρ between the score and the benchmark's
accuracy over every cell the table holds (tied values take their mean rank); at the last epoch also ρ
among the pool-free cells (no avg_pool_3x3 edge: is the order more than "avoid pooling"?) and the mean
accuracy of the score's 10 best cells. Beside them, for both sets of cells, what needs no search: ρ of α
drawn i.i.d. normal (the score is linear in α, so the draw's scale does not matter: chance) and ρ of the
cell's parameter count (more convolutions, better cells: a rule that reads only the cell).

rank_population (once per table) -> alpha_rank (per run), rank_at (its ρ after so many weight steps),
pooled_rank (seeds' scores averaged), chance_rho, params_rho. The table is a bench201.NB201 (or anything with
its meta_archs, column and path), the alphas alphas.json's rows. Needs numpy and, beside it, bench201.py (arch
strings, parameter counts of the benchmark's C=16, N=5 network) and genotypes.py (NB201 op indices; it imports
spaces.py).
"""
import numpy as np

import bench201
import genotypes as G

TOP = 10  # the score's best cells whose mean accuracy is reported


def average_ranks(x):
    """Ranks 0..n-1 of x (n,), tied values sharing their mean rank (as scipy.stats.rankdata, less 1)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    mean_rank = first + (counts - 1) / 2  # a tie group spans positions first .. first + count - 1
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(mean_rank, counts)
    return ranks


def spearman(x, y_ranks):
    """Spearman's ρ of x against y given as average_ranks; None where x (or y) is constant or has < 2 values,
    or x is not all finite (a NaN α would otherwise rank as the largest value)."""
    if len(x) < 2 or not np.isfinite(np.asarray(x, dtype=np.float64)).all():
        return None
    rx = average_ranks(x)
    sx, sy = rx.std(), np.std(y_ranks)
    if sx == 0 or sy == 0:
        return None
    return float(np.mean((rx - rx.mean()) * (y_ranks - np.mean(y_ranks))) / (sx * sy))


def cell_ops(archs):
    """(n, 6) int array: the NB201_OPS index of each edge's op, for NB201 arch strings (table order)."""
    return np.array([G.NB201Cell.from_str(a).indices for a in archs], dtype=np.int64).reshape(-1, 6)


def cell_scores(probs, ops):
    """score (n,) of the cells `ops` (n, 6) under softmax(α) `probs` (6, 5): Σ_e log probs[e, ops[:, e]]."""
    # (6, 5). alphas.json rounds softmax(α) (6 decimals): an entry below 5e-7 is stored as 0; its log is floored
    # where the rounding put it, so the cell still ranks last on that edge instead of at -inf
    logp = np.log(np.maximum(np.asarray(probs, dtype=np.float64), 5e-7))
    return logp[np.arange(logp.shape[0]), ops].sum(axis=1)


def rank_population(bench, dataset="cifar10", field="test_acc"):
    """What alpha_rank compares with, from a bench201.NB201 table: the cells that have `field` of `dataset`,
    {ops (n, 6), acc (n,), acc_ranks (n,), params (n,), pool_free (n,) bool, pool_free_ranks (the pool-free
    cells' accuracy ranks among themselves), dataset, field, table}."""
    keep = [(arch, acc) for arch, acc in zip(bench.meta_archs, bench.column(dataset, field)) if acc is not None]
    if len(keep) < 2:
        raise bench201.QueryError(f"{bench.path} has fewer than 2 cells with {dataset} {field}: nothing to rank")
    archs, acc = zip(*keep)
    acc = np.array(acc, dtype=np.float64)
    params = np.array([bench201.arch_costs(a, dataset)[0] for a in archs])
    pool_free = np.array([bench201.pool_free(a) for a in archs])
    return dict(ops=cell_ops(archs), acc=acc, acc_ranks=average_ranks(acc), params=params, pool_free=pool_free,
                pool_free_ranks=average_ranks(acc[pool_free]), dataset=bench201.canonical_dataset(dataset),
                field=field, table=bench.path)


def _cells(population, pool_free_only):
    """(ops, accuracy ranks, params) of every cell of `population` or of its pool-free ones only."""
    if not pool_free_only:
        return population["ops"], population["acc_ranks"], population["params"]
    keep = population["pool_free"]
    return population["ops"][keep], population["pool_free_ranks"], population["params"][keep]


def _nb201_row(row):
    """Whether an alphas.json row holds one NB201 cell's softmax(α): {"alphas": {"normal": 6 x 5 numbers}}."""
    kinds = row.get("alphas") if isinstance(row, dict) else None
    if not isinstance(kinds, dict) or set(kinds) != {"normal"}:
        return False
    try:
        return np.asarray(kinds["normal"], dtype=np.float64).shape == (6, 5)
    except (TypeError, ValueError):  # ragged or not numbers
        return False


def alpha_rank(alphas, population, top=TOP):
    """An NB201 run's alphas.json rows ranked against `population` (rank_population) -> {curve: [(epoch, ρ)],
    rho: the last epoch's ρ, rho_pool_free: its ρ among the pool-free cells only (bench201.pool_free),
    top_acc: mean accuracy of its `top` best-scored cells, scores: the last epoch's score of each cell} (ρ and
    top_acc None where α is uniform or the accuracies are all equal; rho_pool_free None also where α differs
    only in avg_pool_3x3); None without rows or for a space other than NB201's (6 edges of 5 ops)."""
    rows = [r for r in alphas or [] if _nb201_row(r)]
    if not rows:
        return None
    curve = [(r["epoch"], spearman(cell_scores(r["alphas"]["normal"], population["ops"]), population["acc_ranks"]))
             for r in rows]
    last = cell_scores(rows[-1]["alphas"]["normal"], population["ops"])
    best = np.argsort(-last, kind="stable")[:top]
    top_acc = None if curve[-1][1] is None else float(population["acc"][best].mean())  # uniform: no best cells
    return dict(curve=curve, rho=curve[-1][1], top_acc=top_acc, scores=last,
                rho_pool_free=spearman(last[population["pool_free"]], population["pool_free_ranks"]))


def rank_at(curve, steps_per_epoch, steps):
    """alpha_rank's ρ after `steps` weight steps: linear between the epoch ends around it (a curve of
    [(epoch, ρ)], epochs of `steps_per_epoch` steps); None before the first epoch's end, past the last, or
    next to an epoch without an order. Runs of different lengths compare at equal steps this way."""
    points = [(e * steps_per_epoch, rho) for e, rho in curve]
    for (s0, r0), (s1, r1) in zip(points, points[1:]):
        if s0 <= steps <= s1:
            return None if r0 is None or r1 is None else r0 + (r1 - r0) * (steps - s0) / (s1 - s0)
    return next((rho for s, rho in points if s == steps), None)  # a one-epoch curve


def pooled_rank(ranks, population):
    """ρ of several runs' last-epoch scores averaged (alpha_rank's "scores": the cells' mean log-probability
    over the runs, i.e. α's log softmax averaged over seeds) -> {rho, rho_pool_free, runs}; None for fewer
    than 2 runs. If each seed's α is the benchmark's order plus its own noise, averaging n seeds raises ρ."""
    if len(ranks) < 2:
        return None
    mean = np.mean([r["scores"] for r in ranks], axis=0)
    return dict(rho=spearman(mean, population["acc_ranks"]), runs=len(ranks),
                rho_pool_free=spearman(mean[population["pool_free"]], population["pool_free_ranks"]))


def chance_rho(population, draws=1000, seed=0, pool_free_only=False):
    """ρ of α drawn i.i.d. standard normal, `draws` times (numpy Generator seeded `seed`), over every cell or
    the pool-free ones -> {mean, std, q95 (its 95th percentile), draws}: how far from 0 a search's ρ must be
    to say more than noise; None where those cells cannot be ranked (fewer than 2, or one accuracy)."""
    rng = np.random.default_rng(seed)
    ops, ranks, _ = _cells(population, pool_free_only)
    if spearman(np.arange(len(ranks)), ranks) is None:
        return None
    # the score of α itself (log softmax differs by a constant per edge); scores of normal α never tie, so a
    # row's ranks are a permutation and Spearman is Pearson against it, done for `chunk` draws at a time
    n, y, chunk, rhos = len(ranks), ranks - np.mean(ranks), 50, []
    alphas = rng.standard_normal((draws, 6, 5))  # the same numbers as `draws` draws of (6, 5) one after another
    for a in np.array_split(alphas, max(1, draws // chunk)):
        scores = a[:, np.arange(6), ops].sum(axis=-1)  # (chunk, n): a[:, e, ops[c, e]] summed over e
        rx = np.empty_like(scores)
        np.put_along_axis(rx, np.argsort(scores, axis=1), np.arange(n, dtype=np.float64), axis=1)
        rhos.append(((rx - (n - 1) / 2) @ y) / n / (np.sqrt((n * n - 1) / 12) * np.std(ranks)))
    rhos = np.concatenate(rhos)
    return dict(mean=float(rhos.mean()), std=float(rhos.std(ddof=1)), q95=float(np.quantile(rhos, 0.95)),
                draws=draws)


def params_rho(population, pool_free_only=False):
    """ρ of the cell's parameter count (bench201.arch_costs) over every cell or the pool-free ones: the ranking
    a rule that reads only the cell gets."""
    _, ranks, params = _cells(population, pool_free_only)
    return spearman(params, ranks)
