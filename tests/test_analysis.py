"""analysis.py (paper Sec. 4, Eq. 9-18, Fig. 2-4): exact ResNet-18/50 parameter counts, plain blocks without
an identity path, λ as a trained scalar per block kept in [0, 1], frozen convs under only-BN, η = 1 at
init, the run directory contract with an exact resume, one-line errors, and the figures from tiny runs."""
import json
import math
import os
import signal

import pytest
import torch
import torch.nn as nn

import analysis
from harness import checkpoints, cli, runs
from supernet import init_convs

TINY = ["--width=0.0625", "--batch_size=8", "--epochs=2", "--dataset=imagefolder"]  # 24 images, 16 px


def conv(k, c_in, c_out):
    return k * k * c_in * c_out  # bias-free conv


def bn(c):
    return 2 * c  # gamma, beta


def expected_count(depth, plain=False, skip_lambda=False, classes=10):
    """Parameters of the CIFAR ResNet from its layer shapes alone: 3x3 stem, torchvision's blocks."""
    bottleneck, blocks = {18: (False, (2, 2, 2, 2)), 50: (True, (3, 4, 6, 3))}[depth]
    total, c = conv(3, 3, 64) + bn(64), 64
    for stage, (p, n) in enumerate(zip((64, 128, 256, 512), blocks)):
        for j in range(n):
            out = 4 * p if bottleneck else p
            if bottleneck:
                total += conv(1, c, p) + bn(p) + conv(3, p, p) + bn(p) + conv(1, p, out) + bn(out)
            else:
                total += conv(3, c, p) + bn(p) + conv(3, p, p) + bn(p)
            projection = c != out or (stage > 0 and j == 0)  # shape changes: 1x1 conv + BN on the skip
            total += 0 if plain else (conv(1, c, out) + bn(out)) * projection + skip_lambda
            c = out
    return total + c * classes + classes  # linear classifier with bias


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_are_exact():
    # torchvision's resnet18 / resnet50 (11,689,512 / 25,557,032) with a 3x3 stem and a 10-class classifier
    assert expected_count(18) == 11_173_962 and expected_count(50) == 23_520_842
    for depth in (18, 50):
        assert n_params(analysis.build_resnet(depth)) == expected_count(depth)
        assert n_params(analysis.build_resnet(depth, plain=True)) == expected_count(depth, plain=True)
        assert n_params(analysis.build_resnet(depth, skip_lambda=True)) == expected_count(depth, skip_lambda=True)
    # plain ResNet-18 / -50 = 17 / 49 convs + the classifier: the 18 and 50 layers of Fig. 2 and 4
    assert [len(analysis.conv_bn_pairs(analysis.build_resnet(d, plain=True))) for d in (18, 50)] == [17, 49]


def test_counts_equal_torchvision_with_a_cifar_stem():
    import torchvision as tv
    for depth, make in ((18, tv.models.resnet18), (50, tv.models.resnet50)):
        ref = make(num_classes=10)
        ref.conv1, ref.maxpool = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity()
        assert n_params(ref) == n_params(analysis.build_resnet(depth))


@pytest.mark.parametrize("bottleneck", [False, True])
def test_plain_block_has_no_identity_path(bottleneck):
    c = 16 if bottleneck else 4  # stride 1 and c_in == c_out: the identity shortcut
    blocks = {kind: analysis.Block(c, 4, 1, bottleneck, plain=kind == "plain", skip_lambda=kind == "lambda",
                                   lambda_init=0.5) for kind in ("plain", "identity", "lambda")}
    x = torch.rand(2, c, 6, 6)  # non-negative: the final ReLU leaves it unchanged
    for block in blocks.values():
        last_bn = block.branch[-1]
        assert isinstance(last_bn, nn.BatchNorm2d)
        nn.init.zeros_(last_bn.weight)  # residual branch f(x) = 0 exactly
        nn.init.zeros_(last_bn.bias)
        block.eval()
    with torch.no_grad():
        assert torch.equal(blocks["plain"](x), torch.zeros_like(x))
        assert torch.equal(blocks["identity"](x), x)
        assert torch.allclose(blocks["lambda"](x), 0.5 * x)  # Eq. 9: f(x) + λ x
        assert torch.equal(blocks["identity"](-x), torch.zeros_like(x))  # ReLU after the sum
    assert blocks["plain"].shortcut is None and blocks["plain"].lam is None


def test_plain_network_output_does_not_see_the_input_past_a_dead_block():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 16, 16)
    for plain in (True, False):
        net = analysis.build_resnet(18, plain=plain, width=0.0625).eval()
        nn.init.zeros_(net.blocks[0].branch[-1].weight)  # the first block's branch outputs 0
        nn.init.zeros_(net.blocks[0].branch[-1].bias)
        with torch.no_grad():
            logits = net(x)
        # plain: block 0 outputs 0 for every image, so all logits are equal; with skips they differ
        assert torch.allclose(logits, logits[:1].expand_as(logits)) == plain


def make_run(tiny_folder, out, *extra):
    return analysis.run(analysis.make_config(TINY + [f"--data={tiny_folder}", f"--out={out}", *extra]))


@pytest.mark.parametrize("setting", ["bn", "convbn"])
def test_lambda_trains_and_convs_stay_frozen_under_only_bn(tiny_folder, tmp_path, setting):
    model, history = make_run(tiny_folder, tmp_path, "--exp=lambda", "--depth=18", f"--setting={setting}",
                              "--lambda_init=1")
    runs.seed_everything(0)  # the run's seed: the same initial weights
    init = analysis.build_resnet(18, 3, skip_lambda=True, width=0.0625, lambda_init=1.0)
    lams = model.arch_parameters()
    assert len(lams) == 8 and all(lam.ndim == 0 and lam.requires_grad for lam in lams)  # one scalar per block
    assert all(len(row["lambda"]) == 8 and all(0 <= v <= 1 for v in row["lambda"]) for row in history)
    assert history[-1]["lambda"] == [lam.item() for lam in lams] and min(history[-1]["lambda"]) < 1  # moved
    convs = [(a, b) for (_, a, _), (_, b, _) in zip(analysis.conv_bn_pairs(model), analysis.conv_bn_pairs(init))]
    same = [torch.equal(a.weight, b.weight) for a, b in convs]
    assert all(same) if setting == "bn" else not any(same)
    gammas = [(a.weight, b.weight) for (_, _, a), (_, _, b) in
              zip(analysis.conv_bn_pairs(model), analysis.conv_bn_pairs(init))]
    assert not any(torch.equal(a, b) for a, b in gammas)  # BN trains in both settings
    assert not torch.equal(model.fc.weight, init.fc.weight)  # and the classifier
    assert "eta" not in history[-1]


def test_eta_is_one_at_init_when_sigma_is_the_true_std():
    torch.manual_seed(0)
    layer = nn.Conv2d(64, 64, 3, bias=False)  # no padding: zero borders would lower the std of W x
    init_convs(layer)  # Kaiming-normal fan-in: Var[W] = 2 / (9 * 64)
    init_var = layer.weight.var(correction=0).item()
    x = torch.randn(32, 64, 16, 16) * math.sqrt(0.5)  # E[x^2] = 1/2, what a ReLU passes on (He et al.)
    with torch.no_grad():
        y = layer(x)
    sigma = y.std((0, 2, 3), correction=0)  # the true per-channel std of W x
    norm = nn.BatchNorm2d(64)  # gamma = 1
    assert analysis.relative_variance(layer, norm, init_var, sigma) == pytest.approx(1.0, abs=0.05)
    # the same from the BN's running statistics (cumulative average over this one batch)
    norm.momentum = None
    norm.train()(y)
    assert analysis.relative_variance(layer, norm, init_var) == pytest.approx(1.0, abs=0.05)
    # eta scales with gamma^2 and does not see the scale of W (BN divides it out again)
    one = analysis.relative_variance(layer, nn.BatchNorm2d(64), init_var, sigma)
    nn.init.constant_(norm.weight, 0.5)
    assert analysis.relative_variance(layer, norm, init_var, sigma) == pytest.approx(one / 4, rel=1e-5)
    with torch.no_grad():
        layer.weight.mul_(3.0)  # W x and its std grow 3x
    assert analysis.relative_variance(layer, norm, init_var, 3 * sigma) == pytest.approx(one / 4, rel=1e-5)


def test_run_directory_contract_and_exact_resume(tiny_folder, tmp_path):
    common = [f"--data={tiny_folder}", "--exp=plain", "--depth=18", "--setting=bn", "--subset=16"]
    whole = tmp_path / "whole"
    analysis.main(TINY + common + [f"--out={whole}"])
    cfg = json.loads((whole / "config.json").read_text())
    assert {"exp", "depth", "setting", "width", "lambda_init", "epochs", "dataset", "subset"} <= set(cfg)
    rows = json.loads((whole / "history.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert {"epoch", "lr", "train_loss", "train_err", "test_loss", "test_err", "seconds", "eta"} <= set(r)
        assert 0 <= r["train_err"] <= 1 and 0 <= r["test_err"] <= 1
        assert len(r["eta"]) == len(cfg["eta_layers"]) == 17 and all(v > 0 for v in r["eta"])
    assert (whole / "log.txt").is_file() and (whole / "checkpoint.pt").is_file()
    last = rows[-1]  # the log ends with the run's result
    median = sorted(last["eta"])[len(last["eta"]) // 2]
    assert (whole / "log.txt").read_text().splitlines()[-1].endswith(
        f"final (epoch 2/2): test loss {last['test_loss']:.4g} error {last['test_err']:.4f}, train loss "
        f"{last['train_loss']:.4g} error {last['train_err']:.4f}, median η {median:.3g} ({whole / 'history.json'})")
    # 1 epoch, then resume to 2: the same numbers and weights as the uninterrupted run
    part = tmp_path / "part"
    analysis.main(TINY + common + [f"--out={part}", "--epochs=1"])  # the later value wins
    analysis.main([f"--out={part}", "--resume=1", "--epochs=2"])
    resumed = json.loads((part / "history.json").read_text())
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rows]
    (a, frozen), (b, _) = ((c["model"], c["frozen"]) for c in (torch.load(d / "checkpoint.pt", weights_only=True)
                                                             for d in (whole, part)))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # only BN: the convs are random features, in the checkpoint as names and a hash (harness/frozen_state.py)
    assert len(frozen["names"]) == len(cfg["eta_layers"]) == 17  # the 17 convs of plain-18
    assert not set(frozen["names"]) & set(a)


def test_a_stop_mid_epoch_writes_nothing_and_says_so(tiny_folder, tmp_path):
    """A stop signal inside an epoch drops that epoch (compiled graphs need whole epochs): the line says the
    checkpoint of the epoch before stands, and the resume redoes the epoch from it."""
    out = tmp_path / "run"
    stop = checkpoints.StopSignals()
    stop.signum = signal.SIGTERM  # as if SLURM had sent it before the first step
    cfg = analysis.make_config(TINY + [f"--data={tiny_folder}", f"--out={out}", "--exp=plain", "--depth=18",
                                       "--setting=bn", "--subset=16"])
    with pytest.raises(cli.Preempted) as stopped:
        analysis.run(cfg, stop)
    assert str(stopped.value) == (f"stopped by SIGTERM in epoch 1 (redone on resume from epoch 0): nothing written, the "
                                  f"last checkpoint in {out} stands; continue with --resume=1 --out={out}")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 0 and not (out / "history.json").exists()
    analysis.main([f"--out={out}", "--resume=1"])
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [1, 2]


def test_a_test_loss_far_above_chance_gets_one_note():
    """--exp=lambda at a tiny size logged test losses of 5.98e8 and 9.9e6 without a word: one note names
    them against ln(classes) and the two causes."""
    rows = [dict(epoch=1, test_loss=5.98e8), dict(epoch=2, test_loss=9.9e6), dict(epoch=3, test_loss=2.1)]
    note = analysis.loss_note(rows, 10)
    assert note.startswith("note: the test loss was far above chance (ln(10) = 2.30) in 2 of 3 epochs, 5.98e+08 "
                           "at epoch 1: the BN running statistics") and "diverged" in note and "\n" not in note
    assert analysis.loss_note(rows[2:], 10) is None  # near chance: nothing to say
    assert analysis.loss_note([dict(epoch=1, test_loss=11.0)], 10) is None  # under 5 x ln(10) = 11.5
    assert "in 1 of 1 epochs, nan at epoch 1" in analysis.loss_note([dict(epoch=1, test_loss=float("nan"))], 100)
    cfg = analysis.AnalysisConfig(exp="lambda", epochs=3, out="o")
    row = dict(epoch=3, test_loss=2.0, test_err=0.5, train_loss=1.0, train_err=0.25, **{"lambda": [0.5, 1.0]})
    assert analysis.result_line(cfg, [row]) == ("final (epoch 3/3): test loss 2 error 0.5000, train loss 1 error "
                                                f"0.2500, mean λ 0.750 ({os.path.join('o', 'history.json')})")


@pytest.mark.parametrize("argv, words", [
    (["--exp=resnet"], "--exp=resnet"),
    (["--depth=34"], "--depth=34"),
    (["--setting=conv"], "--setting=conv"),
    (["--exp=lambda", "--lambda_init=1.5"], "[0, 1]"),
    (["--exp=plain", "--lambda_init=0.5"], "--exp=lambda only"),
    (["--width=0"], "width"),
])
def test_bad_input_is_one_line(argv, words, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.run(analysis.main, argv + [f"--out={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error:") and "\n" not in err and words in err


def test_an_existing_run_is_not_overwritten(tiny_folder, tmp_path):
    argv = TINY + [f"--data={tiny_folder}", f"--out={tmp_path}", "--depth=18", "--epochs=1"]
    analysis.main(argv)
    with pytest.raises(FileExistsError, match="--resume=1"):
        analysis.main(argv)
    from harness.checkpoints import RunBusy, RunLock
    with RunLock(str(tmp_path)), pytest.raises(RunBusy, match="in use by another run"):
        analysis.main(argv + ["--resume=1"])  # a run still writing there: a second one is refused
    # a finished run whose checkpoint is gone (as in results/): --resume=1 is refused, not a fresh run over it
    history = (tmp_path / "history.json").read_text()
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        os.remove(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*drop --resume=1"):
        analysis.main([f"--out={tmp_path}", "--resume=1", "--epochs=2"])
    assert (tmp_path / "history.json").read_text() == history


def test_figures_from_tiny_real_runs(tiny_folder, tmp_path):
    import plot
    dirs = []
    for exp, depth, setting, extra in [("plain", d, s, []) for d in (18, 50) for s in ("convbn", "bn")] + \
            [("lambda", 50, s, [f"--lambda_init={v}"]) for s in ("convbn", "bn") for v in (0, 1)]:
        out = tmp_path / f"{exp}{depth}_{setting}_{len(dirs)}"
        make_run(tiny_folder, out, f"--exp={exp}", f"--depth={depth}", f"--setting={setting}", *extra)
        dirs.append(str(out))
    paths = plot.main(dirs + [f"--out={tmp_path / 'fig'}"])
    names = {os.path.basename(p) for p in paths}
    assert {"fig2_plain.png", "fig3_lambda.png", "fig4_eta.png"} <= names
    for p in paths:
        assert os.path.getsize(p) > 5000, p
