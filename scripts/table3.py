"""The paper's Table 3 (Sec. 5.1) from one command: BN-NAS on NAS-Bench-201 (bnnas_search.py) in both
settings ("conv + BN" = option A, "only BN" = option C) for each epoch count and seed, beside RF-DARTS.
Run it from the repository root: the default --rf_darts and the examples' data paths are relative to it.

    python scripts/table3.py --out=results/table3-4k --dataset=imagefolder --data=../shared/data/cifar10-jpeg \\
        --subset=4000 --C=8 --epochs=10,50 --bench201=../shared/data/nb201/nb201-public.csv   # results/table3-4k
    python scripts/table3.py --out=runs/table3 --bench201=NB201_FILE     # the paper's 10, 50 and 250 epochs

Every flag that is not the table's own (out, options, epochs, seeds, rf_darts) goes to each run
unchanged; each run writes OUT/<option>_e<epochs>_s<seed>/ as bnnas_search.py does (device.txt beside).
The runs go one after another in this process (a BN-NAS step runs one path: cheap); a second copy of
the same command (another terminal) runs the runs the first is not running, each run folder being
locked by the run in it. Rerunning the command is always safe: finished runs are skipped, interrupted
ones resumed (--resume=1), and the table rewritten. (harness/jobs.py, which runs sweep.py's searches N at a
time in subprocesses, gives the jobs, the saved-run reading and the device.txt line; sweep_table the
counting, lookups and formats.)
Outputs: OUT/table3.md and OUT/table3.json, each (setting, epochs) as the paper's row: the best of the
finished seeds (by the NB201 CIFAR-10 test accuracy of its cell, with that cell's valid accuracy), the
mean ± sample std (ddof=1) over them, how many ended in the all-`none` cell (k of n, 95% Wilson
interval), every cell; then RF-DARTS's row from a sweep.py folder of this project (--rf_darts: its runs
C_s<seed> of the same --seeds, looked up in the same table; a note where they searched another number
of images or steps than the BN-NAS runs), the paper's numbers beside, a row per seed with why its cell won
(the final indicator of `none` against the best other op's, mean over edges) and each run's
indicators.png. The sweep's counting rules hold: a run counts only when it has done exactly its
--epochs on a schedule of that length (sweep_table.finished_run); a failed or unfinished run is named
in the table, never hidden; the table is written before the first run starts and again at the end.
Exit status: 0 every run finished; 1 a run failed, was busy in another process or did not finish;
2 refused before any run started (a bad flag, a run folder holding other settings); 128 + N signal N.
"""
import dataclasses
import os
import signal
import sys
from dataclasses import dataclass

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import bnnas_search  # noqa: E402
import genotypes as G  # noqa: E402
from harness import checkpoints, cli, runs  # noqa: E402
from harness.jobs import Job, note_device, saved_run  # noqa: E402
from harness.ladder import search_size  # noqa: E402
from harness.rundir import read_json_if_any  # noqa: E402
from harness.sweep_table import (Benchmarks, plus_minus, rate_cell, count_all_skip, finished_run, found_cell,  # noqa: E402
                                 given_benchmark, mean_std, run_devices)


@dataclass
class Table3Config:
    out: str = "runs/table3"              # OUT/<option>_e<epochs>_s<seed>/ per run, table3.md, table3.json
    options: str = "AC"                   # A: conv + BN trained, C: only BN trained (Table 3's settings)
    epochs: str = "10,50,250"             # Table 3: 10, 50 and 250
    seeds: str = "1,2,3"                  # Table 3: best of 3 runs
    rf_darts: str = "results/nb201-sweep"  # a sweep.py folder whose C_s<seed> runs (the --seeds) are RF-DARTS's
                                           # row, best at the BN-NAS runs' size (this default: 4k, C=8; "": none)


SET_PER_RUN = ("option", "epochs", "seed", "out", "resume", "stop_after")  # run keys the table gives each run
# Table 3 of the paper (NB201 CIFAR-10, best of 3 runs): (option, epochs) -> (valid, test) accuracy (%)
PAPER = {("A", 10): (9.71, 10.00), ("A", 50): (86.28, 88.77), ("A", 250): (88.48, 92.28),
         ("C", 10): (9.71, 10.00), ("C", 50): (9.71, 10.00), ("C", 250): (84.35, 86.45)}
PAPER_RF_DARTS = (91.55, 94.36)  # RF-DARTS, only BN, 50 epochs
ALL_NONE = G.NB201Cell(("none",) * 6)


def _ints(text, flag):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise cli.ConfigError(f"--{flag}={text}: give integers separated by commas") from None
    if not values or len(set(values)) < len(values):
        raise cli.ConfigError(f"--{flag}={text}: give at least one value, each once")
    return values


def parse(argv):
    """argv -> (Table3Config with options, epochs and seeds as lists, the flags of every run). --help / -h:
    the table's keys, then the bnnas_search.py keys it passes on (cli.help_text), exit 0."""
    if cli.wants_help(argv):
        cli.show_help(Table3Config, more=[("bnnas_search.py keys, passed on to every run (the table sets "
                                            "--option, --epochs, --seed, --out, --resume and --stop_after per run)",
                                            bnnas_search.BNNASConfig, SET_PER_RUN)])
    cfg, flags = cli.split_config(Table3Config, argv, SET_PER_RUN, "the table sets these per run (--out is the "
                                  "table's folder; use --options=, --epochs= and --seeds=)")
    options = cfg.options.upper()
    if not options or set(options) - set(bnnas_search.OPTIONS) or len(set(options)) < len(options):
        raise cli.ConfigError(f"--options={cfg.options}: give A (conv + BN) and / or C (only BN), each once")
    epochs, seeds = _ints(cfg.epochs, "epochs"), _ints(cfg.seeds, "seeds")
    if cfg.rf_darts and not os.path.isdir(cfg.rf_darts):
        raise cli.ConfigError(f"--rf_darts={cfg.rf_darts}: no such folder (a sweep.py folder with C_s<seed> runs; "
                               "run from the repository root for the default, or pass --rf_darts= for no RF-DARTS row)")
    return dataclasses.replace(cfg, options=list(options), epochs=epochs, seeds=seeds), flags


def plan(cfg, flags):
    """Every run as a Job (state filled in by `state`), each checked before any starts: its settings
    (bnnas_search.make_config) and, for a folder that holds a run, that it holds this one."""
    jobs = []
    for option in cfg.options:
        for epochs in cfg.epochs:
            for seed in cfg.seeds:
                name = f"{option}_e{epochs}_s{seed}"
                folder = os.path.join(cfg.out, name)
                argv = [*flags, f"--option={option}", f"--epochs={epochs}", f"--seed={seed}", f"--out={folder}"]
                want = runs.as_dict(bnnas_search.make_config(argv))
                saved, done = saved_run(folder)
                saved = cli.saved_settings(bnnas_search.BNNASConfig, saved) if saved else {}
                differ = cli.differing(want, saved, bnnas_search.RUN_KEYS)
                if differ:
                    what = ", ".join(f"{k}={saved[k]!r} not {want[k]!r}" for k in differ)
                    raise cli.ConfigError(f"{folder} holds a run with other settings ({what}): pass "
                                           f"{cli.same_flags(saved, differ)} to continue it, or use another --out")
                if done > epochs:
                    raise cli.ConfigError(f"{folder} holds a run past {epochs} epochs ({done} done): use another --out")
                jobs.append(Job(name, folder, argv, None, epochs))
    return jobs


def state(job):
    """What a run needs now: done | resume | new | busy (another process runs it)."""
    if finished_run(job.folder, job.epochs) is not None:
        return "done"
    try:
        checkpoints.refuse_if_busy(job.folder)
    except checkpoints.RunBusy:
        return "busy"
    return "resume" if checkpoints.has_checkpoint(os.path.join(job.folder, "checkpoint.pt")) else "new"


def run_one(job, now):
    """Run or continue one job in this process -> its outcome ("finished", or why not)."""
    cfg = bnnas_search.make_config(job.argv + (["--resume=1"] if now == "resume" else []))
    device = runs.pick_device(cfg.device)
    checkpoints.out_dir(job.folder)
    note_device(job.folder, f"GPU {device}" if device.type == "cuda" else "cpu", torch.get_num_threads())
    try:
        with checkpoints.StopSignals(1, device) as stop:
            bnnas_search.search(cfg, device, stop)
    except checkpoints.RunBusy:
        return "busy: another process runs it"
    except cli.user_errors() as e:  # its own fault only: a bug keeps its traceback, a stop goes up
        return f"failed: {cli.one_line(e)}"
    return "finished" if finished_run(job.folder, job.epochs) is not None else "unfinished"


def none_vs_best_other(folder):
    """(mean over edges of `none`'s final indicator, of the best other op's), from indicators.json."""
    rows = read_json_if_any(os.path.join(folder, "indicators.json"), missing=[])
    if not rows:
        return None, None
    ind = np.asarray(rows[-1]["indicators"])  # (6, 5), ops in NB201_OPS order: none first
    return float(ind[:, 0].mean()), float(ind[:, 1:].max(axis=1).mean())


def seed_record(job, outcome, benchmarks):
    """One run's line of the table: its cell, benchmark accuracies, counts, indicators and time."""
    option, seed = job.name.split("_")[0], int(job.name.rsplit("_s", 1)[1])
    rec = dict(name=job.name, option=option, epochs=job.epochs, seed=seed, device=run_devices(job.folder))
    run = finished_run(job.folder, job.epochs)
    if run is None:
        return dict(rec, state=outcome or "unfinished")
    cell = G.NB201Cell.from_str(run.genotype["arch"])
    nb = found_cell(run.genotype, None, benchmarks.for_run(run.config)).get("nb201", {})
    none_gamma, best_other = none_vs_best_other(job.folder)
    return dict(rec, state="finished", arch=cell.to_str(), all_none=cell == ALL_NONE, size=search_size(job.folder),
                none_count=G.op_counts(cell).get("none", 0), skip_count=G.skip_count(cell),
                valid=nb.get("cifar10_valid_acc"), test=nb.get("cifar10_test_acc"), none_gamma=none_gamma,
                best_other_gamma=best_other, evolution_best=run.genotype.get("evolution", {}).get("best_score"),
                minutes=sum(r["seconds"] for r in run.rows) / 60)


def row(recs):
    """A (setting, epochs) row, or RF-DARTS's, from its seeds' records: the best (by test accuracy) and
    mean ± sample std over the finished ones, all-`none` k of n, the cells."""
    done = [r for r in recs if r["state"] == "finished"]
    scored = [r for r in done if r.get("test") is not None]
    best = max(scored, key=lambda r: r["test"]) if scored else None
    mean, std, n = mean_std([r.get("test") for r in done])
    sizes = sorted({tuple(r["size"]) for r in done if r.get("size")})
    return dict(runs=len(recs), finished=len(done), best=best and {k: best[k] for k in ("name", "valid", "test")},
                test=dict(mean=mean, std=std, n=n), all_none=count_all_skip([r.get("all_none") for r in done]),
                sizes=sizes, cells=[r["arch"] for r in done])


def rf_darts_records(folder, benchmarks, seeds):
    """RF-DARTS's runs: the C_s<seed> folders of a sweep.py folder for `seeds` (the BN-NAS runs' seeds, so
    that both rows are a best of as many), each finished at its own --epochs."""
    if not folder or not os.path.isdir(folder):
        return []
    recs = []
    for name in [f"C_s{s}" for s in seeds if os.path.isdir(os.path.join(folder, f"C_s{s}"))]:
        path = os.path.join(folder, name)
        epochs = (read_json_if_any(os.path.join(path, "config.json")) or {}).get("epochs")
        run = finished_run(path, epochs) if epochs else None
        rec = dict(name=name, option="C", epochs=epochs, state="finished" if run else "unfinished")
        if run is not None:
            nb = found_cell(run.genotype, None, benchmarks.for_run(run.config)).get("nb201", {})
            cell = G.NB201Cell.from_str(run.genotype["arch"])
            rec.update(arch=cell.to_str(), all_none=cell == ALL_NONE, size=search_size(path),
                       none_count=G.op_counts(cell).get("none", 0), skip_count=G.skip_count(cell), valid=nb.get("cifar10_valid_acc"), test=nb.get("cifar10_test_acc"))
        recs.append(rec)
    return recs


def summarize(cfg, jobs, outcomes=None):
    """-> table3.json's content: per (option, epochs) its row and seeds, RF-DARTS's row and the paper's."""
    benchmarks = Benchmarks(given_benchmark(jobs))
    rows = []
    for option in cfg.options:
        for epochs in cfg.epochs:
            recs = [seed_record(j, (outcomes or {}).get(j.name), benchmarks) for j in jobs
                    if j.name.startswith(f"{option}_e{epochs}_s")]
            rows.append(dict(method="BN-NAS", option=option, epochs=epochs, paper=PAPER.get((option, epochs)),
                             seeds=recs, **row(recs)))
    rf = rf_darts_records(cfg.rf_darts, benchmarks, cfg.seeds)
    if rf:
        epochs = sorted({r["epochs"] for r in rf if r["epochs"]})
        rows.append(dict(method=f"RF-DARTS ({cfg.rf_darts})", option="C", epochs=epochs[0] if len(epochs) == 1 else epochs,
                         paper=PAPER_RF_DARTS, seeds=rf, **row(rf)))
    return dict(rows=rows, bench201=benchmarks.given or None)


def _acc(v):
    return "-" if v is None else f"{v:.2f}"


READING = """Why `none` wins when it does (bnnas.py's docstring has the derivation). The extra BN after `none`
normalises an all-zero tensor: its output is beta whatever gamma is, so gamma gets an exactly zero loss
gradient under both settings and moves only by weight decay, on the steps that put `none` on that edge (1 in 5;
not at all under --bn_decay=0, which --trained_bn=indicators implies: it stays exactly 1):
|gamma_none| ~ exp(-weight_decay / (1 - momentum) * sum of those steps' lr), the same under conv + BN and only BN,
1 at the start and still above ~0.9 after the few hundred to few thousand weight steps of a reduced run. The
other ops' gamma follow their loss gradients: where every other op's indicator ends below `none`'s on an edge,
that edge takes `none`, and the cell is all-`none` (10.00) when it happens on all six. The "none" and "best
other" columns give both sides of that comparison per run (final indicators, mean over edges)."""


def _cells(values):
    """Markdown cells, "-" for None."""
    return " | ".join("-" if v is None else str(v) for v in values)


def seed_line(s):
    """A run's row of the per-run table (RF-DARTS's runs have no indicators, evolution or minutes: "-")."""
    if s["state"] != "finished":
        return f"| {s['name']} | {s['state'].replace('|', '/')} | {_cells([None] * 9)} | {s.get('device') or '-'} |"
    gammas = [None if s.get(k) is None else f"{s[k]:.4f}" for k in ("none_gamma", "best_other_gamma")]
    evolution = {True: "yes", False: "no"}.get(s.get("evolution_best"))
    minutes = None if s.get("minutes") is None else f"{s['minutes']:.1f}"
    arch = "`" + s["arch"].replace("|", "\\|") + "`"
    return (f"| {s['name']} | finished | {_cells([arch, _acc(s['valid']), _acc(s['test']), s['none_count'], s['skip_count'], *gammas, evolution, minutes])} | "
            f"{s.get('device') or '-'} |")


def table_line(r):
    """A (setting, epochs) row of Table 3, or RF-DARTS's."""
    best, t, paper = r["best"], r["test"], r["paper"]
    def images(w, a):  # BN-NAS trains on the weight half alone: it has no α
        return f"{w:,} / {'unused' if r['method'] == 'BN-NAS' else f'{a:,}'}"
    cells = ["; ".join(f"{images(w, a)}, {n:,}" for w, a, n in r["sizes"]) or None, f"{r['finished']} of {r['runs']}",
             None if not best else f"{_acc(best['valid'])} / {_acc(best['test'])} ({best['name']})",
             None if t["mean"] is None else plus_minus(t["mean"], t["std"], 2, t["n"]), rate_cell(r["all_none"]),
             None if not paper else f"{paper[0]:.2f} / {paper[1]:.2f}"]
    return f"| {r['method']} | {'✓' if r['option'] == 'A' else '✗'} | ✓ | {r['epochs']} | {_cells(cells)} |"


def size_note(rows):
    """A line where RF-DARTS's runs searched another number of weight images than the BN-NAS runs, else []."""
    images = {method: sorted({w for r in rows if (r["method"] == "BN-NAS") == (method == "BN-NAS")
                              for w, _, _ in r["sizes"]}) for method in ("BN-NAS", "RF-DARTS")}
    if not images["RF-DARTS"] or not images["BN-NAS"] or images["RF-DARTS"] == images["BN-NAS"]:
        return []
    return ["", f"Note: RF-DARTS's runs trained their weights on {', '.join(f'{w:,}' for w in images['RF-DARTS'])} "
            f"images, the BN-NAS runs on {', '.join(f'{w:,}' for w in images['BN-NAS'])}: rows of another size, "
            "not a like-for-like comparison (--rf_darts names a sweep of the BN-NAS runs' size)."]


def markdown(summary):
    lines = ["| method | conv | BN | epochs | search images (weight / α), weight steps per run | finished runs | best: "
             "NB201 CIFAR-10 valid / test (%) | test, mean ± std (%) | all-`none` cells | paper, Table 3: valid / test (%) |",
             "|---|---|---|---|---|---|---|---|---|---|", *map(table_line, summary["rows"]), *size_note(summary["rows"]), "",
             "Best: the finished run whose cell has the highest NB201 CIFAR-10 test accuracy (the paper reports the "
             "best of 3 runs); mean ± sample std (ddof=1) over the finished runs; k of n with the 95% Wilson interval. "
             f"Benchmark table: {summary['bench201'] or 'each run’s own --bench201'}.", "", READING, "",
             "Each run (γ: its final indicators, mean |γ| of an op's last BN over the cells, then over the edges; "
             "each BN-NAS run draws them per edge in its indicators.png):", "",
             "| run | state | cell | valid | test | `none` edges | skip edges | `none`'s γ | best other op's γ | "
             "evolution reaches the best score | minutes | device |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [seed_line(s) for r in summary["rows"] for s in r["seeds"]]
    return "\n".join(lines) + "\n"


def write_table(cfg, jobs, outcomes=None, say=print):
    summary = summarize(cfg, jobs, outcomes)
    checkpoints.write_json(os.path.join(cfg.out, "table3.json"), summary)
    text = markdown(summary)
    checkpoints.atomic_write(os.path.join(cfg.out, "table3.md"), lambda f: f.write(text), mode="w")
    say(text)
    return summary


def main(argv=None):
    """Run every (setting, epochs, seed) not finished, then write the table -> its summary; exits 1 when
    a run did not finish (the table names why)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, flags = parse(argv)
    jobs = plan(cfg, flags)
    checkpoints.out_dir(cfg.out)
    write_table(cfg, jobs, say=lambda text: None)  # never claims what the folder no longer holds
    outcomes = {}
    try:
        for job in jobs:
            now = state(job)
            if now in ("done", "busy"):
                print(f"{job.name}: {'finished before, skipped' if now == 'done' else 'busy in another process, skipped'}")
                outcomes[job.name] = "busy: another process runs it" if now == "busy" else "finished"
                continue
            print(f"{job.name}: {'resumed' if now == 'resume' else 'started'}", flush=True)
            outcomes[job.name] = run_one(job, now)
            print(f"{job.name}: {outcomes[job.name]}", flush=True)
    except BaseException as e:  # whatever ends it, the table says what the folder holds
        write_table(cfg, jobs, outcomes)
        if not isinstance(e, (cli.Preempted, KeyboardInterrupt)):
            raise
        signum = getattr(e, "signum", signal.SIGINT)  # the run checkpointed before it stopped
        raise cli.Preempted(f"table stopped by {signal.Signals(signum).name} ({cli.one_line(e) or 'Ctrl-C'}); "
                             "rerun the same command to continue", signum) from None
    summary = write_table(cfg, jobs, outcomes)
    left = [j.name for j in jobs if finished_run(j.folder, j.epochs) is None]
    if not left:
        return summary
    print(f"error: {len(left)} of {len(jobs)} runs did not finish ({', '.join(left)}); the table names why: "
          + os.path.join(cfg.out, "table3.md"), file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
