"""One command for a GPU window: does the CUDA path work, what does it cost, and how should the paper's
Table 2 row be run on this GPU, in one summary that fits the window.

    python scripts/gpu_check.py                                   # one GPU: the paper's sizes, <= 8 min
    python scripts/gpu_check.py --size=tiny --device=cpu --out=DIR  # the same steps, tiny (the suite runs it)

Steps run in the order of what they decide for the Table 2 sweep (a window may end before the last):
  env            device, driver, torch, CUDA, cuDNN, GPUs, what --device=auto picks (and why, on the CPU)
  bench_*_eager  bench.py options C and B at the paper's NB201 size (C=16, N=5, batch 64), eager:
                 seconds per iteration, gpu_busy (GPU time over iteration time: launch-bound or not)
  search_eager   one real search epoch (--dataset=synthetic: 6,400 / 6,400 images, 100 steps), eager
  then side by side (nothing timed): the suite's CUDA set (python -m pytest -v tests/test_cuda.py, each
                 test's result kept even if the step is stopped) and bench.py C and B compiled with
                 CUDA graphs on a cold cache (compile_s, and inductor's on-disk cache for what follows)
  bench_*_graphs compiled + CUDA graphs (search.py's --compile=1 on CUDA), warm cache
  procs_K        K = 2, 4, 6 searches' iterations at once on the GPU (bench.py --procs, B and C in turn) in
                 the faster mode of the two above: total iterations per second
  search_compiled  two search epochs compiled (the second timed)
  bench_*_compiled compiled without CUDA graphs
  train_*        train.py throughput (DARTS_V2, C=36, 20 cells, batch 96), bf16 + channels_last on / off
  torchrun       a 2-process search epoch when the machine has 2 GPUs
Each step is a subprocess with a time limit. A step starts only when its expected time (`NEED`) fits
what is left of --budget; one that does not is `skipped`, one the budget's end stops is `cut`; neither
fails the check. The summary (harness/gpu_summary.py) is rewritten after every group, so a check killed mid-way leaves what it
measured; SIGTERM or Ctrl-C (the window's limit) stops the running steps at once (`cut`), skips the rest
and writes the summary. The summary ends with the Table 2 plan: predicted minutes for the whole row (3 seeds x
options B and C x 19,550 iterations) per number of searches at once, and the --jobs to give sweep.py.
Outputs: summary.json, summary.md, one .out / .log per step, in a folder of this run's own: --out, or
OUT-2, OUT-3, ... when OUT already holds files. --size=tiny runs every step tiny (C=4, one cell, a few
images; compiled steps only trace with torch.compile's "eager" backend). No data file is read.
Exit status: 0 when every step that ran passed (skipped and cut steps did not run to a verdict), 1
otherwise, 2 on a bad flag.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from harness import checkpoints, cli  # noqa: E402
from harness.gpu_summary import faster_mode, markdown, table2_plan  # noqa: E402

@dataclass
class CheckConfig:
    size: str = "paper"           # paper (C=16, N=5, batch 64, 25k/25k images) | tiny (the suite's check)
    device: str = "auto"          # for every step: auto | cuda | cpu
    out: str = "runs/gpu_check"   # this run's folder; taken: OUT-2, OUT-3, ...
    budget: int = 480             # seconds for the whole check: no step starts whose expected time exceeds what is left
    only: str = ""                # comma-separated step names (or prefixes: bench, search, train, procs) to run


# What each child runs at each size. Compiled steps at tiny size only trace (torch.compile's "eager"
# backend): inductor needs minutes on a 2-core CPU; compiled numerics are tests/test_compile.py's (CPU)
# and tests/test_cuda.py's (CUDA graphs).
SIZES = {
    "paper": dict(net=["--C=16", "--layers=5"], batch=64, bench=["--steps=30", "--warmup=5", "--gpu_busy=10"],
                  backend="inductor", procs_s=10, subset=["--subset=12800"],
                  train=["--arch=DARTS_V2", "--subset=4800", "--epochs=2"], ddp_subset=["--subset=12800"]),
    "tiny": dict(net=["--C=4", "--layers=1"], batch=8, bench=["--steps=2", "--warmup=1", "--gpu_busy=1"],
                 backend="eager", procs_s=1, subset=["--subset=64"],
                 train=["--arch=|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|",
                        "--C=4", "--layers=1", "--batch_size=32", "--subset=64", "--test_subset=64", "--epochs=2"],
                 ddp_subset=["--subset=32"]),
}
# Seconds per step at the paper's size: NEED is what a step is expected to take on one GPU of a 16-core
# host (it starts only if that fits the budget left), LIMITS what it may take before it counts as hung.
# The cold inductor compile of the C=16 supernet took ~6 min on one CPU core; a GPU host compiles its
# kernels in parallel workers. --size=tiny gives every step 3x (a busy 2-core CPU).
NEED = dict(env=15, bench_eager=25, search_eager=30, cold=120, bench_graphs=40, procs=50, search_compiled=75,
            bench_compiled=40, train=40, torchrun=60)
LIMITS = dict(env=60, bench_eager=90, search_eager=150, cold=240, bench_graphs=120, procs=150,
              search_compiled=200, bench_compiled=120, train=90, torchrun=150)
TINY_COMPILE = ("import runpy, sys; from harness import runs; real = runs.compile_model; "
                "runs.compile_model = lambda *a, **k: real(*a, **{**k, 'backend': 'eager'}); "
                "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
ENV = r"""
import json, os, platform, shutil, subprocess, sys
import torch
from harness import runs
info = dict(python=sys.version.split()[0], platform=platform.platform(), cpus=os.cpu_count(),
            torch=torch.__version__, cuda_build=torch.version.cuda, cuda_available=torch.cuda.is_available(),
            gpus=[], auto_device=str(runs.pick_device("auto")), cpu_reason=runs.cpu_fallback_reason(),
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), driver=None, cudnn=None)
try:
    info["cudnn"] = torch.backends.cudnn.version()
except Exception:  # noqa: BLE001
    pass
for i in range(torch.cuda.device_count() if info["cuda_available"] else 0):
    p = torch.cuda.get_device_properties(i)
    info["gpus"].append(dict(name=p.name, memory_gib=round(p.total_memory / 2**30, 1),
                             capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count))
smi = shutil.which("nvidia-smi")
if smi:
    r = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                       text=True, timeout=30)
    info["driver"] = (r.stdout.strip().splitlines() or [None])[0]
print(json.dumps(info))
"""


@dataclass
class Step:
    name: str
    what: str                     # a few words for the summary
    argv: list                    # after the python executable
    kind: str                     # its NEED / LIMITS entry
    parse: object = None          # (step, stdout) -> dict of results
    folder: str = ""              # the run folder a search/train step writes
    result: dict = field(default_factory=dict)  # preset: {"status": "skipped", "why": ...}
    resolve: object = None        # (records by name) -> (argv, what), decided when the step starts
    parse_always: bool = False    # parse a stopped or failed step's output too (the CUDA set's per-test lines)


STOP = []  # the signals that asked the check to stop (gpu_window.py sends SIGTERM at its limit)


def _ask_stop(signum, frame):
    STOP.append(signum)


def fresh_folder(out):
    """OUT when it is new or empty, else the first of OUT-2, OUT-3, ... that is: every check writes a folder
    of its own (a second run into a used folder would meet the first one's run folders)."""
    candidate, n = out, 1
    while os.path.isdir(candidate) and os.listdir(candidate):
        n += 1
        candidate = f"{out.rstrip(os.sep)}-{n}"
    return candidate


def run_steps(steps, out, limits, cut=()):
    """Run `steps` side by side (one, or a group), each as its own process group with stdout in
    OUT/<name>.out and stderr in OUT/<name>.log; a step still running at its limit is stopped (with its
    children): status `timeout`, or `cut` for the names in `cut` (limits the budget shortened). -> one dict
    per step: status ok|failed|timeout|cut, seconds, rc, limit_s, the log's tail and the parsed result."""
    started = []
    for step, limit in zip(steps, limits):
        paths = (os.path.join(out, f"{step.name}.out"), os.path.join(out, f"{step.name}.log"))
        with open(paths[0], "w", encoding="utf-8") as so, open(paths[1], "w", encoding="utf-8") as se:
            proc = subprocess.Popen([sys.executable, *step.argv], cwd=ROOT, stdout=so, stderr=se,
                                    start_new_session=True)
        started.append((step, limit, paths, proc, time.time()))
    ends = {}
    while len(ends) < len(started):
        for i, (step, limit, _, proc, t0) in enumerate(started):
            if i not in ends and proc.poll() is not None:
                ends[i] = (time.time(), "ok" if proc.returncode == 0 else "failed")
            elif i not in ends and time.time() > t0 + limit:
                _kill_groups([proc], grace=10)
                ends[i] = (time.time(), "cut" if step.name in cut else "timeout")
        if STOP:  # stopped from outside: every step still running, at once (the caller's grace is short)
            running = [i for i in range(len(started)) if i not in ends]
            _kill_groups([started[i][3] for i in running])
            ends.update({i: (time.time(), "cut") for i in running})
        time.sleep(0.1)
    records = []
    for i, (step, limit, (out_path, log_path), proc, t0) in enumerate(started):
        end, status = ends[i]
        with open(out_path, encoding="utf-8", errors="replace") as f:  # a child writes in its locale
            stdout = f.read()
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = (f.read().strip().splitlines() or stdout.strip().splitlines())[-12:]
        rec = dict(status=status, seconds=round(end - t0, 1), rc=proc.returncode, limit_s=limit, tail=tail)
        if step.parse is not None and (status == "ok" or step.parse_always):
            try:
                rec["result"] = step.parse(step, stdout)
            except Exception as e:  # noqa: BLE001  it ran, but its output is not what we expect: a failure
                rec.update(status="failed", error=f"could not read its results: {type(e).__name__}: {e}")
        records.append(rec)
    return records


def _kill_groups(procs, grace=5):
    """SIGTERM to each step's process group (a search checkpoints and exits), SIGKILL to those still
    running `grace` seconds later; returns when all have ended."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.time() + grace
        while time.time() < deadline and any(proc.poll() is None for proc in procs):
            time.sleep(0.05)
    for proc in procs:
        proc.wait()


def _last_json(step, out):
    return json.loads(out.strip().splitlines()[-1])


def _pytest_tests(step, out):
    """Per-test verdicts from `pytest -v` lines (kept when the step was stopped mid-way), and the counts."""
    tests = dict(re.findall(r"^\S+::(\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", out, re.M))
    counts = {}
    for verdict in tests.values():
        counts[verdict.lower()] = counts.get(verdict.lower(), 0) + 1
    return dict(counts, tests=tests, failures=[t for t, v in tests.items() if v in ("FAILED", "ERROR")])


def _search_epoch(step, out):
    """The last epoch's time of a search step (the first of a compiled run also compiles)."""
    rows = checkpoints.read_json(os.path.join(step.folder, "history.json"))
    with open(os.path.join(step.folder, "log.txt"), encoding="utf-8") as f:
        log = f.read()
    steps, batch = map(int, re.search(r"(\d+) steps per epoch of (\d+) images", log).groups())
    procs = int(re.search(r"(\d+) process\(es\)", log).group(1))
    seconds = rows[-1]["seconds"]
    return dict(epoch_s=round(seconds, 1), epochs=len(rows), steps=steps, batch=batch, processes=procs,
                images_per_s=round(steps * batch / seconds, 1), iteration_s=round(seconds / steps, 4),
                gpu_mem_mb=rows[-1].get("gpu_mem_mb"),  # that epoch's peak GPU memory (CUDA; a first epoch's
                gpu_reserved_mb=rows[-1].get("gpu_reserved_mb"))  # includes cuDNN autotuning and compiling)


def _train_rate(step, out):
    with open(os.path.join(step.folder, "log.txt"), encoding="utf-8") as f:
        lines = re.findall(r"\] epoch (\d+)/\d+ .* (\d+)s (\d+) img/s", f.read())
    metrics = checkpoints.read_json(os.path.join(step.folder, "metrics.json"))
    return dict(images_per_s=int(lines[-1][2]), epochs=len(lines), test_loss=metrics["test_loss"],
                note="the last epoch's images/s (the first one includes cuDNN autotuning)")


def plan(cfg, env):
    """The steps for this size and machine, as groups run one after another, in the order of what they
    decide; the steps of a group run side by side (only the untimed cold-cache group has several).
    env: the env step's result (the GPU count)."""
    size, dev, out = SIZES[cfg.size], f"--device={cfg.device}", cfg.out
    gpus, tiny = len(env.get("gpus") or []), cfg.size == "tiny"

    def compiled(script, *args):  # a compiled search/train: inductor at the paper's size, dynamo only when tiny
        return (["-c", TINY_COMPILE, script] if tiny else [script]) + list(args)

    def bench_argv(option, mode, *extra):
        return ["bench.py", "--space=nb201", f"--option={option}", f"--batch_size={size['batch']}", *size["net"],
                f"--compile={int(mode != 'eager')}", f"--cuda_graphs={int(mode == 'graphs')}",
                f"--backend={size['backend']}", dev, *extra]

    def bench(option, mode, name, what, kind):
        return Step(name, what, bench_argv(option, mode, *size["bench"]), kind, _last_json)

    groups = [[bench(o, "eager", f"bench_{o}_eager", f"bench.py option {o}, eager", "bench_eager")] for o in "CB"]
    for comp in (0, 1):
        kind = "compiled" if comp else "eager"
        folder = os.path.join(out, f"search_{kind}")
        argv = ["--dataset=synthetic", "--epochs=50", f"--stop_after={1 + comp}", f"--batch_size={size['batch']}",
                *size["net"], *size["subset"], f"--compile={comp}", "--log_every=100", dev, f"--out={folder}"]
        what = "two search epochs (option C), compiled: the second timed" if comp else "one search epoch (option C), eager"
        step = Step(f"search_{kind}", what, compiled("search.py", *argv) if comp else ["search.py", *argv],
                    f"search_{kind}", _search_epoch, folder)
        if not comp:
            groups.append([step])
            cold = [Step("cuda_set", "the suite's CUDA set (tests/test_cuda.py), per test",
                         ["-m", "pytest", "-v", "-p", "no:cacheprovider", "tests/test_cuda.py"], "cold",
                         _pytest_tests, parse_always=True)]
            cold += [bench(o, "graphs", f"bench_{o}_graphs_cold", f"bench.py option {o} compiled + CUDA graphs, cold "
                           "cache, beside the CUDA set (compile_s; its step times are disturbed)", "cold") for o in "CB"]
            groups.append(cold)
            groups += [[bench(o, "graphs", f"bench_{o}_graphs", f"bench.py option {o}, compiled + CUDA graphs "
                              "(warm cache)", "bench_graphs")] for o in "CB"]
            for k in (2, 4, 6):
                def resolve(records, k=k):
                    mode = faster_mode(records)
                    return (bench_argv("BC", mode, f"--procs={k}", f"--seconds={size['procs_s']}", "--warmup=3"),
                            f"{k} searches' iterations at once (B and C in turn), {mode}")
                groups.append([Step(f"procs_{k}", f"{k} searches' iterations at once", [], "procs", _last_json,
                                    resolve=resolve)])
        else:
            groups.append([step])
    groups += [[bench(o, "compiled", f"bench_{o}_compiled", f"bench.py option {o}, compiled, no CUDA graphs",
                      "bench_compiled")] for o in "CB"]
    for amp, nhwc in ((1, 1), (0, 0)):
        name = f"train_amp{amp}_cl{nhwc}"
        argv = ["train.py", "--dataset=synthetic", *size["train"], f"--amp={amp}", f"--channels_last={nhwc}", dev,
                f"--out={os.path.join(out, name)}"]
        groups.append([Step(name, f"train.py, bf16 {'on' if amp else 'off'}, channels_last {'on' if nhwc else 'off'}",
                            argv, "train", _train_rate, os.path.join(out, name))])
    folder = os.path.join(out, "torchrun")
    torchrun = Step("torchrun", "2-process torchrun search epoch", [
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "search.py", "--dataset=synthetic",
        "--epochs=50", "--stop_after=1", f"--batch_size={size['batch']}", *size["net"], *size["ddp_subset"],
        "--log_every=0", dev, f"--out={folder}"], "torchrun", _search_epoch, folder)
    if gpus < 2 and not (tiny and cfg.device == "cpu"):
        torchrun.result = dict(status="skipped", why=f"{gpus} GPU: needs 2 (the CUDA set runs 2 processes "
                                                     "sharing one GPU over gloo)")
    groups.append([torchrun])
    wanted = [w for w in cfg.only.split(",") if w]
    keep = [[s for s in g if not wanted or any(picks(w, s.name) for w in wanted)] for g in groups]
    return [g for g in keep if g]


def picks(wanted, name):
    """--only's rule: a step's name, or a prefix of names up to an underscore (bench, bench_C, procs)."""
    return name == wanted or name.startswith(wanted + "_")


def unknown_steps(cfg):
    """The names in --only that pick no step of this size (a typo would run nothing and pass)."""
    names = ["env"] + [step.name for group in plan(replace(cfg, only=""), {}) for step in group]
    return [w for w in cfg.only.split(",") if w and not any(picks(w, n) for n in names)], names


def say(msg):
    print(f"gpu_check: {msg}", file=sys.stderr, flush=True)


def write_summary(cfg, records, t_start, started, done):
    """summary.json and summary.md from the records so far (`done`: the check has ended) -> the summary."""
    ran = [r for r in records if r["status"] not in ("skipped", "cut")]
    try:
        plan2 = table2_plan({r["name"]: r for r in records})
    except Exception as e:  # noqa: BLE001  a result of a shape never seen (first GPU): keep every measurement
        plan2 = dict(error=f"{type(e).__name__}: {e}")
    summary = dict(size=cfg.size, device=cfg.device, out=cfg.out, started=started, budget_s=cfg.budget,
                   wall_s=round(time.time() - t_start, 1), done=done, ran=len(ran),
                   passed=sum(r["status"] == "ok" for r in ran),
                   skipped=sum(r["status"] == "skipped" for r in records),
                   cut=sum(r["status"] == "cut" for r in records), steps=records,
                   table2=plan2)
    checkpoints.write_json(os.path.join(cfg.out, "summary.json"), summary)
    text = markdown(summary)
    checkpoints.atomic_write(os.path.join(cfg.out, "summary.md"), lambda f: f.write(text), mode="w")
    return summary, text


def main(argv=None):
    cfg = cli.parse_config(CheckConfig, argv)
    if cfg.size not in SIZES:
        raise cli.ConfigError(f"--size={cfg.size}: choose paper or tiny")
    cli.check_ranges(cfg, dict(budget="[1, inf)"))
    unknown, names = unknown_steps(cfg)
    if unknown:
        raise cli.ConfigError(f"--only={unknown[0]}: no step of that name or prefix (steps: {', '.join(names)})")
    cfg.out = fresh_folder(cfg.out)
    checkpoints.out_dir(cfg.out)
    say(f"writing to {cfg.out}")
    STOP.clear()
    previous = {sig: signal.signal(sig, _ask_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _check(cfg)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check(cfg):
    """main's body, with SIGTERM / SIGINT asking the check to stop (STOP) -> the exit status."""
    t_start, started = time.time(), time.strftime("%Y-%m-%d %H:%M:%S")
    scale = 3 if cfg.size == "tiny" else 1
    need = {k: v * scale for k, v in NEED.items()}
    limits = {k: v * scale for k, v in LIMITS.items()}
    env_step = Step("env", "device, driver, torch, CUDA", ["-c", ENV], "env", _last_json)
    records = [dict(name="env", what=env_step.what, **run_steps([env_step], cfg.out, [limits["env"]])[0])]
    env = records[0].get("result", {})
    if cfg.size == "paper" and cfg.device != "cpu" and not env.get("cuda_available"):
        raise cli.ConfigError(f"no GPU here ({env.get('cpu_reason') or 'see ' + cfg.out + '/env.log'}): the "
                               "paper's sizes would take hours on the CPU; --size=tiny --device=cpu runs the same "
                               "steps tiny")
    for group in plan(cfg, env):
        left = cfg.budget - (time.time() - t_start)
        by_name = {r["name"]: r for r in records}
        todo = [s for s in group if s.result.get("status") != "skipped"]
        wants = max((need[s.kind] for s in todo), default=0)
        for step in group:
            if step not in todo:
                records.append(dict(name=step.name, what=step.what, **step.result))
            elif STOP:
                records.append(dict(name=step.name, what=step.what, status="skipped",
                                    why="not started: the check was stopped from outside (the window's limit)"))
            elif left < wants:
                records.append(dict(name=step.name, what=step.what, status="skipped",
                                    why=f"out of time: needs ~{wants} s, {max(left, 0):.0f} s of the budget left"))
        if not todo or STOP or left < wants:
            continue
        for step in todo:
            if step.resolve:
                step.argv, step.what = step.resolve(by_name)
        step_limits = [min(limits[s.kind], int(left)) for s in todo]
        cut = {s.name for s, lim in zip(todo, step_limits) if lim < limits[s.kind]}
        say(f"{', '.join(s.name for s in todo)} (limit {max(step_limits)} s) ...")
        for step, rec in zip(todo, run_steps(todo, cfg.out, step_limits, cut)):
            records.append(dict(name=step.name, what=step.what, **rec))
            say(f"{step.name}: {rec['status']} in {rec['seconds']} s")
        write_summary(cfg, records, t_start, started, done=False)  # a check killed from here on keeps these
    summary, text = write_summary(cfg, records, t_start, started, done=True)
    print(text)
    if STOP:
        return 128 + STOP[0]  # stopped from outside: what ran is in the summary, the rest did not
    return 0 if summary["passed"] == summary["ran"] else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
