"""The search supernets, the mixed op of Eq. (1)/(6), and Table 1's options A-D.

  MixedOp        o_bar(x) = sum_o softmax(alpha)_o * o(x)  over one edge's own candidates (Eq. 1, 6)
                 with optional partial channels (PC-DARTS: only C/K channels enter the ops)
  NB201SearchCell      NAS-Bench-201 search cell: node_i = sum_{j<i} o_bar_{i<-j}(node_j), output node 3
  DartsSearchCell      DARTS search cell: 2 inputs, 4 nodes, 14 edges, output concat of the 4 nodes;
                 optional PC-DARTS edge normalisation (softmax(beta) over each node's in-edges)
  NB201Supernet  stem, 3 stages of N cells joined by ResNet blocks, BN-ReLU, pool, linear
                 (AutoDL search_model_darts.py)
  DartsSupernet  stem (CIFAR 3x3 conv or the ImageNet 3-conv stem), L cells with reductions at L//3
                 and 2L//3, pool, linear (quark0/darts cnn/model_search.py; PC-DARTS model_search_imagenet.py)
  set_trainable  Table 1: which of conv / cell BN affine weights are trained (C = RF-DARTS, Eq. 7-8)
  check_supernet what build_supernet cannot build (nb201 with partial channels, C not divisible by K, ...),
                 checked without building anything

One supernet serves all four options: every BN inside a cell is built affine, and options B/D freeze
gamma = 1, beta = 0 at their init, which computes exactly what DARTS' affine=False BN computes.
Architecture parameters are nn.Parameters (they move with .to() and live in state_dict) but are
reached only through `arch_parameters()`; `weight_parameters()` is everything else.
Needs torch, ops.py and spaces.py only.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ops import ResNetBasicblock, FactorizedReduce, ReLUConvBN, Zero, make_op
from spaces import InputError, get_space

OPTIONS = {  # Table 1 of the paper: (train conv weights, train cell BN affine weights)
    "A": (True, True),
    "B": (True, False),   # DARTS, PC-DARTS, P-DARTS
    "C": (False, True),   # RF-DARTS: random (frozen) convolutions, trained BN
    "D": (False, False),
}


def channel_shuffle(x, groups):
    """(B, C, H, W) -> (B, C, H, W) with output channel c*groups + g = input channel g*(C/groups) + c."""
    B, C, H, W = x.shape
    return x.view(B, groups, C // groups, H, W).transpose(1, 2).reshape(B, C, H, W)


class MixedOp(nn.Module):
    """One edge: the softmax-weighted sum of its candidate ops (Eq. 1 for DARTS, Eq. 6 for RF-DARTS).

    With k > 1 (PC-DARTS, yuhuixu1993/PC-DARTS model_search.py) the ops see only the first C/k channels;
    the other channels bypass them (max-pooled 2x2 on stride-2 edges) and a channel shuffle with k groups follows.
    """

    def __init__(self, C, stride, op_names, pool_bn, k=1, track=False):
        super().__init__()
        if C % k:
            raise InputError(f"partial channels need C divisible by K, got C={C}, K={k}")
        self.k, self.stride = k, stride
        self.ops = nn.ModuleList(make_op(n, C // k, stride, True, track, pool_bn) for n in op_names)

    def forward(self, x, w):  # x: (B, C, H, W); w: (n_ops,) softmax weights of this edge
        xs = x[:, : x.shape[1] // self.k] if self.k > 1 else x
        # `none` contributes w * 0: skipping it changes neither the output nor any gradient.
        out = sum(w[i] * op(xs) for i, op in enumerate(self.ops) if not isinstance(op, Zero))
        if isinstance(out, int):  # an edge whose only candidate is `none`
            out = self.ops[0](xs)
        if self.k == 1:
            return out
        rest = x[:, x.shape[1] // self.k:]
        if self.stride == 2:
            rest = F.max_pool2d(rest, 2, 2)
        return channel_shuffle(torch.cat([out, rest], dim=1), self.k)


class NB201SearchCell(nn.Module):
    """NB201 search cell (AutoDL xautodl/models/cell_searchs/search_cells.py): complete DAG over 4 nodes,
    6 mixed edges, output node 3."""

    def __init__(self, space, C, track=False):
        super().__init__()
        self.edges = space.edges
        self.mixed = nn.ModuleList(MixedOp(C, 1, ops, False, 1, track) for ops in space.normal)

    def forward(self, x, weights):  # x: (B, C, H, W); weights: (6, 5) softmax(alpha)
        nodes = [x]
        for i in range(1, 4):
            nodes.append(sum(self.mixed[e](nodes[j], weights[e])
                             for e, (node, j) in enumerate(self.edges) if node == i))
        return nodes[-1]


class DartsSearchCell(nn.Module):
    """DARTS search cell (quark0/darts cnn/model_search.py). Edges from the cell inputs stride in reductions."""

    def __init__(self, op_lists, C_pp, C_p, C, reduction, reduction_prev, k=1, track=False):
        super().__init__()
        self.reduction = reduction
        self.pre0 = (FactorizedReduce(C_pp, C, True, track) if reduction_prev
                     else ReLUConvBN(C_pp, C, 1, 1, 0, affine=True, track=track))
        self.pre1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=True, track=track)
        self.inputs = [j for i in range(4) for j in range(i + 2)]  # edge e reads state inputs[e]
        self.mixed = nn.ModuleList(
            MixedOp(C, 2 if reduction and j < 2 else 1, ops, True, k, track)
            for ops, j in zip(op_lists, self.inputs))

    def forward(self, s0, s1, weights, betas=None):  # weights: (14, n_ops); betas: (14,) or None
        states = [self.pre0(s0), self.pre1(s1)]
        e = 0
        for i in range(4):
            n_in = i + 2
            # Edge normalisation (PC-DARTS): softmax over this node's incoming edges only.
            scale = F.softmax(betas[e:e + n_in], dim=-1) if betas is not None else None
            node = 0
            for j in range(n_in):
                h = self.mixed[e + j](states[j], weights[e + j])
                node = node + (scale[j] * h if scale is not None else h)
            states.append(node)
            e += n_in
        return torch.cat(states[2:], dim=1)  # (B, 4C, H', W')


class _Supernet(nn.Module):
    """What both supernets share: alpha (and beta) parameters and their accessors."""

    def _init_arch(self, space, edge_norm):
        self.space = space
        for kind in space.cell_kinds:  # 1e-3 * N(0, 1), "effectively zero" (quark0/darts cnn/model_search.py)
            setattr(self, f"alphas_{kind}", nn.Parameter(1e-3 * torch.randn(space.alpha_shape(kind))))
            if edge_norm:
                setattr(self, f"betas_{kind}", nn.Parameter(1e-3 * torch.randn(len(space.edges))))

    def alphas(self):
        """{"normal": (E, n), "reduce": (E, n)} raw architecture logits (no copy)."""
        return {k: getattr(self, f"alphas_{k}") for k in self.space.cell_kinds}

    def betas(self):
        """PC-DARTS edge-normalisation logits {"normal": (14,), ...}, or None without them."""
        if not hasattr(self, "betas_normal"):
            return None
        return {k: getattr(self, f"betas_{k}") for k in self.space.cell_kinds}

    def arch_parameters(self):
        return [p for n, p in self.named_parameters() if n.startswith(("alphas_", "betas_"))]

    def weight_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith(("alphas_", "betas_"))]

    def _weights(self):
        w = {k: F.softmax(a, dim=-1) for k, a in self.alphas().items()}
        return w, self.betas() or {}


class NB201Supernet(_Supernet):
    """NAS-Bench-201 search network (TinyNetworkDarts): C=16, N=5 cells per stage, one shared alpha."""

    def __init__(self, space, num_classes, C=16, N=5, track=False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        blocks, C_prev = [], C
        for stage, C_cur in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:  # the stages are joined by residual reduction blocks (affine, tracked BN)
                blocks.append(ResNetBasicblock(C_prev, C_cur, 2))
            blocks += [NB201SearchCell(space, C_cur, track) for _ in range(N)]
            C_prev = C_cur
        self.cells = nn.ModuleList(blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(C_prev, num_classes)
        self._init_arch(space, edge_norm=False)

    def forward(self, x):  # x: (B, 3, H, W) -> logits (B, num_classes)
        w, _ = self._weights()
        x = self.stem(x)
        for block in self.cells:
            x = block(x, w["normal"]) if isinstance(block, NB201SearchCell) else block(x)
        x = F.adaptive_avg_pool2d(self.lastact(x), 1).flatten(1)
        return self.classifier(x)


class DartsSupernet(_Supernet):
    """DARTS-space search network (model_search.py) for the darts and S1-S4 spaces."""

    def __init__(self, space, num_classes, C=16, layers=8, stem="cifar", k=1, edge_norm=False,
                 track=False):
        super().__init__()
        if stem == "cifar":  # 3x3 conv to 3C channels, resolution kept (stem_multiplier 3)
            self.stem0 = nn.Sequential(nn.Conv2d(3, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
            self.stem1 = None
        elif stem == "imagenet":  # PC-DARTS ImageNet search stem: three stride-2 convs, 224 -> 28
            self.stem0 = nn.Sequential(
                nn.Conv2d(3, 3 * C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(3 * C // 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(3 * C // 2, 3 * C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(3 * C))
            self.stem1 = nn.Sequential(
                nn.ReLU(inplace=True), nn.Conv2d(3 * C, 3 * C, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(3 * C))
        else:
            raise InputError(f"unknown stem {stem!r}; choose 'cifar' or 'imagenet'")
        C_pp, C_p, C_cur = 3 * C, 3 * C, C
        reduction_prev = stem == "imagenet"  # s0 (56x56) must be reduced to s1's 28x28
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_cur *= 2
            ops = space.reduce if reduction else space.normal
            self.cells.append(DartsSearchCell(ops, C_pp, C_p, C_cur, reduction, reduction_prev, k, track))
            reduction_prev = reduction
            C_pp, C_p = C_p, 4 * C_cur
        self.classifier = nn.Linear(C_p, num_classes)
        self._init_arch(space, edge_norm)

    def forward(self, x):
        w, b = self._weights()
        s0 = self.stem0(x)
        s1 = self.stem1(s0) if self.stem1 is not None else s0
        for cell in self.cells:
            kind = "reduce" if cell.reduction else "normal"
            s0, s1 = s1, cell(s0, s1, w[kind], b.get(kind))
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


INITS = ("kaiming", "xavier", "pytorch")  # init_convs' schemes


def check_supernet(space, C=None, layers=None, stem="cifar", pc_k=1, edge_norm=None, init="kaiming"):
    """Raise InputError for what build_supernet cannot build, without building anything (cheap: a
    search checks its settings with it before any data is read). C and layers: None = the default."""
    space = get_space(space) if isinstance(space, str) else space
    C, layers = space.C if C is None else C, space.layers if layers is None else layers
    if stem not in ("cifar", "imagenet"):
        raise InputError(f"unknown stem {stem!r}; choose 'cifar' or 'imagenet'")
    if init not in INITS:
        raise InputError(f"unknown init {init!r}; choose {', '.join(INITS)}")
    if C < 1 or layers < 1 or pc_k < 1:
        raise InputError(f"C={C}, layers={layers}, pc_k={pc_k}: each must be at least 1")
    if space.cell == "nb201":
        if pc_k != 1 or edge_norm or stem != "cifar":
            raise InputError("partial channels, edge normalisation and the ImageNet stem are for "
                             "DARTS-style spaces, not nb201")
        return
    if C % pc_k:  # every cell's C is C * 2^r, so C itself decides (MixedOp)
        raise InputError(f"partial channels need C divisible by K, got C={C}, K={pc_k}")
    if stem == "imagenet" and C % 2:  # the first cell reduces the stem's s0 through a FactorizedReduce
        raise InputError(f"FactorizedReduce needs an even number of output channels, got {C}: the ImageNet "
                         "stem needs an even C")


def init_convs(model, scheme="kaiming"):
    """Initialise every conv weight; linear layers keep PyTorch's default. The paper's variance argument
    (Sec. 4.2, Eq. 14-18) assumes He (Kaiming) or Xavier init; PyTorch's default (Kaiming-uniform,
    a=sqrt(5)) is neither."""
    if scheme == "pytorch":
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if scheme == "kaiming":  # Var[W] = 2 / fan_in: the condition 1/2 n Var[W] = 1 of Sec. 4.2
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif scheme == "xavier":
                nn.init.xavier_normal_(m.weight)
            else:
                raise InputError(f"unknown init {scheme!r}; choose {', '.join(INITS)}")


def build_supernet(space, num_classes, C=None, layers=None, stem="cifar", pc_k=1, edge_norm=None,
                   init="kaiming", track_running_stats=False, seed=0):
    """The search supernet of `space` (name or spaces.Space), seeded so two builds are identical.

    For nb201 `layers` is N, the cells per stage (default 5); for DARTS-style spaces the total number
    of cells (default 8). `pc_k` > 1 turns on partial channels and, unless edge_norm=False, the edge
    normalisation betas (PC-DARTS). Cell BN keeps no running statistics by default: it normalises with
    the batch's statistics in train and eval mode alike (as NATS-Bench's search cells; no evaluation then
    rests on running averages of frozen random features), so an image's logits depend on the batch it is
    in, in eval mode too. The classes take the same settings as N (NB201Supernet; `layers` here), k
    (MixedOp, the cells; `pc_k` here) and track (`track_running_stats` here).
    """
    space = get_space(space) if isinstance(space, str) else space
    C, layers = space.C if C is None else C, space.layers if layers is None else layers  # 0 is refused, not the default
    check_supernet(space, C, layers, stem, pc_k, edge_norm, init)
    edge_norm = pc_k > 1 if edge_norm is None else edge_norm
    with torch.random.fork_rng(devices=[]):  # a private, seeded init that leaves the caller's RNG be:
        torch.default_generator.manual_seed(int(seed))  # the CPU one only (torch.manual_seed would reseed CUDA too)
        if space.cell == "nb201":
            model = NB201Supernet(space, num_classes, C, layers, track_running_stats)
        else:
            model = DartsSupernet(space, num_classes, C, layers, stem, pc_k, edge_norm,
                                  track_running_stats)
        init_convs(model, init)
    return model


def _cell_bn_params(model):
    """ids of the BN affine parameters inside the cells: those DARTS builds with affine=False."""
    ids = set()
    for m in model.modules():
        if isinstance(m, (NB201SearchCell, DartsSearchCell)):
            ids |= {id(p) for b in m.modules() if isinstance(b, nn.BatchNorm2d) for p in b.parameters()}
    return ids


def param_groups(model):
    """Split the supernet's parameters by kind: conv, cell_bn, outer_bn, classifier, arch."""
    groups = {"conv": [], "cell_bn": [], "outer_bn": [], "classifier": [], "arch": []}
    cell_bn, arch = _cell_bn_params(model), {id(p) for p in model.arch_parameters()}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            if id(p) in arch:
                groups["arch"].append(p)
            elif isinstance(m, nn.BatchNorm2d):
                groups["cell_bn" if id(p) in cell_bn else "outer_bn"].append(p)
            elif isinstance(m, nn.Linear):
                groups["classifier"].append(p)
            else:
                groups["conv"].append(p)
    return groups


def set_trainable(model, option="C", train_classifier=True, verbose=False):
    """Table 1: set requires_grad for option A/B/C/D and return the parameter groups.

    The Table 1 columns act on every conv weight of the supernet and on the BN affine weights inside
    the cells. BN outside the cells (stem, NB201 reduction blocks, last BN) is affine in every
    reference supernet and stays trained in all options; the classifier is trained, except with
    train_classifier=False under C/D (it is then a random feature too; A/B train every weight anyway).
    Alpha/beta are always trained. Returns {group name: [parameters]} (param_groups); `verbose` prints a
    line per group (trained or frozen, tensors, elements).
    """
    option = str(option).upper()
    if option not in OPTIONS:
        raise InputError(f"unknown option {option!r}; choose one of A, B, C, D (paper Table 1)")
    train_conv, train_bn = OPTIONS[option]
    groups = param_groups(model)
    rule = {"conv": train_conv, "cell_bn": train_bn, "outer_bn": True,
            "classifier": train_classifier or train_conv, "arch": True}
    for name, params in groups.items():
        for p in params:
            p.requires_grad_(rule[name])
    if verbose:
        for name, params in groups.items():
            state = "trained" if rule[name] else "frozen"
            print(f"option {option}: {name:10s} {state:7s} {len(params):4d} tensors "
                  f"{sum(p.numel() for p in params):10,d} elements")
    return groups
