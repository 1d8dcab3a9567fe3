"""Sharing one device, measured: how busy one process keeps the GPU, and what K processes get done together.

    kernel_s = concurrency.gpu_kernel_seconds(run_iteration, 10, device)    # bench.py --gpu_busy=10
    out = concurrency.run_procs(cfg, argv, "BC", "bench.py")                  # bench.py --procs=K --seconds=S

What it owns, for bench.py's numbers that plan GPU sweeps: the device synchronisation that
every wall-clock reading of a CUDA step needs (`sync`); points in time without a host sync (`stamp`, `seconds`:
the host clock on a CPU, CUDA events on a GPU); GPU time per iteration as the union of the kernel
intervals torch.profiler records (`busy_seconds`, `gpu_kernel_seconds`), which over the iteration time is
`gpu_busy`; and --procs: K copies of an entry script run at once as child processes (`run_procs`), which
meet at a start line in a shared folder (`meet`) so that every copy's timed window overlaps all the
others', and end the parent in one line when any of them failed (`child_failed`). The script to re-run is
a parameter, so nothing here imports an entry script. No paper equation lives here: this is the plumbing
around a search step's timing, not the step.
"""
import json
import os
import subprocess
import sys
import time

import torch


def sync(device):
    """Wait for `device`'s queued kernels (CUDA runs them asynchronously; a clock read without this times
    the launches only). A no-op on the CPU and MPS."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stamp(device):
    """A point in time: the host clock on a CPU; on CUDA an event in the current stream, which the GPU
    stamps when it gets there (no host sync: the host goes on queueing work)."""
    if device.type != "cuda":
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def seconds(device, t0, t1):
    """Seconds from stamp t0 to stamp t1 (CUDA: both events must have completed, e.g. after a sync)."""
    return t1 - t0 if device.type != "cuda" else t0.elapsed_time(t1) / 1e3


def busy_seconds(intervals):
    """Length of the union of (start, end) intervals: the time at least one of them runs."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def gpu_kernel_seconds(run_iteration, iterations, device):
    """GPU time per iteration: the union of every CUDA kernel and memcpy/memset interval that
    torch.profiler records over `iterations` more iterations. Divided by the unprofiled iteration time
    it is `gpu_busy`, the share of the iteration the GPU works; far below 1 the step is launch-bound (the
    CPU cannot issue kernels fast enough), which CUDA graphs and several searches per GPU both address.
    The profiler slows the CPU side only, so the kernel time it records is the unprofiled one."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(iterations):
            run_iteration()
        sync(device)
    spans = [(e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA]
    return busy_seconds(spans) / 1e6 / iterations  # the profiler's times are microseconds


def child_failed(failed, script):
    """End `script` (the entry script, e.g. bench.py) in one line when its child processes failed.
    `failed`: [(what the child ran, its exit status)]. Each child's own error (its one line, or a bug's
    traceback) went to stderr above; the exit status is the first failed child's (2: a setting it
    refused), 128 + N for one a signal N ended."""
    what = ", ".join(f"{name} (exit {code})" for name, code in failed)
    print(f"error: {len(failed)} of {os.path.basename(script)}'s child processes failed: {what}; the error is above",
          file=sys.stderr)
    code = failed[0][1]
    sys.exit(code if code > 0 else 128 - code)


def meet(folder, timeout=900.0):
    """--procs's start line: each copy, set up and warmed up, leaves a file in `folder` and waits until all
    of FOLDER/procs have, so that every copy's timed iterations run while all the others do. -> seconds
    waited (0.0 without a folder)."""
    if not folder:
        return 0.0
    t0 = time.perf_counter()
    with open(os.path.join(folder, f"ready-{os.getpid()}"), "w", encoding="utf-8"):
        pass
    with open(os.path.join(folder, "procs"), encoding="utf-8") as f:
        want = int(f.read())
    while sum(name.startswith("ready-") for name in os.listdir(folder)) < want:
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"--barrier: the other copies did not start within {timeout:.0f} s")
        time.sleep(0.05)
    return round(time.perf_counter() - t0, 2)


def run_procs(cfg, argv, options, script):
    """--procs=K: K copies of the benchmark `script` (bench.py's path) at once, run with `argv` less its
    --option/--procs/--barrier/--flops (options in turn, every copy given --barrier and --flops=0), each
    timing --seconds after all are warmed up; -> their results and `iterations_per_s`, the total over the
    copies (what K searches sharing the device get done together). Each copy gets --threads CPU threads, or
    with --threads=0 the machine's cores // K, as sweep.py gives K searches at once (harness/jobs.py): K
    copies of torch's default would each take every core; the copies' threads and compile workers are set as
    the sweep sets its searches' (`jobs.child_env`). Each copy prints its result as the last line of
    its stdout, JSON with `device` and `iterations_per_s`."""
    import tempfile
    from harness.jobs import child_env, thread_count  # sweep.py's rules, so the rates are the sweep's
    threads = thread_count(cfg.threads, cfg.procs)[0]
    keep = [a for a in argv if a[2:].split("=", 1)[0].replace("-", "_")
            not in ("option", "procs", "barrier", "flops", "threads")] + [f"--threads={threads}"]
    with tempfile.TemporaryDirectory(prefix="bench-procs-") as folder:
        with open(os.path.join(folder, "procs"), "w", encoding="utf-8") as f:
            f.write(str(cfg.procs))
        which = [options[i % len(options)] for i in range(cfg.procs)]
        children = [subprocess.Popen([sys.executable, os.path.abspath(script), *keep, f"--option={o}",
                                      f"--barrier={folder}", "--flops=0"], stdout=subprocess.PIPE, text=True,
                                     env=child_env(threads))
                    for o in which]
        outs = [c.communicate()[0] for c in children]
    failed = [(f"--procs copy {i + 1} (option {o})", c.returncode) for i, (o, c) in enumerate(zip(which, children))
              if c.returncode]
    if failed:
        child_failed(failed, script)
    results = [json.loads(o.strip().splitlines()[-1]) for o in outs]
    return dict(procs=cfg.procs, options="".join(which), device=results[0]["device"], compile=cfg.compile,
                threads_per_copy=threads,
                seconds=cfg.seconds, iterations_per_s=round(sum(r["iterations_per_s"] for r in results), 3),
                results=results)
