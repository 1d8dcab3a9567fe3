"""How softmax(α) orders every NB201 cell (harness/alpha_rank.py): ranks with ties, Spearman's ρ, the cell
score whose best cell is the derived one, ρ = ±1 on a table whose accuracy is additive over the edges,
chance and the parameter count's ρ, bench201's column, and the ladder's rank table and figure."""
import json

import numpy as np
import pytest

import bench201
import genotypes as G
from harness import alpha_rank as R
from conftest import write_nb201_table

# a made-up benchmark whose accuracy is additive over the edges: acc(cell) = 50 + Σ_e V[e, op_e]
V = np.random.default_rng(7).uniform(0, 5, size=(6, 5))


def additive_accuracy(index):
    return 50 + float(V[np.arange(6), G.NB201Cell.from_str(G.nb201_arch(index)).indices].sum())


@pytest.fixture(scope="module")
def additive(tmp_path_factory):
    path = write_nb201_table(tmp_path_factory.mktemp("nb201") / "additive.csv", accuracy=additive_accuracy)
    return R.rank_population(bench201.NB201(path))


def softmax(a):
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_average_ranks_share_ties_and_spearman_reads_them():
    assert R.average_ranks([3, 1, 3, 2]).tolist() == [2.5, 0.0, 2.5, 1.0]
    assert R.average_ranks([5, 5, 5]).tolist() == [1.0, 1.0, 1.0]
    y = R.average_ranks([10, 20, 30, 40])
    assert R.spearman([1, 2, 3, 4], y) == pytest.approx(1.0)
    assert R.spearman([4, 3, 2, 1], y) == pytest.approx(-1.0)
    # x's ranks 0, 1.5, 1.5, 3 against 0, 1, 2, 3: centred -1.5, 0, 0, 1.5 and -1.5, -0.5, 0.5, 1.5, so
    # ρ = 4.5 / sqrt(4.5 * 5)
    assert R.spearman([1, 2, 2, 3], y) == pytest.approx(4.5 / np.sqrt(4.5 * 5))
    assert R.spearman([7, 7, 7, 7], y) is None  # a uniform α ranks nothing
    assert R.spearman([1, np.nan, 3, 2], y) is None  # a NaN α ranks nothing (argsort would put it last)


def test_the_best_scored_cell_is_the_derived_one():
    ops = R.cell_ops([G.nb201_arch(i) for i in range(5 ** 6)])
    assert ops.shape == (5 ** 6, 6) and ops.min() == 0 and ops.max() == 4
    rng = np.random.default_rng(0)
    for _ in range(5):
        alpha = 1e-3 * rng.standard_normal((6, 5))  # as near uniform as a search's start
        best = int(np.argmax(R.cell_scores(softmax(alpha), ops)))
        assert best == G.nb201_index(G.derive("nb201", {"normal": alpha}))


def test_alpha_that_follows_the_benchmark_ranks_it_exactly_and_its_reverse_backwards(additive):
    rows = [dict(epoch=1, alphas=dict(normal=np.full((6, 5), 0.2).tolist())),
            dict(epoch=2, alphas=dict(normal=softmax(-V).tolist())),
            dict(epoch=3, alphas=dict(normal=softmax(V).tolist()))]  # far from uniform: the log is what is additive
    rank = R.alpha_rank(rows, additive)
    assert rank["curve"][0] == (1, None)  # uniform α: no order
    assert rank["curve"][1][1] == pytest.approx(-1.0) and rank["curve"][2][1] == pytest.approx(1.0)
    assert rank["rho"] == rank["curve"][2][1] and rank["rho_pool_free"] == pytest.approx(1.0)
    assert rank["top_acc"] == pytest.approx(np.sort(additive["acc"])[-R.TOP:].mean())
    assert R.alpha_rank([], additive) is None
    darts_row = dict(epoch=1, alphas=dict(normal=np.zeros((14, 8)).tolist(), reduce=np.zeros((14, 8)).tolist()))
    assert R.alpha_rank([darts_row], additive) is None


def test_seeds_scores_averaged_keep_what_they_share_and_cancel_what_they_do_not(additive):
    """pooled_rank: the benchmark's order plus opposite noise in two seeds -> each seed ρ < 1, their mean 1."""
    W = np.random.default_rng(1).normal(0, 3, size=(6, 5))
    ranks = [R.alpha_rank([dict(epoch=1, alphas=dict(normal=softmax(0.1 * (V + sign * W)).tolist()))], additive)
             for sign in (1, -1)]
    assert all(r["rho"] < 0.9 for r in ranks)
    pooled = R.pooled_rank(ranks, additive)
    assert pooled["runs"] == 2 and pooled["rho"] == pytest.approx(1.0) == pooled["rho_pool_free"]
    assert R.pooled_rank(ranks[:1], additive) is None


def test_a_table_missing_some_cells_ranks_the_rest_in_line(tmp_path, additive):
    """Cells without the accuracy (a NATS table with gaps) are left out of the population, and what is left
    stays aligned: an α that follows the benchmark still ranks it exactly, pool-free too."""
    path = tmp_path / "gaps.csv"
    with open(additive["table"]) as f, open(path, "w") as out:
        header = next(f)
        out.write(header)
        column = header.rstrip("\n").split(",").index("cifar10_test_acc")
        for line in f:
            cells = line.rstrip("\n").split(",")
            if int(cells[0]) % 7 == 3:
                cells[column] = ""
            out.write(",".join(cells) + "\n")
    gaps = R.rank_population(bench201.NB201(str(path)))
    kept = [i for i in range(5 ** 6) if i % 7 != 3]
    assert len(gaps["acc"]) == len(kept) and gaps["acc"].tolist() == [additive_accuracy(i) for i in kept]
    assert gaps["pool_free"].sum() == sum(bench201.pool_free(G.nb201_arch(i)) for i in kept)
    rank = R.alpha_rank([dict(epoch=1, alphas=dict(normal=softmax(V).tolist()))], gaps)
    assert rank["rho"] == pytest.approx(1.0) and rank["rho_pool_free"] == pytest.approx(1.0)


def test_what_cannot_be_ranked_is_none_not_a_crash():
    """Degenerate cells (one accuracy, fewer than 2 cells) give no chance band; rows that are not one NB201
    cell's 6 x 5 softmax are skipped; a softmax entry rounded to 0 in alphas.json scores finite, and last."""
    ops = np.array([[0] * 6, [1] * 6, [2] * 6])
    flat = dict(ops=ops, acc_ranks=R.average_ranks([5.0, 5.0, 5.0]), pool_free=np.array([False, True, True]),
                pool_free_ranks=R.average_ranks([5.0, 5.0]), params=np.ones(3))
    assert R.chance_rho(flat, draws=5) is None and R.chance_rho(flat, draws=5, pool_free_only=True) is None
    one = dict(flat, acc_ranks=R.average_ranks([1.0, 2.0, 3.0]), pool_free=np.array([False, False, True]),
               pool_free_ranks=R.average_ranks([3.0]))
    assert R.chance_rho(one, draws=5) is not None and R.chance_rho(one, draws=5, pool_free_only=True) is None
    assert R.spearman([1.0], [0.0]) is None
    bad = [dict(epoch=1), dict(epoch=2, alphas=None), dict(epoch=3, alphas=dict(normal=[[0.2] * 5] * 5 + [[0.2] * 4])),
           dict(epoch=4, alphas=dict(normal="x")), dict(epoch=5, alphas=dict(normal=[[0.2] * 5] * 6, reduce=[]))]
    assert R.alpha_rank(bad, one) is None
    probs = np.full((6, 5), 0.25)
    probs[:, 0] = 0.0  # below alphas.json's 6 decimals
    scores = R.cell_scores(probs, ops)
    assert np.isfinite(scores).all() and scores[0] < scores[1] == scores[2]


def test_rho_after_so_many_steps_is_linear_between_epoch_ends():
    curve = [(1, 0.1), (2, 0.3), (3, None), (4, 0.5)]  # 10 steps per epoch
    assert R.rank_at(curve, 10, 15) == pytest.approx(0.2) and R.rank_at(curve, 10, 20) == pytest.approx(0.3)
    assert R.rank_at(curve, 10, 5) is None and R.rank_at(curve, 10, 41) is None  # before epoch 1, past the end
    assert R.rank_at(curve, 10, 25) is None  # next to an epoch without an order
    assert R.rank_at([(1, 0.4)], 10, 10) == 0.4 and R.rank_at([(1, 0.4)], 10, 11) is None


def test_chance_is_near_zero_seeded_and_the_parameter_count_is_ranked(additive):
    assert additive["pool_free"].sum() == 4 ** 6 == len(additive["pool_free_ranks"])
    pool_free = R.chance_rho(additive, draws=60, seed=3, pool_free_only=True)
    assert pool_free != R.chance_rho(additive, draws=60, seed=3) and pool_free["std"] > 0
    chance = R.chance_rho(additive, draws=60, seed=3)
    assert chance == R.chance_rho(additive, draws=60, seed=3) and chance["draws"] == 60
    assert abs(chance["mean"]) < 3 * chance["std"] / np.sqrt(60) + 0.05 and 0.05 < chance["std"] < 0.6
    assert chance["q95"] > chance["mean"]
    params = np.array([bench201.arch_costs(G.nb201_arch(i), "cifar10")[0] for i in range(5 ** 6)])
    by_params = dict(additive, acc_ranks=R.average_ranks(params),
                     pool_free_ranks=R.average_ranks(params[additive["pool_free"]]))
    assert R.params_rho(by_params) == pytest.approx(1.0) == R.params_rho(by_params, pool_free_only=True)


def test_bench201_column_is_every_cell_in_index_order(nb201_table):
    from conftest import fake_nb201_accuracy
    bench = bench201.NB201(nb201_table)
    column = bench.column("cifar10", "test_acc")
    assert len(column) == len(bench) == 5 ** 6
    assert column[:3] == [fake_nb201_accuracy(i) for i in range(3)]
    assert column[:3] == [bench.query(i, "c10")["test_acc"] for i in range(3)]
    assert bench.ranked("cifar10", "test_acc") == sorted(column)
    with pytest.raises(bench201.QueryError, match="unknown result"):
        bench.column("cifar10", "params")


def test_the_ladder_ranks_each_finished_run_and_draws_its_curve(tmp_path, monkeypatch, additive):
    """ladder.md's rank table (per rung and option: ρ at the last epoch, each seed's, the 10 best cells'
    accuracy; chance and the parameter count under it) and alpha_rank.png (a line per run that has an
    order), from made-up sweeps looked up in the additive table."""
    import plot
    from test_ladder import drawn, make_sweep
    figs = drawn(monkeypatch)
    small = make_sweep(tmp_path / "4k", 4000, {"C": {1: (91.0, 0), 2: (92.0, 1)}, "B": {1: (90.0, 1), 2: (89.0, 2)}})
    big = make_sweep(tmp_path / "16k", 16000, {"B": {1: (54.3, 6)}})
    W = np.random.default_rng(1).normal(0, 3, size=(6, 5))  # B's two seeds: the benchmark's order, opposite noise
    alphas = {"4k/C_s1": 0.01 * V, "4k/C_s2": -0.01 * V, "4k/B_s1": 0.01 * (V + W), "4k/B_s2": 0.01 * (V - W),
              "16k/B_s1": np.zeros((6, 5))}
    runs = {}
    for folder, alpha in alphas.items():
        rows = [dict(epoch=e, alphas=dict(normal=softmax(alpha * e / 50).tolist())) for e in range(1, 51)]
        (tmp_path / folder / "alphas.json").write_text(json.dumps(rows))
        runs[folder] = R.alpha_rank(json.loads((tmp_path / folder / "alphas.json").read_text()), additive)
    paths = plot.main([small, big, f"--out={tmp_path / 'fig'}", f"--bench201={additive['table']}"])
    assert [p.rsplit("/", 1)[1] for p in paths] == ["ladder.png", "ladder.md", "alpha_separation.png", "alpha_rank.png"]
    text = open(paths[1]).read()
    acc = np.sort(additive["acc"])
    best, worst = acc[-R.TOP:].mean(), acc[:R.TOP].mean()
    mean, std = (best + worst) / 2, abs(best - worst) / 2 ** 0.5
    # additive among the pool-free cells too: ρ = ±1 there as well; their scores average to a constant: no order
    assert (f"| 2,000 / 2,000 | C | 2 | 0.00 ± 1.41 | +1.00, -1.00 | 0.00 ± 1.41 | +1.00, -1.00 | {mean:.2f} ± "
            f"{std:.2f} |") in text, text
    b1, b2 = runs["4k/B_s1"], runs["4k/B_s2"]
    assert max(b1["rho"], b2["rho"]) < 0.9
    mean_b, std_b = np.mean([b1["rho"], b2["rho"]]), np.std([b1["rho"], b2["rho"]], ddof=1)
    assert f"| 2,000 / 2,000 | B | 2 | {mean_b:.2f} ± {std_b:.2f} | {b1['rho']:+.2f}, {b2['rho']:+.2f} |" in text, text
    rank_table = text[text.index("How α orders every cell"):].splitlines()
    b_row = next(line for line in rank_table if line.startswith("| 2,000 / 2,000 | B | 2 | "))
    assert b_row.endswith(" | +1.00 / +1.00 |"), b_row  # the seeds' noise cancels in their mean score
    assert "| 8,000 / 8,000 | B | 1 | - | - | - | - | - | - |" in text, text  # α stayed uniform: no order
    # at equal steps: 4k runs end at 1,550 (31 steps per epoch); the 16k one (125 per epoch) has no order
    equal = text[text.index("after the same number of weight steps"):].splitlines()
    assert "| search images (weight / α) | option | ρ after 1,550 steps | ρ after 6,250 steps |" in equal
    assert "| 2,000 / 2,000 | C | 0.00 ± 1.41 | - |" in equal, equal
    assert "| 8,000 / 8,000 | B | - | - |" in equal, equal
    assert f"{additive['table']}: α drawn i.i.d. normal (1,000 draws: chance) gives ρ = " in text
    assert "over the 15,625 cells" in text and "over the 4,096 pool-free ones" in text
    assert (f"the cell's parameter count alone gives ρ = {R.params_rho(additive):+.2f} and "
            f"{R.params_rho(additive, pool_free_only=True):+.2f}.") in text
    ax = figs["alpha_rank.png"].axes[0]
    curves = [line for line in ax.get_lines() if len(line.get_xdata()) == 50]
    assert sorted(round(line.get_ydata()[-1], 6) for line in curves) == sorted(
        round(runs[f]["rho"], 6) for f in ("4k/C_s1", "4k/C_s2", "4k/B_s1", "4k/B_s2"))  # the uniform run: no line
