"""The runs of a sweep-like script as jobs: what each run folder holds already, and the runner that starts
a given entry script (search.py for sweep.py) once per job, N at a time, as child processes.

Owns `Job` (one run: its argv, state new | resume | done, epochs), `saved_run` (the settings and epochs
done of a run folder, read before any run starts), `note_device` (a session's line in device.txt, which
sweep_table.run_devices reads) and `run_all` with its parts: the GPUs the children are spread over
(`visible_gpus`, `least_busy`, `job_env`), their CPU threads and compile workers (`thread_count`, `child_env`), and the stop signals
(SIGTERM / Ctrl-C reach every child, which checkpoints and exits; a child gets SIGTERM when the runner
dies, SIGKILL included). The script's own flags are the caller's: the runner reads only --device (through
the script's config dataclass) and history.json in each run folder. Nothing here knows about
architectures or tables; scripts/retrain_sweep.py runs train.py through `run_all`; scripts/table3.py runs
its jobs in process and shares `Job`, `saved_run` and `note_device`.
"""
import functools
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple

from harness import checkpoints, cli, runs
from harness.checkpoints import has_checkpoint, read_json
from harness.rundir import load_run

# One run: its argv (with --resume=1 when it continues), state: new | resume | done (None: decided later)
Job = namedtuple("Job", "name folder argv state epochs")
STOPS = (signal.SIGTERM, signal.SIGINT)  # what stops the runner and, through it, every child


def saved_run(folder):
    """(settings, epochs done) of the run in `folder`: config.json and history.json, or without
    config.json the checkpoint's own; (None, 0) when there is none or its checkpoint is unreadable (its
    run then names the files and why, as one failed run)."""
    if os.path.isfile(os.path.join(folder, "config.json")):
        saved = read_json(os.path.join(folder, "config.json"))
        try:
            rows = load_run(folder).rows
        except ValueError:  # no history yet (stopped in its first epoch), or damaged: the run says so
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


def _history_rows(folder):
    """history.json's rows ([] before the first epoch ends; None: mid-write, read it on the next poll)."""
    path = os.path.join(folder, "history.json")
    try:
        return read_json(path) if os.path.isfile(path) else []
    except ValueError:  # being replaced right now: read it on the next poll
        return None


def _stop_with_parent(runner_pid):
    """In a child's process before it starts (Linux): SIGTERM it when the runner dies, however it dies
    (SIGKILL included), so it checkpoints and exits instead of running on unwatched."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != runner_pid:  # the runner died before the prctl: do not start unwatched
        os._exit(128 + signal.SIGTERM)


def visible_gpus(flags, config):
    """The GPUs the children are spread over, as CUDA_VISIBLE_DEVICES entries: every GPU this process
    sees when they run on CUDA (--device=auto where CUDA is, or --device=cuda, read from `flags` with the
    script's config dataclass `config`); none when they run on the CPU or on the one device that
    --device=cuda:K (or mps) names for all of them."""
    device = cli.parse_config(config, flags).device
    if device not in ("auto", "cuda"):
        return []
    import torch
    if not torch.cuda.is_available():
        return []
    count, listed = torch.cuda.device_count(), os.environ.get("CUDA_VISIBLE_DEVICES")
    return ([i.strip() for i in listed.split(",") if i.strip()] if listed else [str(i) for i in range(count)])[:count]


def least_busy(gpus, busy):
    """The GPU with the fewest running children (`busy`: the GPU of each), the first of them on a tie;
    None without GPUs."""
    return min(gpus, key=busy.count) if gpus else None


def job_env(env, gpu):
    """A child's environment: on a GPU, that GPU alone is visible to it (it runs there as cuda:0)."""
    return env if gpu is None else {**env, "CUDA_VISIBLE_DEVICES": gpu}


def note_device(folder, where, threads):
    """One line per session in FOLDER/device.txt: where the run ran (e.g. "GPU 3"; the table's device
    column). "cpu" is written as runs.cpu_device(threads) (as bench.py names it)."""
    if where == "cpu":  # minutes per run depend on the CPU and the threads, which can change between sessions
        where = runs.cpu_device(threads)
    with open(os.path.join(folder, "device.txt"), "a", encoding="utf-8") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {where}\n")


def thread_count(threads, at_once):
    """-> (CPU threads per child, why): `threads` (the caller's --threads) when set, else this machine's
    cores // children at once. The children's OMP_NUM_THREADS is set to it, so an OMP_NUM_THREADS of the
    runner's own shell that differs is named: it does not reach them."""
    if threads:
        return threads, f"--threads={threads}"
    # the cores this process may use (a container's or taskset's share), not every core the machine has
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // at_once)
    why = f"--threads=0: {cores} cores // {at_once} at once"
    shell = os.environ.get("OMP_NUM_THREADS", "").strip()
    if shell and shell != str(threads):
        why += f"; this shell's OMP_NUM_THREADS={shell} is not passed on (--threads={shell} keeps it)"
    # a CPU search's sums are rounded per thread count: with --threads=0 the cells could follow --jobs
    return threads, why + "; on a CPU the thread count moves float rounding: --threads=N fixes it"


def child_env(threads):
    """The environment of a child that runs with `threads` CPU threads: OMP / MKL threads, and torch.compile's
    worker pool, which defaults to every core in each child: K children compiling at once (a GPU sweep's
    first steps) would start K times that. The caller's own compile-thread setting, if any, wins."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(threads))
    return env


def run_all(jobs, script, config, per_device=1, threads=0, say=print, gpus=None, epoch_line=None,
            on_end=None, what="searches"):
    """Run `script` (a path; with each job's argv) for the pending jobs, those to resume first, then the
    new ones in their order, `per_device` at a time (with GPUs: `per_device` per GPU, each child on the
    least busy one), `threads` CPU threads each (0: cores // at once); `config` is the script's config dataclass, which reads --device from a job's argv. One line per
    started and per ended run, and `epoch_line(name, row)` per history.json row a run adds, when given;
    `on_end(status)` after each run ends, with the exit statuses so far (sweep.py rewrites its table);
    `what` names the runs in the first line.
    -> ({name: exit status} of the runs that ran, the stop signal's number or 0). A stop signal reaches
    every child (each checkpoints and exits); the runner then waits for them and starts no more."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each torchrun process would run every job, all in one DDP group
        raise cli.ConfigError(f"{os.path.basename(script)} runs are started here as child processes, N at a time "
                              "(--jobs, per visible GPU): run this without torchrun")
    gpus = visible_gpus(jobs[0].argv, config) if gpus is None and jobs else gpus or []
    on_gpu, capacity = {}, per_device * max(1, len(gpus))
    threads, why = thread_count(threads, capacity)
    env = child_env(threads)
    # runs with a checkpoint first (sorted is stable: otherwise in the given order), so a rerun continues
    # what was running before it starts anything new and no checkpoint waits behind a fresh run
    pending = sorted((j for j in jobs if j.state != "done"), key=lambda j: j.state != "resume")
    running, status, stopping, told = {}, {}, [], {}
    if pending:  # the thread count decides the minutes per run (device.txt): say what it is and why
        say(f"{len(pending)} of {len(jobs)} {what} to run, {capacity} at a time"
            + (f" on {len(gpus)} GPU(s)" if gpus else "") + f", {threads} CPU thread(s) each ({why})")
    for j in jobs:
        if j.state == "done":
            say(f"{j.name}: finished before, skipped")

    def tell(proc):  # SIGTERM once: dict.setdefault is one step that a signal handler cannot split
        token = object()
        if told.setdefault(proc.pid, token) is token:
            proc.send_signal(signal.SIGTERM)  # the child checkpoints after its current step

    def forward_stop(signum, frame):
        stopping.append(signum)
        for proc, *_ in list(running.values()):
            tell(proc)

    def start(name, folder, argv, gpu):
        os.makedirs(folder, exist_ok=True)
        note_device(folder, f"GPU {gpu}" if gpu is not None else
                    str(runs.pick_device(cli.parse_config(config, argv).device)), threads)
        err = open(os.path.join(folder, "stderr.txt"), "a", encoding="utf-8")
        try:
            proc = subprocess.Popen([sys.executable, script, *argv], env=job_env(env, gpu),
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                    preexec_fn=functools.partial(_stop_with_parent, os.getpid()))
        except BaseException:
            err.close()
            raise
        running[name] = (proc, folder, err, len(_history_rows(folder) or []), time.time())
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
                    raise cli.write_error(getattr(e, "filename", None) or folder, e) from e
                say(f"{name}: {'resumed' if state == 'resume' else 'started'} (pid {proc.pid}"
                    + (f", GPU {on_gpu[name]})" if on_gpu[name] is not None else ")"))
            time.sleep(2)
            for name, (proc, folder, err, seen, t0) in list(running.items()):
                rows = _history_rows(folder)
                if epoch_line:
                    for row in (rows or [])[seen:]:
                        say(epoch_line(name, row))
                if rows is not None:
                    running[name] = (proc, folder, err, max(seen, len(rows)), t0)
                if proc.poll() is not None:
                    err.close()
                    del running[name]
                    status[name] = proc.returncode
                    say(f"{name}: ended, exit {proc.returncode}, {(time.time() - t0) / 60:.1f} min")
                    if on_end:
                        on_end(dict(status))
    except BaseException:  # the runner itself failed: its children checkpoint and end before it does
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
