"""networks.py: exact parameter counts and MACs of the published cells (counted as quark0/darts cnn/utils.py
count_parameters_in_MB and AutoDL's xautodl/utils/flop_benchmark.py count), drop path, the auxiliary head
and the noise op. Counting runs on the meta device (no memory, no init)."""
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
    assert sum(p.numel() for p in cifar.auxiliary_head.parameters()) == 476_426
    assert sum(p.numel() for p in imagenet.auxiliary_head.parameters()) == 1_260_776
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


def test_macs():
    with torch.device("meta"):
        nb201 = TinyNetwork(G.load_genotype(1462), 10)
        darts = NetworkImageNet(G.DARTS_V2, 1000)
    assert count_macs(nb201, 32) == pytest.approx(220.11969, abs=1e-5)  # NB201's stored FLOPs convention
    assert count_macs(TinyNetwork(G.load_genotype(0), 120), 16) == pytest.approx(3.91948, abs=1e-5)
    assert count_macs(darts, 224) == pytest.approx(529.91, abs=0.01)  # conv + FC only (the DARTS paper reports 574M)
    assert darts.training  # count_macs restores the mode


def test_tiny_network_keeps_none_edges():
    net = TinyNetwork(G.load_genotype(11472), 10, C=4, N=1)
    assert all(len(c.layers) == 6 for c in net.cells if hasattr(c, "layers"))  # none edges are modules
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)


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


def test_noise_stays_active_in_eval():
    # An S4-style cell (RobustDARTS' S4 genotypes keep noise): noise ops build, get drop path, and
    # resample in eval mode.
    pairs = [("noise", 0), ("sep_conv_3x3", 1), ("noise", 1), ("sep_conv_3x3", 2),
             ("noise", 2), ("sep_conv_3x3", 0), ("noise", 3), ("sep_conv_3x3", 4)]
    g = G.Genotype(pairs, [2, 3, 4, 5], pairs, [2, 3, 4, 5])
    net = NetworkCIFAR(g, 10, C=4, layers=3, auxiliary=False).eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(net(x), net(x))
