"""A seed sweep: search.py for every (option, seed), N at a time, then the paper's Table 2 row as
mean ± std over seeds (Markdown + JSON) and its figures.

    python sweep.py --out=runs/sweep --options=BC --seeds=1,2,3 --jobs=1 --bench201=NB201_FILE  # one GPU
    python sweep.py --out=results/nb201-sweep --options=BC --seeds=1,2,3,4 --jobs=2 --threads=1 \\
        --dataset=imagefolder --data=../shared/data/cifar10-jpeg --subset=4000 --C=8 --compile=1 \\
        --bench201=../shared/data/nb201/nb201-public.csv                                      # 2-core CPU

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
folder does not hold finished. Exit status: 0 every run finished; 1 a run failed or did not finish (or
a write of the sweep's own failed); 2 refused before any run started; 128 + N stopped by signal N.
On CUDA the searches are spread over the visible GPUs, --jobs per GPU, each search seeing only its own
(CUDA_VISIBLE_DEVICES); where each session ran (GPU index, or CPU model and vector ISA) is in
OUT/<option>_s<seed>/device.txt and the table's device column. The first line says how many searches
run, how many at once and the CPU threads each gets (the searches' OMP_NUM_THREADS: --threads, else
cores // searches at once, with the shell's own OMP_NUM_THREADS named when it differs).
"""
import dataclasses
import functools
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from dataclasses import dataclass

import search
from harness import checkpoints, runs
from harness.checkpoints import has_checkpoint, read_json
from harness.rundir import load_run
from harness.sweep_table import STOPS, finished_run, write_table

HERE = os.path.dirname(os.path.abspath(__file__))
# One search of the sweep: its argv (with --resume=1 when it continues), state: new | resume | done
Job = namedtuple("Job", "name folder argv state epochs")


@dataclass
class SweepConfig:
    out: str = "runs/sweep"    # the sweep's folder: OUT/<option>_s<seed>/ per run, table.md, figures/
    options: str = "BC"        # Table 1 options, e.g. BC or ABCD
    seeds: str = "1,2,3"       # comma-separated
    jobs: int = 1              # searches at a time; on GPUs per GPU (CPU: one per core; several share a GPU)
    threads: int = 0           # CPU threads per search (sets its OMP_NUM_THREADS); 0: cores // searches at once


SET_PER_RUN = ("option", "seed", "resume", "stop_after")  # search keys the sweep gives each run itself


def parse(argv):
    """argv -> (SweepConfig, the search flags shared by every run). --help / -h: the sweep's keys, then
    the search keys it passes on (runs.help_text), exit 0."""
    if runs.wants_help(argv):
        runs.show_help(SweepConfig, more=[(
            "search.py keys, passed on to every search (the sweep sets --option, --seed, --resume and "
            "--stop_after per run)", search.SearchConfig, SET_PER_RUN)])
    own = {f.name for f in dataclasses.fields(SweepConfig)}
    mine = [a for a in argv if a[2:].split("=", 1)[0].replace("-", "_") in own]
    rest = [a for a in argv if a not in mine]
    cfg = runs.parse_config(SweepConfig, mine)
    runs.check_ranges(cfg, dict(jobs="[1, inf)", threads="[0, inf)"))
    taken = runs.explicit_keys(rest) & set(SET_PER_RUN)
    if taken:
        raise runs.ConfigError(f"--{', --'.join(sorted(taken))}: the sweep sets these per run "
                               "(use --options= and --seeds=)")
    options = cfg.options.upper()
    if not options or set(options) - set("ABCD"):
        raise runs.ConfigError(f"--options={cfg.options}: give letters of A, B, C, D (e.g. BC)")
    try:
        seeds = [int(s) for s in cfg.seeds.split(",") if s.strip()]
    except ValueError:
        raise runs.ConfigError(f"--seeds={cfg.seeds}: give integers separated by commas") from None
    for flag, given, values in (("options", cfg.options, options), ("seeds", cfg.seeds, seeds)):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:  # one folder per (option, seed): a second job would fail on it and be counted twice
            raise runs.ConfigError(f"--{flag}={given}: {', '.join(map(str, twice))} given twice; "
                                   "each (option, seed) is one run")
    if not seeds:
        raise runs.ConfigError("--seeds needs at least one seed")
    cfg = dataclasses.replace(cfg, options=options, seeds=seeds)
    return cfg, rest


def plan(cfg, flags):
    """Every run as a Job (state: done | resume | new). Before any start: checks every run's settings
    (search.make_config) and refuses a folder that another process holds or that holds a run with other
    settings or more epochs than the sweep's (runs.ConfigError: one line, exit 2)."""
    jobs = []
    for seed in cfg.seeds:  # seed-major: an interrupted sweep has the same number of seeds per option
        for option in cfg.options:
            name = f"{option}_s{seed}"
            folder = os.path.join(cfg.out, name)
            argv = [*flags, f"--option={option}", f"--seed={seed}", f"--out={folder}"]
            want = runs.as_dict(search.make_config(argv))
            if os.path.isdir(folder):
                with checkpoints.RunLock(folder):  # a search still running there (e.g. a killed sweep's)
                    pass
            saved, done = saved_run(folder)
            state = "new"
            if saved is not None:
                differ = sorted(k for k in want if k not in search.RUN_KEYS and k in saved and saved[k] != want[k])
                if differ:
                    what = ", ".join(f"{k}={saved[k]!r} not {want[k]!r}" for k in differ)
                    raise runs.ConfigError(f"{folder} holds a run with other settings ({what}): use another --out")
                length = saved.get("epochs", done)
                if max(length, done) > want["epochs"]:  # its epochs so far followed a longer schedule
                    raise runs.ConfigError(f"{folder} holds a run of {length} epochs ({done} done), more than "
                                           f"--epochs={want['epochs']}: pass --epochs={length}, or another --out")
                if finished_run(folder, want["epochs"]):
                    state = "done"
            if state == "new" and has_checkpoint(os.path.join(folder, "checkpoint.pt")):
                state = "resume"
            jobs.append(Job(name, folder, argv + (["--resume=1"] if state == "resume" else []), state,
                            want["epochs"]))
    return jobs


def saved_run(folder):
    """(settings, epochs done) of the run in `folder`: config.json and history.json, or without
    config.json the checkpoint's own; (None, 0) when there is none or its checkpoint is unreadable (its
    search then names the files and why, as one failed run)."""
    if os.path.isfile(os.path.join(folder, "config.json")):
        saved = read_json(os.path.join(folder, "config.json"))
        try:
            rows = load_run(folder).rows
        except ValueError:  # no history yet (stopped in its first epoch), or damaged: the search says so
            rows = []
        return saved, rows[-1]["epoch"] if rows else 0
    path = os.path.join(folder, "checkpoint.pt")
    if not has_checkpoint(path):
        return None, 0
    try:
        ckpt = checkpoints.load_checkpoint(path, required=("config", "epoch"), log=lambda msg: None)
    except checkpoints.CheckpointError:
        return None, 0
    return ckpt["config"], ckpt["epoch"]


def epochs_done(folder):
    path = os.path.join(folder, "history.json")
    try:
        return read_json(path) if os.path.isfile(path) else []
    except ValueError:  # being replaced right now: read it on the next poll
        return None


def _stop_with_parent(sweep_pid):
    """In a search's process before it starts (Linux): SIGTERM it when the sweep dies, however the sweep
    dies (SIGKILL included), so it checkpoints and exits instead of running on unwatched."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != sweep_pid:  # the sweep died before the prctl: do not start unwatched
        os._exit(128 + signal.SIGTERM)


def visible_gpus(flags):
    """The GPUs the searches are spread over, as CUDA_VISIBLE_DEVICES entries: every GPU this process
    sees when the searches run on CUDA (--device=auto where CUDA is, or --device=cuda); none when they
    run on the CPU or on the one device that --device=cuda:K (or mps) names for all of them."""
    device = runs.parse_config(search.SearchConfig, flags).device
    if device not in ("auto", "cuda"):
        return []
    import torch
    if not torch.cuda.is_available():
        return []
    count, listed = torch.cuda.device_count(), os.environ.get("CUDA_VISIBLE_DEVICES")
    return ([i.strip() for i in listed.split(",") if i.strip()] if listed else [str(i) for i in range(count)])[:count]


def least_busy(gpus, busy):
    """The GPU with the fewest running searches (`busy`: the GPU of each), the first of them on a tie;
    None without GPUs."""
    return min(gpus, key=busy.count) if gpus else None


def job_env(env, gpu):
    """A search's environment: on a GPU, that GPU alone is visible to it (it runs there as cuda:0)."""
    return env if gpu is None else {**env, "CUDA_VISIBLE_DEVICES": gpu}


def note_device(folder, gpu, flags, threads):
    """One line per session in FOLDER/device.txt: where the search ran (the table's device column); on
    the CPU, runs.cpu_device (as bench.py names it)."""
    where = f"GPU {gpu}" if gpu is not None else str(runs.pick_device(runs.parse_config(search.SearchConfig, flags).device))
    if where == "cpu":  # minutes per run depend on the CPU and the threads, which can change between sessions
        where = runs.cpu_device(threads)
    with open(os.path.join(folder, "device.txt"), "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {where}\n")


def thread_count(cfg, at_once):
    """-> (CPU threads per search, why): --threads, else this machine's cores // searches at once. The
    searches' OMP_NUM_THREADS is set to it, so an OMP_NUM_THREADS of the sweep's own shell that differs
    is named: it does not reach them."""
    if cfg.threads:
        return cfg.threads, f"--threads={cfg.threads}"
    cores = os.cpu_count() or 1
    threads = max(1, cores // at_once)
    why = f"--threads=0: {cores} cores // {at_once} search{'es' if at_once > 1 else ''} at once"
    shell = os.environ.get("OMP_NUM_THREADS", "").strip()
    if shell and shell != str(threads):
        why += f"; this shell's OMP_NUM_THREADS={shell} is not passed on (--threads={shell} keeps it)"
    return threads, why


def run_all(cfg, jobs, say=print, gpus=None):
    """Run the pending searches, cfg.jobs at a time (with GPUs: cfg.jobs per GPU, each search on the
    least busy one); one line per finished epoch and per ended run.
    -> ({name: exit status} of the runs that ran, the stop signal's number or 0). A stop signal reaches
    every search (each checkpoints and exits); the sweep then waits for them and starts no more."""
    gpus = visible_gpus(jobs[0].argv) if gpus is None and jobs else gpus or []
    on_gpu, capacity = {}, cfg.jobs * max(1, len(gpus))
    threads, why = thread_count(cfg, capacity)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    pending = [j for j in jobs if j.state != "done"]
    running, status, stopping, told = {}, {}, [], {}
    if pending:  # the thread count decides the minutes per run (device.txt): say what it is and why
        say(f"{len(pending)} of {len(jobs)} searches to run, {capacity} at a time"
            + (f" on {len(gpus)} GPU(s)" if gpus else "") + f", {threads} CPU thread(s) each ({why})")
    for j in jobs:
        if j.state == "done":
            say(f"{j.name}: finished before, skipped")

    def tell(proc):  # SIGTERM once: dict.setdefault is one step that a signal handler cannot split
        token = object()
        if told.setdefault(proc.pid, token) is token:
            proc.send_signal(signal.SIGTERM)  # the search checkpoints after its current step

    def forward_stop(signum, frame):
        stopping.append(signum)
        for proc, *_ in list(running.values()):
            tell(proc)

    def start(name, folder, argv, gpu):
        os.makedirs(folder, exist_ok=True)
        note_device(folder, gpu, argv, threads)
        err = open(os.path.join(folder, "stderr.txt"), "a")
        try:
            proc = subprocess.Popen([sys.executable, os.path.join(HERE, "search.py"), *argv], env=job_env(env, gpu),
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                    preexec_fn=functools.partial(_stop_with_parent, os.getpid()))
        except BaseException:
            err.close()
            raise
        running[name] = (proc, folder, err, len(epochs_done(folder) or []), time.time())
        if stopping:  # a stop signal while it started, before forward_stop could see it in `running`
            tell(proc)
        return proc

    old = {s: signal.signal(s, forward_stop) for s in STOPS}
    try:
        while (pending and not stopping) or running:
            while pending and len(running) < capacity and not stopping:
                name, folder, argv, state, _ = pending.pop(0)
                try:
                    on_gpu[name] = least_busy(gpus, [on_gpu[n] for n in running])
                    proc = start(name, folder, argv, on_gpu[name])
                except OSError as e:  # e.g. a full disk: stderr.txt cannot be made (the others stop below)
                    raise runs.write_error(getattr(e, "filename", None) or folder, e) from e
                say(f"{name}: {'resumed' if state == 'resume' else 'started'} (pid {proc.pid}"
                    + (f", GPU {on_gpu[name]})" if on_gpu[name] is not None else ")"))
            time.sleep(2)
            for name, (proc, folder, err, seen, t0) in list(running.items()):
                rows = epochs_done(folder)
                for row in (rows or [])[seen:]:
                    bench = row.get("bench201", {}).get("test_acc")
                    say(f"{name}: epoch {row['epoch']} skip {row['skip_count']} train {row['train_acc']:.3f} "
                        f"alpha-half {row['valid_acc']:.3f}" + (f" bench {bench:.2f}" if bench else ""))
                if rows is not None:
                    running[name] = (proc, folder, err, max(seen, len(rows)), t0)
                if proc.poll() is not None:
                    err.close()
                    del running[name]
                    status[name] = proc.returncode
                    say(f"{name}: ended, exit {proc.returncode}, {(time.time() - t0) / 60:.1f} min")
    except BaseException:  # the sweep itself failed: its searches checkpoint and end before it does
        for proc, *_ in running.values():
            tell(proc)
        for proc, _, err, *_ in running.values():
            proc.wait()
            err.close()
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return status, (stopping[0] if stopping else 0)


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


def main(argv=None):
    """Run the sweep -> its summary (table.json) when every run finished. Otherwise the table is
    written all the same, one line goes to stderr and it exits: 1 a run failed or did not finish,
    128 + N stopped by signal N (runs.Preempted); refusals before any start are runs.ConfigError (2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, flags = parse(argv)
    checkpoints.out_dir(cfg.out)
    try:
        with checkpoints.RunLock(cfg.out):  # one sweep per folder (each search also locks its own)
            jobs = plan(cfg, flags)
            write_table(cfg, jobs, say=lambda text: None)  # never claims what the folder no longer holds
            status, signum = run_all(cfg, jobs)
            if signum:
                write_table(cfg, jobs, status)
                raise runs.Preempted("", signum)
            summary = report(cfg, jobs, status)
    except (runs.Preempted, KeyboardInterrupt) as e:  # also outside run_all (runs.cli's SIGTERM handler)
        signum = getattr(e, "signum", signal.SIGINT)
        raise runs.Preempted(f"sweep stopped by {signal.Signals(signum).name}: every search that was "
                             "running checkpointed; rerun the same command to continue", signum) from None
    left = [f"{o}_s{r['seed']}" for o, s in summary.items() for r in s["seeds"] if r["state"] != "finished"]
    if left:
        print(f"error: {len(left)} of {len(jobs)} runs did not finish ({', '.join(left)}): "
              f"{os.path.join(cfg.out, 'table.md')} names each one's last error line", file=sys.stderr)
        sys.exit(1)
    return summary


if __name__ == "__main__":
    runs.cli(main)
