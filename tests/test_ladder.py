"""The data ladder over sweep folders (harness/ladder.py, harness/sweep_figures.py, plot.py) and the
sweep table's columns, from made-up folders as sweep.py leaves them: no search runs. Each (option,
seed) of a rung counts once; sweeps whose settings differ in more than the image count are refused in
one line; a rung without benchmark accuracy still draws; the x axis is weight steps with the paper's."""
import dataclasses
import functools
import json
import math
import os

import pytest

import genotypes as G
import plot
import search
from harness import alpha_grads, cli, ladder, sweep_figures, sweep_table
from harness.ladder import PAPER_STEPS

ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
OTHER = ALL_SKIP.replace("skip_connect~2", "nor_conv_3x3~2")
# the 4k sweep's settings (results/nb201-sweep): search.py's config.json with these over the defaults
SETTINGS = dict(dataset="imagefolder", data="../shared/data/cifar10-jpeg", C=8, layers=5, log_every=10, compile=True)


def make_sweep(root, images, seeds, older=(), **settings):
    """A sweep folder as sweep.py leaves it: table.json and per run log.txt's first line (the image
    counts, steps per epoch of 64 images) and config.json (SearchConfig with SETTINGS, `settings`, the
    option, seed and subset; without the keys in `older`, as a run from before they existed writes it).
    seeds: {option: {seed: (benchmark acc. or None, final skip edges), or None for an unfinished run}}."""
    table = {}
    for option, runs_ in seeds.items():
        recs = []
        for seed, result in runs_.items():
            run = root / f"{option}_s{seed}"
            run.mkdir(parents=True)
            config = dataclasses.asdict(search.SearchConfig(**{**SETTINGS, **settings}, option=option, seed=seed,
                                                            subset=images, out=str(run)))
            (run / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in older}))
            (run / "log.txt").write_text(f"[ 1.0s] search nb201 option {option} on imagefolder: {images // 2} weight / "
                                         f"{images // 2} alpha images, {images // 2 // 64} steps per epoch\n")
            rec = dict(seed=seed, state="unfinished" if result is None else "finished")
            if result is not None:
                acc, skip = result
                rec.update(bench_test_acc=acc, skip_count=skip, all_skip=skip == 6)
                arch = ALL_SKIP if skip == 6 else OTHER
                (run / "genotype.json").write_text(json.dumps(dict(cell="nb201", arch=arch)))
                # the last epoch's row: the folder holds the finished run table.json says (ladder re-checks it)
                (run / "history.json").write_text(json.dumps([dict(epoch=config["epochs"], skip_count=skip,
                                                                   genotype=dict(cell="nb201", arch=arch))]))
            recs.append(rec)
        table[option] = dict(seeds=recs)
    (root / "table.json").write_text(json.dumps(table))
    return str(root)


def drawn(monkeypatch):
    """The figures sweep_figures saves by file name, the latest of each (each still written)."""
    figs, save = {}, sweep_figures.save
    monkeypatch.setattr(sweep_figures, "save",
                        lambda fig, out, name, dpi: figs.update({name: fig}) or save(fig, out, name, dpi))
    return figs


def test_a_seed_two_sweeps_hold_at_a_rung_counts_once_from_the_first_folder(tmp_path, capsys):
    first = make_sweep(tmp_path / "sweep", 4000, {"C": {1: (91.0, 0), 2: (92.0, 1), 3: (88.0, 4)}}, older=("bn_decay",))
    # the same settings; only run plumbing differs (how and where it ran, not what it searched)
    again = make_sweep(tmp_path / "rerun", 4000, {"B": {3: (54.3, 6)}, "C": {3: (92.5, 3)}}, compile=False, fast=False,
                       deterministic=True, log_every=25, device="cpu", workers=0, download=False, resume=True,
                       bench201="elsewhere/nb201.csv", ddp_backend="gloo")
    bigger = make_sweep(tmp_path / "16k", 16000, {"C": {1: (93.0, 1), 4: None}})  # seed 4 still running
    running = make_sweep(tmp_path / "running", 16000, {"C": {5: None}}, C=16)  # unfinished: not counted, not compared
    by = ladder.ladder([first, again, bigger, running, first], search)  # a folder given twice is read once
    assert [(r["seed"], r["acc"]) for r in by["C"][(2000, 2000)]] == [(1, 91.0), (2, 92.0), (3, 88.0)]
    assert [(r["seed"], r["acc"]) for r in by["C"][(8000, 8000)]] == [(1, 93.0)]  # another rung: its own run
    assert [(r["seed"], r["acc"]) for r in by["B"][(2000, 2000)]] == [(3, 54.3)]
    note = (f"note: C_s3 at 2,000 / 2,000 images is in {first} (88.00, 4 skip edges) and in {again} (92.50, 3 skip "
            f"edges): counted once, from {first} (the first folder given)")
    # the runs that do not count are named, as the sweeps' tables name them
    left = [f"note: {os.path.join(bigger, 'C_s4')} is not counted (unfinished)",
            f"note: {os.path.join(running, 'C_s5')} is not counted (unfinished)"]
    assert ladder.ladder_notes(by) == [note, *left]
    # the first folder given decides which run counts
    assert [r["acc"] for r in ladder.ladder([again, first], search)["C"][(2000, 2000)]] == [92.5, 91.0, 92.0]
    paths = plot.main([first, again, bigger, running, f"--out={tmp_path / 'fig'}"])
    assert {note, *left} <= set(capsys.readouterr().out.splitlines())
    text = open(paths[1]).read()
    assert {note, *left} <= set(text.splitlines())
    assert "| 2,000 / 2,000 | 1,550 | C | 3 | 90.33 ± 2.08 | 91.00, 92.00, 88.00 |" in text
    assert "| 8,000 / 8,000 | 6,250 | C | 1 | 93.00 | 93.00 |" in text


def test_settings_compare_written_out_defaults_equal_and_leave_out_plumbing():
    config = dataclasses.asdict(search.SearchConfig(**SETTINGS, subset=4000))
    same = ladder.search_settings(config, search)
    assert ladder.search_settings({k: v for k, v in config.items() if k != "bn_decay"}, search) == same  # older run
    # a run from before --drop_last existed dropped the last partial batch (SearchConfig.ADDED_LATER)
    older = {k: v for k, v in config.items() if k != "drop_last"}
    assert ladder.search_settings(older, search) == ladder.search_settings(dict(config, drop_last=True), search) != same
    assert ladder.search_settings(dict(config, C=0), search) == ladder.search_settings(dict(config, C=16), search)
    assert ladder.search_settings(dict(config, bench201_dataset="cifar10"), search) == same  # ImageFolder: CIFAR-10
    for plumbing in dict(out="x", sessions=[{}], compile=False, fast=False, deterministic=True, bench201="y"), \
            dict(subset=16000, option="B", seed=9):
        assert ladder.search_settings(dict(config, **plumbing), search) == same
    assert ladder.search_settings(dict(config, data="other"), search) != same  # an ImageFolder's folder is its data
    named = dict(config, dataset="cifar10")
    assert ladder.search_settings(dict(named, data="other"), search) == ladder.search_settings(named, search)


@pytest.mark.parametrize("change,differs", [
    (dict(C=16), "C 8 / 16"), (dict(epochs=10), "epochs 50 / 10"), (dict(bn_decay=False), "bn_decay True / False"),
    (dict(bench201_dataset="cifar100"), "bench201_dataset 'cifar10' / 'cifar100'"),
    (dict(init="xavier"), "init 'kaiming' / 'xavier'"), (dict(data="another-folder"), "data "),
    (dict(dataset="cifar10"), "dataset 'imagefolder' / 'cifar10'")])
def test_sweeps_whose_settings_differ_in_more_than_the_images_are_refused_in_one_line(tmp_path, capsys, change,
                                                                                     differs):
    base = make_sweep(tmp_path / "4k", 4000, {"B": {1: (88.0, 4)}}, older=("bn_decay", "bench201_dataset"))
    other = make_sweep(tmp_path / "16k", 16000, {"B": {1: (54.3, 6)}}, **change)
    with pytest.raises(SystemExit) as e:
        cli.run(plot.main, [base, other, f"--out={tmp_path / 'fig'}"])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "differ in more than the number of search images" in lines[0], lines
    assert f"{base}/B_s1 and {other}/B_s1" in lines[0] and differs in lines[0], lines
    assert not os.path.exists(tmp_path / "fig")  # nothing written


def image_tree(root, files):
    """An ImageFolder root's train/ with {(class, name): bytes}."""
    for (c, name), content in files.items():
        (root / "train" / c).mkdir(parents=True, exist_ok=True)
        (root / "train" / c / name).write_bytes(content)
    return str(root)


def test_two_imagefolders_pool_when_the_smaller_lies_byte_for_byte_in_the_larger(tmp_path, capsys):
    small = {("cat", f"{i}.jpg"): bytes([i, 7]) for i in range(3)} | {("dog", "0.jpg"): b"d0"}
    large = image_tree(tmp_path / "50k", small | {("cat", "9.jpg"): b"c9", ("dog", "5.png"): b"d5"})
    image_tree(tmp_path / "25k", small)
    base = make_sweep(tmp_path / "4k", 4000, {"C": {1: (91.0, 0)}}, data=str(tmp_path / "25k"))
    full = make_sweep(tmp_path / "full", 50000, {"C": {1: (93.0, 1)}}, data=large)
    by = ladder.ladder([base, full], search)  # pooled: one dataset at two sizes
    assert [(size, [r["acc"] for r in recs]) for size, recs in sorted(by["C"].items())] == \
        [((2000, 2000), [91.0]), ((25000, 25000), [93.0])]
    note = ladder.ladder_markdown(by).splitlines()
    assert (f"ImageFolder data: 2,000 / 2,000 images from {tmp_path / '25k'}; 25,000 / 25,000 images from "
            f"{large} (one dataset: each smaller folder's training images lie, byte for byte, in the larger).") in note
    for name, change, why in [("changed", {("dog", "0.jpg"): b"dX"}, "0.jpg is not, byte for byte,"),
                              ("classes", {("fox", "0.jpg"): b"f0"}, "the class folders of"),
                              ("absent", None, "is not on this machine")]:
        other = str(tmp_path / name) if change is None else image_tree(tmp_path / name, small | change)
        refused = make_sweep(tmp_path / f"sweep-{name}", 4000, {"C": {1: (91.0, 0)}}, data=other)
        with pytest.raises(SystemExit) as e:
            cli.run(plot.main, [refused, full, f"--out={tmp_path / 'fig'}"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(lines) == 1 and why in lines[0] and "data " in lines[0], lines
    assert not os.path.exists(tmp_path / "fig")


def test_imagefolders_pool_only_when_every_pair_nests(tmp_path):
    """Two folders that each hold the smallest one's images need not hold each other's: every pair is
    compared, not each against the first."""
    small = {("cat", "0.jpg"): b"c0", ("dog", "0.jpg"): b"d0"}
    a = image_tree(tmp_path / "a", small)
    b = image_tree(tmp_path / "b", small | {("cat", "1.jpg"): b"b1"})
    c = image_tree(tmp_path / "c", small | {("cat", "1.jpg"): b"c1"})  # same file name, other bytes
    sweeps = [make_sweep(tmp_path / name, images, {"C": {1: (91.0, 0)}}, data=data)
              for name, images, data in (("sa", 4000, a), ("sb", 16000, b), ("sc", 50000, c))]
    assert len(ladder.ladder(sweeps[:2], search)["C"]) == 2
    with pytest.raises(cli.ConfigError, match="sb.C_s1 and .*sc.C_s1 differ .*data .*1.jpg is not, byte for byte"):
        ladder.ladder(sweeps, search)


def test_a_stale_table_or_a_continued_schedule_is_named(tmp_path):
    """A run table.json calls finished whose folder no longer holds every epoch is left out, named; a run
    continued from a shorter schedule counts, named with its schedules."""
    sweep = make_sweep(tmp_path / "4k", 4000, {"C": {1: (91.0, 0), 2: (92.0, 1)}})
    history = os.path.join(sweep, "C_s1", "history.json")
    with open(history, "w") as f:
        json.dump([dict(epoch=1, skip_count=0, genotype=dict(cell="nb201", arch=OTHER))], f)
    config = os.path.join(sweep, "C_s2", "config.json")
    with open(config) as f:
        saved = json.load(f)
    with open(config, "w") as f:
        json.dump(dict(saved, sessions=[dict(epochs=25), dict(epochs=25), dict(epochs=50)]), f)
    by = ladder.ladder([sweep], search)
    assert [r["seed"] for r in by["C"][(2000, 2000)]] == [2]
    notes = ladder.ladder_notes(by)
    assert f"note: {os.path.join(sweep, 'C_s2')} was continued from a 25-epoch schedule to 50 epochs" in notes[0]
    assert notes[1].startswith(f"note: {os.path.join(sweep, 'C_s1')} is not counted (")
    assert "says finished, but the folder no longer holds all 50 epochs" in notes[1]
    assert "a run continued from a shorter schedule is named below" in ladder.ladder_markdown(by)


def test_a_finished_run_without_its_settings_is_refused(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "4k", 4000, {"C": {1: (91.0, 0)}})
    os.remove(os.path.join(sweep, "C_s1", "config.json"))
    with pytest.raises(SystemExit) as e:
        cli.run(plot.main, [sweep, f"--out={tmp_path / 'fig'}"])
    assert e.value.code == 2 and "settings cannot be compared" in capsys.readouterr().err


def test_the_ladder_draws_rungs_without_benchmark_accuracy(tmp_path, monkeypatch):
    """A sweep searched without --bench201 beside one with it, and a DARTS-space ladder with none at all
    (was: `ValueError: x and y must be the same size` from the jitter of an empty rung)."""
    figs = drawn(monkeypatch)
    small = make_sweep(tmp_path / "4k", 4000, {"B": {1: (88.0, 4), 2: (54.3, 6)}, "C": {1: (91.0, 0)}})
    big = make_sweep(tmp_path / "16k", 16000, {"B": {1: (None, 6)}, "C": {1: (None, 1), 2: (None, 2)}})
    plot.main([small, big, f"--out={tmp_path / 'nb201'}"])
    acc, skip = figs["ladder.png"].axes
    means = {line.get_label(): line.get_ydata() for line in acc.get_lines()}
    assert list(means["option C (RF-DARTS): mean over seeds"]) == [91.0]  # the 16k rung has no accuracy
    assert list(skip.get_lines()[0].get_ydata()) == [5.0, 6.0]  # B's skip count at both rungs
    darts = [make_sweep(tmp_path / f"s3_{n}", n, {"C": {1: (None, 2)}}, space="s3", dataset="svhn", epochs=10)
             for n in (4000, 16000)]
    paths = plot.main([*darts, f"--out={tmp_path / 's3'}"])
    assert os.path.isfile(paths[0])
    acc, skip = figs["ladder.png"].axes
    assert any("no benchmark accuracy" in t.get_text() for t in acc.texts)
    assert not acc.containers and not acc.get_legend()  # no paper points off NB201 CIFAR-10
    assert "(normal cell)" in skip.get_ylabel()
    assert "10 epochs per run" in figs["ladder.png"]._suptitle.get_text()  # the runs' epochs, not a fixed 50


def test_the_ladder_x_axis_is_weight_steps_with_the_paper_marked(tmp_path, monkeypatch):
    figs = drawn(monkeypatch)
    small = make_sweep(tmp_path / "4k", 4000, {"B": {1: (54.3, 6)}, "C": {1: (91.0, 0), 2: (93.0, 1)}})
    big = make_sweep(tmp_path / "16k", 16000, {"B": {1: (54.3, 6)}, "C": {1: (93.5, 1)}})
    plot.main([small, big, f"--out={tmp_path / 'fig'}"])
    fig = figs["ladder.png"]
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.get_xlabel().startswith("weight steps per run")
        assert list(ax.get_xticks()) == [1550, 6250, PAPER_STEPS]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1,550\n2,000 / 2,000 img", "6,250\n8,000 / 8,000 img",
                                                                "19,550\npaper: 25,000 / 25,000"]
    acc = fig.axes[0]
    paper = {c.get_label(): c.lines[0].get_data() for c in acc.containers}  # the paper's rows, hollow, with std
    assert set(paper) == {"DARTS, paper Table 2: 54.30 ± 0.00", "RF-DARTS, paper Table 2: 94.27 ± 0.15"}
    for x, y in paper.values():
        assert x[0] == pytest.approx(PAPER_STEPS, rel=0.1) and y[0] in (54.30, 94.27)
    optimum = [line for line in acc.get_lines() if line.get_label() == "best NB201 cell: 94.37"]
    assert len(optimum) == 1 and list(optimum[0].get_ydata()) == [94.37, 94.37]  # a line; the paper's 94.27 a point
    assert "spread sideways" in fig._suptitle.get_text() and "50 epochs per run" in fig._suptitle.get_text()


def test_a_rung_at_the_papers_length_shares_its_tick(tmp_path, monkeypatch):
    """25k / 25k images drop the last partial batch: 19,500 steps, a few tenths of a percent short of the
    paper's 19,550. One tick names both (two ticks that close printed over each other)."""
    figs = drawn(monkeypatch)
    small = make_sweep(tmp_path / "4k", 4000, {"C": {1: (91.0, 0)}})
    full = make_sweep(tmp_path / "50k", 50000, {"C": {1: (92.0, 1)}})
    plot.main([small, full, f"--out={tmp_path / 'fig'}"])
    for ax in figs["ladder.png"].axes:
        assert list(ax.get_xticks()) == [1550, 19500]
        assert ax.get_xticklabels()[1].get_text() == f"19,500 (paper: {PAPER_STEPS:,})\n25,000 / 25,000 img"


def test_the_sweep_table_gives_minutes_to_one_decimal():
    seeds = [dict(seed=s, state="finished", epochs=2, schedules=[2], bench_test_acc=90.0, skip_count=1, train_acc=30.0,
                  alpha_half_acc=25.0, minutes=m, compile=False, device="cpu", arch=OTHER)
             for s, m in ((1, 0.2), (2, 0.4))]
    stats = {k: sweep_table.stats([r[k] for r in seeds])
             for k in ("bench_test_acc", "skip_count", "train_acc", "alpha_half_acc", "minutes")}
    text = sweep_table.markdown({"C": dict(seeds=seeds, n=2, bench201_dataset="cifar10", **stats,
                                           all_skip=dict(count=0, n=2), skip_heavy=dict(count=0, n=2))})
    assert text.splitlines()[2].endswith("| 30.0 ± 0.0 | 25.0 ± 0.0 | 0.3 ± 0.1 |"), text  # was 0 ± 0
    assert "| C_s1 | finished (2 ep) | 90.00 | 1 | 30.0 | 25.0 | 0.2 | no | cpu |" in text


def test_how_far_alpha_moved_from_hand_made_softmax_rows():
    """alpha_separation: the largest softmax(α) per edge averaged over every edge of every cell kind, and
    that average for uniform α (edges may differ in their candidates: S1 has 2 on some); separation_at:
    linear between epoch ends, uniform at step 0, None past the last epoch."""
    rows = [dict(epoch=1, alphas=dict(normal=[[0.5, 0.5], [0.25] * 4], reduce=[[0.7, 0.1, 0.1, 0.1]])),
            dict(epoch=2, alphas=dict(normal=[[0.9, 0.1], [0.4, 0.2, 0.2, 0.2]], reduce=[[1.0, 0.0, 0.0, 0.0]]))]
    sep = sweep_table.alpha_separation(rows)
    assert sep["uniform"] == pytest.approx((0.5 + 0.25 + 0.25) / 3)
    assert sep["curve"] == [(1, pytest.approx((0.5 + 0.25 + 0.7) / 3)), (2, pytest.approx((0.9 + 0.4 + 1.0) / 3))]
    assert sweep_table.alpha_separation([]) is None
    at = functools.partial(sweep_table.separation_at, sep, 10)  # 10 weight steps per epoch
    assert at(0) == pytest.approx(sep["uniform"]) and at(10) == pytest.approx(sep["curve"][0][1])
    assert at(15) == pytest.approx((sep["curve"][0][1] + sep["curve"][1][1]) / 2)
    assert at(21) is None and sweep_table.separation_at(None, 10, 5) is None


def write_alphas(run, slope, epochs=50, ratio=None):
    """alphas.json of a 50-epoch NB201 run whose every edge's largest softmax(α) is 0.2 + slope * epoch;
    with `ratio`, every epoch records α's gradient with mean / std = ratio in every entry."""
    rows = [dict(epoch=e, alphas=dict(normal=[[0.2 + slope * e] + [(0.8 - slope * e) / 4] * 4] * 6))
            for e in range(1, epochs + 1)]
    for row in rows if ratio is not None else []:
        row["alpha_grad"] = dict(normal=dict(mean=[[0.1 * ratio, -0.1 * ratio] + [0.0] * 3] * 6, std=[[0.1] * 5] * 6))
    (run / "alphas.json").write_text(json.dumps(rows))


def test_gradient_snr_pools_the_last_epochs_before_the_root():
    """alpha_grads.gradient_snr: sqrt(mean of (m / s)^2 over the last epochs' entries), pooled before the
    root; rows without the record (runs from before it) are skipped; None without any."""
    grad = lambda r: dict(normal=dict(mean=[[r, 0.0]], std=[[1.0, 1.0]]))  # noqa: E731
    rows = [dict(epoch=1), dict(epoch=2, alpha_grad=grad(3.0)), dict(epoch=3, alpha_grad=grad(1.0))]
    assert alpha_grads.gradient_snr(rows) == pytest.approx(((9 + 0 + 1 + 0) / 4) ** 0.5)
    assert alpha_grads.gradient_snr(rows, last=1) == pytest.approx((1 / 2) ** 0.5)
    assert alpha_grads.gradient_snr([dict(epoch=1, alpha_grad=grad(0.0))]) == 0.0
    assert alpha_grads.gradient_snr(rows[:1]) is None
    assert alpha_grads.gradient_snr_curve(rows) == [(2, pytest.approx((9 / 2) ** 0.5)), (3, pytest.approx((1 / 2) ** 0.5))]


def test_adam_drift_pairs_alphas_moves_with_what_its_gradient_predicts():
    """alpha_grads.adam_drift: per epoch and α entry, -arch_lr * T * m / sqrt(m^2 + s^2) against the change
    of log softmax(α), both centred per edge; an α that moved exactly so agrees with r = slope = 1."""
    lr, steps = 3e-4, 100
    mean, std = [[0.05, -0.02, 0.0, 0.01, -0.04], [0.0, 0.0, 0.3, -0.3, 0.0]], [[0.1, 0.2, 0.1, 0.1, 0.1]] * 2
    alpha = [[0.0] * 5, [0.1, 0.0, 0.0, 0.0, 0.0]]
    moved = [[a - lr * steps * m / math.hypot(m, s) for a, m, s in zip(*e)] for e in zip(alpha, mean, std)]
    softmax = lambda row: [math.exp(v) / sum(math.exp(w) for w in row) for v in row]  # noqa: E731
    rows = [dict(epoch=1, alphas=dict(normal=[softmax(e) for e in alpha])),
            dict(epoch=2, alphas=dict(normal=[softmax(e) for e in moved]),
                 alpha_grad=dict(normal=dict(mean=mean, std=std)))]
    pairs = alpha_grads.adam_drift(rows, steps, lr)
    assert len(pairs) == 10 and all(p == pytest.approx(a, abs=1e-12) for p, a in pairs)
    assert sum(p for p, _ in pairs[:5]) == pytest.approx(0, abs=1e-12)  # centred per edge
    r, slope, n = alpha_grads.agreement(pairs)
    assert (r, slope, n) == (pytest.approx(1), pytest.approx(1), 10)
    backwards = [(p, -a) for p, a in pairs]
    assert alpha_grads.agreement(backwards)[:2] == (pytest.approx(-1), pytest.approx(-1))
    assert alpha_grads.adam_drift(rows[:1], steps, lr) == [] and alpha_grads.agreement(pairs[:2]) is None
    assert alpha_grads.agreement([(0.0, 1.0)] * 3) is None  # no spread


def test_the_alpha_table_adds_the_gradient_snr_where_runs_recorded_it(tmp_path, monkeypatch):
    """ladder.md: a column with the SNR of the runs that recorded α's gradient; alpha_separation.png: a
    third panel with a line per such run, its SNR per epoch."""
    figs = drawn(monkeypatch)
    small = make_sweep(tmp_path / "4k", 4000, {"C": {1: (91.0, 0), 2: (92.0, 1)}})
    big = make_sweep(tmp_path / "16k", 16000, {"B": {1: (54.3, 6)}})
    write_alphas(tmp_path / "4k/C_s1", 0.001, ratio=0.5)
    write_alphas(tmp_path / "4k/C_s2", 0.001)  # from before the record: not counted in the SNR column
    write_alphas(tmp_path / "16k/B_s1", 0.004, ratio=1.0)
    text = open(plot.main([small, big, f"--out={tmp_path / 'fig'}"])[1]).read()
    snr = lambda ratio, steps: (2 * ratio ** 2 / 5) ** 0.5  # noqa: E731  2 of 5 entries
    assert f"| 2,000 / 2,000 | C | 2 | 0.250 ± 0.000 | 0.250 ± 0.000 | {snr(0.5, 31):.3f} |" in text, text
    assert f"| 8,000 / 8,000 | B | 1 | 0.400 | 0.250 | {snr(1.0, 125):.3f} |" in text, text
    assert "α gradient SNR, last 10 epochs | α's moves against Adam's: r, slope |" in text
    assert "runs from before it was recorded" in text
    row = next(line for line in text.splitlines() if line.startswith("| 8,000 / 8,000 | B | 1 | 0.400"))
    r, slope, _ = alpha_grads.agreement(alpha_grads.adam_drift(
        json.loads((tmp_path / "16k/B_s1/alphas.json").read_text()), 125, 3e-4))
    assert row.endswith(f" | {r:.2f}, {slope:.2f} |"), row
    by_snr = figs["alpha_separation.png"].axes[2]
    assert sorted(round(line.get_ydata()[-1], 6) for line in by_snr.get_lines()) == [
        round(snr(0.5, 31), 6), round(snr(1.0, 125), 6)] and len(by_snr.get_lines()[0].get_xdata()) == 50


def test_how_far_alpha_moved_per_rung_at_the_end_and_at_one_length(tmp_path, monkeypatch):
    """ladder.md's α table: per rung and option, the last epoch's value and the value after the shortest
    run's weight steps (4k: 31 steps per epoch, 1,550 in all; 16k: 125, so 1,550 is epoch 12.4); the
    figure draws a line per finished run against its weight steps and its epochs, uniform α marked."""
    figs = drawn(monkeypatch)
    small = make_sweep(tmp_path / "4k", 4000, {"C": {1: (91.0, 0), 2: (92.0, 1)}})
    big = make_sweep(tmp_path / "16k", 16000, {"B": {1: (54.3, 6)}, "C": {1: (93.5, 1), 2: None}})
    for folder, slope in (("4k/C_s1", 0.001), ("4k/C_s2", 0.002), ("16k/B_s1", 0.004), ("16k/C_s1", 0.001)):
        write_alphas(tmp_path / folder, slope)
    paths = plot.main([small, big, f"--out={tmp_path / 'fig'}"])
    assert [os.path.basename(p) for p in paths] == ["ladder.png", "ladder.md", "alpha_separation.png"]
    text = open(paths[1]).read()
    assert "uniform α: 0.2; one op per edge: 1" in text
    assert "| 2,000 / 2,000 | C | 2 | 0.275 ± 0.035 | 0.275 ± 0.035 |" in text, text  # 0.2 + 50 * (0.001, 0.002)
    assert "| 8,000 / 8,000 | B | 1 | 0.400 | 0.250 |" in text, text  # 0.2 + 0.004 * 12.4 = 0.2496
    assert "| 8,000 / 8,000 | C | 1 | 0.250 | 0.212 |" in text, text  # the unfinished C_s2 not counted
    by_steps, by_epoch = figs["alpha_separation.png"].axes
    curves = [line for line in by_steps.get_lines() if len(line.get_xdata()) == 50]
    assert len(curves) == 4 and len([line for line in by_epoch.get_lines() if len(line.get_xdata()) == 50]) == 4
    b = next(line for line in curves if line.get_color() == "tab:red")
    assert b.get_xdata()[-1] == pytest.approx(6250) and b.get_ydata()[-1] == pytest.approx(0.4)
    assert by_steps.get_xscale() == "log" and any(list(line.get_ydata()) == [0.2, 0.2] for line in by_steps.get_lines())
    assert {t.get_text() for t in by_epoch.get_legend().get_texts()} == {
        "option C (RF-DARTS), 2,000 / 2,000 img", "option B (DARTS), 8,000 / 8,000 img",
        "option C (RF-DARTS), 8,000 / 8,000 img"}


def test_a_ladder_without_alphas_says_so(tmp_path, monkeypatch):
    figs = drawn(monkeypatch)
    plot.main([make_sweep(tmp_path / "4k", 4000, {"C": {1: (91.0, 0)}}), f"--out={tmp_path / 'fig'}"])
    assert all(any("no alphas.json" in t.get_text() for t in ax.texts) for ax in figs["alpha_separation.png"].axes)
    assert "How far α moved" not in open(tmp_path / "fig" / "ladder.md").read()


def test_a_ladder_of_darts_style_runs_shows_both_cells_and_no_nb201_reference(tmp_path):
    """S3 runs (no benchmark): no Table 2 line, no NB201 columns; each seed's normal and reduction cell as text."""
    sep, skip = "sep_conv_3x3", "skip_connect"
    cell = G.Genotype([(skip, 0), (sep, 1)] * 4, [2, 3, 4, 5], [(sep, 0), (sep, 1)] * 4, [2, 3, 4, 5])
    root = make_sweep(tmp_path / "s3", 4000, {"B": {1: (None, 4)}, "C": {1: (None, 4)}}, space="s3",
                      **search.DARTS_DEFAULTS)
    for option in "BC":
        (tmp_path / "s3" / f"{option}_s1" / "genotype.json").write_text(json.dumps(G.genotype_to_json(cell)))
    text = ladder.ladder_markdown(ladder.ladder([root], search))
    assert "Paper, Table 2" not in text and "NB201 index" not in text, text
    normal, reduce = ("`" + G.cell_str(cell, k).replace("|", "\\|") + "`" for k in ("normal", "reduce"))
    assert f"| 2,000 / 2,000 | C_s1 | {normal} | 0 | {reduce} | - | - |" in text, text
    assert "input 0 is c_{k-2}, 1 is c_{k-1}, j >= 2 the cell's node j - 2" in text  # how to read them
    # an NB201 ladder keeps the paper's line
    nb201 = make_sweep(tmp_path / "nb201", 4000, {"C": {1: (91.0, 1)}})
    assert "Paper, Table 2" in ladder.ladder_markdown(ladder.ladder([nb201], search))
