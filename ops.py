"""Candidate operations of every search space, by their reference names, and their building blocks.

Owns the ops that sit on the edges of a cell (the o in Eq. (1)/(6) of the paper) plus the NB201 ResNet
reduction block. Structures follow the reference code exactly (NB201's paper-era AutoDL
lib/models/cell_operations.py; quark0/darts cnn/operations.py):

  NB201   none, skip_connect, nor_conv_1x1, nor_conv_3x3 (ReLU->Conv->BN), avg_pool_3x3 (no BN)
  DARTS   none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3/5x5 (the separable block twice),
          dil_conv_3x3/5x5 (dilation 2, once)
  R-DARTS noise (fresh N(0, 1) shaped like the strided input; the input's values are ignored)

Every convolution has bias=False (AutoDL's later `bias = not affine` puts one in its search cells; the NB201
paper's code and the benchmark's parameter counts have none); average pooling never counts the padding.
Each BN is one flag set: `affine` (learnable gamma/beta; RF-DARTS trains exactly these) and `track`
(running statistics).
`pool_bn=True` appends BN after a pooling op, which the DARTS code does inside its search supernet only.
Build any op with `make_op(name, C, stride)`; an unknown name raises one clear error.
Needs torch and spaces.py (its InputError) only.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from spaces import InputError


def bn(C, affine=True, track=True):
    # PyTorch defaults (eps 1e-5, momentum 0.1), as in every reference implementation.
    return nn.BatchNorm2d(C, affine=affine, track_running_stats=track)


class ReLUConvBN(nn.Module):
    """ReLU -> Conv(k, stride, pad, dilation) -> BN. NB201's nor_conv_kxk; DARTS' cell preprocessing."""

    def __init__(self, C_in, C_out, k, stride, pad, dilation=1, affine=True, track=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, k, stride=stride, padding=pad, dilation=dilation, bias=False),
            bn(C_out, affine, track))

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> depthwise k x k conv (dilated, strided) -> 1x1 conv -> BN. DARTS dil_conv_kxk."""

    def __init__(self, C_in, C_out, k, stride, pad, dilation, affine=True, track=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, k, stride=stride, padding=pad, dilation=dilation, groups=C_in,
                      bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            bn(C_out, affine, track))

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    """The DARTS separable block applied twice; only the first depthwise conv is strided."""

    def __init__(self, C_in, C_out, k, stride, pad, affine=True, track=True):
        super().__init__()
        self.op = nn.Sequential(
            DilConv(C_in, C_in, k, stride, pad, 1, affine, track),
            DilConv(C_in, C_out, k, 1, pad, 1, affine, track))

    def forward(self, x):
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    """`none`: zeros shaped like the (strided) input, with C_out channels. No parameters."""

    def __init__(self, stride, C_out=None):
        super().__init__()
        self.stride, self.C_out = stride, C_out

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]  # (B, C, H/s, W/s)
        if self.C_out is not None and self.C_out != x.shape[1]:
            return x.new_zeros(x.shape[0], self.C_out, *x.shape[2:])
        return x * 0.0  # as the reference: keeps dtype, device and memory format


class Noise(nn.Module):
    """RobustDARTS `noise`: i.i.d. N(0, 1), resampled every call (train and eval), input ignored."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        shape = x[:, :, ::self.stride, ::self.stride].shape
        return torch.randn(shape, dtype=x.dtype, device=x.device)  # no gradient path to x


class FactorizedReduce(nn.Module):
    """Halve H and W with two stride-2 1x1 convs, the second on the input shifted by one pixel."""

    def __init__(self, C_in, C_out, affine=True, track=True):
        super().__init__()
        if C_out % 2:
            raise InputError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = bn(C_out, affine, track)

    def forward(self, x):
        x = self.relu(x)
        # (B, C_out/2, H/2, W/2) twice; the [1:, 1:] shift makes the two halves see different pixels.
        # For odd H the shifted branch is one pixel smaller; pad it back (the reference assumes even H).
        a, b = self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])
        if b.shape[2:] != a.shape[2:]:
            b = nn.functional.pad(b, (0, a.shape[3] - b.shape[3], 0, a.shape[2] - b.shape[2]))
        return self.bn(torch.cat([a, b], dim=1))


def avg_pool_3x3(x, stride):
    """AvgPool2d(3, stride, padding=1, count_include_pad=False), as DARTS and NB201 use it."""
    return F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)


def max_pool_3x3(x, stride):
    """MaxPool2d(3, stride, padding=1)."""
    return F.max_pool2d(x, 3, stride, 1)


# CPU speed paths: the same numbers (tests/test_ops.py), measured on a 2-core CPU 3x (average) and
# 2.5x (max) faster than PyTorch's NCHW CPU pooling kernels, which took ~40% of an NB201 supernet step.
def _avg_pool_3x3_cpu(x, stride):
    """The average as a depthwise conv with a ones kernel, divided by the number of in-image pixels under
    each window (9 inside, 4 at corners; a 1-channel conv, folded into a constant under torch.compile)."""
    C, (H, W) = x.shape[1], x.shape[2:]
    sums = F.conv2d(x, x.new_ones(C, 1, 3, 3), stride=stride, padding=1, groups=C)
    counts = F.conv2d(x.new_ones(1, 1, H, W), x.new_ones(1, 1, 3, 3), stride=stride, padding=1)
    return sums / counts


def _max_pool_3x3_cpu(x, stride):
    """The channels-last kernel, layout conversions included."""
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 3, stride, 1).contiguous()


def _check_pool_kind(kind):
    if kind not in ("avg", "max"):  # anything else would silently max-pool
        raise InputError(f"unknown pooling kind {kind!r}; choose 'avg' or 'max'")


def pool_3x3(kind, x, stride):
    """The one place a device picks its pooling kernel: the CPU paths above on CPU, the plain calls
    (cuDNN's kernels on CUDA) everywhere else. `kind`: "avg" or "max"."""
    _check_pool_kind(kind)
    if x.device.type == "cpu":
        return (_avg_pool_3x3_cpu if kind == "avg" else _max_pool_3x3_cpu)(x, stride)
    return (avg_pool_3x3 if kind == "avg" else max_pool_3x3)(x, stride)


class Pool(nn.Module):
    """3x3 max or average pooling (padding 1, average excludes the padding), optionally then BN."""

    def __init__(self, kind, C, stride, pool_bn=False, affine=True, track=True):
        super().__init__()
        _check_pool_kind(kind)  # at build time, not at the first forward
        self.kind, self.stride = kind, stride
        # DARTS' search supernet appends BN to pooling so pooled outputs are on the scale of the
        # BN-normalised conv outputs they are summed with (DARTS cnn/operations.py, MixedOp in
        # cnn/model_search.py); NB201 has no such BN.
        self.bn = bn(C, affine, track) if pool_bn else None

    def forward(self, x):
        x = pool_3x3(self.kind, x, self.stride)
        return self.bn(x) if self.bn is not None else x


class ResNetBasicblock(nn.Module):
    """NB201 reduction block (ResNetBasicblock of AutoDL models/cell_operations.py, used by
    cell_infers/tiny_network.py): two ReLUConvBN 3x3 (first strided) + AvgPool/1x1 shortcut.

    No BN or ReLU on the shortcut and no activation after the sum, as in the benchmark's networks.
    """

    def __init__(self, C_in, C_out, stride=2, affine=True, track=True):
        super().__init__()
        assert stride == 2, "NB201 uses this block only to reduce"
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1, affine=affine, track=track)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine=affine, track=track)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


# name -> builder(C, stride, affine, track, pool_bn). Every op maps C channels to C channels.
OPS = {
    "none": lambda C, s, a, t, p: Zero(s),
    "noise": lambda C, s, a, t, p: Noise(s),
    "skip_connect": lambda C, s, a, t, p: Identity() if s == 1 else FactorizedReduce(C, C, a, t),
    "avg_pool_3x3": lambda C, s, a, t, p: Pool("avg", C, s, p, a, t),
    "max_pool_3x3": lambda C, s, a, t, p: Pool("max", C, s, p, a, t),
    "nor_conv_1x1": lambda C, s, a, t, p: ReLUConvBN(C, C, 1, s, 0, affine=a, track=t),
    "nor_conv_3x3": lambda C, s, a, t, p: ReLUConvBN(C, C, 3, s, 1, affine=a, track=t),
    "sep_conv_3x3": lambda C, s, a, t, p: SepConv(C, C, 3, s, 1, a, t),
    "sep_conv_5x5": lambda C, s, a, t, p: SepConv(C, C, 5, s, 2, a, t),
    "dil_conv_3x3": lambda C, s, a, t, p: DilConv(C, C, 3, s, 2, 2, a, t),
    "dil_conv_5x5": lambda C, s, a, t, p: DilConv(C, C, 5, s, 4, 2, a, t),
}


def make_op(name, C, stride=1, affine=True, track=True, pool_bn=False):
    """Build candidate op `name` for C channels at `stride` (1, or 2 on reduction edges)."""
    if name not in OPS:
        raise InputError(f"unknown op {name!r}; known ops: {', '.join(OPS)}")
    if stride not in (1, 2):
        raise InputError(f"op stride must be 1 or 2, got {stride}")
    return OPS[name](C, stride, affine, track, pool_bn)
