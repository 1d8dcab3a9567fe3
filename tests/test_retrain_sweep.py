"""scripts/retrain_sweep.py: a sweep's finished cells retrained by train.py (child processes) into
<run>/train-<dataset>/, the test-error table over seeds (Tables 4 and 6), an unfinished search named and
not retrained, a second invocation skipping what is done, and refusals in one line before anything runs."""
import importlib.util
import json
import os
import shutil
import statistics
import sys

import pytest

import search
from harness import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("retrain_sweep", os.path.join(ROOT, "scripts", "retrain_sweep.py"))
retrain_sweep = sys.modules["retrain_sweep"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(retrain_sweep)


def search_flags(folder, *extra):
    return ["--dataset=imagefolder", f"--data={folder}", "--C=4", "--layers=1", "--batch_size=4", "--log_every=0",
            "--device=cpu", *extra]


def train_flags(folder, *extra, epochs=1):
    return ["--dataset=imagefolder", f"--data={folder}", f"--epochs={epochs}", "--C=4", "--layers=1",
            "--batch_size=8", "--device=cpu", *extra]


@pytest.fixture(scope="module")
def sweep_dir(tiny_folder, tmp_path_factory):
    """A sweep folder as sweep.py leaves it: C_s1 and C_s3 finished (1 epoch), C_s2 stopped after 1 of 2."""
    root = tmp_path_factory.mktemp("sweep")
    for seed, extra in ((1, ["--epochs=1"]), (2, ["--epochs=2", "--stop_after=1"]), (3, ["--epochs=1"])):
        search.search(search.make_config(search_flags(tiny_folder, *extra, "--option=C", f"--seed={seed}",
                                                      f"--out={root / f'C_s{seed}'}")))
    return root


def refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.run(retrain_sweep.main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    return err


def test_retrains_each_finished_cell_and_tabulates_the_error(sweep_dir, tiny_folder, capsys):
    argv = [f"--sweep={sweep_dir}", "--threads=1", *train_flags(tiny_folder)]
    with pytest.raises(SystemExit) as e:  # C_s2's search did not finish: named, not retrained, exit 1
        cli.run(retrain_sweep.main, argv)
    said, err = capsys.readouterr()
    assert "C_s1: epoch 1 lr 0.1 train " in said, said  # a line per epoch of each retraining (history.json)
    assert e.value.code == 1 and "1 of 3 cells not retrained to the end (C_s2)" in err and err.count("\n") == 1, err
    summary = json.loads((sweep_dir / "retrain-imagefolder.json").read_text())
    errors = []
    for seed in (1, 3):
        run = sweep_dir / f"C_s{seed}" / "train-imagefolder"
        metrics = json.loads((run / "metrics.json").read_text())
        searched = json.loads((sweep_dir / f"C_s{seed}" / "genotype.json").read_text())
        assert metrics["genotype"]["arch"] == searched["arch"] and metrics["epochs"] == 1  # the cell it found
        assert json.loads((run / "config.json").read_text())["seed"] == seed  # retrained with the search's seed
        errors.append(100 * (1 - metrics["test_acc"]))
    c = summary["options"]["C"]
    assert (c["n"], c["runs"]) == (2, 3) and c["check"] is False
    assert c["error"]["mean"] == pytest.approx(statistics.mean(errors))
    assert c["error"]["std"] == pytest.approx(statistics.stdev(errors))  # ddof=1
    assert c["best"]["error"] == pytest.approx(min(errors))
    states = {r["name"]: r["state"] for r in summary["runs"]}
    assert states == {"C_s1": "finished", "C_s2": "search not finished: not retrained", "C_s3": "finished"}
    assert summary["space"] == "nb201" and summary["paper"] is None  # no paper number for this pair
    assert summary["searched_on"] == "imagefolder"
    text = (sweep_dir / "retrain-imagefolder.md").read_text()
    assert "| C_s2 | search not finished: not retrained |" in text and "| C | 2 / 3 |" in text, text
    # the same command again: nothing retrained twice, the finished folders left as they were
    stamps = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("C_s?/train-imagefolder/metrics.json")}
    with pytest.raises(SystemExit):
        retrain_sweep.main(argv)
    said = capsys.readouterr().out
    assert "C_s1: finished before, skipped" in said and "C_s3: finished before, skipped" in said, said
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.glob("C_s?/train-imagefolder/metrics.json")} == stamps
    # other settings into a folder that holds a retraining: refused; --tag keeps them apart
    err = refused([*argv, "--lr=0.5"], capsys)
    assert "train-imagefolder holds a retraining with other settings (lr=0.1 not 0.5): pass --tag=NAME" in err, err
    summary = retrain_sweep.main([*argv, "--lr=0.5", "--tag=lr0.5", "--seeds=1", *["--test_subset=6"]])
    assert summary["options"]["C"]["check"] is True  # a test-subset score is marked as a check
    assert "(test subset: a check)" in (sweep_dir / "retrain-imagefolder-lr0.5.md").read_text()
    assert json.loads((sweep_dir / "C_s1" / "train-imagefolder-lr0.5" / "config.json").read_text())["lr"] == 0.5


def test_a_moved_sweep_is_the_same_run_a_changed_cell_or_length_is_refused(sweep_dir, tiny_folder, tmp_path, capsys):
    if not (sweep_dir / "C_s1" / "train-imagefolder" / "metrics.json").exists():
        retrain_sweep.main([f"--sweep={sweep_dir}", "--seeds=1", "--threads=1", *train_flags(tiny_folder)])
    moved = tmp_path / "moved"  # as results are committed: the folder moves, the genotype path with it
    shutil.copytree(sweep_dir / "C_s1", moved / "C_s1")
    argv = [f"--sweep={moved}", "--threads=1", *train_flags(tiny_folder)]
    assert retrain_sweep.main(argv)["options"]["C"]["n"] == 1
    assert "C_s1: finished before, skipped" in capsys.readouterr().out
    err = refused([f"--sweep={moved}", *train_flags(tiny_folder, epochs=2)], capsys)
    assert "holds a retraining of 1 epochs, not --epochs=2: pass --epochs=1 or --tag=NAME" in err, err
    cell = json.loads((moved / "C_s1" / "genotype.json").read_text())  # the search was extended: a new cell
    cell["arch"] = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|" if "nor" in cell["arch"] else \
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    cell.pop("nb201_index", None)
    (moved / "C_s1" / "genotype.json").write_text(json.dumps(cell))
    err = refused(argv, capsys)
    assert "retrained another cell than" in err and "the search changed since" in err, err


def test_bad_input_is_refused_before_anything_runs(sweep_dir, tiny_folder, tmp_path, capsys):
    common, before = train_flags(tiny_folder), sorted(sweep_dir.glob("C_s?/train-*"))
    for argv, needle in (([f"--sweep={tmp_path / 'none'}"], "no such folder"),
                         ([f"--sweep={tmp_path}"], "no <option>_s<seed> search folders"),
                         ([f"--sweep={sweep_dir}", "--seed=3"], "--seed: set per run from the sweep's searches"),
                         ([f"--sweep={sweep_dir}", "--out=x"], "--out: set per run"),
                         ([f"--sweep={sweep_dir}", "--options=X"], "--options=X: give letters of A, B, C, D"),
                         ([f"--sweep={sweep_dir}", "--seeds=1,x"], "--seeds=1,x: give integers"),
                         ([f"--sweep={sweep_dir}", "--tag=a/b"], "--tag=a/b: use letters, digits"),
                         ([f"--sweep={sweep_dir}", "--seeds=7"], "of the given --options / --seeds"),
                         ([f"--sweep={sweep_dir}", "--epochs=0"], "--epochs=0: out of range")):
        err = refused([*common, *argv], capsys)
        assert needle in err, err
    assert sorted(sweep_dir.glob("C_s?/train-*")) == before  # no retraining started


def test_the_paper_numbers_cover_tables_4_and_6(tmp_path):
    paper = retrain_sweep.PAPER
    assert len(paper) == 3 + 4 * 3  # DARTS space on CIFAR-10 / -100 / ImageNet, S1-S4 x CIFAR-10, CIFAR-100, SVHN
    assert paper[("darts", "imagenet")]["RF-DARTS"] == (24.0, 7.2)  # top-1 / top-5
    assert paper[("darts", "cifar10")]["RF-DARTS"] == 2.60 and paper[("s4", "cifar10")]["RF-DARTS"] == 3.33
    assert paper[("s1", "cifar100")] == {"RF-DARTS": 22.75, "DARTS 2nd": 29.46}
    assert paper[("s3", "svhn")] == {"RF-DARTS": 2.47, "DARTS 2nd": 3.41}
    # each only for its own protocol: Table 6 searched on the data retrained on, Table 4 on CIFAR-10
    for space, searched, retrained, departs in (("s3", "svhn", "svhn", []),
                                                ("s3", "cifar10", "svhn", ["searched on cifar10, not svhn"]),
                                                ("darts", "cifar10", "cifar100", []),
                                                ("darts", "cifar100", "cifar100", ["searched on cifar100, not cifar10"])):
        run = tmp_path / f"{space}-{searched}" / "C_s1"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps(dict(space=space, dataset=searched, epochs=50, C=0, subset=0)))
        cfg = retrain_sweep.RetrainConfig(sweep=str(run.parent))
        found = {"C_s1": ("C", 1, str(run), False)}  # not finished: no job, only the lookup
        summary = retrain_sweep.summarize(cfg, [f"--dataset={retrained}"], [], found)
        assert summary["paper"] == paper[(space, retrained)] and summary["protocol_departures"] == departs
    # ImageNet: Table 4 for cells searched on CIFAR-10, Table 5 for cells searched on ImageNet itself
    assert retrain_sweep.paper_reference("darts", "imagenet", "cifar10") == paper[("darts", "imagenet")]
    assert retrain_sweep.paper_reference("darts", "imagenet", "imagenet") == {"RF-PCDARTS": (23.9, 7.1),
                                                                              "PC-DARTS": (24.2, 7.3)}
    imagenet_search = dict(dataset="imagenet", epochs=50, pc_k=2)  # PC-DARTS' ImageNet setting: Table 5's own
    assert retrain_sweep._departures(imagenet_search, [], "darts", "imagenet") == []
    assert retrain_sweep._departures(dict(imagenet_search, dataset="cifar10"), [], "darts", "imagenet") == [
        "search pc_k=2"]  # Table 4's transfer row searched RF-DARTS, not partial channels
    # RF-DARTS searched 1st order: an option-C sweep run 2nd order is named beside the paper's number
    run = tmp_path / "unrolled" / "C_s1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(dict(space="darts", dataset="cifar10", epochs=50, option="C",
                                                     unrolled=True)))
    summary = retrain_sweep.summarize(retrain_sweep.RetrainConfig(sweep=str(run.parent)), ["--dataset=cifar10"], [],
                                      {"C_s1": ("C", 1, str(run), False)})
    assert summary["protocol_departures"] == ["option C searched 2nd order (the paper's RF-DARTS: 1st)"]
    # the number stays beside a departing run only with what departs named: here a shorter retraining
    run = tmp_path / "darts-cifar10" / "C_s1"
    summary = retrain_sweep.summarize(retrain_sweep.RetrainConfig(sweep=str(run.parent)),
                                      ["--dataset=cifar100", "--epochs=20"], [], {"C_s1": ("C", 1, str(run), False)})
    assert summary["protocol_departures"] == ["retraining epochs=20"]
    assert "under another protocol than this table's: retraining epochs=20" in retrain_sweep.markdown(summary)


def test_imagenet_tables_show_top5_beside_top1():
    """Tables 4-5 report ImageNet errors as top-1 / top-5: the table gets a top-5 column there, and the paper's
    pairs are printed as such."""
    run = dict(name="C_s1", state="finished", error=24.5, error_top5=7.5, params_m=5.3, epochs=250, minutes=9.0,
               device="cuda", check=False, test_images=50000)
    option = dict(runs=1, n=1, error=dict(mean=24.5, std=0.0), error_top5=dict(mean=7.5, std=0.0, n=1),
                  best=dict(name="C_s1", error=24.5), params_m=5.3, macs_m=590.0, check=False)
    summary = dict(sweep="runs/s", dataset="imagenet", space="darts", searched_on="imagenet",
                   paper=retrain_sweep.paper_reference("darts", "imagenet", "imagenet"), protocol_departures=[],
                   options={"C": option}, runs=[run])
    text = retrain_sweep.markdown(summary)
    assert "| C | 1 / 1 | 24.50 | 7.50 | 24.50 (C_s1) |" in text and "| C_s1 | finished | 24.50 | 7.50 | 5.300 |" in text
    assert "RF-PCDARTS 23.9 / 7.1 (top-1 / top-5)" in text
    assert "top-5" not in retrain_sweep.markdown(dict(summary, dataset="cifar10", paper=None))


def test_an_unfinished_retraining_says_how_far_it_got(tmp_path):
    run = tmp_path / "C_s1"
    (run / "train-cifar10").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(dict(space="darts", dataset="cifar10", epochs=50)))
    (run / "train-cifar10" / "config.json").write_text(json.dumps(dict(epochs=600)))
    (run / "train-cifar10" / "history.json").write_text(json.dumps([dict(epoch=1), dict(epoch=2)]))
    (run / "train-cifar10" / "stderr.txt").write_text("stopped by SIGTERM in epoch 3 after step 7/520\n")
    job = retrain_sweep.Job("C_s1", str(run / "train-cifar10"), [], "resume", 600)
    cfg = retrain_sweep.RetrainConfig(sweep=str(tmp_path))
    summary = retrain_sweep.summarize(cfg, ["--dataset=cifar10"], [job], {"C_s1": ("C", 1, str(run), True)}, {"C_s1": 143})
    assert summary["runs"][0]["state"] == ("stopped (exit 143), 2 of 600 epochs done: stopped by SIGTERM in epoch 3 "
                                           "after step 7/520"), summary["runs"][0]
    assert summary["options"]["C"]["n"] == 0 and summary["paper"] == retrain_sweep.PAPER[("darts", "cifar10")]


def test_rf_pcdarts_cells_retrain_with_pc_darts_recipe(tiny_folder, tmp_path):
    """RF-PCDARTS follows PC-DARTS' training setting (paper Sec. 5): the cells of --pc_k searches retrain
    with --recipe=pcdarts (drop path 0.3 on CIFAR), unless the command names a recipe."""
    search.search(search.make_config(search_flags(tiny_folder, "--space=s2", "--pc_k=2", "--layers=2", "--epochs=1",
                                                  f"--out={tmp_path / 'sweep' / 'C_s1'}")))
    for extra, recipe in (([], "--recipe=pcdarts"), (["--recipe=auto"], "--recipe=auto")):
        cfg, flags = retrain_sweep.parse([f"--sweep={tmp_path / 'sweep'}", *train_flags(tiny_folder, "--layers=3"),
                                          *extra])
        (job,), _ = retrain_sweep.plan(cfg, flags)
        assert [a for a in job.argv if a.startswith("--recipe")] == [recipe]
