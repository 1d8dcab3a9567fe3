"""networks.py: exact parameter counts of the published cells (counted as quark0/darts cnn/utils.py
count_parameters_in_MB), MACs against formulas from the layer shapes (AutoDL's xautodl/utils/flop_benchmark.py
convention), drop path, the auxiliary head and the noise op. Counting runs on the meta device (no memory, no init)."""
import pytest
import torch

import genotypes as G
from networks import (DartsCell, NetworkCIFAR, NetworkImageNet, TinyNetwork, count_macs, count_params,
                      drop_path)
from ops import Identity


def n_params(model):
    return round(count_params(model) * 1e6)


# name: (CIFAR-10 C=36 L=20, ImageNet 1000 classes C=48 L=14), aux head excluded (quark0/darts cnn/utils.py)
DARTS_COUNTS = {
    "DARTS_V2": (3_349_342, 4_718_752),
    "DARTS_V1": (3_169_414, 4_510_432),
    "PC_DARTS_cifar": (3_634_678, 5_270_560),
    "PC_DARTS_image": (3_721_510, 5_342_464),
    "PDARTS": (3_433_798, 4_944_352),
}


@pytest.mark.parametrize("name", DARTS_COUNTS)
def test_darts_param_counts(name):
    g = G.PUBLISHED[name]
    with torch.device("meta"):
        cifar, imagenet = NetworkCIFAR(g, 10), NetworkImageNet(g, 1000)
    assert (n_params(cifar), n_params(imagenet)) == DARTS_COUNTS[name]
    # DARTS' aux heads from their layer shapes (quark0/darts cnn/model.py): a 1x1 conv C_aux -> 128 + BN(128),
    # a 2x2 conv 128 -> 768 (+ BN(768) on CIFAR only), Linear(768, classes); C_aux = 4 x the channels of cell 2L//3
    def aux(C_aux, classes, bn768):
        return C_aux * 128 + 2 * 128 + 128 * 768 * 4 + (2 * 768 if bn768 else 0) + 768 * classes + classes
    assert sum(p.numel() for p in cifar.auxiliary_head.parameters()) == aux(4 * 36 * 4, 10, True)  # 476,426
    assert sum(p.numel() for p in imagenet.auxiliary_head.parameters()) == aux(4 * 48 * 4, 1000, False)  # 1,260,776
    with torch.device("meta"):
        assert n_params(NetworkCIFAR(g, 10, auxiliary=False)) == DARTS_COUNTS[name][0]


@pytest.mark.parametrize("index, params", [(1462, 1_531_546), (1835, 73_306), (11472, 559_386)])
def test_nb201_param_counts(index, params):
    cell = G.load_genotype(index)
    if index == 11472:
        assert str(cell) == "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    with torch.device("meta"):
        counts = [n_params(TinyNetwork(cell, k)) for k in (10, 100, 120)]
    assert counts == [params, params + 5_850, params + 7_150]  # classifier Linear(64, k): 64*k + k


# MACs are checked against formulas written from the layer shapes (below), never against count_macs' own
# output; the only pinned numbers are the FLOPs NATS-Bench stores (NATS-tss-v1_0-3ffb9-simple) for arch 0.

def nb201_macs(ops, classes, side):
    """MACs of NB201's infer network (C=16, N=5; AutoDL xautodl/models/cell_infers/tiny_network.py) by formula:
    a conv does C_in*k*k MACs per output element, a Linear in_features + 1 (bias). Stem 3x3 3->16 at `side`;
    ResNet blocks c/2->c (3x3 stride 2, 3x3, AvgPool + 1x1 shortcut) at side/2 and side/4; every
    nor_conv_kxk edge k*k*c*c*s*s in each of the 5 cells of stage (c, s); none / skip / avg_pool: 0."""
    stages = ((16, side), (32, side // 2), (64, side // 4))
    stem = 9 * 3 * 16 * side**2
    blocks = sum((9 * c // 2 * c + 9 * c * c + c // 2 * c) * s * s for c, s in stages[1:])
    kk = sum({"nor_conv_1x1": 1, "nor_conv_3x3": 9}.get(op, 0) for op in ops)
    return stem + blocks + 5 * kk * sum(c * c * s * s for c, s in stages) + 64 * classes + classes


NB201_UNIFORM = [G.NB201Cell.from_str("|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*[op] * 6))
                 for op in ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")]


def tiny_macs(cell, classes, side):
    with torch.device("meta"):
        return round(count_macs(TinyNetwork(cell, classes), side) * 1e6)


def test_nb201_macs_equal_the_formula():
    assert nb201_macs(["none"] * 6, 10, 32) == 7_783_050  # 442,368 stem + 2 x 3,670,016 blocks + 650 classifier
    cells = NB201_UNIFORM + [G.load_genotype(i) for i in (0, 11, 1462, 9930, 11472)]
    for cell in cells:
        for classes, side in ((10, 32), (100, 32), (120, 16)):
            assert tiny_macs(cell, classes, side) == nb201_macs(cell.ops, classes, side), (str(cell), classes)
    # NATS-Bench's stored FLOPs (M) of arch 0 (CIFAR-10, ImageNet16-120)
    assert tiny_macs(G.load_genotype(0), 10, 32) / 1e6 == pytest.approx(15.64737, abs=1e-5)
    assert tiny_macs(G.load_genotype(0), 120, 16) / 1e6 == pytest.approx(3.91948, abs=1e-5)


def test_nb201_macs_per_edge_increment():
    """skip_connect -> nor_conv_3x3 on one edge adds 9*c*c*s*s for each of the 5 cells of every stage."""
    per_cell = {32: 9 * (16**2 * 32**2 + 32**2 * 16**2 + 64**2 * 8**2), 16: 9 * (16**2 * 16**2 + 32**2 * 8**2
                                                                                + 64**2 * 4**2)}
    swaps = 0
    for index in range(0, 15625, 1117):  # 14 cells spread over the benchmark, 9 with a skip_connect edge
        ops = list(G.load_genotype(index).ops)
        for e in [e for e, op in enumerate(ops) if op == "skip_connect"][:1]:  # the first one
            swapped = G.NB201Cell.from_str("|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(
                *ops[:e], "nor_conv_3x3", *ops[e + 1:]))
            for classes, side in ((10, 32), (120, 16)):
                base = tiny_macs(G.load_genotype(index), classes, side)
                assert tiny_macs(swapped, classes, side) - base == 5 * per_cell[side], (index, e)
            swaps += 1
    assert swaps == 9


def darts_macs(genotype, classes, C, layers, imagenet):
    """MACs of DARTS' evaluation network by formula (quark0/darts cnn/model.py, operations.py; every conv
    bias-free, C_in/groups*k*k MACs per output element; the classifier in_features + 1). Reduction cells at
    L//3 and 2L//3 double c and halve the side. Per cell, at its input side: preprocess0 (ReLU-Conv1x1-BN, or
    after a reduction FactorizedReduce: two stride-2 1x1 convs to c/2 each) and preprocess1 c_in*c*s*s each.
    Per edge, at the cell's output side s: sep_conv_kxk twice (depthwise k*k*c + pointwise c*c)*s*s (only the
    first depthwise strided), dil_conv_kxk once; skip_connect at stride 2 is FactorizedReduce(c, c): c*c*s*s;
    pools, none and stride-1 skips: 0. The auxiliary head is not counted (count_macs runs in eval mode)."""
    if imagenet:  # stem0: 3x3/2 3->C/2 (112 px), 3x3/2 C/2->C (56 px); stem1: 3x3/2 C->C (28 px)
        macs = 9 * 3 * (C // 2) * 112**2 + 9 * (C // 2) * C * 56**2 + 9 * C * C * 28**2
        side, c_pp, c_p = 28, C, C
    else:  # stem: 3x3 3->3C at 32 px
        macs, side, c_pp, c_p = 9 * 3 * 3 * C * 32**2, 32, 3 * C, 3 * C
    c = C
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        c, out = (2 * c, side // 2) if reduction else (c, side)
        macs += (c_pp + c_p) * c * side**2
        for op, j in genotype.reduce if reduction else genotype.normal:
            k = int(op[-1]) if op[:8] in ("sep_conv", "dil_conv") else 0
            macs += {"sep_conv": 2, "dil_conv": 1}.get(op[:8], 0) * (k * k * c + c * c) * out**2
            macs += c * c * out**2 if op == "skip_connect" and reduction and j < 2 else 0
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        c_pp, c_p, side = c_p, len(concat) * c, out
    return macs + c_p * classes + classes


@pytest.mark.parametrize("name", DARTS_COUNTS)
def test_darts_macs_equal_the_formula(name):
    g = G.PUBLISHED[name]
    for net, size, args in ((NetworkImageNet, 224, (1000, 48, 14, True)), (NetworkCIFAR, 32, (10, 36, 20, False)),
                            (NetworkCIFAR, 32, (100, 16, 8, False))):
        with torch.device("meta"):
            model = net(g, args[0], C=args[1], layers=args[2])
        assert round(count_macs(model, size) * 1e6) == darts_macs(g, *args), (net.__name__, args)
        assert model.training  # count_macs restores the mode
    # The DARTS paper reports 574M multiply-adds for DARTS_V2 on ImageNet; its repository has no counter
    # and the conv + FC count above gives ~530M (others got 523-545M: quark0/darts issue 46), so it is not pinned.


def test_tiny_network_keeps_none_edges():
    net = TinyNetwork(G.load_genotype(11472), 10, C=4, N=1)
    assert all(len(c.layers) == 6 for c in net.cells if hasattr(c, "layers"))  # none edges are modules
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_nb201_networks_pool_bn_then_relu_features():
    """The head of NB201's TinyNetwork and search supernet: BN, ReLU, global average pool, linear; the
    pooled features are non-negative (ReLU last) and the classifier sees exactly them."""
    from supernet import build_supernet
    x = torch.randn(4, 3, 16, 16)
    for net in (TinyNetwork(G.load_genotype(11472), 10, C=4, N=1), build_supernet("nb201", 10, C=4, layers=1)):
        seen = []
        net.classifier.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        logits = net(x)
        assert seen[0].shape == (4, 16) and (seen[0] >= 0).all() and (seen[0] > 0).any()
        assert torch.allclose(logits, net.classifier(seen[0]))


def cell(pairs, C=4):
    """A normal DARTS cell with the same pairs in both cell kinds (inputs C channels, output 4C)."""
    return DartsCell(G.Genotype(pairs, [2, 3, 4, 5], pairs, [2, 3, 4, 5]), C, C, C, False, False)


def test_drop_path_function():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 2, 2)
    y = drop_path(x, 0.5)
    kept = (y != 0).flatten(1).any(1)
    assert 0 < kept.sum() < 64  # some samples dropped, some kept, whole samples at a time
    assert torch.allclose(y[kept], x[kept] / 0.5) and (y[~kept] == 0).all()


def test_drop_path_spares_identity_and_is_off_in_eval():
    s0, s1 = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    skips = cell([("skip_connect", 0), ("skip_connect", 1)] * 4)
    assert all(isinstance(op, Identity) for op in skips.ops)
    torch.manual_seed(0)
    assert torch.equal(skips(s0, s1, 0.9), skips(s0, s1, 0.0))  # identity edges are never dropped

    pools = cell([("max_pool_3x3", 0), ("avg_pool_3x3", 1)] * 4)
    torch.manual_seed(0)
    assert not torch.equal(pools(s0, s1, 0.5), pools(s0, s1, 0.0))  # other ops are, in training
    pools.eval()
    assert torch.equal(pools(s0, s1, 0.5), pools(s0, s1, 0.0))  # and never in eval mode


def test_aux_head_only_in_training():
    net = NetworkCIFAR(G.DARTS_V2, 10, C=4, layers=3, auxiliary=True)
    net.drop_path_prob = 0.2
    x = torch.randn(2, 3, 32, 32)
    logits, aux = net(x)
    assert logits.shape == aux.shape == (2, 10)
    net.eval()
    assert isinstance(net(x), torch.Tensor)
    assert isinstance(NetworkCIFAR(G.DARTS_V2, 10, C=4, layers=3, auxiliary=False)(x), torch.Tensor)
    # the heads pool 5x5 windows (quark0/darts cnn/model.py): stride 3 on CIFAR's 8x8, stride 2 on ImageNet's 7x7
    for net, size, starts in ((net, 8, (0, 3)), (NetworkImageNet(G.DARTS_V2, 10, C=4, layers=3), 7, (0, 2))):
        h = torch.randn(2, 3, size, size)
        pooled = net.auxiliary_head.features[:2](h)  # ReLU, AvgPool
        want = torch.stack([torch.stack([h.relu()[..., i:i + 5, j:j + 5].mean((-2, -1)) for j in starts], -1)
                            for i in starts], -2)
        assert torch.allclose(pooled, want, atol=1e-6)


def test_noise_stays_active_in_eval():
    # An S4-style cell (RobustDARTS' S4 genotypes keep noise): noise ops build, get drop path, and
    # resample in eval mode.
    pairs = [("noise", 0), ("sep_conv_3x3", 1), ("noise", 1), ("sep_conv_3x3", 2),
             ("noise", 2), ("sep_conv_3x3", 0), ("noise", 3), ("sep_conv_3x3", 4)]
    g = G.Genotype(pairs, [2, 3, 4, 5], pairs, [2, 3, 4, 5])
    net = NetworkCIFAR(g, 10, C=4, layers=3, auxiliary=False).eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(net(x), net(x))


def test_noise_edges_get_drop_path_in_training():
    """Noise is not an Identity, so drop path zeroes whole samples of it (automl/RobustDARTS
    src/evaluation/model.py): with p = 0.99 nearly every sample of an all-noise cell is exactly zero, with
    p = 0 none is (fresh N(0, 1) noise is never exactly 0)."""
    noise = cell([("noise", 0), ("noise", 1)] * 4)
    s0, s1 = torch.randn(64, 4, 4, 4), torch.randn(64, 4, 4, 4)
    torch.manual_seed(0)
    zero = (noise(s0, s1, 0.99).flatten(1) == 0).all(1)
    assert zero.sum() >= 32
    assert not (noise(s0, s1, 0.0).flatten(1) == 0).all(1).any()


def test_nb201_infer_cell_reads_each_edge_from_its_own_node():
    """InferCell against the cell written out by hand: node1 = e(1<-0)(x), node2 = e(2<-0)(x) + e(2<-1)(node1),
    node3 = e(3<-0)(x) + e(3<-1)(node1) + e(3<-2)(node2), edges in NB201's string order; every edge a
    different op, so reading any other node changes the output."""
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    net = TinyNetwork(G.NB201Cell.from_str(arch), 10, C=4, N=1).eval()
    infer = net.cells[0]
    e = infer.layers
    x = torch.randn(2, 4, 8, 8)
    node1 = e[0](x)
    node2 = e[1](x) + e[2](node1)
    node3 = e[3](x) + e[4](node1) + e[5](node2)
    assert torch.allclose(infer(x), node3, atol=1e-6)
    # and a hand-made all-skip cell is 4x: node1 = x, node2 = 2x, node3 = x + x + 2x
    skips = TinyNetwork(G.NB201Cell.from_str("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|"
                                             "skip_connect~1|skip_connect~2|"), 10, C=4, N=1).cells[0]
    assert torch.equal(skips(x), 4 * x)


def test_darts_cell_wires_darts_v2_as_written():
    """DartsCell against DARTS_V2's normal cell written out by hand (quark0/darts cnn/genotypes.py), after a
    reduction cell (s0 twice s1's size: FactorizedReduce preprocesses it): node2 = sep3(s0) + sep3(s1),
    node3 = sep3(s0) + sep3(s1), node4 = sep3(s1) + skip(s0), node5 = skip(s0) + dil3(node2), output their concat."""
    c = DartsCell(G.DARTS_V2, 8, 6, 4, reduction=False, reduction_prev=True).eval()
    s0, s1 = torch.randn(2, 8, 16, 16), torch.randn(2, 6, 8, 8)
    a, b = c.preprocess0(s0), c.preprocess1(s1)  # (2, 4, 8, 8) each
    op = c.ops
    n2 = op[0](a) + op[1](b)
    n3 = op[2](a) + op[3](b)
    n4 = op[4](b) + op[5](a)
    n5 = op[6](a) + op[7](n2)
    assert torch.allclose(c(s0, s1), torch.cat([n2, n3, n4, n5], 1), atol=1e-6)


def test_factorized_reduce_sees_every_other_pixel_twice_offset():
    """FactorizedReduce (quark0/darts cnn/operations.py): BN of the concat of a stride-2 1x1 conv of ReLU(x)
    and another of ReLU(x) shifted by one pixel (x[..., 1:, 1:]); so the halves read disjoint pixels."""
    from ops import FactorizedReduce
    fr = FactorizedReduce(3, 4).eval()
    x = torch.randn(2, 3, 8, 8)
    r = x.relu()
    a = torch.nn.functional.conv2d(r[..., ::2, ::2], fr.conv_1.weight)   # (2, 2, 4, 4)
    b = torch.nn.functional.conv2d(r[..., 1::2, 1::2], fr.conv_2.weight)  # the odd rows and columns
    assert torch.allclose(fr(x), fr.bn(torch.cat([a, b], 1)), atol=1e-6)
