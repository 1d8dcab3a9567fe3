"""One command for the first GPU machine: what of the CUDA path works and what it costs, in one summary.

    python scripts/gpu_check.py                                   # one GPU: the paper's sizes, under 8 min
    python scripts/gpu_check.py --size=tiny --device=cpu --out=DIR  # the same steps, tiny (the suite runs it)

Steps, each a subprocess with its own time limit (a hang costs that step, not the run; the whole run
also stops starting steps once --budget seconds are spent), in this order:
  env           device, driver, torch, CUDA, cuDNN, GPUs, what --device=auto picks (and why, on the CPU)
  then side by side (CPU-bound, nothing timed):
  cuda_set      the suite's CUDA set: python -m pytest tests/test_cuda.py (all skipped on the CPU)
  bench_*_compiled_cold  bench.py B and C compiled on a cold cache: the cold compile time, and
                inductor's on-disk cache for the compiled steps below
  then one at a time:
  bench_*       bench.py, options B and C, eager and compiled, at the paper's NB201 size (C=16, N=5,
                batch 64): seconds per iteration, images/s, peak memory allocated and reserved
  search_*      one full-size search epoch (--dataset=synthetic: 25,000 / 25,000 images, 390 steps),
                eager and compiled: seconds and images/s
  train_*       train.py throughput (DARTS_V2, the DARTS recipe: C=36, 20 cells, batch 96) with and
                without bf16 autocast and channels_last
  torchrun      a 2-process search epoch when the machine has 2 GPUs (NCCL; gloo on the CPU when tiny)
Outputs in --out: summary.json (everything), summary.md (a table per step) and one log per step.
--size=tiny runs every step at a tiny size (C=4, one cell, a few images; compiled steps only trace,
torch.compile's "eager" backend), so the script is known to work before a GPU sees it. No data file
is read (synthetic images only) and nothing outside the repository is needed.
Exit status: 0 when every step that ran passed, 1 otherwise.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from harness import checkpoints, runs  # noqa: E402


@dataclass
class CheckConfig:
    size: str = "paper"           # paper (C=16, N=5, batch 64, 25k/25k images) | tiny (the suite's check)
    device: str = "auto"          # for every step: auto | cuda | cpu
    out: str = "runs/gpu_check"
    budget: int = 470             # seconds for the whole run: no step starts once they are spent
    only: str = ""                # comma-separated step names (or prefixes: bench, search, train) to run


# What each child runs at each size. Compiled steps at tiny size only trace (torch.compile's "eager"
# backend, through the wrapper below): inductor, even aot_eager, needs minutes on a 2-core CPU, and
# compiled numerics are tests/test_compile.py's (CPU) and tests/test_cuda.py's (CUDA graphs).
SIZES = {
    "paper": dict(net=["--C=16", "--layers=5"], batch=64, bench=["--steps=20", "--warmup=5"], subset=[],
                  train=["--arch=DARTS_V2", "--subset=4800", "--epochs=2"], ddp_subset=["--subset=12800"]),
    "tiny": dict(net=["--C=4", "--layers=1"], batch=8, bench=["--steps=2", "--warmup=1"], subset=["--subset=64"],
                 train=["--arch=|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|",
                        "--C=4", "--layers=1", "--batch_size=32", "--subset=64", "--test_subset=64", "--epochs=2"],
                 ddp_subset=["--subset=32"]),
}
# Seconds per step at the paper's size (tiny: 3x, for a busy 2-core CPU); --budget caps the whole run.
# Cold inductor compiles of the full NB201 supernet took ~6 min on one CPU core here, so on a GPU host
# they get the first group's 5 minutes.
LIMITS = dict(env=60, cuda_set=300, bench_cold=300, bench_eager=60, bench_compiled=120, search_eager=120,
              search_compiled=180, train=60, torchrun=150)
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
    limit: int                    # seconds
    parse: object = None          # (step, stdout) -> dict of results
    folder: str = ""              # the run folder a search/train step writes
    result: dict = field(default_factory=dict)


def run_steps(steps, out, limits):
    """Run `steps` side by side (one, or a group), each as its own process group with stdout in
    OUT/<name>.out and stderr in OUT/<name>.log; a step still running at its limit is stopped (with
    its children). -> one dict per step: status ok|failed|timeout, seconds, rc, limit_s, the log's
    tail and the parsed result."""
    started = []
    for step, limit in zip(steps, limits):
        paths = (os.path.join(out, f"{step.name}.out"), os.path.join(out, f"{step.name}.log"))
        with open(paths[0], "w") as so, open(paths[1], "w") as se:
            proc = subprocess.Popen([sys.executable, *step.argv], cwd=ROOT, stdout=so, stderr=se,
                                    start_new_session=True)
        started.append((step, limit, paths, proc, time.time()))
    ends = {}
    while len(ends) < len(started):
        for i, (step, limit, _, proc, t0) in enumerate(started):
            if i not in ends and proc.poll() is not None:
                ends[i] = (time.time(), "ok" if proc.returncode == 0 else "failed")
            elif i not in ends and time.time() > t0 + limit:
                _kill_group(proc)
                ends[i] = (time.time(), "timeout")
        time.sleep(0.1)
    records = []
    for i, (step, limit, (out_path, log_path), proc, t0) in enumerate(started):
        end, status = ends[i]
        with open(out_path) as f:
            stdout = f.read()
        with open(log_path) as f:
            tail = (f.read().strip().splitlines() or stdout.strip().splitlines())[-12:]
        rec = dict(status=status, seconds=round(end - t0, 1), rc=proc.returncode, limit_s=limit, tail=tail)
        if status == "ok" and step.parse is not None:
            try:
                rec["result"] = step.parse(step, stdout)
            except Exception as e:  # noqa: BLE001  it ran, but its output is not what we expect: a failure
                rec.update(status="failed", error=f"could not read its results: {type(e).__name__}: {e}")
        records.append(rec)
    return records


def _kill_group(proc):
    """SIGTERM to the step's process group (a search checkpoints and exits), SIGKILL 10 s later."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def _last_json(step, out):
    return json.loads(out.strip().splitlines()[-1])


def _pytest_counts(step, out):
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", out)}
    return dict(counts, failures=[line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))])


def _search_epoch(step, out):
    rows = checkpoints.read_json(os.path.join(step.folder, "history.json"))
    with open(os.path.join(step.folder, "log.txt")) as f:
        log = f.read()
    steps, batch = map(int, re.search(r"(\d+) steps per epoch of (\d+) images", log).groups())
    procs = int(re.search(r"(\d+) process\(es\)", log).group(1))
    seconds = rows[0]["seconds"]
    return dict(epoch_s=round(seconds, 1), steps=steps, batch=batch, processes=procs,
                images_per_s=round(steps * batch / seconds, 1), iteration_s=round(seconds / steps, 4))


def _train_rate(step, out):
    with open(os.path.join(step.folder, "log.txt")) as f:
        lines = re.findall(r"\] epoch (\d+)/\d+ .* (\d+)s (\d+) img/s", f.read())
    metrics = checkpoints.read_json(os.path.join(step.folder, "metrics.json"))
    return dict(images_per_s=int(lines[-1][2]), epochs=len(lines), test_loss=metrics["test_loss"],
                note="the last epoch's images/s (the first one includes cuDNN autotuning)")


def plan(cfg, env):
    """The steps for this size and machine, as groups run one after another; the steps of a group run
    side by side. The first group is the CPU-bound work that times nothing: the CUDA set and the
    cold-cache compiles of bench.py B and C (inductor keeps what it compiled in its on-disk cache, so
    the compiled steps after it, bench and search alike, time warm). Everything after it runs alone.
    env: the env step's result (the GPU count)."""
    size, dev, out = SIZES[cfg.size], f"--device={cfg.device}", cfg.out
    gpus, tiny = len(env.get("gpus") or []), cfg.size == "tiny"
    limits = {k: v * (3 if tiny else 1) for k, v in LIMITS.items()}

    def compiled(script, *args):  # a compiled step: inductor at the paper's size, dynamo only when tiny
        return (["-c", TINY_COMPILE, script] if tiny else [script]) + list(args)

    def bench(option, comp, name, what, limit):
        argv = ["--space=nb201", f"--option={option}", f"--batch_size={size['batch']}", *size["net"],
                *size["bench"], f"--compile={comp}", dev]
        return Step(name, what, compiled("bench.py", *argv) if comp else ["bench.py", *argv], limit, _last_json)

    first = [Step("cuda_set", "the suite's CUDA set (tests/test_cuda.py)",
                  ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"], limits["cuda_set"],
                  _pytest_counts)]
    first += [bench(o, 1, f"bench_{o}_compiled_cold", f"bench.py option {o} compiled, cold cache, beside the "
                    "CUDA set (compile_s; its step times are disturbed)", limits["bench_cold"]) for o in "BC"]
    groups = [first]
    groups += [[bench(o, 0, f"bench_{o}_eager", f"bench.py option {o}, eager", limits["bench_eager"])] for o in "BC"]
    groups += [[bench(o, 1, f"bench_{o}_compiled", f"bench.py option {o}, compiled (warm cache)",
                      limits["bench_compiled"])] for o in "BC"]
    for comp in (0, 1):
        kind = "compiled" if comp else "eager"
        folder = os.path.join(out, f"search_{kind}")
        argv = ["--dataset=synthetic", "--epochs=50", "--stop_after=1", f"--batch_size={size['batch']}",
                *size["net"], *size["subset"], f"--compile={comp}", "--log_every=100", dev, f"--out={folder}"]
        what = f"one search epoch (option C), {kind}" + (" (its first steps compile, warm cache)" if comp else "")
        groups.append([Step(f"search_{kind}", what,
                            compiled("search.py", *argv) if comp else ["search.py", *argv],
                            limits[f"search_{kind}"], _search_epoch, folder)])
    for amp, nhwc in ((1, 1), (0, 0)) if tiny else ((1, 1), (1, 0), (0, 1), (0, 0)):
        name = f"train_amp{amp}_cl{nhwc}"
        argv = ["train.py", "--dataset=synthetic", *size["train"], f"--amp={amp}", f"--channels_last={nhwc}", dev,
                f"--out={os.path.join(out, name)}"]
        groups.append([Step(name, f"train.py, bf16 {'on' if amp else 'off'}, channels_last {'on' if nhwc else 'off'}",
                            argv, limits["train"], _train_rate, os.path.join(out, name))])
    folder = os.path.join(out, "torchrun")
    torchrun = Step("torchrun", "2-process torchrun search epoch", [
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "search.py", "--dataset=synthetic",
        "--epochs=50", "--stop_after=1", f"--batch_size={size['batch']}", *size["net"], *size["ddp_subset"],
        "--log_every=0", dev, f"--out={folder}"], limits["torchrun"], _search_epoch, folder)
    if gpus < 2 and not (tiny and cfg.device == "cpu"):
        torchrun.result = dict(status="skipped", why=f"{gpus} GPU: needs 2 (the CUDA set runs 2 processes "
                                                     "sharing one GPU over gloo)")
    groups.append([torchrun])
    wanted = [w for w in cfg.only.split(",") if w]
    keep = [[s for s in g if not wanted or any(s.name == w or s.name.startswith(w + "_") for w in wanted)]
            for g in groups]
    return [g for g in keep if g]


def markdown(summary):
    env = summary["steps"][0].get("result", {})
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in env.get("gpus", [])) or "none"
    lines = [f"# GPU check ({summary['size']} size), {summary['started']}", "",
             f"torch {env.get('torch')} (CUDA build {env.get('cuda_build')}, cuDNN {env.get('cudnn')}), driver "
             f"{env.get('driver')}, GPUs: {gpus}; --device=auto picks {env.get('auto_device')}"
             + (f" ({env['cpu_reason']})" if env.get("cpu_reason") else "") + ".",
             f"{summary['passed']} of {summary['ran']} steps passed in {summary['wall_s']:.0f} s "
             f"(budget {summary['budget_s']} s).", "",
             "| step | what | status | seconds (limit) | result |", "|---|---|---|---|---|"]
    for s in summary["steps"][1:]:
        res = s.get("result") or {}
        if s["status"] == "skipped":
            text = s.get("why", "")
        elif s["name"] == "cuda_set":
            text = ", ".join(f"{v} {k}" for k, v in res.items() if k != "failures") + \
                   ("; " + "; ".join(res["failures"]) if res.get("failures") else "")
        elif s["name"].startswith("bench"):
            text = (f"{res.get('iteration_s')} s/iteration, {res.get('images_per_s')} img/s, peak "
                    f"{res.get('peak_mem_mb')} MB allocated / {res.get('peak_reserved_mb')} MB reserved"
                    + (f", compile {res.get('compile_s')} s" if res.get("compile") else "")) if res else ""
        elif s["name"].startswith(("search", "torchrun")):
            text = (f"{res['epoch_s']} s per epoch of {res['steps']} steps x {res['batch']} ({res['processes']} "
                    f"process(es)), {res['images_per_s']} img/s") if res else ""
        else:
            text = f"{res['images_per_s']} img/s (last of {res['epochs']} epochs)" if res else ""
        if s["status"] not in ("ok", "skipped"):
            text = (s.get("error") or " / ".join(s.get("tail", [])[-3:]))[:300]
        limit = f" ({s['limit_s']})" if "limit_s" in s else ""
        lines.append(f"| {s['name']} | {s['what']} | {s['status']} | {s.get('seconds', '-')}{limit} | "
                     f"{text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def say(msg):
    print(f"gpu_check: {msg}", file=sys.stderr, flush=True)


def main(argv=None):
    cfg = runs.parse_config(CheckConfig, argv)
    if cfg.size not in SIZES:
        raise runs.ConfigError(f"--size={cfg.size}: choose paper or tiny")
    checkpoints.out_dir(cfg.out)
    t_start, started = time.time(), time.strftime("%Y-%m-%d %H:%M:%S")
    env_step = Step("env", "device, driver, torch, CUDA", ["-c", ENV], LIMITS["env"], _last_json)
    records = [dict(name="env", what=env_step.what, **run_steps([env_step], cfg.out, [LIMITS["env"]])[0])]
    env = records[0].get("result", {})
    if cfg.size == "paper" and cfg.device != "cpu" and not env.get("cuda_available"):
        raise runs.ConfigError(f"no GPU here ({env.get('cpu_reason') or 'see ' + cfg.out + '/env.log'}): the "
                               "paper's sizes would take hours on the CPU; --size=tiny --device=cpu runs the same "
                               "steps tiny")
    for group in plan(cfg, env):
        left = int(cfg.budget - (time.time() - t_start))
        todo = [s for s in group if s.result.get("status") != "skipped"]
        for step in group:
            if step not in todo:
                records.append(dict(name=step.name, what=step.what, **step.result))
            elif left < 10:
                records.append(dict(name=step.name, what=step.what, status="skipped",
                                    why=f"out of time: the {cfg.budget} s budget was spent"))
        if todo and left >= 10:
            limits = [min(s.limit, left) for s in todo]
            say(f"{', '.join(s.name for s in todo)} (limit {max(limits)} s) ...")
            for step, rec in zip(todo, run_steps(todo, cfg.out, limits)):
                records.append(dict(name=step.name, what=step.what, **rec))
                say(f"{step.name}: {rec['status']} in {rec['seconds']} s")
    ran = [r for r in records if r["status"] != "skipped"]
    summary = dict(size=cfg.size, device=cfg.device, started=started, budget_s=cfg.budget,
                   wall_s=round(time.time() - t_start, 1), ran=len(ran),
                   passed=sum(r["status"] == "ok" for r in ran), steps=records)
    checkpoints.write_json(os.path.join(cfg.out, "summary.json"), summary)
    text = markdown(summary)
    checkpoints.atomic_write(os.path.join(cfg.out, "summary.md"), lambda f: f.write(text), mode="w")
    print(text)
    return 0 if summary["passed"] == summary["ran"] else 1


if __name__ == "__main__":
    sys.exit(runs.cli(main))
