"""Search spaces as data: which candidate ops sit on which edge of which cell.

A space is a value, not a code path: the supernet (supernet.py) builds one mixed op per edge from the
edge's own candidate list, and derivation (genotypes.py) reads the same lists back. Six spaces:

  nb201      NAS-Bench-201 (AutoDL cell_operations.py, search_cells.py): 4-node cell, 6 edges, 5 ops on
             every edge, one cell kind.
  darts      DARTS (quark0/darts cnn/genotypes.py, cnn/model_search.py): 2-input cell, 4 nodes, 14 edges,
             8 ops, normal + reduce.
  s1 .. s4   RobustDARTS spaces (automl/RobustDARTS src/spaces.py) on the DARTS cell: S1 has its own pair of ops on
             every edge (op order inside a pair matters: alpha column k is the k-th op of that edge's
             list), S2 [skip, sep3x3], S3 [none, skip, sep3x3], S4 [noise, sep3x3] on all 14 edges.

Paper: RF-DARTS searches all six (Tables 2, 4, 6). Importing this file needs nothing but Python.
"""
from dataclasses import dataclass


class InputError(ValueError):
    """A name, string, file or value the user gave is not valid (unknown space or op, bad arch string,
    ...): reported as one line by the command-line scripts. Any other exception is a bug and keeps its
    traceback. Defined here, the paper module every other one but architect.py and bench201.py imports
    (bench201.py has its own QueryError / BenchmarkFileError, so it needs no other file), so each stays standalone."""

# Op order is the alpha column order (AutoDL cell_operations.py NAS_BENCH_201, quark0/darts cnn/genotypes.py
# PRIMITIVES). Never reorder.
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
DARTS_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")

# NB201 edges as (node i, input j), in the benchmark's row order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.
NB201_EDGES = tuple((i, j) for i in range(1, 4) for j in range(i))
# DARTS edges as (node i, input j): node i in 0..3 takes inputs j in 0..i+1 (0 = c_{k-2}, 1 = c_{k-1},
# j >= 2 = intermediate node j-2); numbered node by node, 14 in all (quark0/darts cnn/model_search.py).
DARTS_EDGES = tuple((i, j) for i in range(4) for j in range(i + 2))

_SK, _MP, _AP = "skip_connect", "max_pool_3x3", "avg_pool_3x3"
_S3, _D3, _D5 = "sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5"
# RobustDARTS S1, per edge [op0, op1] (automl/RobustDARTS src/spaces.py primitives_1).
S1_NORMAL = ((_SK, _D3), (_SK, _D5), (_SK, _D5), (_SK, _S3), (_SK, _D3), (_MP, _SK), (_SK, _S3),
             (_SK, _S3), (_SK, _D3), (_SK, _S3), (_MP, _SK), (_SK, _D3), (_D3, _D5), (_D3, _D5))
S1_REDUCE = ((_MP, _AP), (_MP, _D3), (_MP, _AP), (_MP, _AP), (_SK, _D5), (_MP, _AP), (_MP, _S3),
             (_SK, _D3), (_SK, _D5), (_MP, _AP), (_MP, _AP), (_SK, _D5), (_SK, _D5), (_SK, _D5))


@dataclass(frozen=True)
class Space:
    """One search space. `normal[e]` / `reduce[e]` = the ordered candidate ops of edge e."""
    name: str
    cell: str                     # "nb201" (single-input 4-node cell) or "darts" (2-input cell)
    normal: tuple                 # per-edge op lists of the normal cell (the only cell in nb201)
    reduce: tuple                 # per-edge op lists of the reduction cell; () for nb201
    # (node, input) per edge, same order as the op lists. nb201: nodes 1-3, input 0 the cell's input, j >= 1
    # node j. darts: nodes 0-3 (the cell's intermediate nodes), input 0 / 1 = c_{k-2} / c_{k-1}, j >= 2 node j - 2
    edges: tuple
    C: int                        # default initial channels of the search supernet
    layers: int                   # nb201: cells per stage (N); darts: total cells (L)

    @property
    def cell_kinds(self):
        """Cell kinds that own an alpha tensor: ("normal",) or ("normal", "reduce")."""
        return ("normal", "reduce") if self.reduce else ("normal",)

    def ops(self, kind):
        """Per-edge candidate lists of one cell kind."""
        if kind not in self.cell_kinds:
            raise InputError(f"space {self.name!r} has no {kind!r} cell (it has {self.cell_kinds})")
        return getattr(self, kind)

    def alpha_shape(self, kind):
        """(edges, ops per edge): every edge of a space has the same number of candidates."""
        lists = self.ops(kind)
        return (len(lists), len(lists[0]))


def _same(ops, n):
    return tuple(tuple(ops) for _ in range(n))


def _build(name):
    if name == "nb201":
        return Space("nb201", "nb201", _same(NB201_OPS, 6), (), NB201_EDGES, C=16, layers=5)
    lists = {
        "darts": (_same(DARTS_OPS, 14),) * 2,
        "s1": (S1_NORMAL, S1_REDUCE),
        "s2": (_same((_SK, _S3), 14),) * 2,
        "s3": (_same(("none", _SK, _S3), 14),) * 2,
        "s4": (_same(("noise", _S3), 14),) * 2,
    }[name]
    return Space(name, "darts", lists[0], lists[1], DARTS_EDGES, C=16, layers=8)


SPACE_NAMES = ("nb201", "darts", "s1", "s2", "s3", "s4")


def get_space(name):
    """The space called `name` (one of SPACE_NAMES, case-insensitive)."""
    key = str(name).lower()
    if key not in SPACE_NAMES:
        raise InputError(f"unknown search space {name!r}; choose one of {', '.join(SPACE_NAMES)}")
    return _build(key)
