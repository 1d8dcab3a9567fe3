"""architect.py: the unrolled alpha gradient against the bilevel objective, exact Hessian-vector
products, bit-exact restoration of weights and buffers, and the xi = 0 / first-order limit.

Numeric checks run in float64 on spaces without the noise op (nb201, s2), so f(alpha) is deterministic.
With eps = 0.01 / ||v|| the checks of the full gradient swap ReLU for SiLU (`smooth=True`): in these
tiny nets (4 images, 2x2 final maps) one ReLU unit whose input changes sign inside w +- eps v moves
grad_alpha L_train by a few percent, and the central difference reports that jump / (2 eps) as O(1)
error (measured: nb201 seed 0, error 7e-5 at eps 0.0070, 3.3 at 0.0075). That is the finite-difference
method, not the code: with a smooth loss the same code agrees to the O(eps^2) truncation error, and
the ReLU nets' product is checked with r = 1e-5 (no unit crosses its kink; error ~5e-10).
"""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import torch.nn as nn

import architect
from supernet import build_supernet, set_trainable

LR, MU, WD = 0.5, 0.9, 3e-4  # a large xi makes the Hessian term a sizeable part of the gradient


def setup(space="nb201", layers=1, option="C", lr=LR, dtype=torch.float64, track=False, seed=0,
          smooth=False):
    """A tiny supernet (ReLU -> SiLU if smooth), its SGD/Adam optimisers after one weight step (so a
    momentum buffer exists), and a train and a valid batch of 4 random 8x8 images."""
    model = build_supernet(space, 3, C=4, layers=layers, track_running_stats=track).to(dtype)
    if smooth:
        for m in list(model.modules()):
            for name, child in m.named_children():
                if isinstance(child, nn.ReLU):
                    setattr(m, name, nn.SiLU())
    model.train()
    set_trainable(model, option, verbose=False)
    weights = [p for p in model.weight_parameters() if p.requires_grad]
    w_opt = torch.optim.SGD(weights, lr, momentum=MU, weight_decay=WD)
    a_opt = torch.optim.Adam(model.arch_parameters(), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    g = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(4, 3, 8, 8, generator=g, dtype=dtype), torch.randint(0, 3, (4,), generator=g))
               for _ in range(3)]
    with torch.no_grad():  # alphas away from ~0, so the softmax is not flat
        for a in model.arch_parameters():
            a.copy_(torch.randn(a.shape, generator=g, dtype=dtype))
    x, y = batches[2]  # one SGD step with a small lr: non-zero momentum buffers
    w_opt.param_groups[0]["lr"] = 0.01
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights, allow_unused=True)
    for p, gr in zip(weights, grads):
        p.grad = gr
    w_opt.step()
    w_opt.param_groups[0]["lr"] = lr
    for p in weights:
        p.grad = None
    return model, weights, w_opt, a_opt, batches[0], batches[1]


def bilevel(model, weights, w_opt, train, valid, create_graph):
    """f(alpha) = L_val(w - xi (mu m + grad_w L_train(w, alpha) + lambda w), alpha), built directly."""
    names = {id(p): n for n, p in model.named_parameters()}
    g = torch.autograd.grad(F.cross_entropy(model(train[0]), train[1]), weights,
                            create_graph=create_graph, allow_unused=True)
    new = {}
    for w, gw in zip(weights, g):
        gw = torch.zeros_like(w) if gw is None else gw
        m = w_opt.state[w]["momentum_buffer"]
        new[names[id(w)]] = w - LR * (MU * m + gw + WD * w)
    return F.cross_entropy(functional_call(model, new, (valid[0],)), valid[1])


def exact_hvp(model, weights, arch, v, x, y):
    """grad^2_{alpha,w} L_train . v by double backward."""
    g = torch.autograd.grad(F.cross_entropy(model(x), y), weights, create_graph=True, allow_unused=True)
    s = sum((gw * t).sum() for gw, t in zip(g, v) if gw is not None)
    return [torch.zeros_like(a) if h is None else h
            for a, h in zip(arch, torch.autograd.grad(s, arch, allow_unused=True))]


def flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("space,layers,option", [("nb201", 1, "C"), ("s2", 3, "C"), ("nb201", 1, "A")])
def test_unrolled_gradient_matches_the_bilevel_objective(space, layers, option):
    model, weights, w_opt, a_opt, train, valid = setup(space, layers, option, smooth=True)
    arch = model.arch_parameters()
    grads, loss, _ = architect.unrolled_arch_grads(model, weights, arch, w_opt, train, valid)
    ours = flat(grads)
    # exact total derivative of f by double backward through the virtual step
    exact = flat(torch.autograd.grad(bilevel(model, weights, w_opt, train, valid, True), arch))
    # the only approximation is the central-difference Hessian term: O(eps^2), measured 1e-5 .. 1e-4
    assert rel(ours, exact) < 3e-4, rel(ours, exact)
    # the loss returned is f(alpha) itself
    assert torch.allclose(loss, bilevel(model, weights, w_opt, train, valid, False), rtol=1e-12)
    # central differences of f along a random direction d in alpha space (h = 1e-5, float64)
    g = torch.Generator().manual_seed(2)
    d = [torch.randn(a.shape, generator=g, dtype=a.dtype) for a in arch]
    h, saved = 1e-5, [a.detach().clone() for a in arch]
    fs = []
    for sign in (1, -1):
        with torch.no_grad():
            for a, s, t in zip(arch, saved, d):
                a.copy_(s + sign * h * t)
        fs.append(bilevel(model, weights, w_opt, train, valid, False).item())
    with torch.no_grad():
        for a, s in zip(arch, saved):
            a.copy_(s)
    fd = (fs[0] - fs[1]) / (2 * h)
    assert abs((exact * flat(d)).sum().item() - fd) < 1e-7 * abs(fd)  # the reference itself is right
    directional = (ours * flat(d)).sum().item()
    assert abs(directional - fd) < 3e-4 * abs(fd), (directional, fd)
    # the second-order correction is far larger than the tolerances above
    first = flat(torch.autograd.grad(bilevel(model, weights, w_opt, train, valid, False), arch))
    assert rel(first, exact) > 1e-2


@pytest.mark.parametrize("space,layers,smooth,r", [("nb201", 1, True, 0.01), ("s2", 3, True, 0.01),
                                                   ("nb201", 1, False, 1e-5), ("s2", 3, False, 1e-5)])
def test_hessian_vector_product_is_exact_not_eps_squared(space, layers, smooth, r):
    """pt.darts' `(p - n) / 2.*eps` is eps^2 times the true product: this check fails by orders."""
    model, weights, w_opt, _, train, _ = setup(space, layers, smooth=smooth)
    arch = model.arch_parameters()
    g = torch.Generator().manual_seed(1)
    v = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in weights]
    before = [w.detach().clone() for w in weights]
    hvp = flat(architect.hessian_vector_product(model, weights, arch, v, *train, r=r))
    architect._set(weights, before)
    exact = flat(exact_hvp(model, weights, arch, v, *train))
    assert rel(hvp, exact) < (1e-4 if r == 0.01 else 1e-7), rel(hvp, exact)  # ~2e-5 / ~5e-10
    eps = r / flat(v).norm()
    assert rel(hvp * eps ** 2, exact) > 0.99  # the buggy scaling is caught


def test_step_restores_weights_and_buffers_bitwise_and_moves_only_alpha():
    model, weights, w_opt, a_opt, train, valid = setup("s2", 3, "C", dtype=torch.float32, track=True)
    groups = set_trainable(model, "C", verbose=False)
    conv_ids = {id(p) for p in groups["conv"]}
    assert conv_ids and not conv_ids & {id(w) for w in weights}  # option C: convs are not "weights"
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    assert any(n.endswith("running_mean") for n in buffers)
    loss, correct = architect.unrolled_arch_step(model, weights, w_opt, a_opt, train, valid)
    assert loss.dim() == 0 and not loss.requires_grad and 0 <= correct.item() <= 4
    for n, p in model.named_parameters():
        same = torch.equal(p, params[n])
        assert (not same) if n.startswith("alphas_") else same, n
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n
    assert all(w.grad is None for w in weights)
    assert all(a.grad is not None for a in model.arch_parameters())
    model(train[0])  # a plain forward does move the running statistics: the check above is not empty
    assert not all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())


def test_xi_zero_gives_the_first_order_gradient():
    model, weights, w_opt, _, train, valid = setup("nb201", 1, "C", lr=0.0)
    arch = model.arch_parameters()
    grads, _, _ = architect.unrolled_arch_grads(model, weights, arch, w_opt, train, valid)
    first = torch.autograd.grad(F.cross_entropy(model(valid[0]), valid[1]), arch)
    for a, b in zip(grads, first):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)


def test_virtual_weights_are_the_sgd_step_before_and_after_the_first_step():
    model, weights, _, _, train, _ = setup("nb201", 1, "C")
    w_opt = torch.optim.SGD(weights, 0.1, momentum=MU, weight_decay=WD)
    for _ in range(2):  # first step: no momentum buffer yet; second: buffer from the first
        g = torch.autograd.grad(F.cross_entropy(model(train[0]), train[1]), weights)
        virtual = architect.virtual_weights(weights, g, w_opt)
        for p, gr in zip(weights, g):
            p.grad = gr
        w_opt.step()
        for p, v in zip(weights, virtual):
            assert torch.allclose(p, v, rtol=1e-13, atol=1e-15)


def test_a_weight_optimiser_the_virtual_step_does_not_model_is_refused():
    """w' is SGD's step with momentum and weight decay (one group, no dampening): Adam, two groups or
    dampening would make the unrolled gradient quietly that of another step."""
    model, weights, _, _, train, valid = setup("nb201", 1, "C")
    arch = model.arch_parameters()
    for w_opt, said in ((torch.optim.Adam(weights, 0.1), "models an SGD weight step; the weight optimiser is Adam"),
                        (torch.optim.SGD([{"params": weights[:1]}, {"params": weights[1:]}], 0.1),
                         "single parameter group"),
                        (torch.optim.SGD(weights, 0.1, momentum=MU, dampening=0.1), "without dampening")):
        with pytest.raises(ValueError, match=said):
            architect.unrolled_arch_grads(model, weights, arch, w_opt, train, valid)


def test_under_ddp_each_gradient_is_averaged_where_it_enters_the_unrolled_step():
    """`sync` (ddp.average_grads under torchrun) sees the weight gradient the virtual step takes, the valid
    gradient (alpha, then the weights: v), and the Hessian-vector product, each once, in that order; a sync
    that changes nothing (a second rank with the same gradients) leaves the alpha gradient bit for bit."""
    model, weights, w_opt, _, train, valid = setup("nb201", 1, "C")
    arch = model.arch_parameters()
    plain, _, _ = architect.unrolled_arch_grads(model, weights, arch, w_opt, train, valid)
    seen = []
    synced, _, _ = architect.unrolled_arch_grads(model, weights, arch, w_opt, train, valid,
                                                 sync=lambda grads: seen.append([tuple(g.shape) for g in grads]))
    w_shapes, a_shapes = [tuple(p.shape) for p in weights], [tuple(a.shape) for a in arch]
    assert seen == [w_shapes, a_shapes + w_shapes, a_shapes]
    assert all(torch.equal(a, b) for a, b in zip(plain, synced))
