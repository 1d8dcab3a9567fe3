"""A sweep's run folders read back: whether a run is finished, where it ran, why it did not finish, and
the paper's Table 2 row over seeds (mean ± sample std, ddof=1, and how many seeds ended in the all-skip
cell) as OUT/table.json and OUT/table.md; several sweeps at different data sizes as one ladder table.

sweep.py starts the searches; this module only reads their folders (rundir.load_run, device.txt,
stderr.txt; for the ladder each sweep's table.json and each run's log.txt, config.json, genotype.json)
and writes the tables, so a table can be rebuilt from any sweep folder.
"""
import os
import re
import signal
import statistics

import genotypes as G
from harness import checkpoints
from harness.checkpoints import write_json
from harness.rundir import load_run

STOPS = {signal.SIGTERM, signal.SIGINT}  # stop a sweep (sweep.py); a run ended by one is "stopped", not failed


def finished_run(folder, epochs):
    """The run in `folder` (rundir.Run) if it has done exactly `epochs` epochs on an `epochs`-epoch
    schedule, else None."""
    try:
        run = load_run(folder)
    except ValueError:
        return None
    done = run.rows and run.rows[-1]["epoch"] == epochs and run.config.get("epochs", epochs) == epochs
    return run if done else None


def run_devices(folder):
    """The devices a run's sessions ran on (device.txt), in order, each once: e.g. "GPU 1" or "cpu"."""
    path = os.path.join(folder, "device.txt")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        seen = [line.split(" ", 2)[2].strip() for line in f if line.count(" ") >= 2]
    return ", ".join(dict.fromkeys(seen)) or None


def _last_error(folder):
    path = os.path.join(folder, "stderr.txt")
    if not os.path.isfile(path):
        return "no message"
    with open(path, errors="replace") as f:
        lines = f.read().strip().splitlines()
    return lines[-1] if lines else "no message"


def mean_std(values):
    """(mean, sample std over seeds (ddof=1; 0 for one value), n) of the non-None values."""
    v = [x for x in values if x is not None]
    if not v:
        return None, None, 0
    return statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)


def final_all_skip(genotype):
    """Whether a run's final cell (genotype.json's contents) is the all-skip cell (genotypes.all_skip);
    None without one."""
    return None if not genotype else G.all_skip(G.genotype_from_json(genotype))


def count_all_skip(flags):
    """[all_skip per finished run, None where not judged] -> {"count": k, "n": judged}."""
    judged = [f for f in flags if f is not None]
    return dict(count=sum(judged), n=len(judged))


def _pm(mean, std, digits):
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def run_state(name, folder, epochs, status):
    """A run that is not finished: failed (exit N) / stopped (by a signal, continue with the same command)
    / unfinished (not run in this invocation, or exit 0 short of `epochs`), with its last error line."""
    code = (status or {}).get(name)
    if code is None:
        return "unfinished"
    stop = {-s for s in STOPS} | {128 + s for s in STOPS}
    what = "stopped" if code in stop else "failed" if code else f"unfinished after exit 0 (not at epoch {epochs})"
    return f"{what} (exit {code}): {_last_error(folder)}" if code else what


def summarize(jobs, status=None):
    """-> (the sweep's table: per option, each seed's final numbers and mean ± std over the finished
    seeds; the finished runs, each read once)."""
    table, done = {}, []
    for name, folder, _, _, epochs in jobs:
        option, seed = name.split("_s")
        rec = dict(seed=int(seed), folder=folder, device=run_devices(folder))
        run = finished_run(folder, epochs)
        if run is not None:
            done.append(run)
            last = run.rows[-1]
            bench = last.get("bench201") or {}
            schedules = [s["epochs"] for s in run.config.get("sessions", []) if "epochs" in s]
            rec.update(state="finished", epochs=last["epoch"], arch=(run.genotype or {}).get("arch"),
                       bench_test_acc=bench.get("test_acc"),
                       bench201_dataset=bench.get("dataset", "cifar10") if bench else None,  # older runs: CIFAR-10
                       schedules=[e for i, e in enumerate(schedules) if e not in schedules[:i]] or [epochs],
                       skip_count=last["skip_count"], all_skip=final_all_skip(run.genotype), train_acc=100 * last["train_acc"],
                       alpha_half_acc=100 * last["valid_acc"],
                       minutes=sum(r["seconds"] for r in run.rows) / 60, compile=run.config.get("compile", False))
        else:
            rec.update(state=run_state(name, folder, epochs, status))
        table.setdefault(option, []).append(rec)
    keys = ("bench_test_acc", "skip_count", "train_acc", "alpha_half_acc", "minutes")
    out = {}
    for option, recs in table.items():
        finished = [r for r in recs if r["state"] == "finished"]
        out[option] = dict(seeds=recs, n=len(finished), bench201_dataset=_dataset(finished),
                           all_skip=count_all_skip([r["all_skip"] for r in finished]),
                           **{k: dict(zip(("mean", "std", "n"), mean_std([r[k] for r in finished]))) for k in keys})
    return out, done


def _dataset(recs):
    """The benchmark dataset the finished runs' accuracies come from (None: no benchmark)."""
    names = sorted({r["bench201_dataset"] for r in recs if r.get("bench201_dataset")})
    return ", ".join(names) or None


DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}  # ImageNet16-120 is written as it is


def markdown(summary):
    def cell(s, digits):
        return "-" if s["mean"] is None else _pm(s["mean"], s["std"], digits)

    dataset = _dataset([{"bench201_dataset": s["bench201_dataset"]} for s in summary.values()])
    bench = f"NB201 {DATASET_NAMES.get(dataset, dataset)} test acc." if dataset else "benchmark test acc."
    lines = [f"| option | seeds | {bench} (%) | final skip edges | all-skip cells | supernet train acc. (%) | "
             "α-half acc. (%) | minutes per run |", "|---|---|---|---|---|---|---|---|"]
    for option, s in summary.items():
        lines.append(f"| {option} | {s['n']} | {cell(s['bench_test_acc'], 2)} | {cell(s['skip_count'], 2)} | "
                     f"{_of(s.get('all_skip'))} | "
                     f"{cell(s['train_acc'], 1)} | {cell(s['alpha_half_acc'], 1)} | {cell(s['minutes'], 0)} |")
    lines += ["", "Mean ± sample std (ddof=1) over the finished seeds. Each seed:", "",
              f"| run | state | {bench} | skip | train | α-half | minutes | compiled | device | cell |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for option, s in summary.items():
        for r in s["seeds"]:
            if r["state"] != "finished":
                lines.append(f"| {option}_s{r['seed']} | {r['state'].replace('|', chr(92) + '|')} | | | | | | | "
                             f"{r.get('device') or '-'} | |")
                continue
            acc = "-" if r["bench_test_acc"] is None else f"{r['bench_test_acc']:.2f}"
            earlier = ", ".join(map(str, r["schedules"][:-1]))
            state = f"finished ({r['epochs']} ep" + (f"; continued from a {earlier}-epoch schedule)" if earlier else ")")
            lines.append(f"| {option}_s{r['seed']} | {state} | {acc} | {r['skip_count']} | "
                         f"{r['train_acc']:.1f} | {r['alpha_half_acc']:.1f} | {r['minutes']:.0f} | "
                         f"{'yes' if r['compile'] else 'no'} | {r.get('device') or '-'} | "
                         f"`{(r['arch'] or '-').replace('|', chr(92) + '|')}` |")
    return "\n".join(lines) + "\n"


def _of(counted):
    """{"count": k, "n": n} -> "k of n" ("-" when nothing was judged)."""
    return f"{counted['count']} of {counted['n']}" if counted and counted["n"] else "-"


def write_table(cfg, jobs, status=None, say=print):
    """OUT/table.json and OUT/table.md (each atomic) -> (summary, the finished runs)."""
    summary, done = summarize(jobs, status)
    write_json(os.path.join(cfg.out, "table.json"), summary)
    text = markdown(summary)
    checkpoints.atomic_write(os.path.join(cfg.out, "table.md"), lambda f: f.write(text), mode="w")
    say(text)
    return summary, done


# ---------------------------------------------------------------------------------------------------------------
# The data ladder: sweeps that differ in the number of search images, side by side (plot.py draws it too)

# The paper's Table 2 (NAS-Bench-201 CIFAR-10, 3 runs each, 25k/25k images, 50 epochs of 391 steps)
PAPER_LADDER_NOTE = ("Paper, Table 2 (25,000 / 25,000 images, 19,550 weight steps, 3 runs each, NB201 CIFAR-10): "
                     "DARTS 54.30 ± 0.00 (the all-skip cell in every run), RF-DARTS 94.27 ± 0.15.")


def search_size(run_dir):
    """(weight images, α images, weight steps) of a search: the image counts and steps per epoch from
    log.txt's first line, times config.json's epochs (steps None without it); None without a log."""
    path = os.path.join(run_dir, "log.txt")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        m = re.search(r"(\d+) weight / (\d+) alpha images, (\d+) steps per epoch", f.read())
    if not m:
        return None
    config = os.path.join(run_dir, "config.json")
    epochs = checkpoints.read_json(config).get("epochs") if os.path.isfile(config) else None
    return int(m[1]), int(m[2]), int(m[3]) * epochs if epochs else None


def ladder(sweep_dirs):
    """{option: {(weight images, α images): [per finished seed: dict(acc, skip, all_skip, steps)]}} over
    sweep folders (each sweep's table.json; sizes from each run's folder)."""
    by = {}
    for d in sweep_dirs:
        for option, s in checkpoints.read_json(os.path.join(d, "table.json")).items():
            for r in s["seeds"]:
                folder = os.path.join(d, f"{option}_s{r['seed']}")
                size = search_size(folder) if r.get("state") == "finished" else None
                if size is None:
                    continue
                flag = r.get("all_skip")
                genotype = os.path.join(folder, "genotype.json")
                if flag is None and os.path.isfile(genotype):  # a table written before all_skip was recorded
                    flag = final_all_skip(checkpoints.read_json(genotype))
                by.setdefault(option, {}).setdefault(size[:2], []).append(
                    dict(acc=r["bench_test_acc"], skip=r["skip_count"], all_skip=flag, steps=size[2]))
    return by


def ladder_markdown(by):
    """The ladder as one Markdown table: per number of search images and option, mean ± sample std over
    the finished seeds (ddof=1) and how many ended in the all-skip cell."""
    def cell(values, digits):
        mean, std, n = mean_std(values)
        return "-" if not n else _pm(mean, std, digits)

    lines = ["| search images (weight / α) | weight steps per run | option | finished seeds | benchmark test acc. (%) "
             "| per seed | all-skip cells | final skip edges |", "|---|---|---|---|---|---|---|---|"]
    for size in sorted({size for rungs in by.values() for size in rungs}):
        for option in sorted(by):
            recs = by[option].get(size)
            if not recs:
                continue
            steps = sorted({r["steps"] for r in recs if r["steps"]})
            seeds = ", ".join("-" if r["acc"] is None else f"{r['acc']:.2f}" for r in recs)
            lines.append(f"| {size[0]:,} / {size[1]:,} | {', '.join(f'{s:,}' for s in steps) or '-'} | {option} | "
                         f"{len(recs)} | {cell([r['acc'] for r in recs], 2)} | {seeds} | "
                         f"{_of(count_all_skip([r['all_skip'] for r in recs]))} | {cell([r['skip'] for r in recs], 2)} |")
    return "\n".join(lines + ["", PAPER_LADDER_NOTE]) + "\n"
