"""A seed sweep: search.py for every (option, seed), N at a time, then the paper's Table 2 row as
mean ± std over seeds (Markdown + JSON) and its figures.

    python sweep.py --out=runs/sweep --options=BC --seeds=1,2,3 --jobs=1 --bench201=NB201_FILE  # one GPU
    python sweep.py --out=results/nb201-sweep --options=BC --seeds=1,2,3,4 --jobs=2 --threads=1 \\
        --dataset=imagefolder --data=../shared/data/cifar10-jpeg --subset=4000 --C=8 --compile=1 \\
        --bench201=../shared/data/nb201/nb201-public.csv                                      # 2-core CPU

Every flag that is not the sweep's own (out, options, seeds, jobs, threads) goes to each search
unchanged; each run writes OUT/<option>_s<seed>/ as search.py does. Re-running the same command skips
finished runs and resumes interrupted ones from their checkpoints (--resume=1), so a preempted sweep
loses nothing. Every run's settings are checked before any run starts (a bad flag stops the sweep at
once; a run folder made with other settings is refused). A failed run is reported in the table, not
hidden, and does not stop the others. Outputs: OUT/table.md, OUT/table.json, OUT/figures/ (plot.py).
Std is the sample standard deviation over seeds (ddof=1). On CUDA the searches are spread over the
visible GPUs, --jobs per GPU, each search seeing only its own (CUDA_VISIBLE_DEVICES); where each
session ran is in OUT/<option>_s<seed>/device.txt and the table's device column.
"""
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import namedtuple
from dataclasses import dataclass

import search
from harness import checkpoints, runs
from harness.checkpoints import has_checkpoint, read_json, write_json
from harness.rundir import load_run

HERE = os.path.dirname(os.path.abspath(__file__))
# One search of the sweep: its argv (with --resume=1 when it continues), state: new | resume | done
Job = namedtuple("Job", "name folder argv state epochs")


@dataclass
class SweepConfig:
    out: str = "runs/sweep"
    options: str = "BC"        # Table 1 options, e.g. BC or ABCD
    seeds: str = "1,2,3"       # comma-separated
    jobs: int = 1              # searches at a time; on GPUs per GPU (CPU: one per core; several share a GPU)
    threads: int = 0           # CPU threads per search (OMP_NUM_THREADS); 0: cores // jobs


def parse(argv):
    """argv -> (SweepConfig, the search flags shared by every run)."""
    own = {f.name for f in dataclasses.fields(SweepConfig)}
    mine = [a for a in argv if a[2:].split("=", 1)[0].replace("-", "_") in own]
    rest = [a for a in argv if a not in mine]
    cfg = runs.parse_config(SweepConfig, mine)
    taken = runs.explicit_keys(rest) & {"option", "seed", "resume", "stop_after"}
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
    if not seeds or cfg.jobs < 1:
        raise runs.ConfigError("--seeds needs at least one seed and --jobs must be positive")
    cfg = dataclasses.replace(cfg, options=options, seeds=seeds)
    return cfg, rest


def plan(cfg, flags):
    """Every run as a Job (state: done | resume | new). Checks every run's settings
    (search.make_config) and refuses a folder that holds a run with other settings, before any start."""
    jobs = []
    for seed in cfg.seeds:  # seed-major: an interrupted sweep has the same number of seeds per option
        for option in cfg.options:
            name = f"{option}_s{seed}"
            folder = os.path.join(cfg.out, name)
            argv = [*flags, f"--option={option}", f"--seed={seed}", f"--out={folder}"]
            want = runs.as_dict(search.make_config(argv))
            saved_path = os.path.join(folder, "config.json")
            state = "new"
            if os.path.isfile(saved_path):
                saved = read_json(saved_path)
                differ = sorted(k for k in want if k not in search.RUN_KEYS and k in saved and saved[k] != want[k])
                if differ:
                    what = ", ".join(f"{k}={saved[k]!r} not {want[k]!r}" for k in differ)
                    raise runs.ConfigError(f"{folder} holds a run with other settings ({what}): use another --out")
                if finished_run(folder, want["epochs"]):
                    state = "done"
            if state == "new" and has_checkpoint(os.path.join(folder, "checkpoint.pt")):
                state = "resume"
            jobs.append(Job(name, folder, argv + (["--resume=1"] if state == "resume" else []), state,
                            want["epochs"]))
    return jobs


def finished_run(folder, epochs):
    """The run in `folder` (rundir.Run) if it has done `epochs` epochs, else None."""
    try:
        run = load_run(folder)
    except ValueError:
        return None
    return run if run.rows and run.rows[-1]["epoch"] >= epochs else None


def epochs_done(folder):
    path = os.path.join(folder, "history.json")
    try:
        return read_json(path) if os.path.isfile(path) else []
    except ValueError:  # being replaced right now: read it on the next poll
        return None


def _stop_with_parent():
    """In a search's process before it starts (Linux): SIGTERM it when the sweep dies, however the sweep
    dies (SIGKILL included), so it checkpoints and exits instead of running on unwatched."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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


def note_device(folder, gpu, flags):
    """One line per session in FOLDER/device.txt: where the search ran (the table's device column)."""
    where = f"GPU {gpu}" if gpu is not None else str(runs.pick_device(runs.parse_config(search.SearchConfig, flags).device))
    with open(os.path.join(folder, "device.txt"), "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {where}\n")


def run_devices(folder):
    """The devices a run's sessions ran on (device.txt), in order, each once: e.g. "GPU 1" or "cpu"."""
    path = os.path.join(folder, "device.txt")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        seen = [line.split(" ", 2)[2].strip() for line in f if line.count(" ") >= 2]
    return ", ".join(dict.fromkeys(seen)) or None


def run_all(cfg, jobs, say=print, gpus=None):
    """Run the pending searches, cfg.jobs at a time (with GPUs: cfg.jobs per GPU, each search on the
    least busy one); one line per finished epoch and per ended run. A stop signal reaches every search
    (each checkpoints and exits), then the sweep exits too."""
    gpus = visible_gpus(jobs[0].argv) if gpus is None and jobs else gpus or []
    on_gpu, capacity = {}, cfg.jobs * max(1, len(gpus))
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // capacity)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    pending = [j for j in jobs if j.state != "done"]
    running, status, stopping = {}, {}, []
    for j in jobs:
        if j.state == "done":
            say(f"{j.name}: finished before, skipped")

    def forward_stop(signum, frame):
        stopping.append(signum)
        for proc, *_ in running.values():
            proc.send_signal(signal.SIGTERM)  # each search checkpoints after its current step

    old = {s: signal.signal(s, forward_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while (pending and not stopping) or running:
            while pending and len(running) < capacity and not stopping:
                name, folder, argv, state, _ = pending.pop(0)
                os.makedirs(folder, exist_ok=True)
                on_gpu[name] = least_busy(gpus, [on_gpu[n] for n in running])
                note_device(folder, on_gpu[name], argv)
                err = open(os.path.join(folder, "stderr.txt"), "a")
                proc = subprocess.Popen([sys.executable, os.path.join(HERE, "search.py"), *argv],
                                        env=job_env(env, on_gpu[name]),
                                        stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                        preexec_fn=_stop_with_parent)
                running[name] = (proc, folder, err, len(epochs_done(folder) or []), time.time())
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
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stopping:
        raise runs.Preempted("sweep stopped: every search checkpointed; rerun the same command to "
                             "continue", stopping[0])
    return status


def _last_error(folder):
    path = os.path.join(folder, "stderr.txt")
    if not os.path.isfile(path):
        return "no message"
    with open(path) as f:
        lines = f.read().strip().splitlines()
    return lines[-1] if lines else "no message"


def mean_std(values):
    """(mean, sample std over seeds (ddof=1; 0 for one value), n) of the non-None values."""
    v = [x for x in values if x is not None]
    if not v:
        return None, None, 0
    return statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)


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
            rec.update(state="finished", epochs=last["epoch"], arch=(run.genotype or {}).get("arch"),
                       bench_test_acc=(last.get("bench201") or {}).get("test_acc"),
                       skip_count=last["skip_count"], train_acc=100 * last["train_acc"],
                       alpha_half_acc=100 * last["valid_acc"],
                       minutes=sum(r["seconds"] for r in run.rows) / 60, compile=run.config.get("compile", False))
        elif status and status.get(name):
            rec.update(state=f"failed (exit {status[name]}): {_last_error(folder)}")
        else:
            rec.update(state="unfinished")
        table.setdefault(option, []).append(rec)
    keys = ("bench_test_acc", "skip_count", "train_acc", "alpha_half_acc", "minutes")
    out = {}
    for option, recs in table.items():
        finished = [r for r in recs if r["state"] == "finished"]
        out[option] = dict(seeds=recs, n=len(finished),
                           **{k: dict(zip(("mean", "std", "n"), mean_std([r[k] for r in finished]))) for k in keys})
    return out, done


def markdown(summary):
    def cell(s, digits):
        return "-" if s["mean"] is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"

    lines = ["| option | seeds | benchmark test acc. (%) | final skip edges | supernet train acc. (%) | "
             "α-half acc. (%) | minutes per run |", "|---|---|---|---|---|---|---|"]
    for option, s in summary.items():
        lines.append(f"| {option} | {s['n']} | {cell(s['bench_test_acc'], 2)} | {cell(s['skip_count'], 2)} | "
                     f"{cell(s['train_acc'], 1)} | {cell(s['alpha_half_acc'], 1)} | {cell(s['minutes'], 0)} |")
    lines += ["", "Mean ± sample std (ddof=1) over the finished seeds. Each seed:", "",
              "| run | state | benchmark test acc. | skip | train | α-half | minutes | compiled | device | cell |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for option, s in summary.items():
        for r in s["seeds"]:
            if r["state"] != "finished":
                lines.append(f"| {option}_s{r['seed']} | {r['state']} | | | | | | | {r.get('device') or '-'} | |")
                continue
            acc = "-" if r["bench_test_acc"] is None else f"{r['bench_test_acc']:.2f}"
            lines.append(f"| {option}_s{r['seed']} | finished ({r['epochs']} ep) | {acc} | {r['skip_count']} | "
                         f"{r['train_acc']:.1f} | {r['alpha_half_acc']:.1f} | {r['minutes']:.0f} | "
                         f"{'yes' if r['compile'] else 'no'} | {r.get('device') or '-'} | "
                         f"`{(r['arch'] or '-').replace('|', chr(92) + '|')}` |")
    return "\n".join(lines) + "\n"


def report(cfg, jobs, status=None, say=print):
    summary, done = summarize(jobs, status)
    write_json(os.path.join(cfg.out, "table.json"), summary)
    text = markdown(summary)
    checkpoints.atomic_write(os.path.join(cfg.out, "table.md"), lambda f: f.write(text), mode="w")
    say(text)
    try:
        import plot
    except ImportError:  # matplotlib is for figures only
        say("note: matplotlib is not installed: no figures")
        return summary
    if done:
        for p in plot.sweep_figures(done, os.path.join(cfg.out, "figures")):
            say(p)
    return summary


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, flags = parse(argv)
    checkpoints.out_dir(cfg.out)
    with checkpoints.RunLock(cfg.out):  # one sweep per folder (each search also locks its own)
        jobs = plan(cfg, flags)
        status = run_all(cfg, jobs)
        return report(cfg, jobs, status)


if __name__ == "__main__":
    runs.cli(main)
