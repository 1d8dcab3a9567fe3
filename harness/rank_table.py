"""How a search's softmax(α) orders every NAS-Bench-201 cell, as the data ladder's tables print it: per rung
of the ladder (harness/ladder.py) and option, Spearman's ρ against the benchmark at the last epoch (every
cell, pool-free), the mean accuracy of α's 10 best cells, ρ of the seeds' scores averaged, what chance and a
parameter count give, and ρ at equal weight steps. The ranking itself (the score, ρ, chance) is
harness/alpha_rank.py's; `ranked` ranks one run's alphas.json against a table, making each table file's
population and baselines once per process (plot.py calls it once per run and per sweep).
"""
import os

from harness.alpha_rank import alpha_rank, chance_rho, params_rho, pooled_rank, rank_at, rank_population
from harness.sweep_table import CHANCE_COLUMN, mean_cell, table_header


def fmt_rho(rho):
    """A ρ as the tables and notes print it: signed, 2 decimals; "-" for None (no order)."""
    return "-" if rho is None else f"{rho:+.2f}"


_RANKED_TABLES = {}  # (table path, bytes, mtime) -> (population, shared): each table file ranked once per process


def ranked(bench, alphas):
    """alpha_rank of a run's alphas.json rows against `bench` (bench201.NB201) by CHANCE_COLUMN, with that
    table's chance_rho, params_rho, cell count and population (for pooled_rank); each table file's
    population and baselines made once per process (a changed file is made again). None without rows."""
    try:
        stat = os.stat(bench.path)
        key = (os.path.realpath(bench.path), stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = (bench.path, None, None)
    if key not in _RANKED_TABLES:
        pop = rank_population(bench, *CHANCE_COLUMN)
        _RANKED_TABLES[key] = (pop, dict(
            table=bench.path, population=pop, cells=len(pop["acc"]), pool_free_cells=int(pop["pool_free"].sum()),
            chance=chance_rho(pop), params_rho=params_rho(pop),
            chance_pool_free=chance_rho(pop, pool_free_only=True), params_rho_pool_free=params_rho(pop, True)))
    pop, shared = _RANKED_TABLES[key]
    rank = alpha_rank(alphas, pop)
    return None if rank is None else dict(rank, **shared)


def rank_table(rungs):
    """How softmax(α) orders every NB201 cell (ladder's "rank": harness/alpha_rank.py), per rung and option:
    mean ± sample std over seeds of the last epoch's Spearman ρ against the benchmark (every cell, pool-free)
    and of the mean accuracy of α's 10 best cells, each seed's ρ, ρ of the seeds' scores averaged; under it
    what chance and the parameter count give; then ρ at equal weight steps (equal_steps_rank). [] where no
    run was ranked. rungs: [(size, option, records)]."""
    rows = [(size, option, [r["rank"] for r in rs if r.get("rank")]) for size, option, rs in rungs]
    rows = [(size, option, ranks) for size, option, ranks in rows if ranks]
    if not rows:
        return []
    lines = ["", "How α orders every cell: Spearman's ρ between each cell's score Σ_e log softmax(α_e)[op_e] (its "
             "best cell is the found one) and its CIFAR-10 test accuracy at the last epoch, over every cell and "
             "over the pool-free ones, and the mean accuracy of the score's 10 best cells; mean ± sample std over "
             "the finished seeds; and ρ of the seeds' scores averaged (every / pool-free: is each seed's order "
             "a shared one plus its own noise?):", "",
             *table_header("search images (weight / α)", "option", "seeds", "ρ, every cell", "per seed",
                           "ρ, pool-free cells", "per seed", "10 best cells (%)", "ρ, seeds' mean score")]

    def rho_cells(ranks, key):  # mean ± std, then each seed's
        return f"{mean_cell([k[key] for k in ranks], 2)} | " + ", ".join(fmt_rho(k[key]) for k in ranks)
    for size, option, ranks in rows:
        one_table = len({k["table"] for k in ranks}) == 1  # scores of different tables do not average
        pooled = pooled_rank(ranks, ranks[0]["population"]) if one_table else None
        pooled = "-" if pooled is None else " / ".join(fmt_rho(pooled[key]) for key in ("rho", "rho_pool_free"))
        lines.append(f"| {size[0]:,} / {size[1]:,} | {option} | {len(ranks)} | {rho_cells(ranks, 'rho')} | "
                     f"{rho_cells(ranks, 'rho_pool_free')} | {mean_cell([k['top_acc'] for k in ranks], 2)} | "
                     f"{pooled} |")
    lines.append("")

    def chance(c):  # chance_rho, None where the cells cannot be ranked
        return "-" if c is None else f"{c['mean']:+.2f} ± {c['std']:.2f} (95th percentile {c['q95']:+.2f})"
    for k in {k["table"]: k for *_, ranks in rows for k in ranks}.values():
        draws = (k["chance"] or k["chance_pool_free"] or {}).get("draws", 0)
        lines.append(f"{k['table']}: α drawn i.i.d. normal ({draws:,} draws: chance) gives ρ = {chance(k['chance'])} "
                     f"over the {k['cells']:,} cells, {chance(k['chance_pool_free'])} over the "
                     f"{k['pool_free_cells']:,} pool-free ones; the cell's parameter count alone gives ρ = "
                     f"{fmt_rho(k['params_rho'])} and {fmt_rho(k['params_rho_pool_free'])}.")
    return lines + equal_steps_rank(rungs)


def equal_steps_rank(rungs):
    """rank_table's second part: ρ (every cell) at equal weight steps, one column per run length of the
    ladder (rank_at: after those steps, where a run got that far), mean ± sample std over the seeds; is it
    the steps taken or the images seen that let α order the cells? [] with one run length."""
    rows = [(size, option, [r for r in rs if r.get("rank") and r["steps"]]) for size, option, rs in rungs]
    rows = [row for row in rows if row[2]]
    lengths = sorted({r["steps"] for *_, rs in rows for r in rs})
    if len(lengths) < 2:
        return []
    lines = ["", "ρ, every cell, after the same number of weight steps (linear between epoch ends; mean ± sample "
             "std over the seeds that got that far; the learning rate is at a different point of each run's "
             "schedule):", "", *table_header("search images (weight / α)", "option",
                                              *(f"ρ after {n:,} steps" for n in lengths))]
    for size, option, rs in rows:
        at = [mean_cell([rank_at(r["rank"]["curve"], r["steps"] / r["epochs"], n) for r in rs], 2) for n in lengths]
        lines.append(f"| {size[0]:,} / {size[1]:,} | {option} | " + " | ".join(at) + " |")
    return lines
