"""Supernets: parity with the reference networks, forward/backward, and Table 1's options A-D."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from spaces import SPACE_NAMES
from supernet import build_supernet, param_groups, set_trainable


def n_elems(params):
    return sum(p.numel() for p in params)


def cell_bn_affine_elements(model):
    # gamma and beta of every BN that sits inside a cell: the ones DARTS builds with affine=False
    return n_elems(param_groups(model)["cell_bn"])


@pytest.mark.parametrize("space,reference", [
    ("darts", 1_930_618),   # quark0/darts cnn/model_search.py: the 8-op search network, C=16, L=8, CIFAR-10
    ("s1", 405_146),        # RobustDARTS' own log (experiments/search_logs/s1) "param size = 0.405146MB"
    ("s2", 665_466), ("s3", 665_466), ("s4", 624_506),   # counted from RobustDARTS src/search/model_search.py's shapes
])
def test_darts_style_parameter_counts(space, reference):
    model = build_supernet(space, 10)
    total = n_elems(model.weight_parameters())
    bn_cells = [m for m in model.cells.modules() if isinstance(m, nn.BatchNorm2d)]
    assert cell_bn_affine_elements(model) == sum(2 * b.num_features for b in bn_cells)
    # with affine cell BN our count exceeds the reference by exactly those BN affine elements
    assert total - cell_bn_affine_elements(model) == reference
    assert total > reference


def test_nb201_parameter_count():
    model = build_supernet("nb201", 10)
    # 73,306 outside the cells (stem 464, ResNet blocks 14,464 + 57,600, last BN 128, classifier 650);
    # every edge holds a conv3x3 (243,040 network-wide,
    # BN affine included) and a conv1x1 (28,000); 6 edges.
    assert n_elems(model.weight_parameters()) == 73_306 + 6 * (243_040 + 28_000)
    # the benchmark's search supernet has affine=False cell BN: 2c per conv op per edge per cell
    assert cell_bn_affine_elements(model) == 6 * 2 * 2 * 5 * (16 + 32 + 64)
    assert [tuple(a.shape) for a in model.arch_parameters()] == [(6, 5)]


@pytest.mark.parametrize("space", SPACE_NAMES)
def test_forward_backward_every_space(space):
    model = build_supernet(space, 10, C=8 if space == "darts" else None)
    y = model(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10)
    y.logsumexp(1).sum().backward()
    for a in model.arch_parameters():
        assert a.grad is not None and a.grad.abs().sum() > 0


def test_arch_parameters_are_registered_but_separate():
    model = build_supernet("darts", 10, C=4, layers=3)
    names = {n for n, _ in model.named_parameters()}
    assert {"alphas_normal", "alphas_reduce"} <= names
    assert {"alphas_normal", "alphas_reduce"} <= set(model.state_dict())
    weights = {id(p) for p in model.weight_parameters()}
    assert not weights & {id(a) for a in model.arch_parameters()}
    assert len(weights) + 2 == len(list(model.parameters()))
    assert model.alphas()["normal"].shape == (14, 8)


def test_seeded_init_is_reproducible():
    a, b = build_supernet("nb201", 10, C=4, layers=1), build_supernet("nb201", 10, C=4, layers=1)
    c = build_supernet("nb201", 10, C=4, layers=1, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.alphas_normal, c.alphas_normal)


def test_a_build_leaves_every_random_generator_of_the_caller_alone(monkeypatch):
    """The seeded init is private: the caller's CPU stream goes on where it was, and no device generator (CUDA,
    MPS: torch.manual_seed reseeds them all) is touched, so a run's drop path / noise draws do not restart."""
    from bnnas import build_bnnas_supernet
    seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: seeded.append(("cuda", s)))
    monkeypatch.setattr(torch.mps, "manual_seed", lambda s: seeded.append(("mps", s)))
    torch.manual_seed(3)
    seeded.clear()
    before = torch.get_rng_state()
    a = build_supernet("nb201", 10, C=4, layers=1, seed=7)
    build_bnnas_supernet(10, C=4, N=1, seed=7)
    assert seeded == [] and torch.equal(torch.get_rng_state(), before)
    b = build_supernet("nb201", 10, C=4, layers=1, seed=np.int64(7))  # a seed from numpy (a sweep's arange) too
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_kaiming_init_of_frozen_convs():
    model = build_supernet("nb201", 10)
    w = model.cells[-1].mixed[0].ops[3].op[1].weight          # a 64 -> 64 3x3 conv
    assert abs(w.std().item() / (2 / (64 * 9)) ** 0.5 - 1) < 0.05   # He: Var = 2 / fan_in
    assert abs(model.alphas_normal).max() < 0.01                    # 1e-3 * N(0, 1)
    # fan in, not out, where they differ: the stem (3 -> 16) and each reduction block's first conv and shortcut
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels != m.out_channels]
    assert len(convs) == 5
    for w in convs:
        assert abs(w.std().item() / (2 / w[0].numel()) ** 0.5 - 1) < 0.15, w.shape


@pytest.mark.parametrize("option", ["A", "B", "C", "D"])
@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_options_freeze_exactly_what_table1_says(option, space):
    torch.manual_seed(0)
    model = build_supernet(space, 10, C=8, layers=1 if space == "nb201" else 3)
    groups = set_trainable(model, option, verbose=False)
    train_conv, train_bn = {"A": (1, 1), "B": (1, 0), "C": (0, 1), "D": (0, 0)}[option]
    expect = {"conv": train_conv, "cell_bn": train_bn, "outer_bn": 1, "classifier": 1, "arch": 1}
    for name, params in groups.items():
        assert params, name
        assert all(p.requires_grad == bool(expect[name]) for p in params), name
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # one weight step (SGD) on a train batch, then one alpha step (Adam) on a valid batch
    w_opt = torch.optim.SGD([p for p in model.weight_parameters() if p.requires_grad], lr=0.1,
                            momentum=0.9)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    nn.functional.cross_entropy(model(x), y).backward()
    w_opt.step()
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x.flip(0)), y).backward()
    a_opt.step()
    by_id = {id(p): n for n, p in model.named_parameters()}
    for name, params in groups.items():
        for p in params:
            changed = not torch.equal(before[by_id[id(p)]], p.detach())
            assert changed == bool(expect[name]), (name, by_id[id(p)])
    if not train_bn:   # frozen cell BN stays the identity affine map, i.e. DARTS' affine=False BN
        assert all(torch.all(p == (1 if by_id[id(p)].endswith(".weight") else 0)) for p in groups["cell_bn"])
        assert {by_id[id(p)].rsplit(".", 1)[1] for p in groups["cell_bn"]} == {"weight", "bias"}


def test_frozen_classifier_option():
    model = build_supernet("nb201", 10, C=4, layers=1)
    groups = set_trainable(model, "C", train_classifier=False, verbose=False)
    assert not any(p.requires_grad for p in groups["classifier"])
    groups = set_trainable(model, "A", train_classifier=False, verbose=False)
    assert all(p.requires_grad for p in groups["classifier"])   # A/B always train every weight


def test_set_trainable_prints_counts(capsys):
    set_trainable(build_supernet("nb201", 10, C=4, layers=1), "c", verbose=True)
    out = capsys.readouterr().out
    assert "option C: conv       frozen" in out and "cell_bn    trained" in out


def test_bad_names():
    model = build_supernet("nb201", 10, C=4, layers=1)
    with pytest.raises(ValueError, match="unknown option 'E'"):
        set_trainable(model, "E")
    with pytest.raises(ValueError, match="unknown search space"):
        build_supernet("nasbench101", 10)
    with pytest.raises(ValueError, match="not nb201"):
        build_supernet("nb201", 10, pc_k=4)
    for size in (dict(C=0), dict(layers=0)):  # None is the space's default; 0 is a mistake, not a default
        with pytest.raises(ValueError, match="must be at least 1"):
            build_supernet("nb201", 10, **size)
