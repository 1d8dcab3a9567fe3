"""The search's two steps and the loop that alternates them (paper Eq. 7-8): each step is one update of
its own parameters by the formula, leaves every other tensor bit-identical, clips its own gradient norm;
each space takes the steps in its reference code's order; alpha waits for --arch_start across a resume;
the learning rates and optimiser settings are the reference ones."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

import architect
import search
from harness import cli, runs
from supernet import build_supernet, set_trainable

TINY = ["--dataset=imagefolder", "--C=4", "--batch_size=4", "--log_every=1", "--device=cpu"]


def run(folder, out, *extra, stop=None):
    argv = TINY + [f"--data={folder}", f"--out={out}", *extra]
    return search.search(search.make_config(argv), stop=stop)


def tiny_supernet(option):
    """A float64 NB201 supernet with Table 1's option applied, a batch, and its parameter groups."""
    torch.manual_seed(0)
    model = build_supernet("nb201", 3, C=4, layers=1, seed=1).double()
    groups = set_trainable(model, option, verbose=False)
    weights = [p for p in model.weight_parameters() if p.requires_grad]
    x, y = torch.randn(6, 3, 16, 16, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    return model, groups["arch"], weights, x, y


def clipped(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_'s rule written out: scale by max_norm / (norm + 1e-6) if below 1."""
    if not max_norm:
        return grads
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    return [g * min(1.0, max_norm / (float(norm) + 1e-6)) for g in grads]


def names_of(model, params):
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("clip", [0.0, 1e-3])
def test_weight_step_is_one_sgd_step_of_the_trained_weights_and_nothing_else(clip):
    """Eq. 8 under option C: w_bn <- w_bn - lr * grad_w_bn CE (clipped), convs and alpha untouched."""
    model, arch, weights, x, y = tiny_supernet("C")
    trained = names_of(model, weights)
    assert trained and not any("alphas" in n for n in trained)
    ref = copy.deepcopy(model)
    ref_w = [(n, p) for n, p in ref.named_parameters() if n in trained]
    grads = clipped(torch.autograd.grad(F.cross_entropy(ref(x), y), [p for _, p in ref_w]), clip)
    expected = {n: (p - 0.1 * g).detach() for (n, p), g in zip(ref_w, grads)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    search.weight_step(model, weights, arch, torch.optim.SGD(weights, 0.1), x, y, clip)
    for n, p in model.named_parameters():
        if n in trained:
            torch.testing.assert_close(p.detach(), expected[n], rtol=1e-12, atol=1e-14, msg=n)
        else:  # alpha, every frozen conv: bit for bit
            assert torch.equal(p, before[n]), n
        assert p.requires_grad == flags[n], n  # alpha's flag is back on
    assert all(a.grad is None for a in arch)
    moved = torch.sqrt(sum(((dict(model.named_parameters())[n].detach() - before[n]) ** 2).sum() for n in trained))
    if clip:  # the gradient norm is far above 1e-3 here: the step has length lr * 1e-3
        assert math.isclose(float(moved), 0.1 * 1e-3, rel_tol=1e-3)


@pytest.mark.parametrize("clip", [0.0, 1e-3])
def test_alpha_step_is_one_adam_step_of_alpha_and_nothing_else(clip):
    """Eq. 7 with xi = 0: Adam (betas 0.5, 0.999, weight decay 1e-3) on d CE / d alpha, clipped; every weight
    stays bit-identical and gets no gradient."""
    model, arch, weights, x, y = tiny_supernet("C")
    ref = copy.deepcopy(model)
    ref_arch = [p for n, p in ref.named_parameters() if "alphas" in n]
    grads = clipped(torch.autograd.grad(F.cross_entropy(ref(x), y), ref_arch), clip)
    for p, g in zip(ref_arch, grads):
        p.grad = g
    adam = dict(lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    torch.optim.Adam(ref_arch, **adam).step()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    search.alpha_step(model, arch, weights, torch.optim.Adam(arch, **adam), x, y, clip)
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        if "alphas" in n:
            assert not torch.equal(p, before[n])
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-12, atol=1e-14, msg=n)
        else:
            assert torch.equal(p, before[n]) and p.grad is None, n
    assert all(w.requires_grad for w in weights)


def record_steps(monkeypatch):
    """Wrap the loop's three step functions: each call appends ("w" | "a" | "u", batch sizes, the weight lr)."""
    calls, real_w, real_a, real_u = [], search.weight_step, search.alpha_step, architect.unrolled_arch_step

    def weight(model, weights, arch, opt, x, y, clip=0.0):
        calls.append(("w", len(x), opt.param_groups[0]["lr"]))
        return real_w(model, weights, arch, opt, x, y, clip)

    def alpha(model, arch, weights, opt, x, y, clip=0.0):
        calls.append(("a", len(x), None))
        return real_a(model, arch, weights, opt, x, y, clip)

    def unrolled(model, weights, w_opt, a_opt, train, valid, **kw):
        calls.append(("u", (len(train[0]), len(valid[0])), w_opt.param_groups[0]["lr"]))
        return real_u(model, weights, w_opt, a_opt, train, valid, **kw)

    monkeypatch.setattr(search, "weight_step", weight)
    monkeypatch.setattr(search, "alpha_step", alpha)
    monkeypatch.setattr(architect, "unrolled_arch_step", unrolled)
    return calls


def test_each_space_takes_its_steps_in_its_reference_order(tiny_folder, tmp_path, monkeypatch):
    """NB201's DARTS-V1: weight step, then alpha step; DARTS (every DARTS-style space): alpha first; the
    unrolled step always first (it reads the momentum buffer the weight step is about to use)."""
    calls = record_steps(monkeypatch)
    run(tiny_folder, tmp_path / "nb201", "--layers=1", "--epochs=1")
    assert [c[0] for c in calls] == ["w", "a"] * 3
    calls.clear()
    run(tiny_folder, tmp_path / "s2", "--space=s2", "--layers=2", "--epochs=1")
    assert [c[0] for c in calls] == ["a", "w"] * 3
    calls.clear()
    run(tiny_folder, tmp_path / "nb201_arch_first", "--layers=1", "--epochs=1", "--arch_first=1")
    assert [c[0] for c in calls] == ["a", "w"] * 3


def test_the_unrolled_step_gets_this_iterations_batches_and_the_epochs_lr(tiny_folder, tmp_path, monkeypatch):
    """12 images per half, batch 5: the virtual step (Eq. 7, xi = the weight lr) sees the weight batch of
    its own iteration (5, 5, then the partial 2) beside a full alpha batch, at that epoch's cosine lr."""
    calls = record_steps(monkeypatch)
    run(tiny_folder, tmp_path / "u", "--layers=1", "--epochs=2", "--batch_size=5", "--unrolled=1")
    lrs = [0.025, 0.001 + 0.024 / 2]  # cosine from 0.025 to 0.001 over 2 epochs
    expected = []
    for lr in lrs:
        for n in (5, 5, 2):
            expected += [("u", (n, 5), lr), ("w", n, lr)]
    assert calls == expected


def test_the_loop_passes_each_step_its_clip_and_lr_and_the_epoch_row_sums_what_the_steps_returned(
        tiny_folder, tmp_path, monkeypatch):
    """--grad_clip goes to the weight step, --arch_grad_clip to the alpha step; the warm-up scales the cosine
    lr (PC-DARTS); the history row's losses and accuracies are the image-weighted means of what this epoch's
    weight steps (train_*) and alpha steps (valid_*) returned: 12 images per half, batch 5 -> weight steps of
    5, 5, 2 images, alpha steps of 5."""
    seen, real_w, real_a = [], search.weight_step, search.alpha_step

    def weight(model, weights, arch, opt, x, y, clip=0.0):
        loss, correct = real_w(model, weights, arch, opt, x, y, clip)
        seen.append(("w", clip, opt.param_groups[0]["lr"], float(loss), int(correct), len(y)))
        return loss, correct

    def alpha(model, arch, weights, opt, x, y, clip=0.0):
        loss, correct = real_a(model, arch, weights, opt, x, y, clip)
        seen.append(("a", clip, None, float(loss), int(correct), len(y)))
        return loss, correct

    monkeypatch.setattr(search, "weight_step", weight)
    monkeypatch.setattr(search, "alpha_step", alpha)
    _, history = run(tiny_folder, tmp_path / "s", "--layers=1", "--epochs=3", "--batch_size=5", "--grad_clip=3",
                     "--arch_grad_clip=2", "--warmup_epochs=2")
    assert len(seen) == 3 * 6
    for e, row in enumerate(history):
        steps = seen[6 * e: 6 * e + 6]
        w, a = [c for c in steps if c[0] == "w"], [c for c in steps if c[0] == "a"]
        assert [c[5] for c in w] == [5, 5, 2] and [c[5] for c in a] == [5, 5, 5]
        assert {c[1] for c in w} == {3.0} and {c[1] for c in a} == {2.0}
        cosine = 0.001 + 0.024 * (1 + math.cos(math.pi * e / 3)) / 2
        assert [c[2] for c in w] == pytest.approx([cosine * min(e + 1, 2) / 2] * 3, rel=1e-12) and w[0][2] == row["lr"]
        for half, calls in (("train", w), ("valid", a)):
            n = sum(c[5] for c in calls)
            assert row[f"{half}_loss"] == pytest.approx(sum(c[3] * c[5] for c in calls) / n, rel=1e-6), (e, half)
            assert row[f"{half}_acc"] == pytest.approx(sum(c[4] for c in calls) / n, rel=1e-12), (e, half)


class StopAtCall:
    """search.search's `stop`: asks to stop at the n-th mid-epoch poll (steps 1..steps-1 of each epoch),
    so the loop checkpoints after that step and stops, as on SIGTERM."""

    def __init__(self, n):
        self.n, self.polls, self.armed = n, 0, False

    def requested(self, step=None):
        if step is None:
            return False
        self.polls += 1
        return self.polls == self.n

    def stop(self, where, path):
        raise cli.Preempted(f"stopped {where}", 15)


def test_alpha_waits_for_arch_start_and_a_resume_counts_its_batches_from_there(tiny_folder, tmp_path,
                                                                                monkeypatch):
    """--arch_start=1 (PC-DARTS' --begin): no alpha step in epoch 1, so alpha ends it at its init; a run
    stopped in epoch 2 and resumed draws the alpha batches the uninterrupted run draws."""
    common = ("--layers=1", "--epochs=3", "--seed=2", "--arch_start=1")
    calls = record_steps(monkeypatch)
    full, full_history = run(tiny_folder, tmp_path / "full", *common)
    assert [c[0] for c in calls] == ["w"] * 3 + ["w", "a"] * 6
    monkeypatch.undo()
    first, _ = run(tiny_folder, tmp_path / "one", *common, "--stop_after=1")
    init = build_supernet("nb201", 3, C=4, layers=1, seed=2)
    assert torch.equal(first.alphas_normal, init.alphas_normal)
    # polls per epoch: steps 1 and 2 of 3; the 3rd poll is step 1 of epoch 2
    with pytest.raises(cli.Preempted, match="in epoch 2 after step 1/3"):
        run(tiny_folder, tmp_path / "cut", *common, stop=StopAtCall(3))
    resumed, history = search.search(search.make_config([f"--out={tmp_path / 'cut'}", "--resume=1"]))
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    untimed = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert untimed(history) == untimed(full_history)


def test_the_weight_lr_is_the_cosine_to_lr_min_with_the_pc_darts_warm_up():
    """CosineAnnealingLR(T_max=epochs, eta_min=lr_min) per epoch; PC-DARTS' warm-up scales that value by (e + 1) / 5
    (train_search_imagenet.py)."""
    for e in range(50):
        assert math.isclose(runs.cosine_lr(0.025, e, 50, 0.001),
                            0.001 + 0.024 * (1 + math.cos(math.pi * e / 50)) / 2, rel_tol=1e-12)
    cosine = [0.25 * (1 + math.cos(math.pi * e / 50)) for e in range(5)]  # 0.5, 0.4995, 0.498, ...
    assert [runs.cosine_lr(0.5, e, 50, 0.0, 5) for e in range(5)] == pytest.approx(
        [c * (e + 1) / 5 for e, c in enumerate(cosine)], rel=1e-12)
    assert runs.cosine_lr(0.5, 4, 50, 0.0, 5) != pytest.approx(0.5, rel=1e-3)  # not the base lr: the cosine's
    assert runs.cosine_lr(0.5, 5, 50, 0.0, 5) == pytest.approx(0.25 * (1 + math.cos(math.pi * 5 / 50)))


def test_a_search_runs_with_the_reference_optimiser_settings(tiny_folder, tmp_path):
    """NB201's DARTS-V1: SGD 0.025 -> 0.001, momentum 0.9, Nesterov, wd 5e-4; DARTS: no Nesterov, wd 3e-4;
    both: Adam 3e-4, betas (0.5, 0.999), wd 1e-3. Read back from the optimisers' saved state."""
    for space, extra, wd, nesterov in (("nb201", "--layers=1", 5e-4, True), ("s2", "--layers=2", 3e-4, False)):
        out = tmp_path / space
        _, history = run(tiny_folder, out, f"--space={space}", extra, "--epochs=2")
        assert [r["lr"] for r in history] == pytest.approx([0.025, 0.001 + 0.024 / 2])
        ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
        w, a = ckpt["w_opt"]["param_groups"][0], ckpt["a_opt"]["param_groups"][0]
        assert (w["momentum"], w["nesterov"], w["weight_decay"]) == (0.9, nesterov, wd), space
        assert (a["lr"], tuple(a["betas"]), a["weight_decay"]) == (3e-4, (0.5, 0.999), 1e-3), space
