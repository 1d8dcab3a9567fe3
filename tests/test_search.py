"""search.py end to end on tiny synthetic data: outputs, resume, what option C trains, CLI errors."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import genotypes as G
from harness import runs
import search
from conftest import fake_nb201_accuracy
from supernet import build_supernet, param_groups

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset=imagefolder", "--C=4", "--batch_size=4", "--log_every=1", "--device=cpu"]


def run(folder, out, *extra):
    argv = TINY + [f"--data={folder}", f"--out={out}", *extra]
    return search.search(search.make_config(argv))


@pytest.mark.parametrize("space,layers", [("nb201", 1), ("s2", 2)])
def test_two_epoch_smoke_writes_every_output(tiny_folder, tmp_path, space, layers):
    out = tmp_path / space
    model, history = run(tiny_folder, out, f"--space={space}", f"--layers={layers}", "--epochs=2")
    for name in ("config.json", "log.txt", "alphas.json", "genotype.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    assert len(json.loads((out / "alphas.json").read_text())) == 2
    assert (out / "log.txt").read_text().count("] epoch 2/2 ") == 1
    # the genotype in genotype.json is the one derived from the saved alphas
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    alphas = {k[len("alphas_"):]: v for k, v in ckpt["model"].items() if k.startswith("alphas_")}
    rec = json.loads((out / "genotype.json").read_text())
    assert G.load_genotype(rec) == G.derive(space, alphas)
    if space == "nb201":
        assert rec["nb201_index"] == G.nb201_index(rec["arch"])
    assert ckpt["epoch"] == 2 and json.loads((out / "config.json").read_text())["space"] == space


def test_resume_equals_uninterrupted_run(tiny_folder, tmp_path):
    common = ("--space=nb201", "--layers=1", "--epochs=3", "--seed=3")
    full, _ = run(tiny_folder, tmp_path / "full", *common)
    run(tiny_folder, tmp_path / "cut", *common, "--stop_after=1")
    # --resume=1 --out=DIR alone restores every setting from DIR/config.json
    resumed, history = search.search(search.make_config([f"--out={tmp_path / 'cut'}", "--resume=1"]))
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert torch.equal(full.alphas_normal, resumed.alphas_normal)
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    a = json.loads((tmp_path / "full" / "genotype.json").read_text())
    assert a == json.loads((tmp_path / "cut" / "genotype.json").read_text())


def test_option_c_trains_only_bn_and_alpha(tiny_folder, tmp_path):
    model, _ = run(tiny_folder, tmp_path / "c", "--space=s1", "--layers=3", "--epochs=1", "--option=C")
    init = build_supernet("s1", 3, C=4, layers=3, seed=0)
    before, after = param_groups(init), param_groups(model)
    for name in ("conv", "cell_bn", "outer_bn", "classifier", "arch"):
        same = [torch.equal(a, b.cpu()) for a, b in zip(before[name], after[name])]
        assert all(same) if name == "conv" else not any(same), name


def test_existing_run_is_not_overwritten(tiny_folder, tmp_path):
    run(tiny_folder, tmp_path / "r", "--layers=1", "--epochs=1")
    with pytest.raises(FileExistsError, match="--resume=1"):
        run(tiny_folder, tmp_path / "r", "--layers=1", "--epochs=1")


@pytest.mark.parametrize("args,message", [
    (["--epochs=two"], "--epochs=two: expected a value of type int"),
    (["--colour=red"], "unknown config key 'colour'"),
    (["--space=nb301"], "unknown search space 'nb301'"),
    (["--option=E"], "--option=E"),
    (["--dataset=imagefolder", "--data=/nonexistent/folder"], "/nonexistent/folder"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        runs.cli(search.main, [f"--out={tmp_path / 'x'}", *args])
    assert e.value.code != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_cli_error_from_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "search.py", f"--out={tmp_path / 'x'}", "--space=nb301"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "unknown search space 'nb301'" in proc.stderr


def test_unrolled_search_smoke(tiny_folder, tmp_path):
    cfg = search.make_config(TINY + [f"--data={tiny_folder}", f"--out={tmp_path}", "--layers=1",
                                     "--epochs=1", "--unrolled=1"])
    assert cfg.arch_first
    model, history = search.search(cfg)
    assert history[0]["valid_acc"] >= 0 and not torch.equal(model.alphas_normal,
                                                            build_supernet("nb201", 3, C=4, layers=1).alphas_normal)


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tiny_folder, tmp_path):
    common = ["--space=nb201", "--layers=1", "--epochs=4", "--seed=5"]
    full, _ = run(tiny_folder, tmp_path / "full", *common)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "search.py", *TINY, f"--data={tiny_folder}", f"--out={out}",
                             *common], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)   # no clean-up runs: wherever it was, mid-epoch or mid-write
    proc.wait()
    resumed, history = run(tiny_folder, out, *common, "--resume=1")
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert torch.equal(full.alphas_normal, resumed.alphas_normal)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tiny_folder, tmp_path, monkeypatch):
    calls, real = [0], search.gradient_step

    def poisoned(*args, **kwargs):   # the 8th step on (epoch 2 of 3 steps x 2 updates) returns NaN
        calls[0] += 1
        loss, correct = real(*args, **kwargs)
        return (loss * float("nan") if calls[0] >= 8 else loss), correct

    monkeypatch.setattr(search, "gradient_step", poisoned)
    with pytest.raises(FloatingPointError, match="non-finite loss in epoch 2.*after epoch 1 is kept"):
        run(tiny_folder, tmp_path, "--layers=1", "--epochs=3")
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values()
                                      if v.is_floating_point())


def test_resume_refuses_changed_settings(tiny_folder, tmp_path):
    run(tiny_folder, tmp_path, "--layers=1", "--epochs=2", "--stop_after=1")
    with pytest.raises(runs.ConfigError, match="you changed option"):
        search.make_config([f"--out={tmp_path}", "--resume=1", "--option=B"])
    cfg = search.make_config([f"--out={tmp_path}", "--resume=1", "--epochs=3"])
    assert (cfg.epochs, cfg.layers, cfg.C, cfg.batch_size) == (3, 1, 4, 4)


def test_bench201_lookup_each_epoch(tiny_folder, nb201_table, tmp_path):
    _, history = run(tiny_folder, tmp_path / "r", "--layers=1", "--epochs=1", f"--bench201={nb201_table}")
    acc = fake_nb201_accuracy(history[0]["genotype"]["nb201_index"])
    assert history[0]["bench201"] == {"valid_acc": acc - 3, "test_acc": acc}


def test_resume_with_other_epochs_says_so_and_keeps_each_session(tiny_folder, tmp_path):
    """--resume=1 --epochs=N continues on the cosine of N epochs from where the run stopped, says so in
    one line, and config.json keeps what each session followed."""
    out = tmp_path / "run"
    run(tiny_folder, out, "--layers=1", "--epochs=2", "--lr=0.1", "--lr_min=0")
    _, history = search.search(search.make_config([f"--out={out}", "--resume=1", "--epochs=4"]))
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    log = (out / "log.txt").read_text()
    assert log.count("--epochs changed from 2 to 4 on resume: epochs 3-4 follow the cosine lr of a "
                     "4-epoch run, epochs 1-2 followed 2") == 1
    # epochs 1-2 followed cos over 2 epochs (0.1, 0.05), epochs 3-4 follow cos over 4 (epoch index 2, 3)
    lrs = [h["lr"] for h in json.loads((out / "history.json").read_text())]
    assert lrs == pytest.approx([0.1, 0.05, 0.1 * (1 + math.cos(math.pi * 2 / 4)) / 2,
                                 0.1 * (1 + math.cos(math.pi * 3 / 4)) / 2])
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 4 and [(s["from_epoch"], s["epochs"]) for s in config["sessions"]] == [(0, 2), (2, 4)]
    with pytest.raises(runs.ConfigError, match="has done 4 epochs already"):
        search.search(search.make_config([f"--out={out}", "--resume=1", "--epochs=3"]))


def test_second_run_into_a_busy_folder_stops_and_the_first_is_untouched(tiny_folder, tmp_path, capsys):
    out = tmp_path / "busy"
    argv = TINY + [f"--data={tiny_folder}", f"--out={out}", "--layers=1", "--epochs=3"]
    first = subprocess.Popen([sys.executable, "search.py", *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ((out / ".lock").exists() and (out / ".lock").read_text().strip()) and time.time() < deadline:
        time.sleep(0.01)
    with pytest.raises(SystemExit) as e:
        runs.cli(search.main, argv + ["--resume=1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and str(out) in err and f"pid {first.pid}" in err, err
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [1, 2, 3]
    assert (out / "log.txt").read_text().count("search nb201") == 1  # the second run wrote nothing
    # a lock dies with its process, SIGKILL included: nothing stale stops the next run
    killed = subprocess.Popen([sys.executable, "search.py", *TINY, f"--data={tiny_folder}", "--layers=1",
                               "--epochs=50", f"--out={tmp_path / 'k'}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    while not (tmp_path / "k" / "checkpoint.pt").exists() and time.time() < deadline + 120:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    cfg = search.make_config([f"--out={tmp_path / 'k'}", "--resume=1", "--stop_after=1"])
    assert search.search(cfg)[1]  # ran an epoch


def test_a_bug_keeps_its_traceback(capsys):
    """Only the user's mistakes become one line: torch's own ValueError (what a real bug raises) and
    any other exception propagate with their traceback."""
    def buggy(argv):
        torch.nn.functional.cross_entropy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))

    with pytest.raises(ValueError, match="batch_size"):
        runs.cli(buggy, [])
    with pytest.raises(KeyError):
        runs.cli(lambda argv: {}["missing"], [])
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as e:  # the user's mistake: one line, exit 2
        runs.cli(search.main, ["--space=nope"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: unknown search space 'nope'")


@pytest.mark.parametrize("bn_decay", [True, False])
def test_bn_decay_switch_leaves_cell_bn_out_of_weight_decay(bn_decay):
    model = build_supernet("nb201", 10, C=4, layers=1, seed=0)
    groups = search.set_trainable(model, "C", verbose=False)
    weights = [p for p in model.weight_parameters() if p.requires_grad]
    cfg = search.make_config([f"--bn_decay={int(bn_decay)}"])
    opt = torch.optim.SGD(search.weight_groups(weights, groups["cell_bn"], cfg), 0.1, weight_decay=0.5)
    for p in weights:
        p.grad = torch.zeros_like(p)  # only the decay moves a weight in this step
    before = {name: [p.detach().clone() for p in groups[name]] for name in ("cell_bn", "outer_bn")}
    opt.step()
    moved = {name: [not torch.equal(a, b) for a, b in zip(before[name], groups[name])] for name in before}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(weights)
    assert all(moved["outer_bn"][0::2])  # the gammas (1 at init) shrink; the betas are 0 already
    assert all(moved["cell_bn"][0::2]) if bn_decay else not any(moved["cell_bn"])


def test_bn_decay_off_is_refused_with_the_unrolled_step(tmp_path):
    with pytest.raises(runs.ConfigError, match="--bn_decay=0"):
        search.make_config([f"--out={tmp_path}", "--unrolled=1", "--bn_decay=0"])
