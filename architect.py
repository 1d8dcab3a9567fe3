"""Second-order (unrolled) architecture gradient of DARTS: Eq. (5)-(8) of DARTS, Eq. (4)-(5) of RF-DARTS.

    unrolled_arch_grads(model, weights, arch, w_opt, train_batch, valid_batch, sync=None) -> (grads, loss, correct)
    unrolled_arch_step(model, weights, w_opt, a_opt, train_batch, valid_batch, sync=None, clip=0.0) -> (loss, correct)

The bilevel objective is min_a L_val(w*(a), a) with w*(a) = argmin_w L_train(w, a). DARTS replaces
w*(a) by one virtual step of the weight optimiser, w' = w - xi * grad_w L_train(w, a) (Eq. 5-6 of
DARTS; Eq. 4-5 of RF-DARTS), with xi = the current weight lr. By the chain rule (DARTS Eq. 7)

    d/da L_val(w', a) = grad_a L_val(w', a) - xi * grad^2_{a,w} L_train(w, a) . v,
    v = grad_{w'} L_val(w', a)

and the mixed second derivative times v is taken by central differences (DARTS Eq. 8):

    grad^2_{a,w} L_train(w, a) . v ~= (grad_a L_train(w + eps v, a) - grad_a L_train(w - eps v, a))
                                      / (2 eps),    eps = 0.01 / ||v||  (2-norm over all weight tensors).

Note the parentheses: pt.darts (copied into NNI and NAS-Benchmark) wrote `(p - n) / 2.*eps`, which is
eps * (p - n) / 2, i.e. the Hessian term scaled by eps^2 (pt.darts issues #34, #43). tests/test_architect.py
checks this product against an exact double-backward Hessian-vector product.

As in the reference code (quark0/darts cnn/architect.py; NB201's DARTS-V2, D-X-Y/AutoDL-Projects
exps/NAS-Bench-201-algos/DARTS-V2.py) the virtual step is the SGD step with momentum and weight decay,
read from the weight optimiser BEFORE its own step of this iteration:

    w' = w - xi * (mu * m + grad_w L_train(w, a) + lambda * w).

There is no Nesterov term, even when the weight optimiser uses nesterov=True (NB201's settings): the
references drop it too. "weights" are the trainable weight tensors (for RF-DARTS, option C, the BN
affine weights and whatever set_trainable leaves trained); frozen tensors are constants of both levels.

Everything runs on the model in place: the real weights and all buffers are copied aside, overwritten
with w' (and w +- eps v), and restored from the copies at the end, bit for bit. That costs one extra
copy of the trainable weights and of the buffers (for option C just the BN affine and classifier
weights; the reference deep-copies the whole supernet each step) and is safe because each forward's graph is
consumed by its autograd.grad call before the next overwrite, so no graph ever sees a weight change
under it. Restoring the buffers means the four forwards (L_train at w, L_val at w', L_train at w +- eps v)
leave the BN running statistics as they were; the reference lets the three it runs on the real model
update them (quark0/darts cnn/architect.py). Needs torch only: any model whose forward gives logits.
"""
import torch
import torch.nn.functional as F


def _loss(model, x, y):
    """Cross-entropy of the model on (x, y); also returns the logits (B, num_classes)."""
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def _grads(loss, params, sync=None):
    """d loss / d params as a list, zeros for the tensors that loss does not depend on."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    if sync is not None:  # DDP: average over ranks, so that every rank takes the same virtual step
        sync(grads)
    return grads


def _set(params, values):
    """Overwrite the tensors' data without recording it in autograd (params are leaves)."""
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)


def _hyper(w_opt):
    """(xi, mu, lambda) of the weight optimiser: one SGD parameter group, as search.py builds it."""
    if not isinstance(w_opt, torch.optim.SGD):  # another optimiser's step is not the w' modelled here
        raise ValueError(f"the unrolled step models an SGD weight step; the weight optimiser is {type(w_opt).__name__}")
    if len(w_opt.param_groups) != 1:
        raise ValueError("the unrolled step needs a weight optimiser with a single parameter group")
    g = w_opt.param_groups[0]
    if g.get("dampening", 0):
        raise ValueError("the unrolled step models SGD without dampening")
    return g["lr"], g.get("momentum", 0.0), g.get("weight_decay", 0.0)


def virtual_weights(weights, grads, w_opt):
    """w' = w - xi * (mu * m + g + lambda * w) for each weight tensor (no Nesterov term).

    m is the SGD momentum buffer of the weight, zero before the optimiser's first step (its state is
    empty then, and momentum_buffer is None when momentum = 0). With nesterov=False this is exactly
    the step w_opt.step() would take with gradients g (unclipped).
    """
    xi, mu, wd = _hyper(w_opt)
    out = []
    for w, g in zip(weights, grads):
        m = w_opt.state.get(w, {}).get("momentum_buffer")
        d = g + wd * w if m is None else mu * m + g + wd * w  # same shape as w
        out.append(w - xi * d)
    return out


def hessian_vector_product(model, weights, arch, v, x, y, sync=None, r=0.01):
    """grad^2_{a,w} L_train(w, a) . v by central differences at w +- eps v, eps = r / ||v|| (r = 0.01).

    v: one tensor per weight (the list's global 2-norm sets eps). Returns one tensor per arch tensor:
    (g+ - g-) / (2 eps). Leaves the weights at w - eps v: the caller restores them.
    Accuracy: O(r^2) for a smooth loss (1e-5 relative in the tests, with SiLU). With ReLU, every unit
    whose input changes sign between w - eps v and w + eps v adds its jump in grad_a / (2 eps), which
    the exact (autograd) product does not see: measured 3.4x relative error at r = 0.01 on an option-C
    nb201 supernet (C=16, N=1, 32 random 32x32 images, float64), 7.5e-10 at r = 1e-5. That is DARTS'
    approximation, kept as published; at lr 0.025 it moved the alpha gradient by 3% (tests: r = 1e-5).
    RobustDARTS S4's `noise` op draws afresh in each of the two forwards, as in R-DARTS' code (which
    searched S4 second order): g+ - g- then also holds two noise draws' difference, scaled by 1 / (2 eps).
    """
    norm = torch.sqrt(sum((t * t).sum() for t in v))  # ||v||_2 over all weight tensors (0-dim)
    # v = 0 gives g+ = g- and a zero product; the clamp keeps eps finite then, without a host sync
    eps = r / norm.clamp_min(torch.finfo(norm.dtype).tiny)
    w = [p.detach().clone() for p in weights]
    _set(weights, [p + eps * t for p, t in zip(w, v)])
    g_pos = _grads(_loss(model, x, y)[0], arch)      # grad_a L_train(w + eps v, a)
    _set(weights, [p - eps * t for p, t in zip(w, v)])
    g_neg = _grads(_loss(model, x, y)[0], arch)      # grad_a L_train(w - eps v, a)
    hvp = [(p - n) / (2 * eps) for p, n in zip(g_pos, g_neg)]  # shaped like arch; NOT (p - n) / 2. * eps
    if sync is not None:  # linear in the per-rank gradients: averaging once is enough
        sync(hvp)
    return hvp


def unrolled_arch_grads(model, weights, arch, w_opt, train_batch, valid_batch, sync=None):
    """The unrolled gradient d/da L_val(w', a) for each tensor in `arch`; touches no .grad.

    weights: the trainable weight tensors (all in w_opt, requires_grad True); arch: alpha (and beta).
    train_batch / valid_batch: (x, y) pairs. Returns (grads, validation loss at w' (detached),
    correct predictions at w'), loss and count as device tensors like search.gradient_step. Weights and
    buffers are bit-identical afterwards. Under DDP, `sync(tensors)` averages a list of gradient tensors
    over the ranks in place (its return value is ignored; e.g. harness/ddp.py's average_grads).
    """
    (xt, yt), (xv, yv) = train_batch, valid_batch
    xi = _hyper(w_opt)[0]
    w_saved = [p.detach().clone() for p in weights]
    b_saved = [b.detach().clone() for b in model.buffers()]
    try:
        # 1. virtual step w' (DARTS Eq. 6 / RF-DARTS Eq. 5): one gradient of L_train at the real weights
        g_train = _grads(_loss(model, xt, yt)[0], weights, sync)  # one tensor shaped like each weight
        with torch.no_grad():
            w_virtual = virtual_weights(weights, g_train, w_opt)
        _set(weights, w_virtual)
        # 2. L_val(w', a); d_alpha = grad_a L_val(w', a) and v = grad_{w'} L_val(w', a) in one pass
        loss, logits = _loss(model, xv, yv)
        g_val = _grads(loss, list(arch) + list(weights), sync)
        d_alpha, v = g_val[:len(arch)], g_val[len(arch):]
        correct = (logits.argmax(1) == yv).sum()
        # 3. finite-difference Hessian-vector product around the REAL weights w (not w')
        _set(weights, w_saved)
        hvp = hessian_vector_product(model, weights, arch, v, xt, yt, sync)
    finally:  # restore from the copies (no w + eps v - eps v drift), also after an exception
        _set(weights, w_saved)
        with torch.no_grad():
            for b, s in zip(model.buffers(), b_saved):
                b.copy_(s)
    # 4. DARTS Eq. 7: grad_a L_val(w', a) - xi * grad^2_{a,w} L_train(w, a) . v
    grads = [d - xi * h for d, h in zip(d_alpha, hvp)]
    return grads, loss.detach(), correct


def unrolled_arch_step(model, weights, w_opt, a_opt, train_batch, valid_batch, sync=None, clip=0.0):
    """One second-order architecture step: write the unrolled gradient into .grad, step a_opt.

    The arch tensors are those a_opt optimises. Call it before the weight step of the iteration
    (DARTS order), so that the momentum buffer it reads is the one that step will use. `clip` > 0 caps
    the 2-norm of the unrolled gradient, as the first-order step caps its own (PC-DARTS ImageNet: 5).
    Returns (validation loss at w', correct predictions), device tensors.
    """
    arch = [p for g in a_opt.param_groups for p in g["params"]]  # alphas (E, n_ops) [, betas (E,)]
    grads, loss, correct = unrolled_arch_grads(model, weights, arch, w_opt, train_batch,
                                               valid_batch, sync)
    for a, g in zip(arch, grads):
        a.grad = g
    if clip:
        torch.nn.utils.clip_grad_norm_(arch, clip)
    a_opt.step()
    return loss, correct
