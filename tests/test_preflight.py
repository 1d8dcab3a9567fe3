"""What is refused before a run starts, in one line: every numeric setting of every script against its
range (cli.check_ranges), and everything a search would refuse at start-up (search.validate), which
is also the sweep's pre-flight; a sweep folder holding only a checkpoint from other settings; what a
failed checkpoint write says; the weight optimisers the unrolled step (architect.py) refuses."""
import errno
import os

import pytest
import torch

import analysis
import architect
import bench
from harness import checkpoints, cli
import search
import sweep

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine")


def one_line_error(main, argv, capsys):
    """Run `main(argv)` as its command line does -> its single stderr line (exit 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.run(main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("argv, needle", [
    (["--lr=-1"], "--lr=-1.0: out of range, must lie in (0, inf)"),
    (["--momentum=1.5"], "--momentum=1.5: out of range, must lie in [0, 1)"),
    (["--weight_decay=-1e-4"], "--weight_decay=-0.0001: out of range"),
    (["--arch_lr=0"], "--arch_lr=0.0: out of range, must lie in (0, inf)"),
    (["--grad_clip=-5"], "--grad_clip=-5.0: out of range"),
    (["--epochs=0"], "--epochs=0: out of range, must lie in [1, inf)"),
    (["--batch_size=0"], "--batch_size=0: out of range"),
    (["--C=-4"], "--C=-4: out of range"),
    (["--space=darts", "--pc_k=0"], "--pc_k=0: out of range, must lie in [1, inf)"),
    (["--workers=-1"], "--workers=-1: out of range"),
    (["--arch_start=-1"], "--arch_start=-1: out of range"),
    (["--weight_frac=1.5"], "--weight_frac=1.5: out of range, must lie in (0, 1]"),
    (["--seed=-1"], "--seed=-1: out of range"),
    (["--lr=nan"], "--lr=nan: out of range"),
    (["--init=foo"], "unknown init 'foo'"),
    (["--dataset=foo"], "--dataset=foo: choose one of cifar10, cifar100"),
    (["--pc_k=4"], "partial channels, edge normalisation and the ImageNet stem are for DARTS-style spaces"),
    (["--space=darts", "--C=6", "--pc_k=4"], "partial channels need C divisible by K, got C=6, K=4"),
    (["--space=darts", "--dataset=imagenet", "--C=5", "--pc_k=1"], "needs an even number of output channels"),
    (["--subset=1"], "--subset=1: each search half gets about 0 images, fewer than one batch"),
    (["--subset=100", "--batch_size=64"], "--subset=100: each search half gets about 50 images"),
    (["--momentum=0"], "--nesterov=1 needs --momentum > 0"),
    (["--dataset=imagenet"], "--dataset=imagenet searches a DARTS-style space (the NB201 net is for 32 px"),
    (["--space=darts", "--unrolled=1", "--arch_first=0"], "--unrolled=1 takes the alpha step before the weight step"),
    (["--dataset=imagenet", "--space=darts", "--weight_frac=0.9", "--arch_frac=0.2"], "add up to at most 1"),
    (["--dataset=imagefolder", "--data=/nonexistent"], "/nonexistent: no such folder"),
    (["--dataset=imagenet", "--space=darts", "--data=/nonexistent"], "/nonexistent: no such folder"),
    (["--dataset=ImageNet16-120", "--data=/nonexistent"], "/nonexistent/train_data_batch_1: missing"),
    (["--download=0", "--data=/nonexistent"], "cifar10 not found"),
    (["--bench201=/nonexistent.csv"], "--bench201=/nonexistent.csv: no such file"),
    (["--bench201_dataset=mnist"], "--bench201_dataset=mnist: choose one of cifar10, cifar100, ImageNet16-120"),
    pytest.param(["--device=cuda"], "--device=cuda: this machine has no CUDA device", marks=NO_CUDA),
    (["--device=tpu9"], "--device=tpu9"),
])
def test_search_refuses_at_make_config_what_it_would_refuse_at_start(argv, needle, tmp_path, capsys):
    """make_config (no data read, no model built) refuses each in one line: the sweep's pre-flight."""
    err = one_line_error(search.make_config, [f"--out={tmp_path / 'run'}", *argv], capsys)
    assert needle in err, err
    assert not os.path.exists(tmp_path / "run")


def test_a_benchmark_file_of_another_kind_is_refused_before_the_run_starts(tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_text("index,arch,acc\n0,x,1\n")
    for bad, needle in ((other, "header is not that of a bench201 --export CSV"),
                        (tmp_path, "not a NATS-Bench -simple dir (no meta.pickle.pbz2)")):
        err = one_line_error(search.make_config, [f"--out={tmp_path / 'run'}", f"--bench201={bad}"], capsys)
        assert f"--bench201={bad}: {needle}" in err, err
    assert not os.path.exists(tmp_path / "run")


def test_sweep_preflight_refuses_before_any_run(tmp_path, capsys):
    for argv, needle in ((["--init=foo"], "unknown init"), (["--subset=1"], "--subset=1"),
                         (["--threads=-1"], "--threads=-1: out of range, must lie in [0, inf)"),
                         (["--jobs=0"], "--jobs=0: out of range"),
                         (["--seeds="], "--seeds needs at least one seed"),
                         (["--seeds=,"], "--seeds needs at least one seed")):
        err = one_line_error(sweep.main, [f"--out={tmp_path / 's'}", *argv], capsys)
        assert needle in err, err
        assert not any((tmp_path / "s").glob("*_s*"))  # no run started


def test_sweep_refuses_a_folder_that_holds_only_a_checkpoint_of_other_settings(tiny_folder, tmp_path):
    """A lr-0.1, seed-0 checkpoint copied into C_s1/ (no config.json) is not resumed as seed 1."""
    flags = ["--dataset=imagefolder", f"--data={tiny_folder}", "--C=4", "--layers=1", "--batch_size=4",
             "--epochs=1", "--log_every=0"]
    folder = tmp_path / "sweep" / "C_s1"
    search.search(search.make_config(flags + ["--lr=0.1", "--seed=1", "--option=C", f"--out={folder}"]))
    (folder / "config.json").unlink()
    cfg, rest = sweep.parse([f"--out={tmp_path / 'sweep'}", "--options=C", "--seeds=1", *flags])
    with pytest.raises(cli.ConfigError, match=r"C_s1 holds a run with other settings \(lr=0.1 not 0.025\)"):
        sweep.plan(cfg, rest)
    [job] = sweep.plan(cfg, rest + ["--lr=0.1"])  # its own settings: resumed from the checkpoint
    assert job.state == "resume" and "--resume=1" in job.argv


@pytest.mark.parametrize("main, argv, needle", [
    (analysis.main, ["--momentum=-0.1"], "--momentum=-0.1: out of range, must lie in [0, 1)"),
    (analysis.main, ["--epochs=0"], "--epochs=0: out of range"),
    (analysis.main, ["--init=foo"], "--init=foo: choose kaiming"),
    (bench.main, ["--steps=0"], "--steps=0: out of range, must lie in [1, inf)"),
    (bench.main, ["--batch_size=-2"], "--batch_size=-2: out of range"),
    (bench.main, ["--pc_k=0"], "--pc_k=0: out of range"),
])
def test_other_scripts_check_their_ranges(main, argv, needle, tiny_folder, tmp_path, capsys):
    extra = [f"--out={tmp_path}", "--dataset=imagefolder", f"--data={tiny_folder}"] if main is analysis.main else []
    err = one_line_error(main, argv + extra, capsys)
    assert needle in err, err


def test_the_unrolled_step_refuses_an_optimiser_it_does_not_model():
    """architect's virtual step w' = w - xi * (mu * m + g + lambda * w) (DARTS Eq. 7's w - xi * dL/dw,
    with search.py's SGD) reads one (lr, momentum, weight decay): several parameter groups, or SGD with
    dampening (m = mu * m + (1 - dampening) * g), would make it a step SGD does not take."""
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    grads = [torch.full((3,), 0.5), torch.full((2,), 0.5)]
    one = torch.optim.SGD([a, b], lr=0.1, momentum=0.9, weight_decay=0.01)
    assert architect._hyper(one) == (0.1, 0.9, 0.01)
    assert torch.allclose(architect.virtual_weights([a, b], grads, one)[0], torch.full((3,), 1 - 0.1 * 0.51))
    two = torch.optim.SGD([{"params": [a]}, {"params": [b], "weight_decay": 0.0}], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="needs a weight optimiser with a single parameter group"):
        architect.virtual_weights([a, b], grads, two)
    damped = torch.optim.SGD([a, b], lr=0.1, momentum=0.9, dampening=0.1)
    with pytest.raises(ValueError, match="models SGD without dampening"):
        architect.virtual_weights([a, b], grads, damped)


def test_a_failed_first_checkpoint_write_does_not_claim_an_intact_one(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")

    def full(obj, f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    save = torch.save
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(cli.WriteError) as e:
        checkpoints.save_checkpoint(path, {"epoch": 1})
    assert "No space left on device; no earlier checkpoint exists" in str(e.value) and "intact" not in str(e.value)
    monkeypatch.setattr(torch, "save", save)
    checkpoints.save_checkpoint(path, {"epoch": 1})
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(cli.WriteError, match=f"the last complete checkpoint, {path}, is intact"):
        checkpoints.save_checkpoint(path, {"epoch": 2})
