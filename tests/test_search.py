"""search.py end to end on tiny synthetic data: outputs, resume (with and without config.json), what option
C trains, the unrolled step's clip, benchmark columns, non-finite states, CLI errors."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

import genotypes as G
from harness import checkpoints, cli, rundir, runs, search_run
import search
from conftest import NB201_OFFSETS, fake_nb201_accuracy
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
    assert not any("gpu_mem_mb" in row for row in history)  # a CUDA-only column


def test_resume_equals_uninterrupted_run(tiny_folder, tmp_path, capsys):
    common = ("--space=nb201", "--layers=1", "--epochs=3", "--seed=3")
    full, _ = run(tiny_folder, tmp_path / "full", *common)
    capsys.readouterr()
    _, first = run(tiny_folder, tmp_path / "cut", *common, "--stop_after=1")
    # a session that --stop_after ended says so, on screen and in log.txt, instead of "final genotype"
    said = (f"stopped after epoch 1 of 3 (--stop_after=1); the cell so far: {json.dumps(first[-1]['genotype'])}; "
            f"continue with --resume=1 --out={tmp_path / 'cut'}")
    log = (tmp_path / "cut" / "log.txt").read_text()
    assert said in capsys.readouterr().out and said in log and "final genotype" not in log
    # --resume=1 --out=DIR alone restores every setting from DIR/config.json
    resumed, history = search.search(search.make_config([f"--out={tmp_path / 'cut'}", "--resume=1"]))
    last = (tmp_path / "cut" / "log.txt").read_text().splitlines()[-2:]
    assert last[0].endswith(f"final genotype: {json.dumps(history[-1]['genotype'])}")
    # and the command that retrains it, the search's data flags included
    assert last[1].endswith(f"retrain it: python train.py --genotype={tmp_path / 'cut' / 'genotype.json'} "
                            f"--dataset=imagefolder --data={tiny_folder}"), last
    import shlex
    import networks
    import train  # the command as train.py reads it: the found cell, in NB201's network, on the search's data
    cfg, genotype, info, _, _ = train.resolve(shlex.split(last[1].split(" train.py ")[1]) + [f"--out={tmp_path / 'rt'}"])
    assert str(genotype) == history[-1]["genotype"]["arch"] and (cfg.dataset, cfg.data) == ("imagefolder", tiny_folder)
    assert isinstance(train.build_network(genotype, cfg.dataset, root=cfg.data), networks.TinyNetwork)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert torch.equal(full.alphas_normal, resumed.alphas_normal)
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    a = json.loads((tmp_path / "full" / "genotype.json").read_text())
    assert a == json.loads((tmp_path / "cut" / "genotype.json").read_text())


@pytest.mark.parametrize("option,frozen", [("C", ("conv",)), ("B", ("cell_bn",)), ("A", ())])
def test_a_checkpoint_keeps_a_hash_of_the_frozen_random_features_and_resumes_from_the_seed(
        tiny_folder, tmp_path, capsys, option, frozen):
    out, old = tmp_path / option, tmp_path / f"{option}_old"
    model, _ = run(tiny_folder, out, "--layers=1", "--epochs=1", f"--option={option}")
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    # Table 1's frozen tensors are named and hashed, not stored; everything that trains and every buffer is
    assert sorted(ckpt["frozen"]["names"]) == sorted(names[id(p)] for g in frozen for p in groups[g])
    assert set(ckpt["model"]) == set(model.state_dict()) - set(ckpt["frozen"]["names"])
    # a checkpoint from before (the whole model, no "frozen" entry) resumes to the same state
    shutil.copytree(out, old)
    torch.save({**{k: v for k, v in ckpt.items() if k != "frozen"}, "model": model.state_dict()},
               old / "checkpoint.pt")
    resumed = [search.search(search.make_config([f"--out={d}", "--resume=1", "--epochs=2"]))[0] for d in (out, old)]
    for (n, a), b in zip(resumed[0].state_dict().items(), resumed[1].state_dict().values()):
        assert torch.equal(a, b), n
    if not frozen:
        return
    # other random features (another torch's generator, say) stop the resume in one line, nothing written
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    torch.save({**ckpt, "frozen": {**ckpt["frozen"], "sha256": "0" * 64}}, out / "checkpoint.pt")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.run(search.main, [f"--out={out}", "--resume=1", "--epochs=3"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1 and "random features this seed builds here" in lines[0], lines
    assert len(json.loads((out / "alphas.json").read_text())) == 2


def test_init_seed_fixes_the_random_features_while_seed_varies_the_data(tiny_folder, tmp_path):
    """--init_seed builds the supernet (random features, alpha); --seed keeps the split, order and
    augmentation. Unset, --init_seed is --seed: the run is the one without it, bit for bit."""
    base = ("--layers=1", "--epochs=1", "--option=C")
    runs_ = {name: run(tiny_folder, tmp_path / name, *base, *extra) for name, extra in
             dict(a=["--seed=1", "--init_seed=5"], b=["--seed=2", "--init_seed=5"], c=["--seed=5"],
                  d=["--seed=5", "--init_seed=5"], e=["--seed=1"]).items()}
    sha = {k: torch.load(tmp_path / k / "checkpoint.pt", weights_only=True)["frozen"]["sha256"] for k in runs_}
    assert sha["a"] == sha["b"] == sha["c"] == sha["d"] != sha["e"]
    loss = {k: h[-1]["train_loss"] for k, (_, h) in runs_.items()}
    assert loss["a"] != loss["b"] and loss["a"] != loss["e"]  # other data order / other features
    for (n, x), y in zip(runs_["c"][0].state_dict().items(), runs_["d"][0].state_dict().values()):
        assert torch.equal(x, y), n
    assert json.loads((tmp_path / "a" / "config.json").read_text())["init_seed"] == 5


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
    (["--compile=2"], "--compile=2: expected a value of type bool"),  # a switch is 1/0, true/false, yes/no, on/off
    (["--colour=red"], "unknown config key 'colour'"),
    (["--epoch=2"], "unknown config key 'epoch'; did you mean --epochs?"),
    (["--epochs", "2"], "bad argument '--epochs': use --epochs=VALUE, with '='"),
    (["--space=nb301"], "unknown search space 'nb301'"),
    (["--option=E"], "--option=E"),
    (["--dataset=imagefolder", "--data=/nonexistent/folder"], "/nonexistent/folder"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        cli.run(search.main, [f"--out={tmp_path / 'x'}", *args])
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
    common = ["--space=nb201", "--layers=1", "--epochs=6", "--seed=5"]  # 5 epochs left after the first checkpoint
    full, full_history = run(tiny_folder, tmp_path / "full", *common)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "search.py", *TINY, f"--data={tiny_folder}", f"--out={out}",
                             *common], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)   # no clean-up runs: wherever it was, mid-epoch or mid-write
    assert proc.wait() == -signal.SIGKILL  # killed, not finished: the resume below has epochs left to run
    resumed, history = run(tiny_folder, out, *common, "--resume=1")
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert "resumed after epoch" in (out / "log.txt").read_text()
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):  # weights, alpha, buffers
        assert torch.equal(a, b), n
    untimed = [[{k: v for k, v in row.items() if k != "seconds"} for row in h] for h in (full_history, history)]
    assert untimed[0] == untimed[1]


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tiny_folder, tmp_path, monkeypatch):
    calls, real = [0], search.gradient_step

    def poisoned(*args, **kwargs):   # the 8th step on (epoch 2 of 3 steps x 2 updates) returns NaN
        calls[0] += 1
        loss, correct = real(*args, **kwargs)
        return (loss * float("nan") if calls[0] >= 8 else loss), correct

    monkeypatch.setattr(search, "gradient_step", poisoned)
    with pytest.raises(FloatingPointError, match=f"non-finite loss or weights in epoch 2: stopping without writing "
                                                 f"a checkpoint; the last good state is in {tmp_path}/checkpoint.pt"):
        run(tiny_folder, tmp_path, "--layers=1", "--epochs=3")
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values()
                                      if v.is_floating_point())


def test_resume_refuses_a_process_count_that_changes_the_steps_per_epoch(tiny_folder, tmp_path, capsys):
    """The checkpoint keeps the steps per epoch: a resume whose processes split the data into another
    number of steps (e.g. 2050 images, batch 1024: 3 steps on one process; on two, 1025 each in batches
    of 512 would end on one image, which a training epoch drops: 2 steps) would shift alpha's batch
    stream, so it is refused in one line."""
    from harness import batching
    import torch
    x, y = torch.zeros(2050, 3, 1, 1, dtype=torch.uint8), torch.arange(2050)
    kw = dict(device="cpu", mean=(0.0,) * 3, std=(1.0,) * 3)
    assert len(batching.TensorLoader(x, y, 1024, **kw)) == 3
    assert [len(batching.TensorLoader(x, y, 512, rank=r, world_size=2, **kw)) for r in (0, 1)] == [2, 2]
    run(tiny_folder, tmp_path, "--layers=1", "--epochs=2", "--stop_after=1")
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["steps"] == 3  # tiny_folder: 12 images per half, batch 4
    ckpt["steps"] = 4  # as if saved by a process count that split the epoch into 4 steps
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    with pytest.raises(SystemExit) as e:
        cli.run(search.main, [f"--out={tmp_path}", "--resume=1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert "its epochs have 4 steps and 3 alpha batches, with 1 process(es) 3 and 3" in err, err
    ckpt["steps"], ckpt["alpha_batches"] = 3, 2  # the alpha half's pass split otherwise: refused too
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    with pytest.raises(SystemExit) as e:
        cli.run(search.main, [f"--out={tmp_path}", "--resume=1"])
    assert e.value.code == 2 and "3 steps and 2 alpha batches, with 1 process(es) 3 and 3" in capsys.readouterr().err


def test_resume_refuses_changed_settings(tiny_folder, tmp_path):
    run(tiny_folder, tmp_path, "--layers=1", "--epochs=2", "--stop_after=1")
    with pytest.raises(cli.ConfigError, match="you changed option"):
        search.make_config([f"--out={tmp_path}", "--resume=1", "--option=B"])
    cfg = search.make_config([f"--out={tmp_path}", "--resume=1", "--epochs=3"])
    assert (cfg.epochs, cfg.layers, cfg.C, cfg.batch_size) == (3, 1, 4, 4)
    # a setting the run's config.json lacks (a run from before it existed) had its default: so it compares
    config = json.loads((tmp_path / "config.json").read_text())
    del config["init_seed"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(cli.ConfigError, match="you changed init_seed"):
        search.make_config([f"--out={tmp_path}", "--resume=1", "--init_seed=7"])
    assert search.make_config([f"--out={tmp_path}", "--resume=1"]).init_seed is None


def test_bench201_lookup_each_epoch(tiny_folder, nb201_table, tmp_path):
    _, history = run(tiny_folder, tmp_path / "r", "--layers=1", "--epochs=1", f"--bench201={nb201_table}")
    acc = fake_nb201_accuracy(history[0]["genotype"]["nb201_index"])
    assert history[0]["bench201"] == {"dataset": "cifar10", "valid_acc": acc - 3, "test_acc": acc}
    # the log line rounds to the table's 2 decimals and still reads back (a run without history.json)
    (tmp_path / "r" / "history.json").unlink()
    assert rundir.load_run(str(tmp_path / "r")).rows[0]["bench201"] == {
        "dataset": "cifar10", "valid_acc": round(acc - 3, 2), "test_acc": round(acc, 2)}


def test_bench201_reads_the_searched_datasets_column(tiny_folder, nb201_table_by_dataset, tmp_path):
    """An ImageFolder search is looked up as CIFAR-10, said in the log; --bench201_dataset picks another
    column; the row names the dataset (the sweep's table and the figures read it there)."""
    for name, extra in (("cifar10", []), ("ImageNet16-120", ["--bench201_dataset=ImageNet16-120"])):
        out = tmp_path / name
        _, history = run(tiny_folder, out, "--layers=1", "--epochs=1", f"--bench201={nb201_table_by_dataset}", *extra)
        acc = fake_nb201_accuracy(history[0]["genotype"]["nb201_index"]) + NB201_OFFSETS[name]
        assert history[0]["bench201"] == {"dataset": name, "valid_acc": acc - 3, "test_acc": acc}
        assert json.loads((out / "history.json").read_text())[0]["bench201"]["dataset"] == name
        log = (out / "log.txt").read_text()
        said = (f" (--bench201_dataset={name}, not the searched imagefolder)" if extra else  # the user's own choice
                f" (--dataset=imagefolder has no benchmark column of its own: taken as --bench201_dataset={name}")
        assert f"bench201: {rundir.BENCH201_NAMES[name]} accuracies from {nb201_table_by_dataset}{said}" in log
        assert f"'dataset': '{name}'" in next(ln for ln in log.splitlines() if "] epoch 1/1 " in ln)
    with pytest.raises(cli.ConfigError, match="NAS-Bench-201 has no svhn results"):
        search.make_config(["--dataset=svhn", f"--bench201={nb201_table_by_dataset}"])


def test_a_resume_rewrites_the_outputs_from_its_checkpoint(tiny_folder, tmp_path):
    """history.json / alphas.json / genotype.json cut short or lost (by hand, a copy) are written again from
    the checkpoint a resume starts from, so a finished run whose files lag its checkpoint is whole again."""
    out = tmp_path / "r"
    run(tiny_folder, out, "--layers=1", "--epochs=2")
    files = {name: (out / name).read_text() for name in ("history.json", "alphas.json", "genotype.json")}
    (out / "history.json").write_text(json.dumps(json.loads(files["history.json"])[:1]))
    (out / "genotype.json").unlink()
    search.search(search.make_config([f"--out={out}", "--resume=1"]))
    assert {name: (out / name).read_text() for name in files} == files
    assert "all 2 epochs are done, nothing to run" in (out / "log.txt").read_text()
    # its checkpoints removed (as committed runs are): a new run there is refused, the results kept
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (out / name).unlink(missing_ok=True)
    with pytest.raises(FileExistsError, match="holds an earlier run's history.json and no checkpoint"):
        run(tiny_folder, out, "--layers=1", "--epochs=2", "--seed=5")
    assert {name: (out / name).read_text() for name in files} == files


class KilledHere(Exception):
    """Stands for a kill -9 at that point of the run."""


def test_a_kill_between_an_epochs_checkpoint_and_its_outputs_leaves_a_run_that_resumes(tiny_folder, tmp_path,
                                                                                       monkeypatch):
    """The epoch's checkpoint is written before its outputs: a run killed between the two resumes (and writes
    them); the other way round its folder would hold outputs and no checkpoint, refused by --resume=1 and by
    a fresh run alike."""
    out, real = tmp_path / "k", search_run.write_outputs

    def killed(folder, history):
        raise KilledHere
    monkeypatch.setattr(search_run, "write_outputs", killed)
    with pytest.raises(KilledHere):
        run(tiny_folder, out, "--layers=1", "--epochs=2")
    monkeypatch.setattr(search_run, "write_outputs", real)
    _, history = search.search(search.make_config([f"--out={out}", "--resume=1"]))
    assert [r["epoch"] for r in history] == [1, 2]
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [1, 2]


def test_a_cut_table_or_one_without_the_column_is_refused_at_start_up(tiny_folder, nb201_table, tmp_path):
    """A table of fewer than 15,625 cells (a found cell may be missing, its ranks are not the benchmark's) or
    one without the looked-up dataset's test column (no accuracy in any epoch): one line before the first
    step, not a run that dies at an epoch's end or logs nothing."""
    lines = open(nb201_table).read().splitlines(keepends=True)
    cut = tmp_path / "cut.csv"
    cut.write_text("".join(lines[:1001]))  # the header and cells 0..999: every row whole
    no_in16 = tmp_path / "no_in16.csv"
    no_in16.write_text(lines[0] + "".join(",".join(l.rstrip("\n").split(",")[:12] + [""] * 5) + "\n"
                                          for l in lines[1:]))  # ImageNet16-120's five columns blanked
    for table, extra, words in ((cut, [], "holds 1,000 cells, not NAS-Bench-201's 15,625"),
                                (no_in16, ["--bench201_dataset=ImageNet16-120"], "holds no ImageNet16-120 test")):
        with pytest.raises(cli.ConfigError, match=words):
            run(tiny_folder, tmp_path / table.stem, "--layers=1", "--epochs=1", f"--bench201={table}", *extra)
        assert not (tmp_path / table.stem / "history.json").exists()


def test_unrolled_step_honours_arch_grad_clip(tiny_folder, tmp_path, monkeypatch):
    """--arch_grad_clip caps the second-order alpha gradient too (PC-DARTS' ImageNet setting is 5): the
    gradient norm Adam (alpha's optimiser; the weights' is SGD) receives is at most the clip, every step."""
    norms, adam_step = [], torch.optim.Adam.step

    def recording(opt, *args, **kwargs):
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return adam_step(opt, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording)
    seen = {}
    for clip in (0, 1e-9):
        norms.clear()
        run(tiny_folder, tmp_path / str(clip), "--layers=1", "--epochs=1", "--unrolled=1", f"--arch_grad_clip={clip}")
        seen[clip] = list(norms)
    assert seen[0] and len(seen[0]) == len(seen[1e-9])
    assert min(seen[0]) > 1e-6 and max(seen[1e-9]) <= 1e-9 * (1 + 1e-5)


def test_resume_without_config_json_keeps_the_checkpoints_settings(tiny_folder, tmp_path, capsys):
    """A folder that holds only checkpoint.pt (config.json lost or not copied) resumes with the
    checkpoint's own settings; a flag that contradicts them is refused in one line; a config.json from
    another run is refused too."""
    out = tmp_path / "r"
    run(tiny_folder, out, "--layers=1", "--epochs=1", "--lr=0.1", "--weight_decay=0.01", "--lr_min=0")
    (out / "config.json").unlink()
    with pytest.raises(SystemExit) as e:
        cli.run(search.main, [f"--out={out}", "--resume=1", "--epochs=2", "--lr=0.2"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "you changed lr" in err, err
    cfg = search.make_config([f"--out={out}", "--resume=1", "--epochs=2"])
    assert (cfg.lr, cfg.weight_decay, cfg.epochs, cfg.C, cfg.layers) == (0.1, 0.01, 2, 4, 1)
    _, history = search.search(cfg)
    assert [h["lr"] for h in history] == pytest.approx([0.1, 0.05])  # cosine from 0.1 over 2 epochs
    config = json.loads((out / "config.json").read_text())
    assert (config["lr"], config["weight_decay"]) == (0.1, 0.01)
    assert [(s["from_epoch"], s["epochs"]) for s in config["sessions"]] == [(0, 1), (1, 2)]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["w_opt"]["param_groups"][0]["weight_decay"] == 0.01
    config["lr"] = 0.025  # e.g. another run's config.json copied in
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(cli.ConfigError, match="checkpoint.pt was written with other settings .*lr=0.1 not 0.025"):
        search.search(search.make_config([f"--out={out}", "--resume=1", "--epochs=3"]))


def _stop_at(calls_before_stop, poison):
    """A gradient_step that sends this process SIGTERM at call `calls_before_stop` (a stop the loop
    sees after that step) after applying `poison` to (loss, params)."""
    calls, real = [0], search.gradient_step

    def step(model, params, *args, **kwargs):
        calls[0] += 1
        loss, correct = real(model, params, *args, **kwargs)
        if calls[0] >= calls_before_stop:
            loss = poison(loss, params)
        if calls[0] == calls_before_stop:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss, correct
    return step


def _nan_loss(loss, params):
    return loss * float("nan")


def _nan_weights(loss, params):
    with torch.no_grad():
        params[0].fill_(float("nan"))  # the loss of this step is still finite
    return loss


@pytest.mark.parametrize("calls, poison, epochs_done", [(8, _nan_loss, 1), (2, _nan_weights, 0)])
def test_a_stop_after_the_state_turned_non_finite_writes_no_checkpoint(tiny_folder, tmp_path, monkeypatch,
                                                                        calls, poison, epochs_done):
    """A stop signal before the next finiteness check (--log_every=0: none until the epoch ends) never
    checkpoints the non-finite state; the message names the file with the last good one, if any."""
    monkeypatch.setattr(search, "gradient_step", _stop_at(calls, poison))
    cfg = search.make_config(TINY + [f"--data={tiny_folder}", f"--out={tmp_path}", "--layers=1", "--epochs=3",
                                      "--log_every=0"])
    # the advice can be followed: a resume keeps the run's --lr, so the line sends the user to a new --out
    kept = (f"the last good state is in {tmp_path}/checkpoint.pt .*: lower --lr or --arch_lr and start again in "
            "a new --out" if epochs_done else "no checkpoint was written before: lower --lr or --arch_lr and start again$")
    with checkpoints.StopSignals() as stop, pytest.raises(FloatingPointError, match=f"in epoch {epochs_done + 1} "
                                                          f"by step .*without writing a checkpoint; {kept}"):
        search.search(cfg, stop=stop)
    if epochs_done:
        ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
        assert ckpt["epoch"] == 1 and "step" not in ckpt
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    else:
        assert not checkpoints.has_checkpoint(str(tmp_path / "checkpoint.pt"))


def test_search_bookkeeping_needs_no_float64(tiny_folder, tmp_path, no_float64):
    """MPS has no float64: an epoch's running sums must not need it (ddp.StepSums)."""
    with no_float64():
        _, history = run(tiny_folder, tmp_path, "--layers=1", "--epochs=1")
    assert history[0]["train_acc"] >= 0


def test_only_rank_0_opens_the_benchmark(tiny_folder, nb201_table, tmp_path, monkeypatch):
    """Rank 1 of a DDP search (simulated in this process: its data is rank 0's) never loads the
    --bench201 file (a v1_1 .pth is ~26 GB of RAM per process); rank 0 does."""
    import bench201
    opened, real_loaders, real_nb201 = [], search_run.make_loaders, bench201.NB201
    monkeypatch.setattr(search_run, "make_loaders", lambda cfg, device, rank, world, *a: real_loaders(cfg, device, 0, 1, *a))
    monkeypatch.setattr(bench201, "NB201", lambda path: opened.append(path) or real_nb201(path))
    cfg = search.make_config(TINY + [f"--data={tiny_folder}", "--layers=1", "--epochs=1", f"--bench201={nb201_table}"])
    _, history = search.search(replace(cfg, out=str(tmp_path / "rank1")), rank=1)
    assert opened == [] and "bench201" not in history[0]
    _, history = search.search(replace(cfg, out=str(tmp_path / "rank0")), rank=0)
    assert opened == [nb201_table] and "bench201" in history[0]


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
    with pytest.raises(cli.ConfigError, match="has done 4 epochs already"):
        search.search(search.make_config([f"--out={out}", "--resume=1", "--epochs=3"]))


def test_resume_auto_starts_then_continues_and_never_starts_a_finished_run_over(tiny_folder, tmp_path):
    """--resume=auto, one command line for a scheduler's restarts: a fresh start where --out holds no checkpoint,
    a resume where it does, nothing to run once done, and (its checkpoints removed) a refusal as --resume=0's."""
    out = tmp_path / "auto"
    argv = TINY + [f"--data={tiny_folder}", f"--out={out}", "--layers=1", "--epochs=2", "--resume=auto"]
    assert [r["epoch"] for r in search.search(search.make_config(argv + ["--stop_after=1"]))[1]] == [1]
    assert [r["epoch"] for r in search.search(search.make_config(argv))[1]] == [1, 2]
    assert "resumed after epoch 1" in (out / "log.txt").read_text()
    search.search(search.make_config(argv))
    assert "all 2 epochs are done, nothing to run" in (out / "log.txt").read_text()
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (out / name).unlink()
    with pytest.raises(FileExistsError, match="holds an earlier run's history.json"):
        search.search(search.make_config(argv))
    # the folder is the last --out, else the script's default; any other argument is left as it is
    assert checkpoints.auto_resume(["--resume=auto", "--C=4"], str(tmp_path / "none")) == ["--resume=0", "--C=4"]
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "checkpoint.prev.pt").write_bytes(b"x")
    assert checkpoints.auto_resume([f"--out={out}", f"--out={tmp_path / 'default'}", "--resume=auto"], "x")[-1] == \
        "--resume=1"
    assert checkpoints.auto_resume(["--resume=auto"], str(tmp_path / "default")) == ["--resume=1"]


def test_second_run_into_a_busy_folder_stops_and_the_first_is_untouched(tiny_folder, tmp_path, capsys):
    out = tmp_path / "busy"
    argv = TINY + [f"--data={tiny_folder}", f"--out={out}", "--layers=1", "--epochs=50"]
    first = subprocess.Popen([sys.executable, "search.py", *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not ((out / ".lock").exists() and (out / ".lock").read_text().strip()) and time.time() < deadline:
        time.sleep(0.01)
    with pytest.raises(SystemExit) as e:
        cli.run(search.main, argv + ["--resume=1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and str(out) in err and f"pid {first.pid}" in err, err
    while not (out / "history.json").exists() and time.time() < deadline:  # an epoch ended: checkpoint, then outputs
        time.sleep(0.01)
    assert first.poll() is None, first.stderr.read()  # still running: the refused run did not stop it
    # a lock dies with its process, SIGKILL included: nothing stale stops the next run
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (out / "log.txt").read_text().count("search nb201") == 1  # the refused run wrote nothing
    done = len(json.loads((out / "history.json").read_text()))
    cfg = search.make_config([f"--out={out}", "--resume=1", f"--epochs={done + 1}"])
    assert [r["epoch"] for r in search.search(cfg)[1]] == list(range(1, done + 2))  # ran an epoch


def test_a_bug_keeps_its_traceback(capsys):
    """Only the user's mistakes become one line: torch's own ValueError (what a real bug raises) and
    any other exception propagate with their traceback."""
    def buggy(argv):
        torch.nn.functional.cross_entropy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))

    with pytest.raises(ValueError, match="batch_size"):
        cli.run(buggy, [])
    with pytest.raises(KeyError):
        cli.run(lambda argv: {}["missing"], [])
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as e:  # the user's mistake: one line, exit 2
        cli.run(search.main, ["--space=nope"])
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
    with pytest.raises(cli.ConfigError, match="--bn_decay=0"):
        search.make_config([f"--out={tmp_path}", "--unrolled=1", "--bn_decay=0"])


def test_alpha_grads_record_the_gradient_adam_stepped_with():
    """harness/alpha_grads.py: the per-entry mean and std of the gradients given to Adam (with weight
    decay, which must not leak into .grad), the signal-to-noise summary, and a mid-epoch state that
    continues."""
    from harness.alpha_grads import AlphaGrads
    alpha = torch.nn.Parameter(torch.zeros(2, 3))
    opt = torch.optim.Adam([alpha], 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    grads = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0)) + torch.tensor([1.0, 0.0, -1.0])
    record, resumed = AlphaGrads({"normal": alpha}), AlphaGrads({"normal": alpha})
    for t, g in enumerate(grads):
        alpha.grad = g.clone()
        opt.step()
        record.add()
        if t == 1:  # a mid-epoch checkpoint after two steps, through torch.save's allowed types
            resumed.start(record.state())
        elif t > 1:
            resumed.add()
    snr, per_kind = record.summary(digits=6)
    mean, std = grads.double().mean(0), grads.double().std(0, unbiased=False)
    assert torch.allclose(torch.tensor(per_kind["normal"]["mean"], dtype=torch.float64), mean, rtol=1e-5)
    assert torch.allclose(torch.tensor(per_kind["normal"]["std"], dtype=torch.float64), std, rtol=1e-5)
    # root mean square of mean / std over the entries
    assert snr == pytest.approx(math.sqrt(((mean / std) ** 2).mean().item()), rel=1e-5)
    assert resumed.summary() == record.summary() and resumed.steps == 5
    assert AlphaGrads({"normal": alpha}).summary() == (None, {})  # before any alpha step


@pytest.mark.parametrize("steps", [31, 390])  # an epoch of the 4k and of the 50k searches
def test_alpha_snr_reads_the_full_pass_gradient(steps):
    """An epoch's alpha batches are one pass without replacement over the alpha images: the batch-sampling
    noise cancels in the epoch's mean gradient, so a zero-mean population reads ~0 and a population whose
    mean is 0.3 of the batch-to-batch spread reads 0.3, with no noise floor to take off; batches drawn
    i.i.d. from the same population would read ~1 / sqrt(T - 3) (0.19 over 31 steps, 0.05 over 390)."""
    from harness.alpha_grads import AlphaGrads
    g = torch.Generator().manual_seed(steps)
    per_image = torch.randn(steps * 8, 60, 5, generator=g, dtype=torch.float64)
    per_image -= per_image.mean(0)  # the alpha set's own gradient: 0 in every entry
    alpha = torch.nn.Parameter(torch.zeros(60, 5))

    def read(batches, shift=0.0):
        record = AlphaGrads({"normal": alpha})
        spread = batches.std(0, unbiased=False)
        for b in batches:
            alpha.grad = (b + shift * spread).float()
            record.add()
        return record.summary(digits=6)[0]
    one_pass = per_image[torch.randperm(len(per_image), generator=g)].view(steps, 8, 60, 5).mean(1)
    assert read(one_pass) < 1e-3 and read(one_pass, 0.3) == pytest.approx(0.3, abs=1e-3)
    iid = per_image[torch.randint(len(per_image), (len(per_image),), generator=g)].view(steps, 8, 60, 5).mean(1)
    assert read(iid) == pytest.approx(1 / math.sqrt(steps - 3), rel=0.15)


def test_each_epoch_logs_alphas_gradient_signal(tiny_folder, tmp_path):
    """history.json: alpha_snr per epoch; alphas.json: the per-edge gradient mean and std (E, n_ops);
    none before --arch_start, whose epochs take no alpha step."""
    _, history = run(tiny_folder, tmp_path, "--layers=1", "--epochs=2", "--arch_start=1", "--batch_size=1")
    rows = json.loads((tmp_path / "alphas.json").read_text())
    stats = rows[1]["alpha_grad"]["normal"]
    assert "alpha_snr" not in history[0] and "alpha_grad" not in rows[0]
    assert len(stats["mean"]) == 6 and len(stats["std"][0]) == 5 and all(s > 0 for row in stats["std"] for s in row)
    ratios = [(m / s) ** 2 for ms, ss in zip(stats["mean"], stats["std"]) for m, s in zip(ms, ss)]
    assert history[1]["alpha_snr"] == pytest.approx(math.sqrt(sum(ratios) / 30), rel=1e-2)
    assert "alpha_grad" not in json.loads((tmp_path / "history.json").read_text())[1]
    assert f" snr {history[1]['alpha_snr']:.3f}" in (tmp_path / "log.txt").read_text()


def test_a_resume_of_a_mistyped_folder_is_refused_and_makes_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.run(search.main, [f"--out={tmp_path / 'typo'}", "--resume=1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert f"no checkpoint at {tmp_path / 'typo' / 'checkpoint.pt'}: drop --resume=1" in err, err
    assert not (tmp_path / "typo").exists()  # no folder, no .lock left behind


def test_the_log_says_what_is_in_force_and_what_leaves_alpha_untrained(tiny_folder, nb201_table, tmp_path):
    # --space=darts takes DARTS' defaults, --pc_k=4 PC-DARTS' (arch_start 15): --help shows NB201's
    argv = TINY + [f"--data={tiny_folder}", f"--out={tmp_path}", "--space=darts", "--pc_k=2", "--C=4",
                   "--layers=2", "--epochs=1", "--batch_size=4", f"--bench201={nb201_table}"]
    search.search(search.make_config(argv))
    log = (tmp_path / "log.txt").read_text()
    assert ("weights: SGD lr 0.1 -> 0 (cosine), momentum 0.9, weight decay 0.0003; alpha: Adam lr 0.0006, "
            "weight decay 0.001, from epoch 16; each iteration: alpha step, then weight step") in log, log
    assert "note: --arch_start=15 >= --epochs=1: no alpha step runs" in log
    assert "note: --layers=2: every cell is a reduction cell" in log
    assert " valid -/- " in log  # no alpha batch before --arch_start: nothing measured
    assert "note: --bench201 is not used: NAS-Bench-201 holds cells of its own space only, not of --space=darts" in log


def test_a_resume_to_fewer_epochs_than_done_is_refused_alone(tiny_folder, tmp_path):
    run(tiny_folder, tmp_path / "r", "--layers=1", "--epochs=2")
    with pytest.raises(cli.ConfigError, match="--epochs=1: this run has done 2 epochs already"):
        search.search(search.make_config([f"--out={tmp_path / 'r'}", "--resume=1", "--epochs=1"]))
    assert "nothing to run" not in (tmp_path / "r" / "log.txt").read_text()  # no line saying otherwise first


def test_resuming_a_finished_search_says_there_is_nothing_to_run(tiny_folder, tmp_path):
    _, history = run(tiny_folder, tmp_path / "r", "--layers=1", "--epochs=1")
    _, again = search.search(search.make_config([f"--out={tmp_path / 'r'}", "--resume=1"]))
    assert again == history  # no epoch ran
    assert "resumed after epoch 1; all 1 epochs are done, nothing to run (--epochs=N extends it)" in \
        (tmp_path / "r" / "log.txt").read_text()


class StopDuringStep:
    """search.search's `stop`: a stop signal that arrives during step k of an epoch, so the loop writes
    its mid-epoch checkpoint after that step and stops (as StopSignals does on SIGTERM)."""

    def __init__(self, k):
        self.k, self.armed = k, False

    def requested(self, step=None):
        return step == self.k

    def stop(self, where, path):
        raise cli.Preempted(f"stopped {where}", 15)


def test_an_epochs_last_partial_batch_is_a_step_unless_drop_last(tiny_folder, tmp_path, monkeypatch):
    """12 images per half, batch 5: weight steps of 5, 5 and 2 images, as DARTS' and NB201's loaders
    give (the paper's 391 steps on 25,000 images); --drop_last=1 leaves out the 2. Alpha batches are
    full (DARTS draws a whole batch for every alpha step)."""
    seen, real_w, real_a = {"w": [], "a": []}, search.weight_step, search.alpha_step
    monkeypatch.setattr(search, "weight_step", lambda *a: seen["w"].append(len(a[5])) or real_w(*a))
    monkeypatch.setattr(search, "alpha_step", lambda *a: seen["a"].append(len(a[5])) or real_a(*a))
    for drop, sizes in ((0, [5, 5, 2]), (1, [5, 5])):
        seen["w"].clear(), seen["a"].clear()
        run(tiny_folder, tmp_path / str(drop), "--layers=1", "--epochs=1", "--batch_size=5", f"--drop_last={drop}")
        assert seen["w"] == sizes and seen["a"] == [5] * len(sizes)
        assert f"{len(sizes)} steps per epoch of 5 images" in (tmp_path / str(drop) / "log.txt").read_text()


def test_a_stop_before_the_partial_batch_resumes_bit_identically(tiny_folder, tmp_path):
    common = ("--layers=1", "--epochs=2", "--batch_size=5", "--seed=4")
    full, full_history = run(tiny_folder, tmp_path / "full", *common)
    argv = TINY + [f"--data={tiny_folder}", f"--out={tmp_path / 'cut'}", *common]
    with pytest.raises(cli.Preempted, match="in epoch 1 after step 2/3"):  # the next step is the 2-image one
        search.search(search.make_config(argv), stop=StopDuringStep(2))
    resumed, history = search.search(search.make_config([f"--out={tmp_path / 'cut'}", "--resume=1"]))
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    untimed = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert untimed(history) == untimed(full_history)


def test_a_run_saved_before_drop_last_existed_keeps_dropping_the_partial_batch(tiny_folder, tmp_path, capsys):
    """Runs made before --drop_last existed dropped the last partial batch: a resume, the sweep and the
    ladder read a config.json without the key as --drop_last=1 (SearchConfig.ADDED_LATER)."""
    out = tmp_path / "old"
    run(tiny_folder, out, "--layers=1", "--epochs=2", "--batch_size=5", "--drop_last=1", "--stop_after=1")
    config = json.loads((out / "config.json").read_text())
    del config["drop_last"]
    (out / "config.json").write_text(json.dumps(config))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    del ckpt["config"]["drop_last"]
    torch.save(ckpt, out / "checkpoint.pt")
    cfg = search.make_config([f"--out={out}", "--resume=1"])
    assert cfg.drop_last
    search.search(cfg)
    assert (out / "log.txt").read_text().count("2 steps per epoch of 5 images") == 2
    with pytest.raises(cli.ConfigError, match="you changed drop_last"):
        search.make_config([f"--out={out}", "--resume=1", "--drop_last=0"])


def test_an_epochs_peak_gpu_memory_is_read_then_reset(monkeypatch):
    """history.json's gpu_mem_mb / gpu_reserved_mb (search and train.py, CUDA only): each epoch's own peaks."""
    resets = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 734.5 * 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device: 1024 * 2**20)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: resets.append(device))
    cuda = torch.device("cuda", 0)
    assert runs.gpu_memory(cuda) == dict(gpu_mem_mb=734.5, gpu_reserved_mb=1024.0) and resets == [cuda]
    assert runs.gpu_memory(torch.device("cpu")) == {} and len(resets) == 1  # no such numbers on a CPU


def test_the_logged_alpha_entropy_and_margin_of_hand_made_alphas():
    """history.json's `entropy` (mean over edges of softmax(alpha)'s entropy, nats) and `margin` (the smallest
    top-2 gap over edges), on an NB201 supernet's alphas set by hand: 5 edges at softmax (3, 1, 1, 1, 1) / 7,
    one at (2, 1, 1, 1, 1) / 6."""
    model = build_supernet("nb201", 3, C=4, layers=1, seed=0)
    with torch.no_grad():
        model.alphas_normal.zero_()
        assert search_run.alpha_entropy(model) == pytest.approx(math.log(5), rel=1e-6)  # uniform: log 5 nats
        assert search_run.alpha_margin(model) == 0.0
        model.alphas_normal[:, 0] = math.log(3)
        model.alphas_normal[2, 0] = math.log(2)
    h = lambda p: -sum(q * math.log(q) for q in p)  # noqa: E731
    expected = (5 * h([3 / 7] + [1 / 7] * 4) + h([2 / 6] + [1 / 6] * 4)) / 6
    assert search_run.alpha_entropy(model) == pytest.approx(expected, rel=1e-6)
    assert search_run.alpha_margin(model) == pytest.approx(1 / 6, abs=1e-6)  # (2 - 1) / 6 < (3 - 1) / 7
