"""BN-NAS on NAS-Bench-201 (bnnas.py, bnnas_search.py, scripts/table3.py; paper Sec. 5.1, Table 3): the
single-path forward against the full cell, where the extra BNs sit, what `none`'s BN does to gamma, the
per-edge argmax against a brute force and the evolution, a 2-step smoke run, bit-exact resume, one-line
errors, and the Table 3 writer on tiny runs."""
import itertools
import json
import os
import shutil
import signal
import sys

import numpy as np
import pytest
import torch

import bnnas
import bnnas_search
import genotypes as G
import plot
import search
from conftest import fake_nb201_accuracy
from harness import checkpoints, cli, runs
from ops import Zero
from spaces import NB201_OPS
from supernet import NB201SearchCell, build_supernet, param_groups, set_trainable
from test_preflight import one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import table3  # noqa: E402

TINY = ["--dataset=imagefolder", "--C=4", "--layers=1", "--batch_size=4", "--log_every=0", "--device=cpu"]
NONE = NB201_OPS.index("none")


def run(folder, out, *extra, stop=None):
    cfg = bnnas_search.make_config(TINY + [f"--data={folder}", f"--out={out}", *extra])
    return bnnas_search.search(cfg, stop=stop)


def test_single_path_forward_equals_full_cell_with_one_hot_weights():
    model = bnnas.build_bnnas_supernet(10, C=4, N=2, seed=1).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 16, 16, generator=g)
    with torch.no_grad():  # random gamma and beta: every extra BN does something
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
    for path in [(0, 1, 2, 3, 4, 0), (1, 1, 1, 1, 1, 1), (0, 0, 0, 0, 0, 0), *bnnas.sample_paths(g, 4).tolist()]:
        one_hot = torch.nn.functional.one_hot(torch.tensor(path), len(NB201_OPS)).float()  # (6, 5)
        h_single = h_full = model.stem(x)
        for block in model.cells:  # cell by cell: every cell's output agrees to the bit
            if isinstance(block, NB201SearchCell):
                h_single, h_full = bnnas.single_path_cell(block, h_single, path), block(h_full, one_hot)
                assert torch.equal(h_single, h_full), path
            else:
                h_single, h_full = block(h_single), block(h_full)
        assert torch.equal(model(x, path), model.classifier(
            torch.nn.functional.adaptive_avg_pool2d(model.lastact(h_full), 1).flatten(1)))


def test_indicator_is_mean_abs_gamma_and_paths_draw_each_edge_uniformly():
    model = bnnas.build_bnnas_supernet(10, C=4, N=1, seed=0)
    cell = model.search_cells()[0]
    with torch.no_grad():  # a negative gamma counts by its size (BN-NAS: |gamma|)
        bnnas.last_bn(cell.mixed[2].ops[3]).weight.copy_(torch.tensor([-2.0, 2.0, -1.0, -3.0]))
    assert bnnas.indicators(model)[0, 2, 3].item() == 2.0
    paths = bnnas.sample_paths(torch.Generator().manual_seed(0), 2000)  # (steps, 6) op indices
    assert paths.shape == (2000, 6) and paths.min() == 0 and paths.max() == len(NB201_OPS) - 1
    counts = torch.stack([torch.bincount(paths[:, e], minlength=5) for e in range(6)])  # (6, 5)
    assert ((counts - 400).abs() < 80).all(), counts  # uniform per edge: 400 +- 4.5 sd
    same = (paths == paths[:, :1]).all(1).float().mean().item()  # every edge alike: 1 in 5^5 when independent
    assert same < 0.01


def test_extra_bn_only_on_non_parametric_candidates_and_the_random_features_are_rf_darts():
    model = bnnas.build_bnnas_supernet(10, C=4, N=2, seed=5)
    for cell in model.search_cells():
        for mixed in cell.mixed:
            for name, op in zip(NB201_OPS, mixed.ops):
                bns = [m for m in op.modules() if isinstance(m, torch.nn.BatchNorm2d)]
                assert len(bns) == 1 and bns[0].affine and not bns[0].track_running_stats, name
                # the extra BN wraps exactly the non-parametric ops; a conv op's BN is its own
                assert isinstance(op, bnnas.WithBN) == (name in bnnas.NON_PARAMETRIC), name
                assert bnnas.last_bn(op) is bns[0]
    assert not model.arch_parameters() and model.alphas() == {} and model.betas() is None  # no alpha in BN-NAS
    # the same seed draws the same frozen convolutions and classifier as the RF-DARTS supernet
    rf = dict(build_supernet("nb201", 10, C=4, layers=2, seed=5).named_parameters())
    for name, p in model.named_parameters():
        if p.dim() == 4 or name.startswith("classifier"):
            assert torch.equal(p, rf[name]), name
    # Table 1's switch reaches the extra BNs: they are cell BN, trained under A and C, as is every op's BN
    groups = set_trainable(model, "C", verbose=False)
    extra = {id(m.bn.weight) for m in model.modules() if isinstance(m, bnnas.WithBN)}
    assert extra <= {id(p) for p in groups["cell_bn"]} and all(p.requires_grad for p in groups["cell_bn"])


def test_none_bn_outputs_beta_and_its_gamma_gets_no_gradient():
    op = bnnas.WithBN(Zero(1), 4).train()
    with torch.no_grad():
        op.bn.weight.copy_(torch.tensor([0.5, 1.0, 2.0, -3.0]))
        op.bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    x = torch.randn(5, 4, 6, 6)
    y = op(x)
    assert torch.equal(y, op.bn.bias.view(1, 4, 1, 1).expand_as(y))  # beta, whatever gamma is
    (y * torch.randn_like(y)).sum().backward()
    assert torch.equal(op.bn.weight.grad, torch.zeros(4)) and op.bn.bias.grad.abs().sum() > 0


def test_per_edge_argmax_equals_brute_force_over_all_cells_and_evolution_reaches_it():
    everything = np.array(list(itertools.product(range(5), repeat=6)))  # (15625, 6)
    for seed in range(4):
        ind = np.random.default_rng(seed).uniform(0.5, 1.5, (6, 5))
        if seed == 3:
            ind[:, NONE] = 1.2  # `none` ahead on every edge but one
            ind[2, 3] = 1.3
        scores = ind[np.arange(6), everything].sum(1)  # the BN score of every cell
        brute = G.NB201Cell.from_indices(everything[scores.argmax()])
        assert bnnas.best_cell(ind) == brute and bnnas.cell_score(ind, brute) == pytest.approx(scores.max())
        evolved, scored = bnnas.evolve(ind, seed=seed)
        assert evolved == brute and scored <= 50 * 20  # BN-NAS's budget: 50 cells a generation
    assert bnnas.best_cell(np.ones((6, 5))) == G.NB201Cell(("none",) * 6)  # the init: ties go to `none`


def test_two_step_smoke_run_writes_every_output(tiny_folder, tmp_path):
    out = tmp_path / "smoke"  # 12 weight images, batch 6: 2 steps
    model, history = run(tiny_folder, out, "--epochs=1", "--batch_size=6", "--seed=2")
    for name in ("config.json", "log.txt", "history.json", "indicators.json", "genotype.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    log = (out / "log.txt").read_text()
    assert "2 steps per epoch" in log and "] epoch 1/1 " in log
    ind = json.loads((out / "indicators.json").read_text())[-1]
    assert np.array(ind["indicators"]).shape == (6, 5) and np.array(ind["per_cell"]).shape == (3, 6, 5)
    assert np.allclose(np.array(ind["per_cell"]).mean(0), ind["indicators"], atol=1e-6)
    genotype = json.loads((out / "genotype.json").read_text())
    assert genotype["arch"] == bnnas.best_cell(bnnas.indicators(model).mean(0)).to_str()
    assert genotype["nb201_index"] == G.nb201_index(genotype["arch"]) and genotype["evolution"]["best_score"]
    assert history[0]["none_count"] == genotype["arch"].count("none~")
    assert "indicators" not in json.loads((out / "history.json").read_text())[0]
    # plot.py on this folder beside a search run: BN-NAS gets its cell and its indicators, not Fig. 1 (no alpha half)
    rf = tmp_path / "rf"
    search.search(search.make_config(TINY + [f"--data={tiny_folder}", f"--out={rf}", "--epochs=1", "--subset=16"]))
    drawn = {os.path.basename(p) for p in plot.main([out, rf, f"--out={tmp_path / 'fig'}"])}
    assert {"indicators_smoke.png", "cell_smoke.png", "cell_rf.png", "skip_and_bench.png"} <= drawn, drawn


def test_trained_bn_indicators_trains_only_each_candidates_last_bn(tiny_folder, tmp_path):
    """--trained_bn=indicators, BN-NAS's own code: the indicator BNs move; every other tensor (stem and
    reduction-block BN, last BN, classifier, convs) stays bit-identical to its seeded init."""
    model, _ = run(tiny_folder, tmp_path / "ind", "--epochs=1", "--batch_size=6", "--seed=2", "--trained_bn=indicators")
    init = bnnas.build_bnnas_supernet(3, 4, 1, "kaiming", 2)
    indicator = {id(p) for p in bnnas.indicator_parameters(model)}
    moved = {n for (n, p), q in zip(model.named_parameters(), init.parameters()) if not torch.equal(p, q)}
    named = dict(model.named_parameters())
    assert moved and all(id(named[n]) in indicator for n in moved)
    assert any("classifier" in n for n in named) and not any("classifier" in n for n in moved)
    log = (tmp_path / "ind" / "log.txt").read_text()  # what trains in the end, not option C's groups
    for name, params in param_groups(model).items():
        if not params:  # BN-NAS has no alpha
            continue
        trained = sum(p.numel() for p in params if id(p) in indicator)
        assert (name == "cell_bn") == (trained > 0), name
        assert f"option C: {name:10s} {trained:,} of {sum(p.numel() for p in params):,} elements trained" in log
    with pytest.raises(cli.ConfigError, match="needs --option=C"):
        bnnas_search.make_config(["--trained_bn=indicators", "--option=A", "--dataset=synthetic"])


def test_resume_after_epoch_1_equals_an_uninterrupted_2_epoch_run(tiny_folder, tmp_path):
    full, _ = run(tiny_folder, tmp_path / "full", "--epochs=2", "--seed=3", "--option=A")
    run(tiny_folder, tmp_path / "cut", "--epochs=2", "--seed=3", "--option=A", "--stop_after=1")
    resumed, history = bnnas_search.search(bnnas_search.make_config([f"--out={tmp_path / 'cut'}", "--resume=1"]))
    assert [h["epoch"] for h in history] == [1, 2]
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    for name in ("indicators.json", "genotype.json"):
        assert (tmp_path / "full" / name).read_text() == (tmp_path / "cut" / name).read_text(), name


def test_a_kill_between_an_epochs_checkpoint_and_its_outputs_leaves_a_run_that_resumes(tiny_folder, tmp_path,
                                                                                       monkeypatch):
    """As search.py: the checkpoint first, so a run killed before an epoch's outputs resumes, and the resume
    writes the outputs its checkpoint holds."""
    out, real = tmp_path / "k", bnnas_search.write_outputs

    def killed(folder, history):
        raise KeyError("killed here")
    monkeypatch.setattr(bnnas_search, "write_outputs", killed)
    with pytest.raises(KeyError, match="killed here"):
        run(tiny_folder, out, "--epochs=2", "--stop_after=1")
    monkeypatch.setattr(bnnas_search, "write_outputs", real)
    bnnas_search.search(bnnas_search.make_config([f"--out={out}", "--resume=1", "--stop_after=0"]))
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [1, 2]


class StopAt(checkpoints.StopSignals):
    """A SIGTERM that arrives after the `at`-th poll of the loop (mid-epoch)."""

    def __init__(self, at):
        super().__init__()
        self.polls, self.at = 0, at

    def requested(self, step=None):
        self.polls += 1
        return signal.SIGTERM if self.polls >= self.at else 0


def test_a_stop_mid_epoch_resumes_bit_exactly(tiny_folder, tmp_path):
    full, _ = run(tiny_folder, tmp_path / "full", "--epochs=2", "--seed=4")
    with pytest.raises(cli.Preempted, match="after step 1/3"):
        run(tiny_folder, tmp_path / "cut", "--epochs=2", "--seed=4", stop=StopAt(4))  # epoch 2, step 1
    ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 1  # option C: the frozen convs as names and a hash (harness/frozen_state.py)
    assert ckpt["frozen"]["names"] and not set(ckpt["frozen"]["names"]) & set(ckpt["model"])
    resumed, _ = bnnas_search.search(bnnas_search.make_config([f"--out={tmp_path / 'cut'}", "--resume=1"]))
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n


def test_none_gamma_moves_only_by_weight_decay_on_its_steps_under_both_settings(tiny_folder, tmp_path):
    """The docstring's claim, replayed: SGD (Nesterov) with a zero gradient, on the steps that sample
    `none` on that edge, gives every cell's `none` gamma exactly; the same under A and C; 1 without decay."""
    flags = ("--epochs=2", "--seed=6", "--lr=0.1", "--weight_decay=0.05")
    gammas = {}
    for option in "AC":
        model, _ = run(tiny_folder, tmp_path / option, *flags, f"--option={option}")
        gammas[option] = bnnas.indicators(model)[:, :, NONE]  # (cells, 6)
    assert torch.equal(gammas["A"], gammas["C"])
    cfg = bnnas_search.make_config(TINY + [f"--data={tiny_folder}", f"--out={tmp_path / 'C'}", "--resume=1"])
    want = []
    for e in range(6):
        gamma, buf = torch.ones(1), None
        for epoch in range(2):
            lr = runs.cosine_lr(0.1, epoch, 2, cfg.lr_min)
            for path in bnnas_search.epoch_paths(cfg, epoch, 3):
                if path[e] != NONE:
                    continue  # off the path: no gradient, SGD leaves gamma and its momentum alone
                d = torch.zeros(1).add(gamma, alpha=0.05)
                buf = d.clone() if buf is None else buf.mul(0.9).add(d)
                gamma = gamma.add(d.add(buf, alpha=0.9), alpha=-lr)
        want.append(gamma.item())
    assert any(w < 1 for w in want)  # `none` was sampled and decayed
    torch.testing.assert_close(gammas["C"], torch.tensor(want, dtype=torch.float64).expand_as(gammas["C"]),
                               rtol=1e-6, atol=1e-7)
    model, _ = run(tiny_folder, tmp_path / "no_decay", *flags, "--bn_decay=0")
    assert torch.equal(bnnas.indicators(model)[:, :, NONE], torch.ones(3, 6, dtype=torch.float64))
    # BN-NAS's code's setting (only the indicators trained) decays no BN weight unless told to
    base = TINY + [f"--data={tiny_folder}", "--option=C", "--trained_bn=indicators"]
    assert not bnnas_search.make_config(base + [f"--out={tmp_path / 'i'}"]).bn_decay
    assert bnnas_search.make_config(base + [f"--out={tmp_path / 'j'}", "--bn_decay=1"]).bn_decay


@pytest.mark.parametrize("script,args,message", [
    ("bnnas_search", ["--option=B"], "--option=B: choose A (conv + BN) or C (only BN)"),
    ("bnnas_search", ["--space=darts"], "NAS-Bench-201 only"),
    ("bnnas_search", ["--epochs=0"], "--epochs=0: out of range"),
    ("bnnas_search", ["--colour=red"], "unknown config key 'colour'"),
    ("bnnas_search", ["--dataset=imagenet"], "--dataset=imagenet"),
    ("bnnas_search", ["--dataset=imagefolder", "--data=/nonexistent/folder"], "/nonexistent/folder"),
    ("table3", ["--seed=1"], "--seed: the table sets these per run"),
    ("table3", ["--options=AB"], "--options=AB"),
    ("table3", ["--epochs=10,10"], "--epochs=10,10"),
    ("table3", ["--option=B"], "--option: the table sets these per run"),
    ("table3", ["--rf_darts=/nonexistent/sweep"], "--rf_darts=/nonexistent/sweep: no such folder"),
    ("table3", ["--lr=-1"], "--lr=-1.0: out of range"),  # a run's flag, checked before any run starts
])
def test_bad_flags_end_in_one_line_before_anything_is_written(tmp_path, capsys, script, args, message):
    main = {"bnnas_search": bnnas_search.main, "table3": table3.main}[script]
    assert message in one_line_error(main, [f"--out={tmp_path / 'x'}", "--dataset=synthetic", *args], capsys)
    assert not (tmp_path / "x").exists()


def test_a_resume_into_a_search_py_folder_stops_in_one_line(tiny_folder, tmp_path, capsys):
    # a search.py checkpoint holds every key a BN-NAS one must; without the check, load_state_dict's traceback
    out = str(tmp_path / "rf")
    search.search(search.make_config(TINY + [f"--data={tiny_folder}", f"--out={out}", "--epochs=1",
                                             "--subset=16"]))
    before = sorted(os.listdir(out))
    err = one_line_error(bnnas_search.main, [f"--out={out}", "--resume=1", "--device=cpu"], capsys)
    assert "written by search.py" in err and sorted(os.listdir(out)) == before


def test_a_second_run_into_a_held_folder_stops_in_one_line(tiny_folder, tmp_path, capsys):
    out = tmp_path / "held"
    os.makedirs(out)
    with checkpoints.RunLock(str(out)):
        err = one_line_error(bnnas_search.main, TINY + [f"--data={tiny_folder}", f"--out={out}", "--epochs=1"], capsys)
    assert "in use by another run" in err and os.listdir(out) == [".lock"]  # the refused run wrote nothing


def test_table3_rows_count_best_mean_std_and_all_none():
    recs = [dict(name=f"C_e10_s{s}", state="finished", arch=arch, all_none=arch.count("none~") == 6, size=[2000, 2000, 310],
                 valid=v, test=t) for s, (arch, v, t) in enumerate([
                     (table3.ALL_NONE.to_str(), 9.71, 10.0), (table3.ALL_NONE.to_str(), 9.71, 10.0),
                     (G.nb201_arch(9930), 91.55, 94.36)], 1)] + [dict(name="C_e10_s4", state="failed: boom")]
    r = table3.row(recs)
    assert r["best"] == dict(name="C_e10_s3", valid=91.55, test=94.36) and (r["finished"], r["runs"]) == (3, 4)
    assert r["test"]["mean"] == pytest.approx((10 + 10 + 94.36) / 3)
    assert r["test"]["std"] == pytest.approx(np.std([10, 10, 94.36], ddof=1))
    assert r["all_none"] == dict(count=2, n=3)
    line = table3.table_line(dict(r, method="BN-NAS", option="C", epochs=10, paper=table3.PAPER[("C", 10)]))
    assert "| ✗ | ✓ | 10 |" in line and "2 of 3" in line and "9.71 / 10.00" in line and "91.55 / 94.36 (C_e10_s3)" in line


def test_table3_from_tiny_runs_skips_finished_ones_and_names_a_busy_one(tiny_folder, nb201_table, tmp_path, capsys):
    rf = tmp_path / "rf"  # an RF-DARTS row: one tiny search.py run, as a sweep.py folder holds it
    search.search(search.make_config(TINY + [f"--data={tiny_folder}", f"--out={rf / 'C_s1'}", "--epochs=1"]))
    shutil.copytree(rf / "C_s1", rf / "C_s3")  # a seed the table's runs do not have: not in RF-DARTS's row
    out = tmp_path / "t3"
    argv = TINY + [f"--data={tiny_folder}", f"--out={out}", "--options=AC", "--epochs=1", "--seeds=1,2",
                   f"--rf_darts={rf}", f"--bench201={nb201_table}"]
    summary = table3.main(argv)
    text = (out / "table3.md").read_text()
    assert [r["method"] for r in summary["rows"]] == ["BN-NAS", "BN-NAS", f"RF-DARTS ({rf})"]
    assert [s["name"] for s in summary["rows"][2]["seeds"]] == ["C_s1"]  # best of the same seeds as BN-NAS's
    assert "Note: RF-DARTS's runs" not in text  # the same images: no size note
    sized = [dict(r, sizes=[(2000 if r["method"] == "BN-NAS" else 8000, 0, 10)]) for r in summary["rows"]]
    assert table3.size_note(sized)[1].startswith("Note: RF-DARTS's runs trained their weights on 8,000 images, "
                                                 "the BN-NAS runs on 2,000")
    for r in summary["rows"][:2]:
        assert r["finished"] == 2 and r["all_none"]["n"] == 2 and r["best"]["test"] == max(s["test"] for s in r["seeds"])
        for s in r["seeds"]:  # each cell is the argmax of its run's last indicators, looked up in the table
            ind = json.loads((out / s["name"] / "indicators.json").read_text())[-1]["indicators"]
            assert s["arch"] == bnnas.best_cell(ind).to_str()
            assert s["test"] == fake_nb201_accuracy(G.nb201_index(s["arch"])) and s["valid"] == s["test"] - 3
    assert "| BN-NAS | ✓ | ✓ | 1 |" in text and "| BN-NAS | ✗ | ✓ | 1 |" in text and "of 2 (" in text
    assert "| C_s1 | finished |" in text and "Why `none` wins" in text
    capsys.readouterr()
    busy = out / "A_e1_s1"
    os.remove(busy / "history.json")  # A_e1_s1 is no longer finished, and another process holds it
    with checkpoints.RunLock(str(busy)), pytest.raises(SystemExit) as e:
        table3.main(argv)
    said = capsys.readouterr()
    assert e.value.code == 1 and said.out.count("finished before, skipped") == 3, said.out
    assert "A_e1_s1: busy in another process" in said.out and "| A_e1_s1 | busy" in (out / "table3.md").read_text()
    with pytest.raises(cli.ConfigError, match="A_e1_s1 holds a run with other settings .lr=0.025 not 0.1.: pass --lr=0.025 to continue it"):
        table3.main(argv + ["--lr=0.1"])


def test_help_lists_the_keys_of_both_scripts(capsys):
    with pytest.raises(SystemExit) as e:
        table3.main(["--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0 and "--rf_darts=results/nb201-sweep" in text and "--bn_decay=1" in text
    assert "--stop_after=" not in text and "usage: python scripts/table3.py" in text
    with pytest.raises(SystemExit) as e:
        bnnas_search.main(["-h"])
    text = capsys.readouterr().out
    assert e.value.code == 0 and "--option=C" in text and "only BN" in text
