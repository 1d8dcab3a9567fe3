"""sweep.py: options x seeds of a tiny search, N at a time; the table and figures; a second invocation
skips finished runs; a killed sweep resumes to the result of an uninterrupted run; bad flags, failed runs
and the exit status; what counts as done (exactly --epochs); folders refused before any start (busy,
other settings, longer runs); a stop signal while a search starts; the benchmark dataset in the table."""
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import torch

import genotypes as G
from harness import cli, runs
import search
import sweep
from spaces import get_space
from harness import cell_stats, frozen_state, jobs as runner, sweep_table
from conftest import fake_nb201_accuracy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flags(folder, table, *extra):
    return ["--dataset=imagefolder", f"--data={folder}", "--C=4", "--layers=1", "--batch_size=4",
            "--log_every=0", "--device=cpu", f"--bench201={table}", *extra]


def test_sweep_table_figures_skip_and_a_failed_run(tiny_folder, nb201_table, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = [f"--out={out}", "--options=BC", "--seeds=1,2", "--jobs=2", "--threads=1",
            *flags(tiny_folder, nb201_table, "--epochs=2")]
    (out / "B_s2").mkdir(parents=True)
    (out / "B_s2" / "checkpoint.pt").write_bytes(b"not a checkpoint")  # this run will fail on resume
    with pytest.raises(SystemExit) as e:  # a failed run makes the exit status non-zero, through cli.run
        cli.run(sweep.main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 1 and "1 of 4 runs did not finish (B_s2)" in err and err.count("\n") == 1, err
    assert (out / "table.md").is_file() and (out / "figures" / "sweep_skip_and_bench.png").is_file()
    assert (out / "figures" / "sweep_fig1.png").is_file()
    table = json.loads((out / "table.json").read_text())
    states = {f"{o}_s{r['seed']}": r["state"] for o, s in table.items() for r in s["seeds"]}
    assert states["B_s1"] == states["C_s1"] == states["C_s2"] == "finished"
    assert states["B_s2"].startswith("failed (exit 2): error: cannot resume"), states
    for option, n in (("B", 1), ("C", 2)):
        recs = [r for r in table[option]["seeds"] if r["state"] == "finished"]
        accs = [fake_nb201_accuracy(json.loads((out / f"{option}_s{r['seed']}" / "genotype.json").read_text())
                                    ["nb201_index"]) for r in recs]
        assert table[option]["n"] == n and [r["bench_test_acc"] for r in recs] == pytest.approx(accs)
        assert table[option]["bench_test_acc"]["mean"] == pytest.approx(sum(accs) / n)
        cells = [G.NB201Cell.from_str(r["arch"]) for r in recs]  # the all-skip count is over the finished runs
        assert [r["all_skip"] for r in recs] == [G.all_skip(c) for c in cells]
        assert table[option]["all_skip"] == dict(count=sum(map(G.all_skip, cells)), n=n)
    assert "| final skip edges | all-skip cells |" in (out / "table.md").read_text()
    b_row = next(line for line in (out / "table.md").read_text().splitlines() if line.startswith("| B | 1 | "))
    assert f" | {table['B']['all_skip']['count']} of 1 (" in b_row, b_row
    for option in "BC":  # runs that ended with >= 4 of the 6 skip edges, over the finished runs
        recs = [r for r in table[option]["seeds"] if r["state"] == "finished"]
        assert table[option]["skip_heavy"] == dict(count=sum(r["skip_count"] >= 4 for r in recs), n=len(recs))
    assert "| B_s2 | failed (exit 2)" in (out / "table.md").read_text()
    # the same command again: finished runs are skipped and left as they were
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("?_s?/history.json")}
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        sweep.main(argv)
    said = capsys.readouterr().out
    assert e.value.code == 1
    assert all(f"{name}: finished before, skipped" in said for name in ("B_s1", "C_s1", "C_s2")), said
    assert {p: p.stat().st_mtime_ns for p in out.glob("?_s?/history.json")} == stamps


def test_a_killed_sweep_resumes_to_the_uninterrupted_result(tiny_folder, nb201_table, tmp_path):
    common = flags(tiny_folder, nb201_table, "--epochs=8")
    out = tmp_path / "sweep"
    cmd = [sys.executable, "sweep.py", f"--out={out}", "--options=C", "--seeds=3", "--threads=1", *common]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "C_s3" / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # the sweep dies at once; its search gets SIGTERM and checkpoints
    proc.wait()
    lock = out / "C_s3" / ".lock"
    while time.time() < deadline:  # the search has exited once its lock can be taken
        try:
            with open(lock, "a+") as f:
                import fcntl
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.05)
    assert len(json.loads((out / "C_s3" / "history.json").read_text())) < 8  # really cut short
    sweep.main(cmd[2:])  # the same sweep again, in this process: it resumes the search (a subprocess)
    full, _ = search.search(search.make_config(common + ["--option=C", "--seed=3", f"--out={tmp_path / 'full'}"]))
    ckpt = torch.load(out / "C_s3" / "checkpoint.pt", weights_only=True)
    resumed, frozen = ckpt["model"], ckpt["frozen"]  # option C: the random features as names and a hash
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed[name]) if name in resumed else name in frozen["names"], name
    params = dict(full.named_parameters())
    assert frozen_state._digest((n, params[n]) for n in frozen["names"]) == frozen["sha256"]


def test_bad_flags_fail_before_any_run(tiny_folder, nb201_table, tmp_path, capsys):
    for argv, needle in ((["--lr=fast"], "--lr=fast: expected a value of type float"),
                         (["--seed=3"], "the sweep sets these per run"),
                         (["--options=BX"], "--options=BX"), (["--space=nope"], "unknown search space"),
                         (["--seeds=1,2,1"], "--seeds=1,2,1: 1 given twice"),  # one folder, counted twice
                         (["--options=CbB"], "--options=CbB: B given twice"),
                         (["--threads=-1"], "--threads=-1: out of range")):
        with pytest.raises(SystemExit) as e:
            cli.run(sweep.main, [f"--out={tmp_path / 's'}", *flags(tiny_folder, nb201_table, "--epochs=1"), *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and needle in err and err.count("\n") == 1, err
        assert not any((tmp_path / "s").glob("*_s*"))  # no run started


@pytest.fixture(scope="module")
def made_runs(tiny_folder, nb201_table, tmp_path_factory):
    """Run folders made in this process: C_s1 finished 2 epochs (1, then continued to 2); C_s2 stopped
    after 1 of 2 epochs (checkpoint.pt, history.json)."""
    root = tmp_path_factory.mktemp("made")
    for seed, sessions in ((1, (["--epochs=1"], ["--epochs=2", "--resume=1"])), (2, (["--epochs=2", "--stop_after=1"],))):
        for extra in sessions:
            argv = flags(tiny_folder, nb201_table, *extra, "--option=C", f"--seed={seed}", f"--out={root / f'C_s{seed}'}")
            search.search(search.make_config(argv))
    return root


def sweep_of(made_runs, tmp_path, *names):
    out = tmp_path / "sweep"
    for name in names:
        shutil.copytree(made_runs / name, out / name)
    return out


def refused(argv, capsys):
    """cli.run(sweep.main, argv) must stop before any run starts, one line, exit 2 -> that line."""
    with pytest.raises(SystemExit) as e:
        cli.run(sweep.main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    return err


def started(out):
    return sorted(p.parent.name for p in out.glob("*/stderr.txt"))


def test_a_run_counts_only_at_the_sweeps_epochs(made_runs, tiny_folder, nb201_table, tmp_path, capsys):
    out = sweep_of(made_runs, tmp_path, "C_s1", "C_s2")
    base = [f"--out={out}", "--options=C", "--seeds=1,2"]

    def states(epochs):
        jobs = sweep.plan(*sweep.parse([*base, *flags(tiny_folder, nb201_table, f"--epochs={epochs}")]))
        return [(j.state, "--resume=1" in j.argv) for j in jobs]
    assert states(2) == [("done", False), ("resume", True)]
    # what the table and the ladder count: exactly --epochs done, on an --epochs schedule
    assert sweep_table.finished_run(out / "C_s1", 2) is not None
    assert sweep_table.finished_run(out / "C_s1", 1) is None  # 2 epochs done: more than a 1-epoch run
    assert sweep_table.finished_run(out / "C_s2", 1) is None  # 1 of 2 done: another lr schedule than 1 of 1
    assert states(3) == [("resume", True), ("resume", True)]  # a shorter finished run is continued
    for seeds, needle in (("1", "C_s1 holds a run of 2 epochs (2 done), more than --epochs=1"),
                          ("2", "C_s2 holds a run of 2 epochs (1 done), more than --epochs=1")):
        err = refused([*base[:2], f"--seeds={seeds}", *flags(tiny_folder, nb201_table, "--epochs=1")], capsys)
        assert needle in err and "--epochs=2" in err, err
    assert started(out) == [] and not (out / "table.md").exists()


def test_busy_or_foreign_run_folders_are_refused_before_any_start(made_runs, tiny_folder, nb201_table,
                                                                   tmp_path, capsys):
    out = sweep_of(made_runs, tmp_path, "C_s2")
    argv = [f"--out={out}", "--options=C", "--seeds=2", *flags(tiny_folder, nb201_table, "--epochs=2")]
    for holder in (out / ".lock", out / "C_s2" / ".lock"):  # a second sweep; a search still running there
        with open(holder, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            f.truncate(0)
            f.write("4242")
            f.flush()
            err = refused(argv, capsys)
        assert f"{holder.parent} is in use by another run (pid 4242)" in err, err
    # only a checkpoint (no config.json): its own settings are the run's
    (out / "C_s2" / "config.json").unlink()
    err = refused(argv + ["--lr=0.1"], capsys)
    assert f"{out / 'C_s2'} holds a run with other settings (lr=0.025 not 0.1): pass --lr=0.025 to continue it" in err, err
    assert started(out) == []


def test_a_sweep_keeps_one_benchmark_column_and_names_another_runs_folder(made_runs, tiny_folder, nb201_table,
                                                                          nb201_table_by_dataset, tmp_path, capsys):
    """Another --bench201_dataset than the runs looked up is refused (the table would average two datasets);
    a table over runs of two datasets gives no mean and names each run's; a folder holding another option's
    or seed's run is named as such (no flag can continue it: the sweep sets both per folder)."""
    out = sweep_of(made_runs, tmp_path, "C_s1")
    base = [f"--out={out}", "--options=C", "--seeds=1"]
    err = refused([*base, *flags(tiny_folder, nb201_table, "--epochs=2", "--bench201_dataset=ImageNet16-120")], capsys)
    assert "bench201_dataset='cifar10' not 'ImageNet16-120'): pass --bench201_dataset=cifar10" in err, err
    # a run from before the key existed looked up its searched dataset's column: not refused for lacking it
    config = json.loads((out / "C_s1" / "config.json").read_text())
    (out / "C_s1" / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "bench201_dataset"}))
    assert sweep.plan(*sweep.parse([*base, *flags(tiny_folder, nb201_table, "--epochs=2")]))[0].state == "done"
    # two seeds' histories of two datasets (e.g. folders copied together): no mean, each row its own
    shutil.copytree(out / "C_s1", out / "C_s2")
    for name, seed in (("config.json", 2),):
        saved = json.loads((out / "C_s2" / name).read_text())
        (out / "C_s2" / name).write_text(json.dumps(dict(saved, seed=seed)))
    rows = json.loads((out / "C_s2" / "history.json").read_text())
    rows[-1]["bench201"] = dict(rows[-1]["bench201"], dataset="ImageNet16-120", test_acc=40.0)
    (out / "C_s2" / "history.json").write_text(json.dumps(rows))
    jobs = sweep.plan(*sweep.parse([f"--out={out}", "--options=C", "--seeds=1,2", *flags(tiny_folder, nb201_table, "--epochs=2")]))
    summary, _ = sweep_table.summarize(jobs)
    assert summary["C"]["bench_test_acc"] == dict(mean=None, std=None, n=0)
    text = sweep_table.markdown(summary)
    assert "| option | seeds | NB201 test acc. (ImageNet16-120, cifar10: each run's own; no mean over two) (%) |" in text
    assert "| C_s2 | finished (2 ep; continued from a 1-epoch schedule) | 40.00 (ImageNet16-120) |" in text
    # a run's own folder as the sweep's: refused, nothing written into it
    err = refused([f"--out={out / 'C_s1'}", "--options=C", "--seeds=1", *flags(tiny_folder, nb201_table, "--epochs=2")],
                  capsys)
    assert f"--out={out / 'C_s1'} holds a run (config.json), not a sweep" in err and not (out / "C_s1" / "C_s1").exists()
    # another option's run in this folder
    config = json.loads((out / "C_s2" / "config.json").read_text())
    (out / "C_s2" / "config.json").write_text(json.dumps(dict(config, option="B")))
    err = refused([f"--out={out}", "--options=C", "--seeds=2", *flags(tiny_folder, nb201_table, "--epochs=2")], capsys)
    assert f"{out / 'C_s2'} holds another run (option='B' not 'C'): move it out of {out}, or use another --out" in err


def test_a_run_that_fails_after_its_last_epoch_makes_the_sweep_fail(made_runs, tiny_folder, nb201_table, tmp_path,
                                                                     monkeypatch, capsys):
    """Its files are whole (counted), but the exit status was not 0: the table says so and the sweep exits 1."""
    out = sweep_of(made_runs, tmp_path, "C_s1")
    jobs = sweep.plan(*sweep.parse([f"--out={out}", "--options=C", "--seeds=1", *flags(tiny_folder, nb201_table, "--epochs=2")]))
    (out / "C_s1" / "stderr.txt").write_text("search.py: error: could not write checkpoint.pt: disk full\n")
    summary, done = sweep_table.summarize(jobs, {"C_s1": 1})
    assert summary["C"]["n"] == 1 and len(done) == 1
    assert summary["C"]["seeds"][0]["ended"] == "exit 1 after its last epoch: search.py: error: could not write checkpoint.pt: disk full"
    assert "; then exit 1 after its last epoch: search.py: error" in sweep_table.markdown(summary)
    assert "ended" not in sweep_table.summarize(jobs, {"C_s1": 143})[0]["C"]["seeds"][0]  # a stop: not a failure
    monkeypatch.setattr(sweep, "run_all", lambda cfg, jobs: ({"C_s1": 1}, 0))  # as the runner reports it
    with pytest.raises(SystemExit) as e:
        cli.run(sweep.main, [f"--out={out}", "--options=C", "--seeds=1", *flags(tiny_folder, nb201_table, "--epochs=2")])
    assert e.value.code == 1 and "C_s1 finished, then exited with an error" in capsys.readouterr().err


def test_the_table_names_the_benchmark_dataset_and_a_continued_schedule(made_runs, tiny_folder, nb201_table,
                                                                       tmp_path):
    out = sweep_of(made_runs, tmp_path, "C_s1", "C_s2")
    jobs = sweep.plan(*sweep.parse([f"--out={out}", "--options=C", "--seeds=1,2,3",
                                    *flags(tiny_folder, nb201_table, "--epochs=2")]))
    summary, done = sweep_table.summarize(jobs, {"C_s2": 143})
    text = sweep_table.markdown(summary)
    # an unfinished run says how far it got; one never started (C_s3: no folder) says only that
    assert "| C_s2 | stopped (exit 143), 1 of 2 epochs done: no message |" in text, text
    assert "| C_s3 | unfinished | |" in text, text
    assert "| NB201 CIFAR-10 test acc. (%) |" in text and summary["C"]["bench201_dataset"] == "cifar10"
    assert "| C_s1 | finished (2 ep; continued from a 1-epoch schedule) |" in text, text
    assert [r["state"].split(":")[0] for r in summary["C"]["seeds"]] == ["finished", "stopped (exit 143)", "unfinished"]
    assert summary["C"]["n"] == 1 and [r.path for r in done] == [str(out / "C_s1")]
    history = json.loads((out / "C_s1" / "history.json").read_text())
    history[-1]["bench201"]["dataset"] = "cifar100"  # what a search on CIFAR-100 logs
    (out / "C_s1" / "history.json").write_text(json.dumps(history))
    summary, _ = sweep_table.summarize(jobs)
    assert "| NB201 CIFAR-100 test acc. (%) |" in sweep_table.markdown(summary)
    assert summary["C"]["bench201_dataset"] == summary["C"]["seeds"][0]["bench201_dataset"] == "cifar100"


def test_the_table_says_when_the_random_features_were_fixed_across_seeds(made_runs, tiny_folder, nb201_table,
                                                                          tmp_path):
    out = sweep_of(made_runs, tmp_path, "C_s1")
    jobs = sweep.plan(*sweep.parse([f"--out={out}", "--options=C", "--seeds=1",
                                    *flags(tiny_folder, nb201_table, "--epochs=2")]))
    assert "--init_seed" not in sweep_table.markdown(sweep_table.summarize(jobs)[0])
    config = json.loads((out / "C_s1" / "config.json").read_text())
    # a run from before --init_seed existed (no key) was built from --seed: a sweep fixing it must refuse it
    (out / "C_s1" / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "init_seed"}))
    with pytest.raises(cli.ConfigError, match="init_seed=None not 7"):
        sweep.plan(*sweep.parse([f"--out={out}", "--options=C", "--seeds=1", "--init_seed=7",
                                 *flags(tiny_folder, nb201_table, "--epochs=2")]))
    (out / "C_s1" / "config.json").write_text(json.dumps({**config, "init_seed": 7}))
    summary, _ = sweep_table.summarize(jobs)
    assert summary["C"]["seeds"][0]["init_seed"] == 7
    assert "is --init_seed=7 in every finished run: there the seeds vary only the data" in sweep_table.markdown(summary)


def test_cell_agreement_counts_the_edges_two_seeds_share_over_every_pair(made_runs, tiny_folder, nb201_table,
                                                                          tmp_path):
    conv, skip = "nor_conv_3x3", "skip_connect"
    a, b, c = (G.NB201Cell(ops).to_str() for ops in ((conv,) * 6, (conv,) * 4 + (skip,) * 2, (skip,) * 6))
    # pairs (a, b): 4 edges, (a, c): 0, (b, c): 2; None (a DARTS-style cell) is left out
    assert cell_stats.cell_agreement([a, b, None, c]) == dict(pairs=3, mean=2.0, identical=0, edges=6, chance=1.2,
                                                               chance_pool_free=1.5)
    same = cell_stats.cell_agreement([a, a, b])
    assert same["identical"] == 1 and same["mean"] == pytest.approx((6 + 4 + 4) / 3)
    assert cell_stats.cell_agreement([a, None]) is None and cell_stats.cell_agreement([]) is None
    # in a sweep's table: from each finished run's genotype.json, per option
    out = sweep_of(made_runs, tmp_path, "C_s1")
    shutil.copytree(out / "C_s1", out / "C_s3")
    config = json.loads((out / "C_s3" / "config.json").read_text())
    (out / "C_s3" / "config.json").write_text(json.dumps({**config, "seed": 3}))  # as a seed-3 run
    for name, arch in (("C_s1", a), ("C_s3", b)):
        (out / name / "genotype.json").write_text(json.dumps({"cell": "nb201", "arch": arch}))
    jobs = sweep.plan(*sweep.parse([f"--out={out}", "--options=C", "--seeds=1,3",
                                    *flags(tiny_folder, nb201_table, "--epochs=2")]))
    summary, _ = sweep_table.summarize(jobs)
    assert summary["C"]["cell_agreement"] == dict(pairs=1, mean=4.0, identical=0, edges=6, chance=1.2,
                                                  chance_pool_free=1.5)
    assert ("Cells alike (C): two seeds' cells share 4.00 of 6 edges on average (1 pair, 0 with one cell); two "
            "random cells share 1.20, two random pool-free cells 1.50.") in sweep_table.markdown(summary)
    (out / "C_s3" / "genotype.json").write_text(json.dumps({"cell": "nb201", "arch": a}))
    assert sweep_table.summarize(jobs)[0]["C"]["cell_agreement"]["identical"] == 1


def test_cell_agreement_of_darts_style_cells_counts_shared_node_input_op_choices(made_runs, tiny_folder,
                                                                                  nb201_table, tmp_path):
    """Normal and reduction cells apart: a choice is (node, input, op); identical pairs; the chance of two
    random cells (closed form) against derive on random α, which draws exactly such cells; a sweep of S3
    runs gets the line, the normal cell per seed and the reduction cell's table."""
    sep, skip = "sep_conv_3x3", "skip_connect"
    a = G.Genotype([(sep, 0), (sep, 1)] * 4, [2, 3, 4, 5], [(skip, 0), (skip, 1)] * 4, [2, 3, 4, 5])
    b = G.Genotype([(sep, 0), (skip, 1)] * 4, [2, 3, 4, 5], [(skip, 1), (skip, 0)] * 4, [2, 3, 4, 5])
    # normal: 4 of 8 shared ((node, 0, sep) on each node); reduce: the same choices in another order, 8
    agree = cell_stats.cell_agreement([a, None, G.genotype_to_json(b)], "s3")
    chance = cell_stats.random_cells_share("s3")
    skips = cell_stats.random_skip_count("s3")
    assert agree == dict(pairs=1, edges=8, mean=4.0, identical=0, chance=chance, skip_chance=skips,
                         reduce=dict(mean=8.0, identical=1, chance=chance, skip_chance=skips))
    assert skips == pytest.approx(4.0) and cell_stats.random_skip_count("s4") == 0  # S3: skip or sep, 1/2 each
    assert cell_stats.random_skip_count("darts") == pytest.approx(8 / 7)  # 1 of 7 ops besides none
    assert chance == pytest.approx(4 / 2 * (1 / 2 + 1 / 3 + 1 / 4 + 1 / 5))  # sum over nodes of 4 / (n K), K = 2
    assert cell_stats.random_cells_share("darts") == pytest.approx(4 / 7 * (1 / 2 + 1 / 3 + 1 / 4 + 1 / 5))
    rng = np.random.default_rng(0)
    for space in ("s3", "darts"):
        shape = get_space(space).alpha_shape("normal")
        cells = [G.derive(space, {k: rng.normal(size=shape) for k in ("normal", "reduce")}) for _ in range(3000)]
        drawn = [sum((Counter((p // 2, j, op) for p, (op, j) in enumerate(x.normal))
                      & Counter((p // 2, j, op) for p, (op, j) in enumerate(y.normal))).values())
                 for x, y in zip(cells[::2], cells[1::2])]
        assert np.mean(drawn) == pytest.approx(cell_stats.random_cells_share(space), abs=0.12), space
        skips = [G.skip_count(x) for x in cells]  # 3000 cells: the mean within ~0.04 (S3's std is ~1.4)
        assert np.mean(skips) == pytest.approx(cell_stats.random_skip_count(space), abs=0.12), space
    # in a sweep's table: two S3 runs' genotype.json files
    out = sweep_of(made_runs, tmp_path, "C_s1")
    shutil.copytree(out / "C_s1", out / "C_s3")
    for name, cell, seed in (("C_s1", a, 1), ("C_s3", b, 3)):
        config = json.loads((out / name / "config.json").read_text())
        (out / name / "config.json").write_text(json.dumps({**config, **search.DARTS_DEFAULTS, "seed": seed,
                                                            "space": "s3"}))  # as an S3 run's config
        (out / name / "genotype.json").write_text(json.dumps(G.genotype_to_json(cell)))
    jobs = sweep.plan(*sweep.parse([f"--out={out}", "--options=C", "--seeds=1,3", "--space=s3",
                                    *flags(tiny_folder, nb201_table, "--epochs=2")]))
    summary, _ = sweep_table.summarize(jobs)
    assert summary["C"]["cell_agreement"] == agree
    s1 = summary["C"]["seeds"][0]
    assert s1["cells"] == dict(normal=G.cell_str(a), reduce=G.cell_str(a, "reduce")) and s1["reduce_skip_count"] == 8
    text = sweep_table.markdown(summary)
    assert ("Cells alike (C): two seeds' normal cells share 4.00 of 8 (node, input, op) choices on average (1 pair, "
            "0 with one normal cell), their reduction cells 8.00 (1 with one); two random cells share 2.57 "
            "(reduction: 2.57), and a random normal cell holds 4.00 skip edges.") in text, text
    def code(cell):  # as a Markdown table cell
        return "`" + cell.replace("|", chr(92) + "|") + "`"
    assert "| cell since epoch | normal cell |" in text and f"| {code(G.cell_str(b))} |" in text, text
    assert f"| C_s3 | {code(G.cell_str(b))} | 8 | {code(G.cell_str(b, 'reduce'))} | " in text, text
    assert "NB201 index" not in text  # no benchmark columns for a DARTS-style cell


def test_cell_since_is_the_first_epoch_of_the_final_cells_last_stretch(made_runs, tiny_folder, nb201_table,
                                                                         tmp_path):
    a = {"arch": "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"}
    b = {"arch": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"}
    rows = [dict(epoch=e, genotype=g) for e, g in enumerate((a, b, a, a), start=1)]
    assert sweep_table.cell_since(rows) == 3 and sweep_table.cell_since(rows[:2]) == 2
    assert sweep_table.cell_since(rows[2:]) == 3 and sweep_table.cell_since([dict(epoch=1)]) is None
    out = sweep_of(made_runs, tmp_path, "C_s1")
    jobs = sweep.plan(*sweep.parse([f"--out={out}", "--options=C", "--seeds=1",
                                    *flags(tiny_folder, nb201_table, "--epochs=2")]))
    summary, _ = sweep_table.summarize(jobs)
    history = json.loads((out / "C_s1" / "history.json").read_text())
    since = summary["C"]["seeds"][0]["cell_since"]
    assert since == (1 if history[0]["genotype"] == history[1]["genotype"] else 2)
    row = next(line for line in sweep_table.markdown(summary).splitlines() if line.startswith("| C_s1 | finished"))
    assert f"| {since} | `" in row and row.count(" | ") == 10  # 11 columns, as the header


def test_mean_uniform_sf_is_the_irwin_hall_tail():
    f = cell_stats.mean_uniform_sf
    # closed forms: one draw, 1 - m; two draws above 1/2, (2 - 2m)^2 / 2; three above 2/3, (3 - 3m)^3 / 6
    assert f(0.3, 1) == pytest.approx(0.7) and f(0.7, 2) == pytest.approx(0.6 ** 2 / 2)
    assert f(0.759, 3) == pytest.approx(0.723 ** 3 / 6)
    for n in (1, 2, 3, 5, 8):  # the mean's law is symmetric about 1/2, and the tail runs from 1 to 0
        assert f(0.5, n) == pytest.approx(0.5) and f(0.0, n) == 1.0 and f(1.0, n) == pytest.approx(0.0, abs=1e-12)
        for m in (0.1, 0.35, 0.62):
            assert f(m, n) + f(1 - m, n) == pytest.approx(1.0)
    # and against draws: 200,000 means of 4 uniforms
    means = torch.rand(200_000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64).mean(1)
    for m in (0.3, 0.6, 0.8):
        assert f(m, 4) == pytest.approx((means >= m).double().mean().item(), abs=4e-3)


def brute_percentile(value, population):
    """100 x (strictly below + half the ties) / n, counted one by one (bench201.percentile bisects)."""
    return 100 * (sum(v < value for v in population) + sum(v == value for v in population) / 2) / len(population)


def test_a_table2_column_the_benchmark_file_lacks_is_not_shown():
    """Paper Table 2 has six columns; the public accuracy CSV holds four (no CIFAR-100 / ImageNet16-120 valid):
    the tables show the columns some found cell has a value for, not a column of dashes."""
    lacking = ("cifar100_valid_acc", "ImageNet16-120_valid_acc")
    agg = {k: dict(mean=None if k in lacking else 90.0, std=None, n=0 if k in lacking else 1)
           for k in sweep_table.TABLE2_KEYS}
    keys = sweep_table.shown_keys([agg])
    assert keys == ("cifar10_valid_acc", "cifar10_test_acc", "cifar100_test_acc", "ImageNet16-120_test_acc")
    assert sweep_table.found_columns(keys)[:5] == ["NB201 index", "CIFAR-10 valid", "CIFAR-10 test", "CIFAR-100 test",
                                                   "ImageNet16-120 test"]
    assert len(sweep_table.found_columns()) == len(sweep_table.found_columns(keys)) + 2  # all six where held


def test_the_chance_note_names_a_partial_table():
    """Random-cell medians from a cut table are not the benchmark's: the table's note says so beside its counts."""
    note = sweep_table.chance_note([{"chance": dict(table="cut.csv", n_all=1000, n_pool_free=263)},
                                    {"chance": dict(table="full.csv", n_all=15625, n_pool_free=4096)}])
    assert note.endswith("Table: cut.csv (1,000 cells, 263 pool-free: NOT the whole benchmark, 15,625 cells; a cut "
                         "or partial table); full.csv (15,625 cells, 4,096 pool-free).")


def test_the_table_sets_found_cells_against_the_benchmark_and_chance(made_runs, tiny_folder, nb201_table,
                                                                     nb201_table_by_dataset, tmp_path):
    """Table 2's columns of the committed genotype (looked up in the sweep's --bench201, else the path the
    run recorded, never a rerun), its percentiles among all and pool-free cells beside their medians, and
    the last epoch's top-2 margins; a run counts once and only when finished."""
    out = sweep_of(made_runs, tmp_path, "C_s1", "C_s2")
    given = flags(tiny_folder, nb201_table_by_dataset, "--epochs=2")  # recorded: nb201_table; given: by_dataset
    jobs = sweep.plan(*sweep.parse([f"--out={out}", "--options=C", "--seeds=1,2", *given]))
    summary, _ = sweep_table.summarize(jobs, {"C_s2": 143})
    rec, stopped = summary["C"]["seeds"]
    genotype = json.loads((out / "C_s1" / "genotype.json").read_text())
    index, acc = genotype["nb201_index"], fake_nb201_accuracy(genotype["nb201_index"])
    assert rec["nb201"] == pytest.approx(dict(
        index=index, table=nb201_table_by_dataset, cifar10_valid_acc=acc - 3, cifar10_test_acc=acc,
        cifar100_valid_acc=acc - 13, cifar100_test_acc=acc - 10,
        **{"ImageNet16-120_valid_acc": acc - 23, "ImageNet16-120_test_acc": acc - 20},
        percentile_all=brute_percentile(acc, [fake_nb201_accuracy(i) for i in range(15625)]),
        percentile_pool_free=brute_percentile(acc, [fake_nb201_accuracy(i) for i in range(15625)
                                                    if "avg_pool_3x3" not in G.nb201_arch(i)])))
    last = json.loads((out / "C_s1" / "alphas.json").read_text())[-1]["alphas"]["normal"]
    assert rec["margins"]["normal"] == pytest.approx([sorted(p)[-1] - sorted(p)[-2] for p in last], abs=1e-6)
    assert "nb201" not in stopped and "margins" not in stopped  # the stopped run is named, not counted
    population = sorted(fake_nb201_accuracy(i) for i in range(15625))
    pool_free = sorted(fake_nb201_accuracy(i) for i in range(15625) if "avg_pool_3x3" not in G.nb201_arch(i))
    chance = summary["C"]["nb201"]["chance"]
    assert chance == dict(table=nb201_table_by_dataset, n_all=15625, n_pool_free=4096,
                          median_all=pytest.approx((population[7811] + population[7812]) / 2),  # ties: either
                          median_pool_free=pytest.approx((pool_free[2047] + pool_free[2048]) / 2),
                          beats_pool_free_median=acc > chance["median_pool_free"],
                          # one cell: the chance a random pool-free cell's percentile is at least its own
                          p_pool_free=pytest.approx(1 - rec["nb201"]["percentile_pool_free"] / 100))
    assert summary["C"]["nb201"]["n"] == 1
    assert summary["C"]["nb201"]["cifar10_test_acc"]["mean"] == pytest.approx(acc)
    text = sweep_table.markdown(summary)
    assert ("| option | cells | CIFAR-10 valid (%) | CIFAR-10 test (%) | CIFAR-100 valid (%) | CIFAR-100 test (%) "
            "| ImageNet16-120 valid (%) | ImageNet16-120 test (%) | percentile, all cells | percentile, pool-free cells "
            "| median, all cells (%) | median, pool-free cells (%) | mean beats the pool-free median (p) |") in text
    row = next(line for line in text.splitlines() if line.startswith(f"| C | 1 | {acc - 3:.2f} | "))
    per_dataset = f"| {acc:.2f} | {acc - 13:.2f} | {acc - 10:.2f} | {acc - 23:.2f} | {acc - 20:.2f} |"
    assert per_dataset in row, row  # one cell: no "± 0.00"
    assert row.endswith(f"| {chance['median_pool_free']:.2f} | {'yes' if acc > chance['median_pool_free'] else 'no'} "
                        f"({chance['p_pool_free']:.2g}) |")
    assert f"Table: {nb201_table_by_dataset} (15,625 cells, 4,096 pool-free)." in text
    seed_row = next(line for line in text.splitlines() if line.startswith(f"| C_s1 | {index} | "))
    assert ", ".join(f"{m:.2e}" for m in rec["margins"]["normal"]) in seed_row
    assert seed_row.endswith(f"| {min(rec['margins']['normal']):.2e} |")
    c_s2 = [line.split(" | ")[1] for line in text.splitlines() if line.startswith("| C_s2 | ")]
    # only in the per-seed state table, with how far it got (made_runs stopped it after 1 of 2 epochs)
    assert c_s2 == ["stopped (exit 143), 1 of 2 epochs done: no message"]
    # without --bench201 the run's recorded table; a recorded path that is gone: margins only
    plain = sweep.plan(*sweep.parse([f"--out={out}", "--options=C", "--seeds=1,2",
                                     *[f for f in given if not f.startswith("--bench201=")]]))
    recorded, _ = sweep_table.summarize(plain)
    assert recorded["C"]["seeds"][0]["nb201"]["table"] == nb201_table
    assert recorded["C"]["seeds"][0]["nb201"]["cifar100_test_acc"] == pytest.approx(acc)
    config = json.loads((out / "C_s1" / "config.json").read_text())
    (out / "C_s1" / "config.json").write_text(json.dumps({**config, "bench201": str(tmp_path / "moved.csv")}))
    gone, _ = sweep_table.summarize(plain)
    assert "nb201" not in gone["C"] and "nb201" not in gone["C"]["seeds"][0] and gone["C"]["seeds"][0]["margins"]
    text = sweep_table.markdown(gone)  # nothing looked up: index and percentiles "-", no Table 2 column at all
    assert f"| C_s1 | - | - | - | {', '.join(f'{m:.2e}' for m in gone['C']['seeds'][0]['margins']['normal'])} |" in text
    assert "| run | NB201 index | percentile, all | percentile, pool-free | top-2 margin" in text
    assert "percentile, all cells" not in sweep_table.markdown(gone)


def test_the_table_is_rewritten_as_each_search_ends(tmp_path, monkeypatch):
    """A long sweep's table.md|json holds every run finished so far, not only at the sweep's end (a
    ladder can be drawn over a sweep still running)."""
    cfg, rest = sweep.parse([f"--out={tmp_path}", "--options=C", "--seeds=1,2", "--jobs=1", "--device=cpu"])
    jobs = sweep.plan(cfg, rest)
    FakeSearch.started, FakeSearch.live = [], []
    monkeypatch.setattr(runner.subprocess, "Popen", FakeSearch)
    monkeypatch.setattr(runner.time, "sleep", lambda s: None)
    written = []
    monkeypatch.setattr(sweep, "write_table", lambda c, j, status=None, say=print: written.append(status))
    status, _ = sweep.run_all(cfg, jobs, say=lambda msg: None)
    assert written == [{"C_s1": 0}, {"C_s1": 0, "C_s2": 0}] and status == written[-1]


def test_a_stop_signal_while_a_search_starts_reaches_it(tmp_path, monkeypatch):
    real = subprocess.Popen
    procs = []

    def popen_then_stop(args, **kw):  # the signal lands after the child exists, before the sweep lists it
        procs.append(real([sys.executable, "-c", "import time; time.sleep(8)"], **kw))
        os.kill(os.getpid(), signal.SIGTERM)
        return procs[-1]
    monkeypatch.setattr(runner.subprocess, "Popen", popen_then_stop)
    job = sweep.Job("C_s1", str(tmp_path / "C_s1"), [], "new", 1)
    status, signum = sweep.run_all(sweep.SweepConfig(out=str(tmp_path), threads=1), [job, job._replace(name="C_s2")],
                                   say=lambda line: None)
    assert (status, signum) == ({"C_s1": -signal.SIGTERM}, signal.SIGTERM) and len(procs) == 1


def test_the_sweeps_own_write_failing_is_one_line(made_runs, tiny_folder, nb201_table, tmp_path, capsys,
                                                   monkeypatch):
    out = sweep_of(made_runs, tmp_path, "C_s1")

    def full(path, obj):
        raise cli.write_error(path, OSError(28, "No space left on device"))
    monkeypatch.setattr(sweep_table, "write_json", full)
    with pytest.raises(SystemExit) as e:
        cli.run(sweep.main, [f"--out={out}", "--options=C", "--seeds=1", *flags(tiny_folder, nb201_table, "--epochs=2")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and f"{out / 'table.json'}: No space left" in err, err


class FakeSearch:
    """subprocess.Popen for the sweep's searches: records each one's environment and stays running for
    two polls, so the sweep has several running at once."""
    started = []

    def __init__(self, cmd, env=None, **kwargs):
        FakeSearch.started.append((cmd[-1], env.get("CUDA_VISIBLE_DEVICES"),  # --out=, its GPU, the others'
                                   [f.env.get("CUDA_VISIBLE_DEVICES") for f in FakeSearch.live]))
        self.env, self.polls, self.pid, self.returncode = env, 0, 1000 + len(FakeSearch.started), None
        FakeSearch.live.append(self)

    def poll(self):
        self.polls += 1
        if self.polls > 2:
            self.returncode = 0
            if self in FakeSearch.live:
                FakeSearch.live.remove(self)
        return self.returncode


def test_searches_are_spread_over_the_gpus_and_name_their_device(tmp_path, monkeypatch):
    """With GPUs 3 and 5 visible (mocked), --jobs=2 runs up to two searches per GPU, each seeing only
    its own GPU; device.txt and the table name it. --device=cpu or an explicit cuda:K spread nothing."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    def visible(device):
        return runner.visible_gpus([f"--device={device}"], search.SearchConfig)
    assert visible("auto") == visible("cuda") == ["3", "5"]
    assert visible("cpu") == visible("cuda:1") == []
    cfg, rest = sweep.parse([f"--out={tmp_path}", "--options=BC", "--seeds=1,2,3", "--jobs=2", "--C=4"])
    jobs = sweep.plan(cfg, rest)
    FakeSearch.started, FakeSearch.live = [], []
    monkeypatch.setattr(runner.subprocess, "Popen", FakeSearch)
    monkeypatch.setattr(runner.time, "sleep", lambda s: None)
    status, _ = sweep.run_all(cfg, jobs, say=lambda msg: None)
    assert len(FakeSearch.started) == 6 and set(status.values()) == {0}
    for _, gpu, others in FakeSearch.started:  # at most --jobs=2 searches on one GPU at any time
        assert gpu in ("3", "5") and others.count(gpu) < 2
    assert [g for _, g, _ in FakeSearch.started[:4]] == ["3", "5", "3", "5"]  # the least busy GPU first
    first = tmp_path / "B_s1"
    assert (first / "device.txt").read_text().endswith(" GPU 3\n") and sweep_table.run_devices(first) == "GPU 3"
    summary, _ = sweep_table.summarize(jobs, status)
    assert summary["B"]["seeds"][0]["device"] == "GPU 3" and "| GPU 3 |" in next(line for line in sweep_table.markdown(summary).splitlines() if line.startswith("| B_s1 "))
    runner.note_device(first, "cpu", 2)  # a later session on the CPU, which it names
    cpu = runs.cpu_name()
    assert cpu.endswith(", " + torch.backends.cpu.get_cpu_capability()) and len(cpu) > len(", AVX2")
    assert sweep_table.run_devices(first) == f"GPU 3, cpu x2 threads ({cpu})"


def test_the_start_line_says_the_thread_count_and_why(tmp_path, monkeypatch):
    """--threads=0 takes cores // searches at once and replaces the shell's OMP_NUM_THREADS: the start
    line says both (a run made with OMP_NUM_THREADS=1 was recorded as "cpu x2 threads" without a word)."""
    given = []  # each search's OMP_NUM_THREADS

    class Recording(FakeSearch):
        def __init__(self, cmd, env=None, **kwargs):
            given.append(env["OMP_NUM_THREADS"])
            super().__init__(cmd, env=env, **kwargs)
    monkeypatch.setattr(runner.subprocess, "Popen", Recording)
    monkeypatch.setattr(runner.time, "sleep", lambda s: None)
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: {0, 1})  # the cores this process may use
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 64)  # the machine's: not what a child may use
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    jobs = [sweep.Job(f"C_s{i}", str(tmp_path / f"C_s{i}"), ["--device=cpu"], "new", 1) for i in (1, 2)]
    for cfg, line in (
            (sweep.SweepConfig(out=str(tmp_path), jobs=1), "2 of 2 searches to run, 1 at a time, 2 CPU thread(s) each (--threads=0: "
             "2 cores // 1 at once; this shell's OMP_NUM_THREADS=1 is not passed on (--threads=1 keeps it); on a CPU "
             "the thread count moves float rounding: --threads=N fixes it)"),
            (sweep.SweepConfig(out=str(tmp_path), jobs=2), "2 of 2 searches to run, 2 at a time, 1 CPU thread(s) each (--threads=0: "
             "2 cores // 2 at once; on a CPU the thread count moves float rounding: --threads=N fixes it)"),
            (sweep.SweepConfig(out=str(tmp_path), jobs=1, threads=3), "2 of 2 searches to run, 1 at a time, 3 CPU thread(s) each "
             "(--threads=3)")):
        FakeSearch.started, FakeSearch.live, said, given[:] = [], [], [], []
        sweep.run_all(cfg, jobs, say=said.append, gpus=[])
        assert said[0] == line
        assert given == [line.split(", ")[2].split()[0]] * 2  # what the line says is what the searches get
    jobs = [job._replace(state="done") for job in jobs]  # nothing to run: no start line
    said = []
    sweep.run_all(sweep.SweepConfig(), jobs, say=said.append, gpus=[])
    assert said == ["C_s1: finished before, skipped", "C_s2: finished before, skipped"]


@pytest.mark.parametrize("k, n", [(0, 3), (3, 3), (1, 2), (5, 10), (2, 7)])
def test_wilson_interval(k, n):
    """Each end p of the 95% Wilson interval solves |k/n - p| = z sqrt(p (1 - p) / n), the lower one at or
    below k/n, the upper at or above; 0 of n: the upper end is z^2 / (n + z^2); k and n-k mirror."""
    from statistics import NormalDist
    z = NormalDist().inv_cdf(0.975)
    lo, hi = cell_stats.wilson(k, n)
    assert 0 <= lo <= k / n + 1e-12 and k / n - 1e-12 <= hi <= 1  # (float rounding at the ends)
    for p in (lo, hi):
        if 1e-9 < p < 1 - 1e-9:  # 0 and 1 (k = 0 or n) solve it too, and float rounding is not a root
            assert abs(k / n - p) == pytest.approx(z * (p * (1 - p) / n) ** 0.5, rel=1e-6)  # z to 7 digits
    if k == 0:
        assert (lo, hi) == pytest.approx((0.0, z * z / (n + z * z)))
    assert cell_stats.wilson(n - k, n) == pytest.approx((1 - hi, 1 - lo))


def test_wilson_interval_of_no_runs_is_everything():
    assert cell_stats.wilson(0, 0) == (0.0, 1.0)


def test_the_runner_refuses_to_run_under_torchrun(tmp_path, monkeypatch):
    # every torchrun process would start every search, and each child would join one DDP group
    monkeypatch.setenv("WORLD_SIZE", "2")
    jobs = [sweep.Job("C_s1", str(tmp_path / "C_s1"), ["--device=cpu"], "new", 1)]
    with pytest.raises(cli.ConfigError, match="search.py runs are started here as child processes.*without torchrun"):
        sweep.run_all(sweep.SweepConfig(out=str(tmp_path)), jobs, gpus=[])
    assert not (tmp_path / "C_s1").exists()


def test_a_first_download_happens_once_before_the_searches_start(tmp_path, monkeypatch):
    # N searches starting at once would each download CIFAR into one folder, over each other's files
    order = []
    monkeypatch.setattr(sweep.data, "fetch", lambda name, root, download: order.append(("fetch", name, root, download)))
    monkeypatch.setattr(sweep, "run_all", lambda cfg, jobs: (order.append(("run", len(jobs))), ({}, 0))[1])
    monkeypatch.setattr(sweep, "report", lambda cfg, jobs, status: {})
    sweep.main([f"--out={tmp_path / 's'}", "--seeds=1,2", "--jobs=2", "--dataset=cifar100", f"--data={tmp_path / 'd'}",
                "--device=cpu"])
    assert order == [("fetch", "cifar100", str(tmp_path / "d"), True), ("run", 4)]


def test_report_only_starts_nothing_and_reads_a_busy_folder(made_runs, tiny_folder, nb201_table, tmp_path, capsys):
    """--report_only=1: the table from the folders as they are (C_s2 unfinished, its search still holding
    its folder), no search started, exit 0; written with the figures when OUT is free, printed only
    while another sweep holds OUT; a folder with no sweep is one line."""
    out = sweep_of(made_runs, tmp_path, "C_s1", "C_s2")
    argv = [f"--out={out}", "--options=C", "--seeds=1,2", "--report_only=1", *flags(tiny_folder, nb201_table, "--epochs=2")]
    with open(out / "C_s2" / ".lock", "a+") as held:  # a search running in C_s2
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        summary = sweep.main(argv)
    assert [r["state"] for r in summary["C"]["seeds"]] == ["finished", "unfinished"]
    assert started(out) == [] and "| C_s2 | unfinished, 1 of 2 epochs done |" in (out / "table.md").read_text()
    assert (out / "figures").is_dir()
    (out / "table.md").unlink()
    with open(out / ".lock", "a+") as held:  # a sweep running in OUT: printed, not written
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        capsys.readouterr()
        sweep.main(argv)
    said = capsys.readouterr()
    assert "| C_s2 | unfinished, 1 of 2 epochs done |" in said.out and "printed only" in said.err
    assert not (out / "table.md").exists() and started(out) == []
    err = refused([f"--out={tmp_path / 'none'}", "--report_only=1", *flags(tiny_folder, nb201_table)], capsys)
    assert "holds no sweep" in err and not (tmp_path / "none").exists()
