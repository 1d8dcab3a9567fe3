"""scripts/gpu_check.py, the first GPU machine's one command, on the CPU: every step's command is a valid
run of its script at both sizes (the paper's: C=16, N=5, batch 64, 25k/25k images), a hanging step costs
only its own limit, and the script runs end to end at the tiny size on one step of each kind that
measures (bench, search epoch, train). The CUDA set, the compiled steps and torchrun differ from those
only in their command lines, checked here, and cost minutes more on 2 cores:
`python scripts/gpu_check.py --size=tiny --device=cpu` runs every step."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from harness import runs
import bench
import search
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "scripts", "gpu_check.py"))
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def script_and_args(argv):
    """(script, its flags) of a step's argv: plain, behind the tiny compile wrapper, or under torchrun."""
    if argv[0] == "-c":
        argv = argv[2:]
    if argv[:2] == ["-m", "torch.distributed.run"]:
        argv = [a for a in argv[2:] if not a.startswith("--nproc") and a != "--standalone"]
    return argv[0], argv[1:]


@pytest.mark.parametrize("size", ["paper", "tiny"])
def test_every_step_is_a_valid_run_of_its_script(size, tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the checked machine has a GPU:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)     # make_config refuses cuda otherwise
    cfg = runs.parse_config(gpu_check.CheckConfig, [f"--size={size}", "--device=cuda", f"--out={tmp_path}"])
    groups = gpu_check.plan(cfg, {"gpus": [{}, {}]})  # a 2-GPU machine: torchrun included
    steps = {s.name: s for g in groups for s in g}
    assert {s.name for s in groups[0]} == {"cuda_set", "bench_B_compiled_cold", "bench_C_compiled_cold"}
    assert all(len(g) == 1 for g in groups[1:])  # everything that times runs alone
    train_names = {f"train_amp{a}_cl{c}" for a, c in ((1, 1), (1, 0), (0, 1), (0, 0))[: 4 if size == "paper" else 1]}
    assert {f"bench_{o}_{k}" for o in "BC" for k in ("eager", "compiled")} | {"search_eager", "search_compiled",
                                                                           "torchrun"} | train_names <= set(steps)
    for name, step in steps.items():
        script, args = script_and_args(step.argv)
        assert "--device=cuda" in args or name == "cuda_set", name
        if script == "bench.py":
            b = runs.parse_config(bench.BenchConfig, args)
            assert (b.C, b.layers, b.batch_size) == ((16, 5, 64) if size == "paper" else (4, 1, 8))
            assert b.compile == ("compiled" in name)
        elif script == "search.py":
            c = search.make_config(args)
            assert (c.dataset, c.C, c.layers, c.batch_size, c.stop_after) == (
                "synthetic", *((16, 5, 64) if size == "paper" else (4, 1, 8)), 1)
            if size == "paper" and name != "torchrun":  # the full 25,000 / 25,000 split: 390 steps of 64
                assert c.subset == 0 and c.compile == (name == "search_compiled")
        elif script == "train.py":
            t, genotype, info, _, _ = train.resolve(args)
            assert t.dataset == "synthetic" and info.size == 32 and t.device == "cuda"
            assert (t.C, t.layers, t.batch_size) == ((36, 20, 96) if size == "paper" else (4, 1, 32))
        else:
            assert step.argv[-1] == "tests/test_cuda.py" and name == "cuda_set"
    one_gpu = gpu_check.plan(cfg, {"gpus": [{}]})[-1][0]
    assert one_gpu.name == "torchrun" and one_gpu.result["status"] == "skipped"


def test_a_hanging_step_costs_only_its_own_limit(tmp_path):
    hang = gpu_check.Step("hang", "sleeps", ["-c", "import time; time.sleep(120)"], 1)
    quick = gpu_check.Step("quick", "prints", ["-c", "print('{\"x\": 1}')"], 60, gpu_check._last_json)
    broken = gpu_check.Step("broken", "prints no JSON", ["-c", "print('no')"], 60, gpu_check._last_json)
    recs = gpu_check.run_steps([hang, quick, broken], str(tmp_path), [1, 60, 60])
    assert [r["status"] for r in recs] == ["timeout", "ok", "failed"]
    assert recs[0]["seconds"] < 30 and recs[1]["result"] == {"x": 1} and "could not read" in recs[2]["error"]


def test_the_tiny_check_runs_end_to_end(tmp_path):
    out = tmp_path / "check"
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--size=tiny", "--device=cpu", f"--out={out}",
                        "--only=bench_C_eager,search_eager,train_amp1_cl1"], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    by = {s["name"]: s for s in summary["steps"]}
    assert set(by) == {"env", "bench_C_eager", "search_eager", "train_amp1_cl1"}
    assert all(s["status"] == "ok" for s in by.values()), {k: s.get("tail") for k, s in by.items()}
    env = by["env"]["result"]
    assert env["torch"] and env["auto_device"] and "gpus" in env
    b = by["bench_C_eager"]["result"]
    assert b["option"] == "C" and b["iteration_s"] > 0 and "peak_reserved_mb" in b
    s = by["search_eager"]["result"]
    assert (s["steps"], s["batch"], s["processes"]) == (4, 8, 1) and s["images_per_s"] > 0  # 32 / 32 images
    assert by["train_amp1_cl1"]["result"]["images_per_s"] > 0
    md = (out / "summary.md").read_text()
    assert all(f"| {name} |" in md for name in by if name != "env") and "4 of 4 steps passed" in md
