"""Discrete architectures: cell types, arch strings, NB201 indices, derivation from alpha, published cells.

Owns
  Genotype            DARTS' namedtuple (normal, normal_concat, reduce, reduce_concat) for the darts/s1-s4 spaces
  NB201Cell           one NAS-Bench-201 cell: 6 op names in edge order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2
  derive              alpha (+ PC-DARTS betas) -> NB201Cell or Genotype, with the rule of each space
  edge_normalisation  PC-DARTS betas -> each edge's weight, softmax over its node's in-edges (alphas.json)
  edge_softmax, op_counts, skip_count    what a search logs every epoch (collapse watch, paper Fig. 5)
  cell_str                               a cell as one line of text (NB201's notation, DARTS cells too)
  top2_margins, choice_ops               per edge, how far the final choice is from flipping (near ties)
  all_skip                               the collapsed cell of Table 2 (every op skip_connect)
  nb201_index, nb201_arch                arch string <-> benchmark index 0..15624, without the benchmark file
  genotype_to_json, genotype_from_json, load_genotype, to_dot            files, names and pictures
  DARTS_V1, DARTS_V2 (= DARTS), PC_DARTS_cifar (= PCDARTS), PC_DARTS_image, PDARTS, RF_DARTS_NB201, PUBLISHED

Paper: every searched cell of RF-DARTS' Tables 2-6 is derived from alpha by `derive`; Table 3 / Fig. 5's NB201
cell is RF_DARTS_NB201 (index 9930). Imports only the standard library, numpy and spaces.py (no torch): tools that only
handle architectures stay light. Torch tensors are accepted anywhere an array is (converted with numpy).
"""
import ast
import hashlib
import itertools
import json
import operator
import os
import random
from collections import Counter, namedtuple
from dataclasses import dataclass

import numpy as np

from spaces import DARTS_OPS, NB201_EDGES, NB201_OPS, InputError, get_space

# quark0/darts cnn/genotypes.py: pairs are (op, input) with input 0 = c_{k-2}, 1 = c_{k-1}, j >= 2 =
# intermediate node j-2; two pairs per node, node by node. concat is a list (not range) so == and JSON are plain.
Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
DARTS_CONCAT = list(range(2, 6))
DARTS_CELL_OPS = frozenset(DARTS_OPS) | {"noise"}  # every op a darts-style cell may hold (S4 adds noise)
_NB201_TEMPLATE = "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|"  # the benchmark's full string, edges in NB201_EDGES order


@dataclass(frozen=True, repr=False)
class NB201Cell:
    """A NAS-Bench-201 cell; immutable, hashable, equal iff the 6 ops are equal."""
    ops: tuple  # 6 op names from NB201_OPS, in NB201_EDGES order

    def __post_init__(self):
        ops = tuple(self.ops)
        if len(ops) != len(NB201_EDGES) or any(op not in NB201_OPS for op in ops):
            raise InputError(f"an NB201 cell needs 6 ops from {', '.join(NB201_OPS)}; got {ops!r}")
        object.__setattr__(self, "ops", ops)

    @classmethod
    def from_str(cls, arch, partial=True):
        """Parse `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`; missing edges become `none` (partial strings), or
        with partial=False (a cell a user names for training: a forgotten edge is a typo) are refused."""
        if isinstance(arch, NB201Cell):
            return arch
        if not isinstance(arch, str):
            raise InputError(f"an NB201 arch must be a string, got {type(arch).__name__} {arch!r}")
        groups = arch.strip().split("+")
        if len(groups) != 3:
            raise InputError(f"an NB201 arch string has 3 '+'-separated node groups, got {len(groups)} in {arch!r}")
        chosen = {}
        for node, group in enumerate(groups, start=1):
            for token in filter(None, group.split("|")):  # like the benchmark, empty pieces are skipped
                op, sep, j = token.partition("~")
                if not sep or "~" in j:
                    raise InputError(f"bad NB201 edge token {token!r} in node group {node}: expected 'op~j'")
                if op not in NB201_OPS:
                    raise InputError(f"unknown NB201 op {op!r} in token {token!r} (ops: {', '.join(NB201_OPS)})")
                try:
                    j = int(j)
                except ValueError:
                    raise InputError(f"input index of token {token!r} is not an integer") from None
                if not 0 <= j < node:
                    raise InputError(f"input {j} of token {token!r} is out of range for node {node} (0..{node - 1})")
                if (node, j) in chosen:
                    raise InputError(f"duplicate input {j} for node {node} at token {token!r}")
                chosen[(node, j)] = op
        missing = [f"{j}->{i}" for i, j in NB201_EDGES if (i, j) not in chosen]
        if missing and not partial:
            raise InputError(f"NB201 arch {arch!r} lists {6 - len(missing)} of 6 edges (missing: "
                             f"{', '.join(missing)}); write none~j for an edge without an op")
        # Completion as the benchmark's Structure.str2fullstructure: an edge not listed is `none`. (Its loop
        # `for j in range(i)` skips the last input of every node, so it can leave a partial string partial; we
        # complete every edge. Both agree on every partial string the benchmark can look up.)
        return cls(tuple(chosen.get(edge, "none") for edge in NB201_EDGES))

    @classmethod
    def from_indices(cls, indices):
        """From 6 op indices into NB201_OPS, e.g. (3, 3, 3, 1, 3, 3) (NASLib/PA-DA style encodings)."""
        indices = [operator.index(k) for k in indices]
        if any(not 0 <= k < len(NB201_OPS) for k in indices):
            raise InputError(f"NB201 op indices must be in 0..{len(NB201_OPS) - 1}, got {indices}")
        return cls(tuple(NB201_OPS[k] for k in indices))

    @property
    def indices(self):
        return tuple(NB201_OPS.index(op) for op in self.ops)

    def to_str(self):
        """The full 6-edge benchmark string (`none` edges included), ready for an exact-match lookup."""
        return _NB201_TEMPLATE.format(*self.ops)

    __str__ = to_str

    def __repr__(self):
        return f"NB201Cell.from_str({self.to_str()!r})"


# ---------------------------------------------------------------------------------------------------------------
# Derivation: alpha -> discrete cell (genotype() of quark0/darts cnn/model_search.py, PC-DARTS model_search.py,
# RobustDARTS src/search/model_search.py; AutoDL xautodl/models/cell_searchs/search_model_darts.py)

def _array(x, name):
    """numpy float64 copy of an array or a torch tensor (duck-typed, so torch is never imported here)."""
    if hasattr(x, "detach"):  # torch: off the graph and the device; .numpy() also handles bfloat16 via .float()
        x = x.detach().cpu()
        x = x.float().numpy() if hasattr(x, "numpy") else x
    try:
        return np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} is not a numeric array: {str(e).splitlines()[0]}") from None


def _softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _kind_array(params, kind, shape, name):
    if not isinstance(params, dict) or kind not in params:
        raise InputError(f"{name} must be a dict with a {kind!r} entry, got {type(params).__name__}")
    a = _array(params[kind], f"{name}[{kind!r}]")
    if a.shape != tuple(shape):
        raise InputError(f"{name}[{kind!r}] has shape {a.shape}, the space wants {tuple(shape)}")
    return a


def _node_softmax(space, b):
    """PC-DARTS edge normalisation (yuhuixu1993/PC-DARTS model_search.py): softmax of the beta logits b (E,)
    per node over its incoming edges, as supernet.py weights them. -> (E,), each node's edges summing to 1."""
    w = np.empty_like(b)
    for node in {n for n, _ in space.edges}:
        idx = [e for e, (n, _) in enumerate(space.edges) if n == node]
        w[idx] = _softmax(b[idx])
    return w


def edge_normalisation(space, betas, decimals=6):
    """{kind: per-edge weight softmax(beta) over each node's incoming edges, a list of E floats}: the weights
    the supernet multiplies each edge by (RF-PCDARTS), for alphas.json. `betas`: raw logits {kind: (E,)}."""
    space = get_space(space) if isinstance(space, str) else space
    return {kind: np.round(_node_softmax(space, _kind_array(betas, kind, (len(space.edges),), "betas")),
                           decimals).tolist() for kind in space.cell_kinds}


def derive(space, alphas, betas=None):
    """Discretise raw alpha logits {kind: (E, n)}; `betas` = raw PC-DARTS edge logits {kind: (E,)} or None.

    nb201 -> NB201Cell, darts/s1-s4 -> Genotype. Ties go to the lower op / edge index (numpy argmax, stable sort).
    """
    space = get_space(space) if isinstance(space, str) else space
    if space.cell == "nb201":
        # NB201's DARTS (AutoDL search_model_darts.py genotype()): per edge, argmax over all 5 ops INCLUDING
        # none, so a none-dominated edge stays none. betas are ignored: a positive factor on an edge cannot
        # change that edge's argmax.
        w = _softmax(_kind_array(alphas, "normal", space.alpha_shape("normal"), "alphas"))
        return NB201Cell(tuple(ops[k] for ops, k in zip(space.normal, w.argmax(axis=1))))
    cells, nodes = {}, sorted({node for node, _ in space.edges})
    for kind in space.cell_kinds:
        w = _softmax(_kind_array(alphas, kind, space.alpha_shape(kind), "alphas"))  # (14, n), paper Eq. (1)/(6)
        if betas is not None:  # PC-DARTS: each edge's op weights times its edge weight, before ranking
            w *= _node_softmax(space, _kind_array(betas, kind, (len(space.edges),), "betas"))[:, None]
        pairs = []
        for node in nodes:
            scored = []
            for e, (n, j) in enumerate(space.edges):
                if n != node:
                    continue
                # `none` is out of edge ranking and op choice wherever it is in the edge's list (DARTS, R-DARTS),
                # so S3 never picks none: the same result as R-DARTS' code. S4's noise is an ordinary candidate
                # (R-DARTS keeps it too), so S4 cells may contain noise.
                # The list is this edge's own (absolute edge index e), for the none check and the op name alike.
                # R-DARTS finds `none` for ranking via a node-relative index (a bug, harmless in S1-S4); not copied.
                ops = space.ops(kind)[e]
                cand = [k for k, op in enumerate(ops) if op != "none"]
                best = cand[int(np.argmax(w[e, cand]))]  # first maximum = lowest op index on ties
                scored.append((-w[e, best], len(scored), ops[best], j))
            pairs += [(op, j) for _, _, op, j in sorted(scored)[:2]]  # top 2, stronger first, ties: lower edge
        cells[kind] = pairs
    return Genotype(cells["normal"], list(DARTS_CONCAT), cells["reduce"], list(DARTS_CONCAT))


def edge_softmax(alphas, decimals=4):
    """{kind: per-edge softmax(alpha) as nested lists of floats}, for logs and alphas.json (paper Fig. 5)."""
    return {kind: np.round(_softmax(_array(a, f"alphas[{kind!r}]")), decimals).tolist()
            for kind, a in alphas.items()}


def choice_ops(space, kind="normal"):
    """Per edge, the op names its derivation chooses among, for top2_margins: None for NB201 (every op,
    `none` too, as its rule ranks them); DARTS-style spaces' own lists (derive leaves `none` out there)."""
    space = get_space(space) if isinstance(space, str) else space
    return None if space.cell == "nb201" else space.ops(kind)


def top2_margins(probs, ops=None):
    """Per edge, the largest minus the second-largest op weight of softmax(alpha) among the ops its
    derivation chooses from: how far the edge's choice is from flipping (0: a tie; 1: one-hot). `probs`:
    one cell kind's per-edge weights, each row summing to 1, as edge_softmax writes them (alphas.json's
    alphas[kind]; rows may differ in length). `ops` (choice_ops): per edge its op names, `none` left out
    of the comparison, as DARTS-style derivation leaves it out (an edge with one op left cannot flip: 1);
    None: every op counts (NB201's rule). -> one float per edge. Raw logits (rows not summing to 1) are
    refused."""
    if not isinstance(probs, (list, tuple)) and not hasattr(probs, "shape"):
        raise InputError(f"softmax weights must be a list of per-edge rows, got {type(probs).__name__}")
    margins = []
    for e, row in enumerate(probs):
        w = _array(row, f"softmax weights of edge {e}").ravel()
        if w.size < 2 or w.min() < 0 or abs(w.sum() - 1) > 1e-3:  # alphas.json rounds to 6 decimals
            raise InputError(f"edge {e}: want >= 2 softmax weights (>= 0, summing to 1), got {np.round(w, 6).tolist()}")
        if ops is not None:
            if len(ops[e]) != w.size:
                raise InputError(f"edge {e}: {w.size} softmax weights for {len(ops[e])} ops {list(ops[e])}")
            w = w[[k for k, op in enumerate(ops[e]) if op != "none"]]
        w = np.sort(w)
        margins.append(float(w[-1] - w[-2]) if w.size >= 2 else 1.0)
    return margins


def op_counts(genotype, kind="normal"):
    """{op: count} over the 6 edges of an NB201 cell (none included) or the 8 pairs of one DARTS cell kind."""
    ops = _nb201_cell(genotype, kind).ops if isinstance(genotype, NB201Cell) else \
        [op for op, _ in _cell(genotype, kind)[0]]
    return dict(Counter(ops))


def _nb201_cell(cell, kind):
    """`cell` itself; InputError for any kind but "normal" (an NB201 cell has no reduction cell to count or draw)."""
    if kind != "normal":
        raise InputError(f"an NB201 cell has one kind, 'normal', not {kind!r}")
    return cell


def cell_str(genotype, kind="normal"):
    """One cell as one line: an NB201 cell's own arch string, or one DARTS cell kind's 8 (op, input) pairs in
    the same notation, node by node: |op~input|op~input|+|...| (input 0: c_{k-2}, 1: c_{k-1}, j >= 2: node
    j - 2). For tables and logs; load_genotype reads the full genotype, not this."""
    if isinstance(genotype, NB201Cell):
        return _nb201_cell(genotype, kind).to_str()
    pairs = _cell(genotype, kind)[0]
    return "+".join("|" + "".join(f"{op}~{j}|" for op, j in pairs[i:i + 2]) for i in range(0, len(pairs), 2))


def skip_count(genotype):
    """Number of skip_connect ops in an NB201 cell or a Genotype's normal cell (the DARTS-collapse symptom)."""
    return op_counts(genotype).get("skip_connect", 0)


def all_skip(genotype):
    """Whether every op of an NB201 cell, or of a Genotype's normal cell, is skip_connect: the collapsed
    cell of the paper's Table 2 (DARTS' 54.30 ± 0.00 on NAS-Bench-201 CIFAR-10)."""
    return set(op_counts(genotype)) == {"skip_connect"}


# ---------------------------------------------------------------------------------------------------------------
# NB201 index <-> string (the list AutoDL's exps/NAS-Bench-201/main.py generate_meta_info builds)

_NB201_SHA256 = "83abc799e45cf34e9d2163654668ab998b9a54d01c39e72ca1f71f2cdf356d84"
_NB201_ARCHS = None  # benchmark's 15,625 arch strings in index order; built on first use, never at import
_NB201_INDEX = None  # its inverse, {arch string: index}


def _nb201_table():
    global _NB201_ARCHS, _NB201_INDEX
    if _NB201_ARCHS is None:
        # The benchmark enumerated all 5^6 assignments first edge slowest (= itertools.product), then called
        # random.seed(88); random.shuffle(list). A private Random(88) draws the identical permutation (the
        # module functions are methods of one hidden Random) and leaves the global RNG alone.
        archs = [_NB201_TEMPLATE.format(*ops) for ops in itertools.product(NB201_OPS, repeat=len(NB201_EDGES))]
        random.Random(88).shuffle(archs)
        if hashlib.sha256("\n".join(archs).encode("utf-8")).hexdigest() != _NB201_SHA256:
            raise RuntimeError("this Python's random.shuffle differs from the one NAS-Bench-201 was built with, "
                               "so regenerated NB201 indices would be wrong (list sha256 mismatch)")
        _NB201_ARCHS, _NB201_INDEX = archs, {a: i for i, a in enumerate(archs)}
    return _NB201_ARCHS, _NB201_INDEX


def nb201_index(arch):
    """Benchmark index 0..15624 of an NB201Cell or arch string (partial strings are completed first)."""
    return _nb201_table()[1][NB201Cell.from_str(arch).to_str()]


def nb201_arch(index):
    """The full arch string at benchmark index 0..15624."""
    archs = _nb201_table()[0]
    try:
        if isinstance(index, bool):
            raise TypeError
        i = operator.index(index)
    except TypeError:
        raise InputError(f"an NB201 index must be an integer, got {type(index).__name__} {index!r}") from None
    if not 0 <= i < len(archs):
        raise InputError(f"NB201 index {i} is out of range 0..{len(archs) - 1}")
    return archs[i]


# ---------------------------------------------------------------------------------------------------------------
# JSON, loading, DOT

def _cell(genotype, kind):
    if kind not in ("normal", "reduce"):
        raise InputError(f"a DARTS genotype has 'normal' and 'reduce' cells, not {kind!r}")
    return getattr(genotype, kind), getattr(genotype, kind + "_concat")


def genotype_to_json(genotype):
    """A JSON-ready dict: {"cell": "nb201", "arch": str} or {"cell": "darts", normal, normal_concat, ...}."""
    if isinstance(genotype, NB201Cell):
        return {"cell": "nb201", "arch": genotype.to_str()}
    out = {"cell": "darts"}
    for kind in ("normal", "reduce"):
        pairs, concat = _cell(genotype, kind)
        out[kind] = [[op, int(j)] for op, j in pairs]
        out[kind + "_concat"] = [int(s) for s in concat]
    return out


def _pairs(pairs, kind):
    """Validated (op, input) pairs of one DARTS cell: 2 per node, node i takes inputs 0..i+1."""
    pairs = list(pairs)
    if len(pairs) != 8:
        raise InputError(f"a DARTS {kind} cell has 8 (op, input) pairs, got {len(pairs)}")
    out = []
    for p, pair in enumerate(pairs):
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)
        ok = ok and pair[0] in DARTS_CELL_OPS
        if not ok or isinstance(pair[1], bool) or not isinstance(pair[1], int) or not 0 <= pair[1] <= p // 2 + 1:
            raise InputError(f"bad {kind} pair {p} {pair!r}: want (op, input) with op a DARTS/S1-S4 op, "
                             f"input in 0..{p // 2 + 1}")
        out.append((pair[0], pair[1]))
    return out


def genotype_from_json(d):
    """Inverse of genotype_to_json; extra keys (space, nb201_index, metrics, ...) are ignored."""
    if not isinstance(d, dict):
        raise InputError(f"genotype JSON must be an object, got {type(d).__name__}")
    cell = d.get("cell", "darts" if "normal" in d else "nb201" if "arch" in d or "nb201_index" in d else None)
    if cell == "nb201":
        return NB201Cell.from_str(d["arch"] if "arch" in d else nb201_arch(d.get("nb201_index")), partial=False)
    if cell == "darts" and "normal" in d and "reduce" in d:
        concat = {k: [int(s) for s in d.get(k + "_concat", DARTS_CONCAT)] for k in ("normal", "reduce")}
        return Genotype(_pairs(d["normal"], "normal"), concat["normal"], _pairs(d["reduce"], "reduce"),
                        concat["reduce"])
    if cell not in (None, "nb201", "darts"):
        raise InputError(f"genotype JSON: 'cell' is {cell!r}, not 'nb201' or 'darts'")
    if cell == "darts":  # e.g. an NB201 'arch' under cell 'darts': say what that kind lacks
        raise InputError(f"genotype JSON of cell 'darts' needs 'normal' and 'reduce'; keys: {sorted(d)}")
    raise InputError(f"genotype JSON needs 'arch' (NB201) or 'normal' and 'reduce' (DARTS); keys: {sorted(d)}")


def _genotype_from_text(text):
    """Parse `Genotype(normal=[...], normal_concat=range(2, 6), ...)` as DARTS' logs print it (no eval)."""
    try:
        call = ast.parse(text, mode="eval").body
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Genotype"):
            raise InputError("not a Genotype(...) call")
        fields = {}
        for kw in call.keywords:
            v = kw.value
            is_range = isinstance(v, ast.Call) and getattr(v.func, "id", None) == "range"
            fields[kw.arg] = list(range(*map(ast.literal_eval, v.args))) if is_range else ast.literal_eval(v)
    except (SyntaxError, ValueError, TypeError) as e:
        raise InputError(f"cannot read Genotype text {text[:60]!r}...: {str(e).splitlines()[0]}") from None
    return genotype_from_json(fields)


def load_genotype(spec):
    """A published name, an NB201 string (all 6 edges) or index, a genotype.json path, a dict, or Genotype(...)
    text."""
    if isinstance(spec, (NB201Cell, Genotype)):
        return spec
    if isinstance(spec, dict):
        return genotype_from_json(spec)
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if isinstance(spec, int) or type(spec).__name__.startswith(("int", "uint")):  # Python or numpy integer
        return NB201Cell.from_str(nb201_arch(spec))
    if not isinstance(spec, str):
        raise InputError(f"cannot load a genotype from a {type(spec).__name__}")
    text = spec.strip()
    by_name = {name.lower(): g for name, g in PUBLISHED.items()}
    if text.lower() in by_name:
        return by_name[text.lower()]
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as f:
            try:
                return genotype_from_json(json.load(f))
            except json.JSONDecodeError as e:
                raise InputError(f"{text}: not valid JSON ({e})") from None
    if text.startswith("{"):
        return genotype_from_json(json.loads(text))
    if "~" in text:
        return NB201Cell.from_str(text, partial=False)
    if text.startswith("Genotype("):
        return _genotype_from_text(text)
    if text.isdigit():
        return NB201Cell.from_str(nb201_arch(int(text)))
    if text.endswith(".json"):
        raise InputError(f"genotype file {text!r} does not exist")
    raise InputError(f"unknown genotype {spec!r}: not a published name ({', '.join(PUBLISHED)}), an NB201 arch "
                     f"string or index, a JSON file or Genotype(...) text")


def to_dot(genotype, kind="normal"):
    """Graphviz DOT text of one cell; render with `dot -Tpng cell.dot -o cell.png`."""
    if isinstance(genotype, NB201Cell):
        _nb201_cell(genotype, kind)
        lines = ["digraph nb201_cell {", "  rankdir=LR;", '  node [shape=circle];', '  "0" [shape=box];']
        lines += [f'  "{j}" -> "{i}" [label="{op}"];' for (i, j), op in zip(NB201_EDGES, genotype.ops)
                  if op != "none"]  # none = no connection; node 3 is the cell output
        return "\n".join(lines + ['  "3" [shape=doublecircle];', "}"]) + "\n"
    pairs, concat = _cell(genotype, kind)
    names = ["c_{k-2}", "c_{k-1}", "0", "1", "2", "3"]  # state index -> node name (quark0/darts cnn/genotypes.py)
    lines = [f"digraph {kind}_cell {{", "  rankdir=LR;", "  node [shape=circle];",
             '  "c_{k-2}" [shape=box]; "c_{k-1}" [shape=box]; "c_{k}" [shape=box];']
    lines += [f'  "{names[j]}" -> "{p // 2}" [label="{op}"];' for p, (op, j) in enumerate(pairs)]
    lines += [f'  "{names[s]}" -> "c_{{k}}";' for s in concat]  # output = concat of these states
    return "\n".join(lines + ["}"]) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Published cells (quark0/darts cnn/genotypes.py, yuhuixu1993/PC-DARTS genotypes.py, chenxin061/pdarts
# genotypes.py; RF-DARTS paper Table 3). Pairs per node: node0 = pairs 1-2, ..., node3 = pairs 7-8.

_SEP3, _SEP5, _DIL3, _DIL5 = "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"
_SKIP, _MAX, _AVG = "skip_connect", "max_pool_3x3", "avg_pool_3x3"


def _g(normal, reduce):
    return Genotype(normal, list(DARTS_CONCAT), reduce, list(DARTS_CONCAT))


DARTS_V1 = _g(
    [(_SEP3, 1), (_SEP3, 0), (_SKIP, 0), (_SEP3, 1), (_SKIP, 0), (_SEP3, 1), (_SEP3, 0), (_SKIP, 2)],
    [(_MAX, 0), (_MAX, 1), (_SKIP, 2), (_MAX, 0), (_MAX, 0), (_SKIP, 2), (_SKIP, 2), (_AVG, 0)])
DARTS_V2 = _g(
    [(_SEP3, 0), (_SEP3, 1), (_SEP3, 0), (_SEP3, 1), (_SEP3, 1), (_SKIP, 0), (_SKIP, 0), (_DIL3, 2)],
    [(_MAX, 0), (_MAX, 1), (_SKIP, 2), (_MAX, 1), (_MAX, 0), (_SKIP, 2), (_SKIP, 2), (_MAX, 1)])
DARTS = DARTS_V2
PC_DARTS_cifar = _g(
    [(_SEP3, 1), (_SKIP, 0), (_SEP3, 0), (_DIL3, 1), (_SEP5, 0), (_SEP3, 1), (_AVG, 0), (_DIL3, 1)],
    [(_SEP5, 1), (_MAX, 0), (_SEP5, 1), (_SEP5, 2), (_SEP3, 0), (_SEP3, 3), (_SEP3, 1), (_SEP3, 2)])
PCDARTS = PC_DARTS_cifar
PC_DARTS_image = _g(
    [(_SKIP, 1), (_SEP3, 0), (_SEP3, 0), (_SKIP, 1), (_SEP3, 1), (_SEP3, 3), (_SEP3, 1), (_DIL5, 4)],
    [(_SEP3, 0), (_SKIP, 1), (_DIL5, 2), (_MAX, 1), (_SEP3, 2), (_SEP3, 1), (_SEP5, 0), (_SEP3, 3)])
PDARTS = _g(
    [(_SKIP, 0), (_DIL3, 1), (_SKIP, 0), (_SEP3, 1), (_SEP3, 1), (_SEP3, 3), (_SEP3, 0), (_DIL5, 4)],
    [(_AVG, 0), (_SEP5, 1), (_SEP3, 0), (_DIL5, 2), (_MAX, 0), (_DIL3, 1), (_DIL3, 1), (_DIL5, 3)])
# RF-DARTS' best NB201 cell (paper Table 3, Fig. 5; test 94.36 on CIFAR-10), NB201 index 9930.
RF_DARTS_NB201 = NB201Cell.from_str(
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")

PUBLISHED = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS, "PC_DARTS_cifar": PC_DARTS_cifar,
             "PCDARTS": PCDARTS, "PC_DARTS_image": PC_DARTS_image, "PDARTS": PDARTS,
             "RF_DARTS_NB201": RF_DARTS_NB201}
