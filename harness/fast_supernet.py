"""The NB201 search supernet's speed path: the same function of the same parameters, cheaper.

supernet.py's NB201SearchCell computes Eq. (1)/(6) as the paper writes it: every edge e = (i <- j) is a
MixedOp, sum_o softmax(alpha_e)_o * o(node_j), its candidate ops called one by one. FastNB201Cell computes
the same node sums rearranged; each rearrangement is exact in real arithmetic, so only float32 rounding
differs (tests/test_fast_supernet.py: losses, gradients and alpha after a few steps):

- `none` is skipped: it adds w * 0 and its alpha gets the gradient sum(0 * dL/dout) = 0 (as MixedOp does).
- ReLU and avg_pool_3x3 once per node instead of once per edge: nor_conv_1x1 and nor_conv_3x3 of every
  edge leaving node j start with the same ReLU(node_j), and every edge leaving j pools the same node_j
  (node 0 feeds 3 edges, node 1 two: per cell 3 ReLUs instead of 12 and 3 poolings instead of 6).
- the edge's op weight folded into BN's affine: w * (gamma * xhat + beta) = (w gamma) * xhat + w beta, so a
  conv branch costs conv + one BN, not conv + BN + a scaling pass (and the same in the backward).

Measured (results/README.md, "Speed"): 1.35-1.45x per eager iteration (C=8, N=5, batch 64, one
thread); compiled, no gain (inductor already shares the ReLUs and pools, fuses the sums and runs CPU
convs channels-last) and a 10x longer compile, so search.py and bench.py use it for eager steps only.
Stacking the convs of one node's edges into one wider conv was not faster on CPU.

`speed_up(model)` swaps the plain NB201 cells of a supernet for FastNB201Cells sharing their modules, so
parameter names, state_dict, optimiser entries and checkpoints are the plain model's; DARTS-style cells
stay plain. With --track_running_stats=1 the BN modules run themselves (they update their statistics)
and w scales their output, as in MixedOp; so does a BN someone hooks (harness/op_scale.py's probe).
`channels_last` puts the conv weights (and so, through the stem conv, every activation) in NHWC, the
layout oneDNN's CPU convolutions run fastest in (3x3 conv at 8 channels: ~2.5x). Not a paper module:
search.py and bench.py switch it with --fast=1.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ops import Identity, Pool, ReLUConvBN, Zero, pool_3x3
from supernet import NB201SearchCell

NB201_KINDS = {"none": Zero, "skip": Identity, "conv1": ReLUConvBN, "conv3": ReLUConvBN, "pool": Pool}


def _op_columns(mixed):
    """{kind: alpha column} of an edge holding exactly NB201's five ops with batch-statistics BN, else None."""
    cols = {}
    for n, op in enumerate(mixed.ops):
        if isinstance(op, ReLUConvBN):
            conv, norm = op.op[1], op.op[2]
            kind = {(1, 1): "conv1", (3, 3): "conv3"}.get(conv.kernel_size)
            if (kind is None or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1
                    or conv.padding != ((conv.kernel_size[0] - 1) // 2,) * 2 or not norm.affine):
                return None
        elif isinstance(op, Pool) and op.kind == "avg" and op.bn is None and op.stride == 1:
            kind = "pool"
        elif isinstance(op, Identity):
            kind = "skip"
        elif isinstance(op, Zero) and op.stride == 1:
            kind = "none"
        else:
            return None
        cols[kind] = n
    return cols if set(cols) == set(NB201_KINDS) and mixed.k == 1 else None


class FastNB201Cell(NB201SearchCell):
    """NB201SearchCell's forward, rearranged (module docstring). Built from a plain cell, sharing its
    `mixed` edges and so every parameter; isinstance(NB201SearchCell) holds, so the supernet's forward,
    set_trainable and param_groups treat it as the plain cell."""

    def __init__(self, cell, cols):
        nn.Module.__init__(self)  # not NB201SearchCell.__init__: the edges come built, from `cell`
        self.edges, self.mixed, self.col = cell.edges, cell.mixed, cols
        # per input node j: the edges leaving it, as (edge, target node)
        self.out_edges = [[(e, i) for e, (i, src) in enumerate(self.edges) if src == j] for j in range(3)]

    def branch(self, e, kind, relu_x, w):
        """w * BN(conv(relu_x)) of edge e's nor_conv (kind conv1 | conv3), w folded into BN's affine."""
        _, conv, norm = self.mixed[e].ops[self.col[kind]].op
        y = F.conv2d(relu_x, conv.weight, None, conv.stride, conv.padding)
        # The module itself runs when it updates (or, in eval, uses) running statistics, or when someone
        # hooks it (harness/op_scale.py reads each BN's input through a forward hook): w scales its output.
        if norm.track_running_stats or norm._forward_hooks or norm._forward_pre_hooks:
            return w * norm(y)
        return F.batch_norm(y, None, None, w * norm.weight, w * norm.bias, True, 0.0, norm.eps)

    def forward(self, x, weights):  # x: (B, C, H, W); weights: (6, n_ops) softmax(alpha)
        nodes, partial = [x], {}
        for j in range(3):
            xj = nodes[j]
            relu_x, pooled = F.relu(xj), pool_3x3("avg", xj, 1)  # shared by every edge leaving node j
            for e, i in self.out_edges[j]:
                w = weights[e]
                term = (w[self.col["skip"]] * xj + w[self.col["pool"]] * pooled
                        + self.branch(e, "conv1", relu_x, w[self.col["conv1"]])
                        + self.branch(e, "conv3", relu_x, w[self.col["conv3"]]))
                partial[i] = term if i not in partial else partial[i] + term
            nodes.append(partial[j + 1])
        return nodes[3]


def speed_up(model, channels_last=True):
    """In place: every plain NB201 search cell of `model` becomes a FastNB201Cell on the same modules and,
    with channels_last, the conv weights go NHWC. Returns the number of cells swapped (0 for DARTS-style
    supernets)."""
    swapped = 0
    for module in model.modules():
        if not isinstance(module, nn.ModuleList):
            continue
        for idx, cell in enumerate(module):
            if type(cell) is NB201SearchCell and len(cell.edges) == 6:
                cols = [_op_columns(m) for m in cell.mixed]
                if all(c is not None and c == cols[0] for c in cols):
                    module[idx] = FastNB201Cell(cell, cols[0])
                    swapped += 1
    if channels_last and swapped:  # measured for the NB201 cells only (results/README.md, "Speed")
        model.to(memory_format=torch.channels_last)
    return swapped


def applies(fast, compiled):
    """Whether --fast swaps the cells: eager steps only (compiled, inductor does the same itself)."""
    return bool(fast) and not compiled
