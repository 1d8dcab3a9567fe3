"""Candidate ops: shapes at stride 1 and 2, parameters, the exact reference structure details."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ops
from ops import OPS, FactorizedReduce, ResNetBasicblock, make_op
from spaces import DARTS_OPS, NB201_OPS, SPACE_NAMES, get_space

ALL_OPS = sorted(set(DARTS_OPS) | set(NB201_OPS) | {"noise"})
PARAM_FREE = ("none", "skip_connect", "avg_pool_3x3", "max_pool_3x3", "noise")


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_op_shape(name, stride):
    op = make_op(name, 8, stride)
    y = op(torch.randn(2, 8, 16, 16))
    assert y.shape == (2, 8, 16 // stride, 16 // stride)


@pytest.mark.parametrize("name", PARAM_FREE)
def test_parameter_free_ops(name):
    assert sum(p.numel() for p in make_op(name, 8, 1).parameters()) == 0


def test_pooling_bn_only_when_asked():
    # DARTS' search supernet puts BN after pooling; NB201 and the discrete networks do not.
    assert sum(p.numel() for p in make_op("avg_pool_3x3", 8, 1, pool_bn=True).parameters()) == 16
    assert sum(p.numel() for p in make_op("max_pool_3x3", 8, 2, pool_bn=True, affine=False).parameters()) == 0


def test_stride2_skip_is_factorized_reduce():
    assert isinstance(make_op("skip_connect", 8, 2), FactorizedReduce)
    x = torch.randn(1, 8, 8, 8)
    assert torch.equal(make_op("skip_connect", 8, 1)(x), x)


def test_none_is_zero_and_strided():
    y = make_op("none", 4, 2)(torch.randn(2, 4, 8, 8))
    assert y.shape == (2, 4, 4, 4) and not y.any()


def test_noise_ignores_input():
    op = make_op("noise", 4, 1)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    torch.manual_seed(0)
    a = op(x)
    torch.manual_seed(0)
    b = op(100 * torch.ones(2, 4, 8, 8))
    assert torch.equal(a, b)                       # same noise whatever the input values
    assert not a.requires_grad                     # no gradient path to the input
    assert abs(op(torch.zeros(64, 4, 16, 16)).std().item() - 1.0) < 0.05  # N(0, 1)


def test_avg_pool_excludes_padding():
    y = make_op("avg_pool_3x3", 1, 1)(torch.ones(1, 1, 4, 4))
    assert torch.allclose(y, torch.ones_like(y))   # count_include_pad=True would give 4/9 at corners
    for stride in (1, 2):  # the plain kernels, which CUDA runs (pool_3x3 swaps in others on the CPU)
        y = ops.avg_pool_3x3(torch.ones(1, 1, 5, 5), stride)
        assert torch.equal(y, torch.ones_like(y))


def test_no_conv_bias_anywhere():
    for name in ALL_OPS:
        for m in make_op(name, 8, 2, pool_bn=True).modules():
            if isinstance(m, nn.Conv2d):
                assert m.bias is None, name


def _convs(op):
    return [m for m in op.modules() if isinstance(m, nn.Conv2d)]


def test_conv_structures():
    sep = _convs(make_op("sep_conv_5x5", 8, 2))
    assert [c.kernel_size for c in sep] == [(5, 5), (1, 1), (5, 5), (1, 1)]
    assert [c.stride for c in sep] == [(2, 2), (1, 1), (1, 1), (1, 1)]   # only the first is strided
    assert sep[0].groups == 8 and sep[0].padding == (2, 2)
    dil = _convs(make_op("dil_conv_3x3", 8, 1))
    assert len(dil) == 2 and dil[0].dilation == (2, 2) and dil[0].padding == (2, 2)
    dil5 = _convs(make_op("dil_conv_5x5", 8, 1))
    assert dil5[0].padding == (4, 4)
    nor = make_op("nor_conv_3x3", 8, 1).op          # ReLU first, then conv, then BN
    assert [type(m) for m in nor] == [nn.ReLU, nn.Conv2d, nn.BatchNorm2d]
    # NB201 op counts: conv 9c^2 or c^2, plus BN gamma/beta 2c
    assert sum(p.numel() for p in make_op("nor_conv_3x3", 16).parameters()) == 9 * 256 + 32
    assert sum(p.numel() for p in make_op("nor_conv_1x1", 16).parameters()) == 256 + 32


def test_resnet_block():
    blk = ResNetBasicblock(16, 32, 2)
    x = torch.randn(2, 16, 32, 32)
    assert blk(x).shape == (2, 32, 16, 16)
    assert sum(p.numel() for p in blk.parameters()) == 14_464   # 4608 + 64 + 9216 + 64 + 512 (1x1 shortcut)
    # the shortcut averages each 2x2 patch, then a 1x1 conv (not a strided 1x1 conv: same count, other sums)
    (w,) = [m.weight for m in blk.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    shortcut = blk(x) - blk.conv_b(blk.conv_a(x))
    assert torch.allclose(shortcut, F.conv2d(F.avg_pool2d(x, 2), w), atol=1e-5)


def test_factorized_reduce_needs_even_channels():
    with pytest.raises(ValueError, match="even"):
        FactorizedReduce(8, 7)


def test_an_unknown_pooling_kind_is_refused():
    x = torch.randn(1, 2, 4, 4)
    assert torch.equal(ops.pool_3x3("max", x, 1), F.max_pool2d(x, 3, 1, 1))
    with pytest.raises(ValueError, match="unknown pooling kind 'Avg'"):
        ops.pool_3x3("Avg", x, 1)  # would otherwise max-pool
    with pytest.raises(ValueError, match="unknown pooling kind 'Avg'"):
        ops.Pool("Avg", 2, 1)  # when the module is built


def test_unknown_op_and_space():
    with pytest.raises(ValueError, match="unknown op 'conv_9x9'") as e:
        make_op("conv_9x9", 8)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown search space 'nb301'"):
        get_space("nb301")


def test_spaces_use_known_ops_only():
    for name in SPACE_NAMES:
        space = get_space(name)
        for kind in space.cell_kinds:
            lists = space.ops(kind)
            assert len(lists) == len(space.edges)
            assert all(op in OPS for ops in lists for op in ops)
            assert len({len(ops) for ops in lists}) == 1  # one alpha width per cell kind


def test_s1_table_spot_checks():
    s1 = get_space("s1")   # RobustDARTS src/spaces.py: the order inside each pair is the alpha column order
    assert s1.normal[5] == ("max_pool_3x3", "skip_connect")
    assert s1.normal[12] == ("dil_conv_3x3", "dil_conv_5x5")
    assert s1.reduce[1] == ("max_pool_3x3", "dil_conv_3x3")
    assert s1.reduce[6] == ("max_pool_3x3", "sep_conv_3x3")
    assert get_space("s3").normal[0] == ("none", "skip_connect", "sep_conv_3x3")
    assert get_space("s4").reduce[13] == ("noise", "sep_conv_3x3")


@pytest.mark.parametrize("size", [1, 2, 5, 8, 9])
@pytest.mark.parametrize("stride", [1, 2])
def test_pooling_equals_the_reference_modules(size, stride):
    # the fast implementations must compute exactly what nn.AvgPool2d / nn.MaxPool2d compute
    x = torch.randn(3, 4, size, size, requires_grad=True)
    ref_avg = nn.AvgPool2d(3, stride, 1, count_include_pad=False)(x)
    ref_max = nn.MaxPool2d(3, stride, 1)(x)
    assert torch.allclose(make_op("avg_pool_3x3", 4, stride)(x), ref_avg, atol=1e-6, rtol=1e-6)
    assert torch.equal(make_op("max_pool_3x3", 4, stride)(x), ref_max)
    g = torch.randn_like(ref_avg)
    (ga,) = torch.autograd.grad(ref_avg, x, g)
    (gb,) = torch.autograd.grad(make_op("avg_pool_3x3", 4, stride)(x), x, g)
    assert torch.allclose(ga, gb, atol=1e-6)
