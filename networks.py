"""The discrete networks built from a genotype: what train.py retrains for the paper's Tables 3-6.

  TinyNetwork      NAS-Bench-201's infer network from an NB201Cell (AutoDL cell_infers/tiny_network.py): Table 3
  NetworkCIFAR     DARTS' evaluation network for 32 px data (quark0/darts cnn/model.py): Tables 4 and 6
  NetworkImageNet  DARTS' 224 px ImageNet network, two stems and AvgPool2d(7) (quark0/darts cnn/model.py): Tables 4, 5
  AuxiliaryHeadCIFAR, AuxiliaryHeadImageNet   the heads at cell 2L//3 (weight 0.4 is the caller's);
                   aux_fits tells whether the CIFAR head fits an image size
  drop_path        per-sample drop path, out of place
  count_params     parameters in millions, auxiliary head excluded (DARTS' count_parameters_in_MB)
  count_macs       conv + linear multiply-accumulates (bias terms included, NB201's convention), aux excluded

Interface: forward(x (B, 3, H, W)) returns logits (B, classes); a DARTS network built with
auxiliary=True returns (logits, aux_logits) in training mode only. TinyNetwork returns logits only (the
benchmark's network also returned the pooled features; nothing here needs them). Module names follow
the reference code (AutoDL's TinyNetwork; quark0/darts model.py) without leading underscores, and ops.SepConv
nests two DilConv blocks: a reference state_dict loads after its keys are mapped (same shapes and order).
Genotypes of S1-S4 build as well: `noise` stays active in eval mode and receives drop path like any op
that is not an Identity (as in automl/RobustDARTS src/evaluation/model.py).
Needs torch, ops.py and spaces.py only: a cell is read by duck typing (TinyNetwork: an object whose `.ops`
lists the 6 edges' op names, as genotypes.NB201Cell; the DARTS networks: normal / normal_concat / reduce /
reduce_concat, as genotypes.Genotype).
"""
import torch
import torch.nn as nn

from ops import FactorizedReduce, Identity, ReLUConvBN, ResNetBasicblock, make_op
from spaces import NB201_EDGES


def drop_path(x, p):
    """Zero whole samples with probability p, scale the kept ones by 1/(1-p); x (B, C, H, W).

    The reference does this in place on the op output; out of place it is the same maths and safe
    under autograd. p is a float or a 0-dim tensor (see train.py --compile=1).
    """
    keep = 1.0 - p
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)  # (B,1,1,1)
    return x / keep * mask


# ---------------------------------------------------------------------------------------------- NB201

class InferCell(nn.Module):
    """NB201 cell with fixed ops: node_i = sum over j < i of op_{i<-j}(node_j); output node 3.
    Every edge is a module, `none` (Zero) included, exactly as the benchmark built its networks."""

    def __init__(self, cell, C):
        super().__init__()
        self.layers = nn.ModuleList(make_op(op, C, 1) for op in cell.ops)  # affine, tracked BN

    def forward(self, x):  # (B, C, H, W) -> (B, C, H, W)
        nodes = [x]
        for i in range(1, 4):
            nodes.append(sum(self.layers[e](nodes[j]) for e, (n, j) in enumerate(NB201_EDGES) if n == i))
        return nodes[-1]


class TinyNetwork(nn.Module):
    """NB201 infer network: stem (conv+BN, no ReLU), 3 stages of N cells joined by ResNet blocks,
    BN+ReLU, global average pooling, Linear. 32 px in -> 32/16/8 px stages (16 px: 16/8/4)."""

    def __init__(self, cell, num_classes, C=16, N=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        blocks, C_prev = [], C
        for stage, C_cur in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                blocks.append(ResNetBasicblock(C_prev, C_cur, 2))
            blocks += [InferCell(cell, C_cur) for _ in range(N)]
            C_prev = C_cur
        self.cells = nn.ModuleList(blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for block in self.cells:
            x = block(x)
        x = self.global_pooling(self.lastact(x)).flatten(1)  # (B, 4C)
        return self.classifier(x)


# ---------------------------------------------------------------------------------------------- DARTS

class DartsCell(nn.Module):
    """DARTS evaluation cell (quark0/darts cnn/model.py Cell): node i = op_2i(state_a) + op_2i+1(state_b), output the
    concat of the listed states. In a reduction cell the ops reading the cell inputs (index < 2) stride 2."""

    def __init__(self, genotype, C_pp, C_p, C, reduction, reduction_prev):
        super().__init__()
        # s0 is twice s1's size after a reduction cell: FactorizedReduce brings it down to s1's.
        self.preprocess0 = (FactorizedReduce(C_pp, C) if reduction_prev
                            else ReLUConvBN(C_pp, C, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0)
        pairs = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.indices = [j for _, j in pairs]
        self.ops = nn.ModuleList(make_op(op, C, 2 if reduction and j < 2 else 1) for op, j in pairs)
        self.multiplier = len(self.concat)

    def forward(self, s0, s1, drop_prob=0.0):
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # each (B, C, H, W)
        # A 0-dim tensor p (train.py --compile=1) keeps drop path in the graph at every p, 0 included.
        dropping = self.training and (torch.is_tensor(drop_prob) or drop_prob > 0)
        for i in range(len(self.ops) // 2):
            node = 0
            for k in (2 * i, 2 * i + 1):
                h = self.ops[k](states[self.indices[k]])
                # Identity (stride-1 skip) is never dropped; everything else is, noise included.
                if dropping and not isinstance(self.ops[k], Identity):
                    h = drop_path(h, drop_prob)
                node = node + h
            states.append(node)
        return torch.cat([states[s] for s in self.concat], dim=1)  # (B, multiplier*C, H', W')


class AuxiliaryHeadCIFAR(nn.Module):
    """For an 8x8 input: ReLU, AvgPool 5/3 -> 2x2, 1x1 conv 128 + BN + ReLU, 2x2 conv 768 + BN + ReLU."""

    def __init__(self, C, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(), nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU())
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):  # (B, C, 8, 8) -> (B, classes)
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadImageNet(nn.Module):
    """For a 7x7 input: as the CIFAR head with AvgPool 5/2 and, as in the reference, no BN after the
    768-channel conv (the author kept a typo for consistency with the paper; quark0/darts cnn/model.py)."""

    def __init__(self, C, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(), nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False), nn.ReLU())
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):  # (B, C, 7, 7) -> (B, classes)
        return self.classifier(self.features(x).flatten(1))


class _DartsNetwork(nn.Module):
    """The cell stack both DARTS networks share: reductions at L//3 and 2L//3 (channels double), the
    auxiliary head on the output of cell 2L//3, drop path set by the caller through drop_path_prob."""

    def _build_cells(self, genotype, num_classes, C, layers, auxiliary, C_pp, C_p, reduction_prev, head):
        self.layers = layers
        self.drop_path_prob = 0.0  # set by the training loop every epoch, as in DARTS' cnn/train.py
        self.aux_at = 2 * layers // 3
        self.cells, C_cur = nn.ModuleList(), C
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            C_cur = 2 * C_cur if reduction else C_cur
            cell = DartsCell(genotype, C_pp, C_p, C_cur, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_cur
            if i == self.aux_at:
                C_aux = C_p
        # Named "auxiliary_head" so that the DARTS parameter count (names without "auxiliary") skips it.
        self.auxiliary_head = head(C_aux, num_classes) if auxiliary else None
        self.classifier = nn.Linear(C_p, num_classes)

    def _cells(self, s0, s1):
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_at and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return (logits, aux) if aux is not None else logits


class NetworkCIFAR(_DartsNetwork):
    """DARTS evaluation network for 32 px images: stem 3x3 conv to 3C + BN, `layers` cells, GAP, Linear.
    C=36, 20 layers: cells 6 and 13 reduce (36 -> 72 -> 144 channels; outputs 144/288/576).
    With `auxiliary` (DARTS' default) the forward in train mode returns (logits, auxiliary logits), the head
    after cell 2L/3 (aux_fits says whether it fits the image size); in eval mode, or without it, logits."""

    def __init__(self, genotype, num_classes, C=36, layers=20, auxiliary=True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
        self._build_cells(genotype, num_classes, C, layers, auxiliary, 3 * C, 3 * C, False,
                          AuxiliaryHeadCIFAR)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):  # (B, 3, 32, 32)
        s = self.stem(x)  # (B, 3C, 32, 32)
        return self._cells(s, s)


def aux_fits(size, layers):
    """Whether AuxiliaryHeadCIFAR fits size x size images: cell 2L//3 follows both reductions (L//3,
    2L//3), each halving the side (rounding up); AvgPool 5/3 must then give 2x2, i.e. an 8-10 px map."""
    for _ in {layers // 3, 2 * layers // 3}:
        size = -(-size // 2)
    return 8 <= size <= 10


class NetworkImageNet(_DartsNetwork):
    """DARTS ImageNet network: stem0 224 -> 56 (two stride-2 convs), stem1 56 -> 28, cells at 28/14/7,
    AvgPool2d(7), Linear. Needs 224 x 224 input. No 3x stem multiplier."""

    def __init__(self, genotype, num_classes, C=48, layers=14, auxiliary=True):
        super().__init__()
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2), nn.ReLU(),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
        self.stem1 = nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(C))
        # reduction_prev=True: cell 0's preprocess0 brings s0 (56 px) down to s1's 28 px.
        self._build_cells(genotype, num_classes, C, layers, auxiliary, C, C, True, AuxiliaryHeadImageNet)
        self.global_pooling = nn.AvgPool2d(7)

    def forward(self, x):  # (B, 3, 224, 224)
        s0 = self.stem0(x)  # (B, C, 56, 56)
        s1 = self.stem1(s0)  # (B, C, 28, 28)
        return self._cells(s0, s1)


# ---------------------------------------------------------------------------------------------- costs

def count_params(model):
    """Parameters in millions, auxiliary head excluded, BN affine included (DARTS' convention; NB201's
    "MB" is the same number). Accepts a DDP-wrapped model."""
    return sum(p.numel() for n, p in model.named_parameters() if "auxiliary" not in n) / 1e6


@torch.no_grad()
def count_macs(model, size):
    """Multiply-accumulates (in millions) of one size x size image through every Conv2d and Linear:
    k_h*k_w*C_in/groups per output element, plus one per output element for a bias (NB201's
    flop_benchmark convention). Runs once in eval mode, so the auxiliary head is not counted.
    Pooling, BN, ReLU and additions are not counted (AutoDL xautodl/utils/flop_benchmark.py; the DARTS
    repositories have no FLOP counter)."""
    total = [0]

    def hook(m, inputs, out):
        per_out = m.weight[0].numel()  # conv: C_in/groups*k_h*k_w; linear: in_features
        total[0] += out.numel() * (per_out + (m.bias is not None))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros(1, 3, size, size, dtype=p.dtype, device=p.device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0] / 1e6
