"""genotypes.py: NB201 strings/indices, derivation rules per space, published cells, JSON, DOT. Needs no torch."""
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import genotypes as G  # noqa: E402
from genotypes import Genotype, NB201Cell  # noqa: E402
from spaces import get_space  # noqa: E402


def full(op):
    return G._NB201_TEMPLATE.format(*[op] * 6)


# Anchors from the benchmark's list (regenerated list == NATS-Bench meta_archs), plus the asserts of
# AutoDL's generate_meta_info.
ANCHORS = {
    0: "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    1: "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    9: "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
    11: "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|",
    123: "|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|",
    284: "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|none~0|nor_conv_1x1~1|none~2|",
    857: "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    1462: full("nor_conv_3x3"),
    1651: full("none"),
    1835: full("skip_connect"),
    4317: full("nor_conv_1x1"),
    6111: "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
    7581: full("avg_pool_3x3"),
    9930: "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    10676: "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    11472: "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|",
    13714: "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
    15624: "|nor_conv_1x1~0|+|none~0|nor_conv_1x1~1|+|none~0|nor_conv_1x1~1|nor_conv_1x1~2|",
}


# ---------------------------------------------------------------------------------------------------------------
# NB201 strings and indices

@pytest.mark.parametrize("index,arch", sorted(ANCHORS.items()))
def test_anchor_indices(index, arch):
    cell = NB201Cell.from_str(arch)
    assert G.nb201_arch(index) == arch and str(cell) == arch and cell.to_str() == arch
    assert G.nb201_index(arch) == index and G.nb201_index(cell) == index


def test_round_trips_string_cell_json_index():
    indices = list(np.random.default_rng(0).choice(15625, size=500, replace=False)) + list(ANCHORS)
    for i in indices:
        arch = G.nb201_arch(i)
        cell = NB201Cell.from_str(arch)
        back = G.genotype_from_json(json.loads(json.dumps(G.genotype_to_json(cell))))
        assert back == cell and hash(back) == hash(cell) and G.load_genotype(arch) == cell
        assert NB201Cell.from_indices(cell.indices) == cell and eval(repr(cell), {"NB201Cell": NB201Cell}) == cell
        assert G.nb201_index(back) == i and G.load_genotype(int(i)) == cell and G.load_genotype(str(i)) == cell


def test_cell_is_immutable_and_checked():
    cell = G.RF_DARTS_NB201
    with pytest.raises(AttributeError):
        cell.ops = ("none",) * 6
    assert cell.indices == (3, 3, 3, 1, 3, 3) and {cell: 1}[NB201Cell(cell.ops)] == 1
    with pytest.raises(G.InputError, match="needs 6 ops"):
        NB201Cell(("none",) * 5)
    with pytest.raises(G.InputError, match=r"needs 6 ops .* got \('conv'"):
        NB201Cell(("conv",) * 6)
    with pytest.raises(G.InputError, match="indices must be in 0..4"):
        NB201Cell.from_indices((0, 1, 2, 3, 4, 5))


def test_partial_strings_are_completed_with_none():
    resnet = "|nor_conv_3x3~0|+|nor_conv_3x3~1|+|skip_connect~0|skip_connect~2|"  # ResNet, partial form
    assert str(NB201Cell.from_str(resnet)) == ANCHORS[11472] and G.nb201_index(resnet) == 11472
    # inputs may come in any order; missing last inputs are completed too (the benchmark's loop skips them)
    assert str(NB201Cell.from_str("|nor_conv_3x3~0|+|nor_conv_3x3~1|none~0|+||")) == \
        "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|none~2|"
    assert NB201Cell.from_str("||+||+||") == NB201Cell(("none",) * 6)
    # a cell named for training (train.py --arch, a genotype.json) lists every edge: a forgotten one is a typo
    typo = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|"
    for spec in (typo, {"arch": typo}, "  " + resnet):
        with pytest.raises(G.InputError, match=r"lists (5 of 6 edges \(missing: 2->3|4 of 6 edges \(missing: 0->2, 1->3)\); write none~j"):
            G.load_genotype(spec)
    assert G.load_genotype(ANCHORS[11472]) == NB201Cell.from_str(resnet)


def test_index_table_is_lazy_private_and_torch_free():
    code = ("import sys, random; random.seed(5); s = random.getstate(); import genotypes as G; "
            "assert G._NB201_ARCHS is None and 'torch' not in sys.modules; "
            "assert G.nb201_index(G.RF_DARTS_NB201) == 9930 and random.getstate() == s; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
    G._NB201_ARCHS = None  # rebuild here too: the global RNG stream must not move
    random.seed(1)
    state = random.getstate()
    assert G.nb201_index(ANCHORS[0]) == 0 and random.getstate() == state


@pytest.mark.parametrize("bad", [-1, 15625, 1.5, "3", True, None])
def test_nb201_arch_bad_index(bad):
    with pytest.raises(ValueError) as e:
        G.nb201_arch(bad)
    assert "\n" not in str(e.value) and "index" in str(e.value)


@pytest.mark.parametrize("arch,words", [
    ("|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", ["unknown NB201 op", "'nor_conv_5x5~0'"]),
    ("|none~0|+|none~0|none~1|", ["3 '+'-separated node groups", "got 2"]),
    ("|none~0|+|none~0|+|none~0|+|none~0|", ["3 '+'-separated node groups", "got 4"]),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", ["duplicate input 0", "'none~0'"]),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", ["out of range for node 1", "'none~1'"]),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~3|", ["out of range for node 3", "'none~3'"]),
    ("|none~0|+|none~0|none~x|+|none~0|none~1|none~2|", ["not an integer", "'none~x'"]),
    ("|none~0|+|none~0|none~-1|+|none~0|none~1|none~2|", ["out of range", "'none~-1'"]),
    ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", ["bad NB201 edge token", "'none'"]),
    ("|none~0~1|+|none~0|none~1|+|none~0|none~1|none~2|", ["bad NB201 edge token", "'none~0~1'"]),
    ("hello\nworld", ["3 '+'-separated node groups", "'hello\\nworld'"]),
    (42, ["must be a string", "int"]),
])
def test_bad_arch_strings(arch, words):
    with pytest.raises(ValueError) as e:
        NB201Cell.from_str(arch)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


# ---------------------------------------------------------------------------------------------------------------
# Derivation

class FakeTensor:
    """Duck-typed stand-in for a torch tensor (these tests must run without torch)."""
    def __init__(self, a):
        self.a = np.asarray(a)

    def detach(self):
        return self

    def cpu(self):
        return self

    def __array__(self, dtype=None, copy=None):
        return self.a if dtype is None else self.a.astype(dtype)


def zeros(space):
    s = get_space(space)
    return {kind: np.zeros(s.alpha_shape(kind)) for kind in s.cell_kinds}


def test_derive_nb201_includes_none_and_breaks_ties_low():
    a = zeros("nb201")
    assert G.derive("nb201", a) == NB201Cell(("none",) * 6)  # all tied -> op 0, which is none
    a["normal"][0] = [5, 1, 1, 1, 1]       # none dominates: kept, as NB201's DARTS does
    a["normal"][1] = [0, 0, 0, 2, 2]       # tie conv3x3 / avg_pool -> lower index
    a["normal"][2] = [0, 3, 0, 0, 0]
    a["normal"][3] = [0, 0, 1, 0, 0]
    a["normal"][4] = [0, 0, 0, 0, 1e-3]
    a["normal"][5] = [-1, -1, -1, -1, -1]
    want = NB201Cell(("none", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "none"))
    assert G.derive(get_space("nb201"), a) == want
    assert G.derive("nb201", {"normal": FakeTensor(a["normal"])}) == want
    assert G.derive("nb201", a, betas={"normal": np.arange(6.0)}) == want  # betas cannot change an edge argmax


def test_derive_darts_ignores_none_ranks_top2_stably():
    a = zeros("darts")
    a["normal"][0, [0, 4]] = [10, 1]  # edge 0 (n0 <- c_{k-2}): none dominates; its best real op is tiny
    a["normal"][1, 5] = 2             # edge 1 (n0 <- c_{k-1}): sep_conv_5x5 -> ranked first
    # node 1 (edges 2-4) all tied: edges 2, 3 win, op = max_pool_3x3 (lowest non-none index)
    a["normal"][5, 2], a["normal"][6, 3], a["normal"][8, 6] = 1, 2, 3  # node 2: edge 8 > edge 6 > edge 5
    a["normal"][10, 4] = a["normal"][13, 4] = 1  # node 3: exact tie between edges 10 and 13 -> edge 10 first
    g = G.derive("darts", a)
    assert g.normal == [("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("max_pool_3x3", 0), ("max_pool_3x3", 1),
                        ("dil_conv_3x3", 3), ("skip_connect", 1), ("sep_conv_3x3", 1), ("sep_conv_3x3", 4)]
    assert g.reduce == [("max_pool_3x3", 0), ("max_pool_3x3", 1)] * 4
    assert g.normal_concat == g.reduce_concat == [2, 3, 4, 5]


def reference_darts_genotype(w):
    """DARTS' own genotype() loop (quark0/darts model_search.py), re-typed over a softmaxed (14, 8) array."""
    gene, start, n = [], 0, 2
    for i in range(4):
        rows = w[start:start + n]
        edges = sorted(range(i + 2), key=lambda x: -max(rows[x][k] for k in range(8) if k != 0))[:2]
        for j in edges:
            k_best = None
            for k in range(8):
                if k != 0 and (k_best is None or rows[j][k] > rows[j][k_best]):
                    k_best = k
            gene.append((get_space("darts").normal[0][k_best], j))
        start, n = start + n, n + 1
    return gene


def test_derive_darts_matches_reference_loop_on_random_alphas():
    rng = np.random.default_rng(1)
    for _ in range(50):
        a = {k: rng.normal(size=(14, 8)) for k in ("normal", "reduce")}
        g = G.derive("darts", a)
        assert g.normal == reference_darts_genotype(G._softmax(a["normal"]))
        assert g.reduce == reference_darts_genotype(G._softmax(a["reduce"]))


def test_derive_s1_uses_each_edges_own_list():
    a = zeros("s1")
    a["normal"][5] = [0, 3]  # edge 5 (n2 <- c_{k-2}) is (max_pool_3x3, skip_connect): column 1 = skip
    a["normal"][8] = [0, 1]  # edge 8 (n2 <- n1) is (skip_connect, dil_conv_3x3): column 1 = dil3x3
    a["reduce"][1] = [0, 2]  # reduce edge 1 (n0 <- c_{k-1}) is (max_pool_3x3, dil_conv_3x3)
    g = G.derive("s1", a)
    assert g.normal[4:6] == [("skip_connect", 0), ("dil_conv_3x3", 3)]
    assert g.normal[0:2] == [("skip_connect", 0), ("skip_connect", 1)]  # all-tied edges: column 0
    assert g.reduce[0:2] == [("dil_conv_3x3", 1), ("max_pool_3x3", 0)]


def test_derive_s2_s3_s4():
    a = zeros("s2")
    a["normal"][0] = [0, 1]
    assert G.derive("s2", a).normal[:2] == [("sep_conv_3x3", 0), ("skip_connect", 1)]
    a = {k: np.tile([5.0, 0.0, 1.0], (14, 1)) for k in ("normal", "reduce")}  # none dominant everywhere
    g = G.derive("s3", a)
    assert {op for op, _ in g.normal + g.reduce} == {"sep_conv_3x3"}
    rng = np.random.default_rng(2)
    for _ in range(20):
        g = G.derive("s3", {k: rng.normal(size=(14, 3)) + [3, 0, 0] for k in ("normal", "reduce")})
        assert "none" not in {op for op, _ in g.normal + g.reduce}
    a = {k: np.tile([3.0, 0.0], (14, 1)) for k in ("normal", "reduce")}
    g = G.derive("s4", a)
    assert G.op_counts(g) == {"noise": 8} and G.op_counts(g, "reduce") == {"noise": 8} and G.skip_count(g) == 0


def test_betas_change_which_edges_win():
    a = zeros("darts")
    a["normal"][0, 4], a["normal"][1, 4] = 2, 1  # node 0: edge 0 (input 0) beats edge 1 (input 1) on alpha alone
    a["normal"][2, 5], a["normal"][3, 5] = 2, 1  # node 1: edge 2 beats edge 3 ...
    assert G.derive("darts", a).normal[:4] == [("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                                               ("sep_conv_5x5", 0), ("sep_conv_5x5", 1)]
    b = {k: np.zeros(14) for k in ("normal", "reduce")}
    b["normal"][:2] = [-3, 3]  # ... but edge 1 gets ~all of node 0's edge weight
    b["normal"][4] = -50       # and a huge beta on node 1's edge 4 only moves node 1's softmax
    g = G.derive("darts", a, betas=b)
    assert g.normal[:2] == [("sep_conv_3x3", 1), ("sep_conv_3x3", 0)]
    assert g.normal[2:4] == [("sep_conv_5x5", 0), ("sep_conv_5x5", 1)]
    shifted = {k: v + 7.0 for k, v in b.items()}  # softmax per node: a constant shift changes nothing
    assert G.derive("darts", a, betas={k: FakeTensor(v) for k, v in shifted.items()}) == g


@pytest.mark.parametrize("alphas,betas,said", [
    ({"normal": np.zeros((14, 8))}, None, "with a 'reduce' entry"),
    ({"normal": np.zeros((14, 7)), "reduce": np.zeros((14, 8))}, None, r"alphas\['normal'\] has shape \(14, 7\)"),
    ({"normal": np.zeros((14, 8)), "reduce": np.zeros((14, 8))}, {"normal": np.zeros(13), "reduce": np.zeros(14)},
     r"betas\['normal'\] has shape \(13,\), the space wants \(14,\)"),
])
def test_derive_rejects_bad_shapes(alphas, betas, said):
    with pytest.raises(G.InputError, match=said) as e:
        G.derive("darts", alphas, betas)
    assert "\n" not in str(e.value)


def test_edge_softmax_and_counts():
    sm = G.edge_softmax({"normal": FakeTensor(np.arange(30.0).reshape(6, 5))})
    assert list(sm) == ["normal"] and len(sm["normal"]) == 6 and type(sm["normal"][0][0]) is float
    top = math.exp(4) / sum(math.exp(i) for i in range(5))  # row 0 is alpha = 0..4: softmax's last entry
    assert all(abs(sum(row) - 1) < 1e-3 for row in sm["normal"]) and sm["normal"][0][-1] == round(top, 4)
    json.dumps(sm)
    assert G.skip_count(G.DARTS_V2) == 2 and G.skip_count(G.RF_DARTS_NB201) == 1
    assert G.skip_count(NB201Cell.from_str(ANCHORS[1835])) == 6
    assert G.op_counts(G.RF_DARTS_NB201) == {"nor_conv_3x3": 5, "skip_connect": 1}
    assert G.op_counts(G.DARTS_V1, "reduce") == {"max_pool_3x3": 4, "skip_connect": 3, "avg_pool_3x3": 1}


def test_cell_str_writes_a_darts_cell_node_by_node_in_nb201_notation():
    """DARTS V2's normal cell (quark0/darts genotypes.py) as one line: 4 nodes of 2 (op~input) pairs."""
    assert G.cell_str(G.DARTS_V2) == ("|sep_conv_3x3~0|sep_conv_3x3~1|+|sep_conv_3x3~0|sep_conv_3x3~1|+"
                                      "|sep_conv_3x3~1|skip_connect~0|+|skip_connect~0|dil_conv_3x3~2|")
    assert G.cell_str(G.DARTS_V2, "reduce").startswith("|max_pool_3x3~0|max_pool_3x3~1|+|skip_connect~2|")
    assert G.cell_str(G.RF_DARTS_NB201) == G.RF_DARTS_NB201.to_str()
    with pytest.raises(ValueError, match="not 'both'"):
        G.cell_str(G.DARTS_V2, "both")


def test_top2_margins_of_hand_made_softmax_weights():
    """Largest minus second-largest weight per edge, ties 0, any order of ops, rows of different lengths
    (alphas.json's form); raw logits, one-op edges, negative weights and non-lists are one-line errors."""
    probs = [[0.1, 0.2, 0.3, 0.4, 0.0],       # 0.4 - 0.3
             [0.25, 0.25, 0.2, 0.2, 0.1],     # a tie at the top: 0
             [0.05, 0.8, 0.05, 0.05, 0.05],   # 0.8 - 0.05
             [0.5, 0.5]]                      # a two-op edge (S1-S4 style), tied
    assert G.top2_margins(probs) == pytest.approx([0.1, 0.0, 0.75, 0.0])
    uniform = G.edge_softmax({"normal": np.zeros((6, 5))})["normal"]  # what a search starts from
    assert G.top2_margins(uniform) == [0.0] * 6
    sharp = G.edge_softmax({"normal": np.array([[3.0, 1.0, 0.0, 0.0, 0.0]])}, decimals=6)["normal"]
    e = np.exp([3.0, 1.0, 0.0, 0.0, 0.0])
    assert G.top2_margins(sharp) == pytest.approx([(e[0] - e[1]) / e.sum()], abs=2e-6)  # 6 decimals kept
    for bad, words in (([[2.0, 1.0, 0.0]], "summing to 1"), ([[1.0]], ">= 2"), ([[1.2, -0.2]], ">= 0"),
                       ([["a", "b"]], "not a numeric array"), ("weights", "list of per-edge rows")):
        with pytest.raises(ValueError) as err:
            G.top2_margins(bad)
        assert words in str(err.value) and "\n" not in str(err.value), err.value


def test_top2_margins_compare_what_derivation_chooses_among():
    """DARTS-style spaces derive without `none`, so a `none`-over-skip lead says nothing about the choice:
    the margin there is between the ops derive ranks (S3: skip against sep conv); NB201 counts every op."""
    s3 = G.choice_ops("s3")  # every S3 edge: none, skip_connect, sep_conv_3x3
    row = [0.40, 0.31, 0.29]  # none leads skip by 0.09; skip leads sep conv by 0.02
    assert G.top2_margins([row] * 14, s3) == pytest.approx([0.02] * 14)
    assert G.top2_margins([row] * 14) == pytest.approx([0.09] * 14)
    assert G.choice_ops("nb201") is None
    alphas = {"normal": np.log(np.array([row] * 14)), "reduce": np.zeros((14, 3))}
    assert G.derive("s3", alphas).normal[0][0] == "skip_connect"  # what the margin is about
    one_left = [["none", "skip_connect"]]  # a single op besides none: no flip possible
    assert G.top2_margins([[0.9, 0.1]], one_left) == [1.0]
    with pytest.raises(ValueError, match="3 softmax weights for 2 ops"):
        G.top2_margins([[0.5, 0.3, 0.2]], one_left)


def test_all_skip_is_the_collapsed_cell_only():
    """Table 2's collapsed cell: every op skip_connect (NB201: all 6 edges; DARTS: the normal cell)."""
    collapsed = NB201Cell(["skip_connect"] * 6)
    assert G.all_skip(collapsed) and G.all_skip(NB201Cell.from_str(ANCHORS[1835]))
    assert not G.all_skip(NB201Cell(["skip_connect"] * 5 + ["nor_conv_3x3"]))
    assert not G.all_skip(NB201Cell(["none"] * 6)) and not G.all_skip(G.RF_DARTS_NB201)
    skips = [("skip_connect", j) for j in (0, 1, 0, 1, 0, 1, 0, 1)]
    normal_skip = Genotype(skips, [2, 3, 4, 5], G.DARTS_V2.reduce, [2, 3, 4, 5])
    assert G.all_skip(normal_skip) and not G.all_skip(G.DARTS_V2)  # the reduce cell is not judged
    assert not G.all_skip(Genotype(G.DARTS_V2.normal, [2, 3, 4, 5], skips, [2, 3, 4, 5]))


# ---------------------------------------------------------------------------------------------------------------
# Published cells, JSON, loading, DOT

def test_published_spot_checks():
    assert G.DARTS is G.DARTS_V2 and G.PCDARTS is G.PC_DARTS_cifar
    assert G.DARTS_V1.normal[7] == ("skip_connect", 2) and G.DARTS_V1.reduce[7] == ("avg_pool_3x3", 0)
    assert G.DARTS_V2.normal[:2] == [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)]
    assert G.DARTS_V2.normal[7] == ("dil_conv_3x3", 2) and G.DARTS_V2.reduce[3] == ("max_pool_3x3", 1)
    assert G.PC_DARTS_cifar.normal[6] == ("avg_pool_3x3", 0) and G.PC_DARTS_cifar.reduce[3] == ("sep_conv_5x5", 2)
    assert G.PC_DARTS_image.normal[7] == ("dil_conv_5x5", 4) and G.PC_DARTS_image.reduce[2] == ("dil_conv_5x5", 2)
    assert G.PDARTS.normal[1] == ("dil_conv_3x3", 1) and G.PDARTS.reduce[0] == ("avg_pool_3x3", 0)
    assert G.PDARTS.reduce[7] == ("dil_conv_5x5", 3)
    assert G.nb201_index(G.RF_DARTS_NB201) == 9930
    for g in G.PUBLISHED.values():
        if isinstance(g, Genotype):
            assert g.normal_concat == g.reduce_concat == [2, 3, 4, 5] and len(g.normal) == len(g.reduce) == 8


@pytest.mark.parametrize("name", sorted(G.PUBLISHED))
def test_published_json_round_trip_and_names(name, tmp_path):
    g = G.PUBLISHED[name]
    d = json.loads(json.dumps(G.genotype_to_json(g)))
    assert G.genotype_from_json(d) == g and G.load_genotype(name) is g and G.load_genotype(name.lower()) is g
    d.update(space="darts", nb201_index=9930, arch=d.get("arch", "ignored"), valid_acc=1.0)  # search.py's extras
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(d))
    assert G.load_genotype(path) == g and G.load_genotype(str(path)) == g and G.load_genotype(d) == g


def test_a_genotype_json_of_one_kind_missing_its_keys_is_named():
    """A cell kind that lacks its keys says what that kind needs, not that an 'arch' it holds is missing."""
    arch = NB201Cell.from_str(ANCHORS[11472]).to_str()
    for d, said in (({"cell": "darts", "arch": arch}, "genotype JSON of cell 'darts' needs 'normal' and 'reduce'; "
                                                      "keys: ['arch', 'cell']"),
                    ({"cell": "nas", "arch": arch}, "genotype JSON: 'cell' is 'nas', not 'nb201' or 'darts'"),
                    ({"space": "darts"}, "genotype JSON needs 'arch' (NB201) or 'normal' and 'reduce' (DARTS)")):
        with pytest.raises(G.InputError) as err:
            G.genotype_from_json(d)
        assert str(err.value).startswith(said), err.value


def test_load_genotype_forms():
    assert G.load_genotype(G.DARTS_V2) is G.DARTS_V2 and G.load_genotype(np.int64(9930)) == G.RF_DARTS_NB201
    assert G.load_genotype(str(G.PDARTS)) == G.PDARTS  # as DARTS' logs print it
    text = str(G.PC_DARTS_cifar).replace("[2, 3, 4, 5]", "range(2, 6)")  # as PC-DARTS' genotypes.py writes it
    assert G.load_genotype(text) == G.PC_DARTS_cifar
    assert G.load_genotype(json.dumps(G.genotype_to_json(G.DARTS_V1))) == G.DARTS_V1
    assert G.load_genotype({"nb201_index": 11472}) == NB201Cell.from_str(ANCHORS[11472])


@pytest.mark.parametrize("spec,said", [
    ("DARTS_V3", "not a published name"), ("nothing.json", "does not exist"),
    ("Genotype(normal=[", "cannot read Genotype text"), ([1, 2], "from a list"), ({"foo": 1}, r"keys: \['foo'\]"),
    ({"normal": [("sep_conv_3x3", 0)] * 8, "reduce": [("sep_conv_3x3", 5)] * 8}, r"bad reduce pair 0 .*input in 0..1"),
    ({"normal": [("conv", 0)] * 8, "reduce": [("sep_conv_3x3", 0)] * 8}, r"bad normal pair 0 \('conv', 0\)")])
def test_load_genotype_rejects(spec, said):
    with pytest.raises(G.InputError, match=said) as e:
        G.load_genotype(spec)
    assert "\n" not in str(e.value)


def test_to_dot():
    dot = G.to_dot(G.RF_DARTS_NB201)
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert '"0" -> "1" [label="nor_conv_3x3"];' in dot and '"0" -> "3" [label="skip_connect"];' in dot
    resnet = G.to_dot(NB201Cell.from_str(ANCHORS[11472]))
    assert resnet.count("->") == 4 and "none" not in resnet
    dot = G.to_dot(G.DARTS_V2)
    assert '"c_{k-2}" -> "0" [label="sep_conv_3x3"];' in dot and '"0" -> "3" [label="dil_conv_3x3"];' in dot
    assert dot.count('-> "c_{k}"') == 4 and dot.count("[label=") == 8
    assert '"c_{k-1}" -> "3" [label="max_pool_3x3"];' in G.to_dot(G.DARTS_V2, "reduce")
    with pytest.raises(ValueError):
        G.to_dot(G.RF_DARTS_NB201, "reduce")


def test_an_nb201_cell_has_no_reduction_cell_to_count_or_show():
    """Asking an NB201 cell for its "reduce" kind is a mistake (a DARTS habit), not its normal cell again."""
    cell = G.RF_DARTS_NB201
    assert G.op_counts(cell) == {"nor_conv_3x3": 5, "skip_connect": 1} and G.cell_str(cell) == cell.to_str()
    for show in (G.op_counts, G.cell_str):
        with pytest.raises(ValueError, match="one kind, 'normal', not 'reduce'"):
            show(cell, "reduce")


def test_derive_accepts_torch_tensors():
    import torch
    a = {k: torch.randn(14, 8, requires_grad=True) for k in ("normal", "reduce")}
    b = {k: torch.randn(14, requires_grad=True) for k in ("normal", "reduce")}
    numpy = {k: v.detach().numpy() for k, v in a.items()}, {k: v.detach().numpy() for k, v in b.items()}
    assert G.derive("darts", a, b) == G.derive("darts", *numpy)
    assert G.edge_softmax(a) == G.edge_softmax(numpy[0])
    assert G.derive("s4", {k: torch.zeros(14, 2, dtype=torch.bfloat16) for k in a}).normal[0] == ("noise", 0)
