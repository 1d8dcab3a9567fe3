"""A seed sweep: search.py for every (option, seed), N at a time, then the paper's Table 2 row as
mean ± std over seeds (Markdown + JSON) and its figures.

    python sweep.py --out=runs/sweep --options=BC --seeds=1,2,3 --jobs=1 --bench201=NB201_FILE  # one GPU
    python sweep.py --out=results/nb201-sweep --options=BC --seeds=1,2,3,4 --jobs=2 --threads=1 \\
        --dataset=imagefolder --data=../shared/data/cifar10-jpeg --subset=4000 --C=8 --compile=1 \\
        --bench201=../shared/data/nb201/nb201-public.csv                                      # 2-core CPU
    python sweep.py --out=runs/one_draw --options=C --seeds=1,2,3 --init_seed=1  # one feature draw, 3 data orders
    python sweep.py ... --report_only=1   # the same command, starting nothing: where the sweep stands now

Every flag that is not the sweep's own (out, options, seeds, jobs, threads) goes to each search
unchanged; each run writes OUT/<option>_s<seed>/ as search.py does (its stderr in stderr.txt there).
Outputs: OUT/table.md, OUT/table.json, OUT/figures/ (plot.py). Std is the sample standard deviation over
seeds (ddof=1). A run counts (is "finished") only when it has done exactly the sweep's --epochs on a
schedule of that length; the table names the benchmark dataset its accuracies come from.

What the sweep does in each case (re-running the same command is always safe; nothing is lost):
- Before any run starts, every run's settings are checked (search.make_config) and every run folder
  read: a bad flag, a duplicate seed or option, a folder whose run (config.json, or the checkpoint's
  own settings when there is no config.json) has other settings or more epochs than --epochs, and a
  folder another process holds (OUT itself or a run folder) each stop the sweep with one line, exit 2.
- Finished runs are skipped; interrupted ones resume from their checkpoints (--resume=1), and a shorter
  finished run is continued to --epochs (its lr schedule changes length: config.json keeps each session
  and the table says "continued from a N-epoch schedule").
- A failed run (a damaged checkpoint, a non-finite loss, a full disk, ...) does not stop the others;
  the table names it with the last line of its stderr.txt and the sweep exits 1.
- SIGTERM / Ctrl-C: every search checkpoints after its current step and exits, the table is written,
  the sweep exits 128 + signum; SIGKILL: each search still gets SIGTERM (Linux: PR_SET_PDEATHSIG) and
  checkpoints. Re-running the command continues them (a search still writing its checkpoint holds its
  folder: one line, exit 2; run it again a moment later).
- The sweep's own write failing (disk full, no permission): one line naming the file, exit 1; a run
  that did not finish is never counted.
The table is written before the first run starts and again at the end, so it never counts a run the
folder does not hold finished. Exit status: 0 every run finished; 1 a run failed, did not finish or exited
with an error after its last epoch (or a write of the sweep's own failed); 2 refused before any run started; 128 + N stopped by signal N.
--report_only=1 starts nothing: it reads the run folders as they are (a search may be running in one),
prints the table and, unless a sweep holds OUT, rewrites OUT/table.md|json and OUT/figures/; exit 0.
On CUDA the searches are spread over the visible GPUs, --jobs per GPU, each search seeing only its own
(CUDA_VISIBLE_DEVICES); where each session ran (GPU index, or CPU model and vector ISA) is in
OUT/<option>_s<seed>/device.txt and the table's device column. The first line says how many searches
run, how many at once and the CPU threads each gets (the searches' OMP_NUM_THREADS: --threads, else
cores // searches at once, with the shell's own OMP_NUM_THREADS named when it differs).
"""
import dataclasses
import os
import signal
import sys
from dataclasses import dataclass

import search
from harness import checkpoints, cli, data, jobs as runner, runs
from harness.checkpoints import has_checkpoint
from harness.jobs import Job, saved_run
from harness.sweep_table import finished_run, markdown, summarize, write_table

SEARCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "search.py")  # what each job runs


@dataclass
class SweepConfig:
    out: str = "runs/sweep"    # the sweep's folder: OUT/<option>_s<seed>/ per run, table.md, figures/
    options: str = "BC"        # Table 1 options, e.g. BC or ABCD
    seeds: str = "1,2,3"       # comma-separated
    jobs: int = 1              # searches at a time (on GPUs: per GPU, which several can share; 2-core CPU: 2)
    threads: int = 0           # CPU threads per search (sets its OMP_NUM_THREADS); 0: cores // searches at once
    report_only: bool = False  # 1: start nothing; the table (and figures) from the run folders as they are now


SET_PER_RUN = ("option", "seed", "out", "resume", "stop_after")  # search keys the sweep gives each run itself


def parse(argv):
    """argv -> (SweepConfig, the search flags shared by every run). --help / -h: the sweep's keys, then
    the search keys it passes on (cli.help_text), exit 0."""
    if cli.wants_help(argv):
        cli.show_help(SweepConfig, more=[(
            "search.py keys, passed on to every search (the sweep sets --option, --seed, --out, --resume and "
            "--stop_after per run)", search.SearchConfig, SET_PER_RUN)])
    cfg, rest = cli.split_config(SweepConfig, argv, SET_PER_RUN, "the sweep sets these per run (use --options= "
                                 "and --seeds=)")
    cli.check_ranges(cfg, dict(jobs="[1, inf)", threads="[0, inf)"))
    options = cfg.options.upper()
    if not options or set(options) - set("ABCD"):
        raise cli.ConfigError(f"--options={cfg.options}: give letters of A, B, C, D (e.g. BC)")
    try:
        seeds = [int(s) for s in cfg.seeds.split(",") if s.strip()]
    except ValueError:
        raise cli.ConfigError(f"--seeds={cfg.seeds}: give integers separated by commas") from None
    for flag, given, values in (("options", cfg.options, options), ("seeds", cfg.seeds, seeds)):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:  # one folder per (option, seed): a second job would fail on it and be counted twice
            raise cli.ConfigError(f"--{flag}={given}: {', '.join(map(str, twice))} given twice; "
                                   "each (option, seed) is one run")
    if not seeds:
        raise cli.ConfigError("--seeds needs at least one seed")
    cfg = dataclasses.replace(cfg, options=options, seeds=seeds)
    return cfg, rest


def plan(cfg, flags, busy_ok=False):
    """Every run as a Job (state: done | resume | new). Before any start: checks every run's settings
    (search.make_config) and refuses a folder that another process holds (unless `busy_ok`: a report
    only reads it) or that holds a run with other settings or more epochs than the sweep's
    (cli.ConfigError: one line, exit 2)."""
    jobs = []
    for seed in cfg.seeds:  # seed-major: an interrupted sweep has the same number of seeds per option
        for option in cfg.options:
            name = f"{option}_s{seed}"
            folder = os.path.join(cfg.out, name)
            argv = [*flags, f"--option={option}", f"--seed={seed}", f"--out={folder}"]
            want = runs.as_dict(search.make_config(argv))
            if not busy_ok:
                checkpoints.refuse_if_busy(folder)  # a search still running there (e.g. a killed sweep's)
            saved, done = saved_run(folder)
            state = "new"
            if saved is not None:
                full = cli.saved_settings(search.SearchConfig, saved)  # a key added later: what such runs did
                # a search may change its benchmark column on a resume; a sweep may not: its table would average
                # two datasets' accuracies (runs from before the key existed looked up their searched dataset's)
                allowed = search.RUN_KEYS - ({"bench201_dataset"} if saved.get("bench201_dataset") else set())
                differ = cli.differing(want, full, allowed)
                if differ:
                    what = ", ".join(f"{k}={full[k]!r} not {want[k]!r}" for k in differ)
                    if {"option", "seed"} & set(differ):  # the sweep sets these per folder: no flag continues it
                        raise cli.ConfigError(f"{folder} holds another run ({what}): move it out of {cfg.out}, "
                                              "or use another --out")
                    raise cli.ConfigError(f"{folder} holds a run with other settings ({what}): pass "
                                           f"{cli.same_flags(full, differ)} to continue it, or use another --out")
                length = saved.get("epochs", done)
                if max(length, done) > want["epochs"]:  # its epochs so far followed a longer schedule
                    raise cli.ConfigError(f"{folder} holds a run of {length} epochs ({done} done), more than "
                                           f"--epochs={want['epochs']}: pass --epochs={length}, or another --out")
                if finished_run(folder, want["epochs"]):
                    state = "done"
            if state == "new" and has_checkpoint(os.path.join(folder, "checkpoint.pt")):
                state = "resume"
            jobs.append(Job(name, folder, argv + (["--resume=1"] if state == "resume" else []), state,
                            want["epochs"]))
    return jobs


def epoch_line(name, row):
    """A search's line per finished epoch, from its history.json row."""
    bench = row.get("bench201", {}).get("test_acc")
    return (f"{name}: epoch {row['epoch']} skip {row['skip_count']} train {row['train_acc']:.3f} "
            f"alpha-half {row['valid_acc']:.3f}" + (f" bench {bench:.2f}" if bench else ""))


def run_all(cfg, jobs, say=print, gpus=None):
    """Run the pending searches, cfg.jobs at a time (with GPUs: cfg.jobs per GPU, each search on the
    least busy one), cfg.threads CPU threads each (harness/jobs.run_all); one line per finished epoch
    and per ended run; OUT/table.md|json rewritten as each run ends, so a long sweep's table (and a
    ladder over it) holds every run finished so far. -> ({name: exit status} of the runs that ran, the
    stop signal's number or 0)."""
    return runner.run_all(jobs, SEARCH, search.SearchConfig, cfg.jobs, cfg.threads, say, gpus, epoch_line,
                          on_end=lambda status: write_table(cfg, jobs, status, say=lambda text: None))


def report(cfg, jobs, status=None, say=print):
    summary, done = write_table(cfg, jobs, status, say)
    try:
        from harness.sweep_figures import sweep_figures
    except ImportError as e:  # matplotlib is for figures only; any other import error is a real one
        if not (e.name or "").startswith("matplotlib"):
            raise
        say("note: matplotlib is not installed: no figures")
        return summary
    if done:
        for p in sweep_figures(done, os.path.join(cfg.out, "figures")):
            say(p)
    return summary


def report_now(cfg, flags):
    """--report_only=1: no search starts. The table from the run folders as they are now (a running
    search's last finished epoch; its run counts only once finished), printed; written with the figures
    unless another sweep holds OUT (it writes its own as each run ends) -> the summary."""
    jobs = plan(cfg, flags, busy_ok=True)
    try:
        with checkpoints.RunLock(cfg.out):
            return report(cfg, jobs)
    except checkpoints.RunBusy:
        summary, _ = summarize(jobs)
        print(markdown(summary))
        print(f"note: a sweep runs in {cfg.out} and writes its table itself: this one is printed only",
              file=sys.stderr)
        return summary


def main(argv=None):
    """Run the sweep -> its summary (table.json) when every run finished. Otherwise the table is
    written all the same, one line goes to stderr and it exits: 1 a run failed or did not finish,
    128 + N stopped by signal N (cli.Preempted); refusals before any start are cli.ConfigError (2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, flags = parse(argv)
    if os.path.isfile(os.path.join(cfg.out, "config.json")):  # a run's own folder: its files and the sweep's mix
        raise cli.ConfigError(f"--out={cfg.out} holds a run (config.json), not a sweep: give the sweep a folder of its own")
    if cfg.report_only:
        if not os.path.isdir(cfg.out):
            raise cli.ConfigError(f"--report_only=1: {cfg.out} holds no sweep (no such folder)")
        return report_now(cfg, flags)
    checkpoints.out_dir(cfg.out)
    try:
        with checkpoints.RunLock(cfg.out):  # one sweep per folder (each search also locks its own)
            jobs = plan(cfg, flags)
            write_table(cfg, jobs, say=lambda text: None)  # never claims what the folder no longer holds
            if any(j.state != "done" for j in jobs):  # a first run's download, once: not N searches at once
                given = cli.parse_config(search.SearchConfig, flags)
                data.fetch(given.dataset, given.data, given.download)
            status, signum = run_all(cfg, jobs)
            if signum:
                write_table(cfg, jobs, status)
                raise cli.Preempted("", signum)
            summary = report(cfg, jobs, status)
    except (cli.Preempted, KeyboardInterrupt) as e:  # also outside run_all (cli.run's SIGTERM handler)
        signum = getattr(e, "signum", signal.SIGINT)
        raise cli.Preempted(f"sweep stopped by {signal.Signals(signum).name}: every search that was "
                             "running checkpointed; rerun the same command to continue", signum) from None
    left = [f"{o}_s{r['seed']}" for o, s in summary.items() for r in s["seeds"] if r["state"] != "finished"]
    ended = [f"{o}_s{r['seed']}" for o, s in summary.items() for r in s["seeds"] if r.get("ended")]
    if left or ended:  # a run that finished its epochs, then failed (its last checkpoint unwritten, ...): said too
        print("error: " + "; ".join(
            [f"{len(left)} of {len(jobs)} runs did not finish ({', '.join(left)})"] * bool(left) +
            [f"{', '.join(ended)} finished, then exited with an error"] * bool(ended)) +
            f": {os.path.join(cfg.out, 'table.md')} names each one's last error line", file=sys.stderr)
        sys.exit(1)
    return summary


if __name__ == "__main__":
    cli.run(main)
