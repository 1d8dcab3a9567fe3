"""plot.py: every figure drawn from tiny real search runs and synthetic analysis runs, log.txt parsing,
benchmark look-ups from a table, one-line errors."""
import json
import os
import shutil
import statistics

import numpy as np
import matplotlib.image
import pytest

import bench201
import plot
from harness import cli, rundir
from harness import ladder, sweep_figures  # noqa: E402
import search  # noqa: E402
from conftest import NB201_OFFSETS, fake_nb201_accuracy  # noqa: E402

TINY = ["--dataset=imagefolder", "--C=4", "--batch_size=4", "--log_every=1", "--epochs=2"]


@pytest.fixture(scope="module")
def search_runs(tiny_folder, nb201_table, tmp_path_factory):
    """Two 2-epoch NB201 searches (options B and C, seed 1) that logged their benchmark accuracy."""
    root = tmp_path_factory.mktemp("runs")
    for option in "BC":
        argv = TINY + [f"--data={tiny_folder}", f"--out={root / option}", "--layers=1", f"--option={option}",
                       "--seed=1", f"--bench201={nb201_table}"]
        search.search(search.make_config(argv))
    return [str(root / "B"), str(root / "C")]


def assert_real_png(path):
    """A PNG of a few KB with a real picture in it (many colours, not one flat fill)."""
    assert os.path.isfile(path) and os.path.getsize(path) > 5000, path
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200, (path, img.shape)
    # distinct RGB colours, each packed into one integer: np.unique over rows (axis=0) of a
    # multi-megapixel float image sorts lexicographically and took a minute per DARTS-space figure
    rgb = np.round(img[..., :3] * 255).astype(np.uint32)  # imread gives a PNG as floats in [0, 1]
    colours = len(np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]))
    assert colours > 20, (path, colours)


def test_every_search_figure_from_tiny_real_runs(search_runs, tmp_path, capsys):
    paths = plot.main([*search_runs, f"--out={tmp_path}"])
    names = {os.path.basename(p) for p in paths}
    assert names == {"fig5_alphas_B.png", "fig5_alphas_C.png", "op_scale_B.png", "op_scale_C.png", "cell_B.png",
                     "cell_C.png", "skip_and_bench.png", "fig1_supernet_vs_cell.png", "alpha_rank.png"}
    for p in paths:
        assert_real_png(p)
    out = capsys.readouterr().out.splitlines()
    # the CLI prints the written paths, and how each run's α orders the cells (the table each run recorded)
    assert [line for line in out if not line.endswith("at epoch 2")] == paths
    ranked = [line.split(":")[0] for line in out if "alpha orders the NB201 cells with Spearman rho" in line]
    assert ranked == ["B", "C"]


def test_one_option_and_seed_from_two_folders_is_told_apart(search_runs, tmp_path, monkeypatch):
    """The same run name (C_s1) in two folders, e.g. a default sweep and an ablation: file names, legend
    labels and line styles all say which folder."""
    other = shutil.copytree(search_runs[1], tmp_path / "ablation" / "C")
    lines, save = [], plot.save  # (label, line style) of each curve of skip_and_bench's left panel
    monkeypatch.setattr(plot, "save", lambda fig, out, name, *a: lines.extend(
        (ln.get_label(), ln.get_linestyle()) for ln in fig.axes[0].get_lines() if name == "skip_and_bench.png")
        or save(fig, out, name, *a))
    paths = plot.main([search_runs[1], str(other), f"--out={tmp_path / 'fig'}", "--dpi=40"])
    first = os.path.basename(os.path.dirname(search_runs[1]))
    assert {f"fig5_alphas_{first}_C.png", "fig5_alphas_ablation_C.png"} <= {os.path.basename(p) for p in paths}
    assert sorted(label for label, _ in lines[:2]) == sorted([f"{first} C s1", "ablation C s1"])
    assert lines[0][1] != lines[1][1]
    # the same option and seed under other names in one folder (ablations side by side): named by the run
    lines.clear()
    plot.main([search_runs[1], str(shutil.copytree(search_runs[1], tmp_path / "c_fast")), f"--out={tmp_path / 'f2'}",
               "--dpi=40"])
    assert sorted(label for label, _ in lines[:2]) == ["C C s1", "c_fast C s1"] and lines[0][1] != lines[1][1]
    # with a third run of another option every legend entry names its run, and titles say option and seed once
    lines.clear()
    titles = {}
    monkeypatch.setattr(plot, "save", lambda fig, out, name, *a: lines.extend(
        (ln.get_label(), ln.get_linestyle()) for ln in fig.axes[0].get_lines() if name == "skip_and_bench.png")
        or titles.update({name: fig._suptitle.get_text() if fig._suptitle else ""}) or save(fig, out, name, *a))
    from harness import cell_figure
    monkeypatch.setattr(cell_figure, "save", lambda fig, out, name, *a: titles.update(
        {name: fig._suptitle.get_text()}) or save(fig, out, name, *a))
    plot.main([search_runs[0], search_runs[1], str(tmp_path / "c_fast"), f"--out={tmp_path / 'f3'}", "--dpi=40"])
    assert sorted(label for label, _ in lines[:3]) == ["B B s1", "C C s1", "c_fast C s1"]
    assert "Final cell of c_fast (option C s1)" in titles["cell_c_fast.png"], titles
    assert "run c_fast (nb201, option C s1)" in titles["fig5_alphas_c_fast.png"]


@pytest.mark.parametrize("cuda", [False, True])
def test_log_only_run_parses_to_the_history_rows(search_runs, tmp_path, cuda):
    run_dir = shutil.copytree(search_runs[0], tmp_path / "old")
    history = json.loads((run_dir / "history.json").read_text())
    os.remove(run_dir / "history.json")  # a run from before search.py wrote history.json
    if cuda:  # a CUDA search's epoch lines also carry the epoch's peak GPU memory, before bench201
        log = (run_dir / "log.txt").read_text()
        (run_dir / "log.txt").write_text(log.replace(" bench201 {", " mem 734/900MB bench201 {"))
        assert log.count(" bench201 {") >= 2
    with open(run_dir / "log.txt") as f:
        last_epoch_line = [line for line in f if "] epoch 2/2" in line][-1]
    with open(run_dir / "log.txt", "a") as f:  # a resumed run may log an epoch twice: one row per epoch
        f.write(last_epoch_line)
    rows = rundir.load_run(str(run_dir)).rows
    assert len(rows) == len(history) == 2

    def key(r):
        return r["epoch"], r["skip_count"], r["genotype"]["arch"], r["genotype"]["nb201_index"], r["bench201"]
    assert [key(r) for r in rows] == [key(r) for r in history]
    assert [r["valid_acc"] for r in rows] == pytest.approx([r["valid_acc"] for r in history], abs=1e-3)


def test_benchmark_accuracy_from_the_table_when_the_run_did_not_log_it(search_runs, nb201_table, tmp_path, capsys):
    run_dir = shutil.copytree(search_runs[1], tmp_path / "C")
    logged = json.loads((run_dir / "history.json").read_text())
    (run_dir / "history.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "bench201"}
                                                      for r in logged]))
    run = rundir.load_run(str(run_dir))
    looked_up = [rundir.bench_acc(run, row, bench201.NB201(nb201_table)) for row in run.rows]
    assert looked_up == [fake_nb201_accuracy(r["genotype"]["nb201_index"]) for r in logged]
    assert looked_up == [r["bench201"]["test_acc"] for r in logged]
    # without a table: the skip curve still, but no benchmark panel and no Fig. 1, with a note
    names = {os.path.basename(p) for p in plot.main([str(run_dir), f"--out={tmp_path / 'a'}"])}
    assert "fig1_supernet_vs_cell.png" not in names and "skip_and_bench.png" in names
    assert "note: no benchmark accuracy" in capsys.readouterr().out
    names = {os.path.basename(p) for p in plot.main([str(run_dir), f"--out={tmp_path / 'b'}", f"--bench201={nb201_table}"])}
    assert "fig1_supernet_vs_cell.png" in names


def test_benchmark_axes_name_the_runs_dataset(search_runs, nb201_table_by_dataset, tmp_path, monkeypatch):
    """A run whose benchmark column is CIFAR-100 gets CIFAR-100 accuracies from a table and axes that say
    so; the logged rows of an ImageFolder run name CIFAR-10."""
    labels, save = [], plot.save  # the y labels of each figure drawn
    monkeypatch.setattr(plot, "save", lambda fig, *a: labels.append([ax.get_ylabel() for ax in fig.axes]) or
                        save(fig, *a))
    cfg = plot.PlotConfig(out=str(tmp_path))
    plot.skip_and_bench([rundir.load_run(search_runs[1])], None, cfg)
    assert labels[-1][1].startswith("NAS-Bench-201 CIFAR-10 test acc")
    run_dir = shutil.copytree(search_runs[1], tmp_path / "C")
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "bench201_dataset": "cifar100"}))
    rows = json.loads((run_dir / "history.json").read_text())
    (run_dir / "history.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "bench201"} for r in rows]))
    run, table = rundir.load_run(str(run_dir)), bench201.NB201(nb201_table_by_dataset)
    accs = [rundir.bench_acc(run, row, table) for row in run.rows]
    assert accs == [fake_nb201_accuracy(r["genotype"]["nb201_index"]) + NB201_OFFSETS["cifar100"] for r in rows]
    plot.skip_and_bench([run], table, cfg)
    plot.fig1([(run, 50.0, accs[-1])], cfg)
    assert labels[-2][1].startswith("NAS-Bench-201 CIFAR-100 test acc")
    assert labels[-1][0].startswith("found cell: NAS-Bench-201 CIFAR-100 test acc")


def test_darts_space_run_draws_both_cell_kinds(tiny_folder, tmp_path, monkeypatch):
    out = tmp_path / "s2"
    search.search(search.make_config(TINY + [f"--data={tiny_folder}", f"--out={out}", "--space=s2", "--layers=2"]))
    paths = plot.main([str(out), f"--out={tmp_path / 'fig'}"])
    names = {os.path.basename(p) for p in paths}
    assert names == {"fig5_alphas_s2_normal.png", "fig5_alphas_s2_reduce.png", "op_scale_s2_normal.png",
                     "op_scale_s2_reduce.png", "cell_s2.png", "skip_and_bench.png"}
    for p in paths:
        assert_real_png(p)
    # a sweep of such runs (no benchmark): the right panel shows how far α moved, from 0 past twice uniform
    figs, save = {}, sweep_figures.save
    monkeypatch.setattr(sweep_figures, "save", lambda fig, o, name, dpi: figs.update({name: fig}) or save(fig, o, name, dpi))
    run = rundir.load_run(str(out))
    assert [os.path.basename(p) for p in sweep_figures.sweep_figures([run], str(tmp_path / "sweep"))] == \
        ["sweep_skip_and_bench.png"]
    left, right = figs["sweep_skip_and_bench.png"].axes
    assert left.get_ylabel() == "skip_connect edges in the normal cell" and right.get_title().startswith("how far α")
    curve = right.lines[0].get_ydata()  # the one seed's mean top softmax per epoch, near uniform (1/2)
    assert len(curve) == 2 and all(abs(v - 0.5) < 0.01 for v in curve) and right.get_ylim() == (0, 1.0)


def test_sweep_curves_average_each_epoch_over_the_seeds_that_have_it(tmp_path, monkeypatch):
    """A seed without a benchmark value at an epoch (e.g. a session run without --bench201) leaves that
    epoch's mean to the other seeds; its later values stay on their own epochs."""
    figs, save = {}, sweep_figures.save
    monkeypatch.setattr(sweep_figures, "save", lambda fig, o, name, dpi: figs.update({name: fig}) or save(fig, o, name, dpi))

    def run(seed, accs):
        rows = [dict(epoch=e + 1, skip_count=0, valid_acc=0.5, **({} if a is None else {"bench201": {"test_acc": a}}))
                for e, a in enumerate(accs)]
        return rundir.Run(str(tmp_path), f"C_s{seed}", dict(space="nb201", option="C", seed=seed), rows=rows)
    sweep_figures.sweep_figures([run(1, [90.0, 91.0, 92.0]), run(2, [None, 93.0, 94.0])], str(tmp_path))
    mean = figs["sweep_skip_and_bench.png"].axes[1].lines[-1]
    assert list(mean.get_xdata()) == [1, 2, 3] and list(mean.get_ydata()) == [90.0, 92.0, 93.0]


@pytest.mark.parametrize("moved,top", [(0.0005, 0.4), (0.7, 0.99)])
def test_fig5_keeps_its_axis_from_zero_with_the_uniform_level(tmp_path, monkeypatch, moved, top):
    """A barely moving α (0.2 ± 0.0005) stays a flat line on a 0-0.4 axis (twice the uniform 1/5), not a
    panel-filling trend; a collapsing one (0.9) widens the axis. Each panel draws the uniform level."""
    figs, save = [], plot.save
    monkeypatch.setattr(plot, "save", lambda fig, *a: figs.append(fig) or save(fig, *a))
    alphas = [dict(epoch=e, alphas=dict(normal=[[0.2 + d, 0.2 - d, 0.2, 0.2, 0.2]] * 6))
              for e, d in ((1, 0.0), (2, moved / 2), (3, moved))]
    run = rundir.Run(str(tmp_path), "C_s1", dict(space="nb201", option="C", seed=1), rows=[], alphas=alphas)
    plot.fig5_alphas(run, plot.PlotConfig(out=str(tmp_path)))
    panels = [ax for ax in figs[-1].axes if ax.get_visible()]
    assert len(panels) == 6 and panels[0].get_ylim() == pytest.approx((0, top))
    for ax in panels:
        uniform = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert len(uniform) == 1 and list(uniform[0].get_ydata()) == [0.2, 0.2]
    assert "y from 0, dashed: uniform" in figs[-1]._suptitle.get_text()


def test_help_prints_the_usage_and_keys_and_exits_0(capsys):
    for flag in ("--help", "-h"):
        assert cli.run(plot.main, [flag]) == []  # cli returns: exit 0, nothing drawn
        out = capsys.readouterr().out
        assert "python plot.py SWEEP_DIR [SWEEP_DIR ...] --out=DIR" in out
        assert "--out=figures" in out and "folder for the PNGs" in out and "--dpi=120" in out, out


def write_analysis_run(root, name, rows, **config):
    path = root / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    (path / "history.json").write_text(json.dumps(rows))
    return str(path)


def test_analysis_figures_from_synthetic_runs(tmp_path):
    rng, dirs = np.random.default_rng(0), []
    for setting in ("convbn", "bn"):
        for depth in (18, 50):
            eta_scale = 0.01 if setting == "convbn" else 1.0  # the paper's Fig. 4: ~0 vs ~1
            rows = [dict(epoch=e, lr=0.1, train_loss=1.0, train_err=0.5 / e, test_loss=1.0, test_err=0.6 / e,
                         seconds=1.0, eta=list(eta_scale * rng.uniform(0.5, 1.5, depth - 1))) for e in (1, 2, 3)]
            dirs.append(write_analysis_run(tmp_path, f"plain_{setting}_{depth}", rows, exp="plain",
                                           depth=depth, setting=setting, width=0.25, lambda_init=0.0))
        for init in (0.0, 0.5, 1.0):
            rows = [dict(epoch=e, lr=0.1, train_loss=1.0, train_err=0.5, test_loss=1.0, test_err=0.6, seconds=1.0,
                         **{"lambda": list(np.clip(init + rng.normal(0, 0.1, 16), 0, 1))}) for e in (1, 2, 3)]
            dirs.append(write_analysis_run(tmp_path, f"lambda_{setting}_{init}", rows, exp="lambda", depth=50,
                                           setting=setting, width=0.25, lambda_init=init))
    paths = plot.main([*dirs, f"--out={tmp_path / 'fig'}"])
    assert {os.path.basename(p) for p in paths} == {"fig2_plain.png", "fig3_lambda.png", "fig4_eta.png"}
    for p in paths:
        assert_real_png(p)


def test_a_search_without_a_finished_epoch_is_named_not_skipped_silently(tmp_path, capsys):
    run = tmp_path / "C_s1"  # a window's run stopped in its first epoch: config.json and a log, no epoch line
    run.mkdir()
    (run / "config.json").write_text('{"space": "nb201", "option": "C", "seed": 1}')
    (run / "log.txt").write_text("[ 1.0s] search nb201 option C\n")
    assert plot.main([run, f"--out={tmp_path / 'fig'}"]) == []
    assert "note: C_s1: no finished epoch yet, nothing to draw" in capsys.readouterr().out


@pytest.mark.parametrize("setup,message", [
    (lambda d: None, "not a run directory (no config.json)"),
    (lambda d: (d / "config.json").write_text("{}"), "neither 'space' (search.py) nor 'exp'"),
    (lambda d: (d / "config.json").write_text('{"exp": "plain"}'), "no history.json"),
])
def test_a_directory_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys, setup, message):
    bad = tmp_path / "not_a_run"
    bad.mkdir()
    setup(bad)
    with pytest.raises(SystemExit) as e:
        cli.run(plot.main, [str(bad), f"--out={tmp_path / 'fig'}"])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and message in lines[0], lines


@pytest.mark.parametrize("argv,message", [(["--out=x"], "usage: python plot.py RUN_DIR"),
                                          (["some_dir", "--colour=red"], "unknown config key 'colour'"),
                                          (["some_dir", "--dpi=0"], "--dpi=0: out of range, must lie in [1, inf)")])
def test_bad_command_lines_are_one_line_errors(capsys, argv, message):
    with pytest.raises(SystemExit):
        cli.run(plot.main, argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_data_ladder_over_sweep_folders(tmp_path, nb201_table):
    """Two sweep folders (table.json + each run's log.txt and config.json): one point per finished seed
    at its rung, and ladder.md with mean ± std and the all-skip count per rung and option (from the
    table's all_skip, or for a table written before it, from the run's genotype.json); each found cell
    (genotype.json) looked up in --bench201 or else the table its config.json recorded: Table 2's
    columns and percentiles beside the random baselines per rung and option, and per seed with the last
    alphas.json row's top-2 margins."""
    all_skip_arch = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    other_arch = all_skip_arch.replace("skip_connect~2", "nor_conv_3x3~2")
    last_alphas = [[0.3, 0.25, 0.15, 0.15, 0.15]] * 5 + [[0.2] * 5]  # top-2 margins 0.05 x 5 and a tie
    alphas = [dict(epoch=1, alphas=dict(normal=[[0.9, 0.025, 0.025, 0.025, 0.025]] * 6)),
              dict(epoch=2, alphas=dict(normal=last_alphas))]

    def sweep(name, images, seeds, newer=False):
        root = tmp_path / name
        table = {}
        for option, accs in seeds.items():
            recs = []
            for seed, (acc, skip) in enumerate(accs, 1):
                run = root / f"{option}_s{seed}"
                run.mkdir(parents=True)
                (run / "log.txt").write_text(f"[ 1.0s] search nb201 option {option} on imagefolder: {images // 2} "
                                             f"weight / {images // 2} alpha images, {images // 128} steps per epoch\n")
                state = "finished" if acc is not None else "unfinished"
                rec = dict(seed=seed, state=state, bench_test_acc=acc, skip_count=skip)
                if acc is not None:  # the committed cell and α, as a finished search leaves them
                    arch = all_skip_arch if skip == 6 else other_arch
                    (run / "genotype.json").write_text(json.dumps(dict(cell="nb201", arch=arch)))
                    (run / "alphas.json").write_text(json.dumps(alphas))
                    # the last epoch's row: the folder holds the finished run table.json says (ladder re-checks it)
                    (run / "history.json").write_text(json.dumps([dict(epoch=50, genotype=dict(cell="nb201", arch=arch))]))
                config = dict(space="nb201", epochs=50)  # the weight steps; the other settings: search.py's defaults
                if newer:  # a newer table: all_skip recorded, config.json names its benchmark table
                    config["bench201"] = nb201_table
                    rec["all_skip"] = skip == 6 if acc is not None else None
                (run / "config.json").write_text(json.dumps(config))
                recs.append(rec)
            table[option] = dict(seeds=recs, n=sum(r["state"] == "finished" for r in recs))
        (root / "table.json").write_text(json.dumps(table))
        return str(root)

    small = sweep("s4k", 4000, {"B": [(88.0, 4), (54.3, 6)], "C": [(91.0, 0), (None, None)]})
    big = sweep("s16k", 16000, {"B": [(54.3, 6), (54.3, 6)], "C": [(93.0, 1), (92.0, 6)]}, newer=True)
    assert sweep_figures.ladder_points([small, big], search) == {"B": {4000: [(88.0, 4), (54.3, 6)], 16000: [(54.3, 6)] * 2},
                                                         "C": {4000: [(91.0, 0)], 16000: [(93.0, 1), (92.0, 6)]}}
    # no --bench201: the 16k runs recorded their table, the 4k ones did not: margins only
    recorded = ladder.ladder([small, big], search)
    assert [("nb201" in r, r["margins"]["normal"]) for r in recorded["B"][(2000, 2000)]] == \
        [(False, pytest.approx([0.05] * 5 + [0.0]))] * 2
    assert all(r["nb201"]["table"] == nb201_table for r in recorded["C"][(8000, 8000)])
    paths = plot.main([small, big, f"--out={tmp_path / 'fig'}", f"--bench201={nb201_table}"])
    assert [os.path.basename(p) for p in paths] == ["ladder.png", "ladder.md", "alpha_separation.png", "alpha_rank.png"]
    assert_real_png(paths[0])
    text = open(paths[1]).read()
    lines = text.split("\n\n")[0].splitlines()
    rows = [line for line in lines if line.startswith("| 2,000") or line.startswith("| 8,000")]
    # k of n with its 95% Wilson interval (0 of 1: 0-79%, 1 of 2: 9-91%, 2 of 2: 34-100%)
    assert rows == [
        "| 2,000 / 2,000 | 1,550 | B | 2 | 71.15 ± 23.83 | 88.00, 54.30 | 1 of 2 (9-91%) | 2 of 2 (34-100%) | 5.00 ± 1.41 |",
        "| 2,000 / 2,000 | 1,550 | C | 1 | 91.00 | 91.00 | 0 of 1 (0-79%) | 0 of 1 (0-79%) | 0.00 |",
        "| 8,000 / 8,000 | 6,250 | B | 2 | 54.30 ± 0.00 | 54.30, 54.30 | 2 of 2 (34-100%) | 2 of 2 (34-100%) | 6.00 ± 0.00 |",
        "| 8,000 / 8,000 | 6,250 | C | 2 | 92.50 ± 0.71 | 93.00, 92.00 | 1 of 2 (9-91%) | 1 of 2 (9-91%) | 3.50 ± 3.54 |"], rows
    bench = bench201.NB201(nb201_table)
    skip_acc, other_acc = (fake_nb201_accuracy(bench.index_of(a)) for a in (all_skip_arch, other_arch))
    chance = bench.baselines()
    pct = {a: bench.percentiles(a) for a in (all_skip_arch, other_arch)}
    assert ("| search images (weight / α) | option | cells | CIFAR-10 valid (%) | CIFAR-10 test (%) | CIFAR-100 valid (%) "
            "| CIFAR-100 test (%) | ImageNet16-120 valid (%) | ImageNet16-120 test (%) | percentile, all cells "
            "| percentile, pool-free cells | median, all cells (%) | median, pool-free cells (%) "
            "| mean beats the pool-free median (p) |") in text
    mean, std = statistics.mean([other_acc, skip_acc]), statistics.stdev([other_acc, skip_acc])
    b_4k = next(line for line in text.splitlines() if line.startswith("| 2,000 / 2,000 | B | 2 | "))
    beats = "yes" if mean > chance["median_pool_free"] else "no"
    valid_test = [f"{mean - 3:.2f} ± {std:.2f}", f"{mean:.2f} ± {std:.2f}"]  # per dataset (the same made-up values)
    assert "| " + " | ".join(valid_test * 3) + " |" in b_4k, b_4k
    m = statistics.mean(pct[a]["percentile_pool_free"] for a in (other_arch, all_skip_arch)) / 100
    p = (2 - 2 * m) ** 2 / 2 if m >= 0.5 else 1 - (2 * m) ** 2 / 2  # two random cells' mean percentile >= m
    assert b_4k.endswith(f"| {chance['median_all']:.2f} | {chance['median_pool_free']:.2f} | {beats} ({p:.2g}) |"), b_4k
    all_pct = [pct[a]["percentile_all"] for a in (other_arch, all_skip_arch)]
    assert f"| {statistics.mean(all_pct):.1f} ± {statistics.stdev(all_pct):.1f} | " in b_4k, b_4k
    c_16k = next(line for line in text.splitlines() if line.startswith("| 8,000 / 8,000 | C | 2 | "))
    assert c_16k.startswith(f"| 8,000 / 8,000 | C | 2 | {statistics.mean([other_acc, skip_acc]) - 3:.2f} ± "), c_16k
    seed_rows = [line for line in text.splitlines() if line.startswith("| 2,000 / 2,000 | B_s")]
    margins = "5.00e-02, 5.00e-02, 5.00e-02, 5.00e-02, 5.00e-02, 0.00e+00 | 0.00e+00 |"
    assert seed_rows == [
        f"| 2,000 / 2,000 | B_s{seed} | {bench.index_of(a)} | " + f"{acc - 3:.2f} | {acc:.2f} | " * 3 +
        f"{pct[a]['percentile_all']:.1f} | {pct[a]['percentile_pool_free']:.1f} | {margins}"
        for seed, a, acc in ((1, other_arch, other_acc), (2, all_skip_arch, skip_acc))], seed_rows
    assert not any(line.startswith("| 2,000 / 2,000 | C_s2 |") for line in text.splitlines())  # unfinished


def test_fig1_in_the_papers_layout_is_two_bars_per_option_at_the_seed_means():
    """sweep_fig1.png's left panel: Fig. 1 as the paper draws it, per option the supernet's accuracy beside its
    found cell's, each the mean over seeds (an option without finished seeds has no bars)."""
    import matplotlib.pyplot as plt
    from harness import sweep_figures
    fig, ax = plt.subplots()
    means = sweep_figures.fig1_bars(ax, {"C": [(40.0, 90.0), (50.0, 92.0)], "B": [(80.0, 54.3)], "D": []})
    assert means == {"B": (80.0, 54.3), "C": (45.0, 91.0)}
    assert [p.get_height() for p in ax.patches] == pytest.approx([80.0, 54.3, 45.0, 91.0])  # B's pair, C's pair
    assert [t.get_text() for t in ax.get_xticklabels()] == ["option B (n=1)", "option C (n=2)"]
    plt.close(fig)


def test_each_runs_alpha_order_is_ranked_in_the_table_given_or_recorded(search_runs, nb201_table, tmp_path, capsys):
    """alpha_rank.png per run folder: ρ of each run's last α, printed as alpha_rank computes it; the table is
    --bench201, else the one the run recorded; a run with neither is not ranked."""
    from harness import alpha_rank
    table = bench201.NB201(nb201_table)
    population = alpha_rank.rank_population(table)
    with open(os.path.join(search_runs[1], "alphas.json")) as f:
        expected = alpha_rank.alpha_rank(json.load(f), population)
    run_dir = shutil.copytree(search_runs[1], tmp_path / "C")
    names = {os.path.basename(p) for p in plot.main([str(run_dir), f"--out={tmp_path / 'a'}"])}
    assert "alpha_rank.png" in names  # the table the run recorded
    assert (f"C: alpha orders the NB201 cells with Spearman rho {expected['rho']:+.2f} (pool-free "
            f"{expected['rho_pool_free']:+.2f}) at epoch 2") in capsys.readouterr().out
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps(dict(config, bench201="")))
    # no table recorded: ranked only in the one given (plot.main hands --bench201's table to alpha_rank_runs)
    (tmp_path / "b").mkdir()
    cfg, run = plot.PlotConfig(out=str(tmp_path / "b")), rundir.load_run(str(run_dir))
    assert plot.alpha_rank_runs([run], None, cfg) == [] and "alpha orders" not in capsys.readouterr().out
    paths = plot.alpha_rank_runs([run], table, cfg)
    assert [os.path.basename(p) for p in paths] == ["alpha_rank.png"] and "alpha orders" in capsys.readouterr().out
    # a recorded table that cannot be read: one note, every other figure still drawn
    (tmp_path / "broken.csv").write_text("not a table\n")
    (run_dir / "config.json").write_text(json.dumps(dict(config, bench201=str(tmp_path / "broken.csv"))))
    names = {os.path.basename(p) for p in plot.main([str(run_dir), f"--out={tmp_path / 'd'}"])}
    assert "alpha_rank.png" not in names and {"skip_and_bench.png", "cell_C.png"} <= names
    assert "note: C: its α is not ranked (" in capsys.readouterr().out
