"""scripts/gpu_check.py, a GPU window's check, on the CPU: every step's command is a valid run of its script
at both sizes (the paper's: C=16, N=5, batch 64, 25k/25k images) in the order of what it decides, a
hanging step costs only its own limit, a step that cannot fit the budget is skipped and one the budget
stops is cut (neither fails), a second check gets a folder of its own, the CUDA set's per-test verdicts
survive a stop, the Table 2 plan's arithmetic, and the script end to end at the tiny size on one step
of each kind that measures. `python scripts/gpu_check.py --size=tiny --device=cpu` runs every step."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness import cli, gpu_summary
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


def resolved(groups, records=None):
    """Every step of a plan with its argv, the runtime-chosen ones (procs_K) resolved from `records`."""
    steps = {}
    for g in groups:
        for s in g:
            if s.resolve:
                s.argv, s.what = s.resolve(records or {})
            steps[s.name] = s
    return steps


@pytest.mark.parametrize("size", ["paper", "tiny"])
def test_every_step_is_a_valid_run_of_its_script(size, tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the checked machine has a GPU:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)     # make_config refuses cuda otherwise
    cfg = cli.parse_config(gpu_check.CheckConfig, [f"--size={size}", "--device=cuda", f"--out={tmp_path}"])
    groups = gpu_check.plan(cfg, {"gpus": [{}, {}]})  # a 2-GPU machine: torchrun included
    order = [s.name for g in groups for s in g]
    # what decides the Table 2 plan comes first: eager speed, a real search epoch, the CUDA set with the
    # cold compiles, the compiled (CUDA graphs) speed, then searches at once; throughput extras last
    assert order[:5] == ["bench_C_eager", "bench_B_eager", "search_eager", "cuda_set", "bench_C_graphs_cold"]
    assert order.index("procs_6") < order.index("search_compiled") < order.index("bench_C_compiled") \
        < order.index("train_amp1_cl1") < order.index("torchrun") == len(order) - 1
    assert [len(g) for g in groups if len(g) > 1] == [3]  # only the untimed cold-cache group runs side by side
    steps = resolved(groups, {"bench_C_graphs": dict(status="ok", result=dict(iteration_s=0.01)),
                              "bench_B_graphs": dict(status="ok", result=dict(iteration_s=0.012)),
                              "bench_C_eager": dict(status="ok", result=dict(iteration_s=0.05))})
    assert {f"bench_{o}_{k}" for o in "BC" for k in ("eager", "graphs", "compiled")} | {
        "search_eager", "search_compiled", "torchrun", "procs_2", "procs_4", "procs_6"} <= set(steps)
    for name, step in steps.items():
        script, args = script_and_args(step.argv)
        assert "--device=cuda" in args or name == "cuda_set", name
        if script == "bench.py":
            b = cli.parse_config(bench.BenchConfig, args)
            assert (b.C, b.layers, b.batch_size) == ((16, 5, 64) if size == "paper" else (4, 1, 8))
            assert b.compile == ("eager" not in name) and b.cuda_graphs == ("graphs" in name or "procs" in name)
            assert b.backend == ("inductor" if size == "paper" else "eager")
            if name.startswith("procs"):  # the faster mode measured (here CUDA graphs), B and C in turn
                assert b.procs == int(name[-1]) and b.seconds > 0 and b.option == "BC" and b.compile
            else:
                assert b.gpu_busy > 0
        elif script == "search.py":
            c = search.make_config(args)
            assert (c.dataset, c.C, c.layers, c.batch_size) == (
                "synthetic", *((16, 5, 64) if size == "paper" else (4, 1, 8)))
            assert c.stop_after == (2 if name == "search_compiled" else 1)
            if size == "paper" and name != "torchrun":  # 6,400 / 6,400 images: 100 steps of 64
                assert c.subset == 12_800 and c.compile == (name == "search_compiled")
        elif script == "train.py":
            t, genotype, info, _, _ = train.resolve(args)
            assert t.dataset == "synthetic" and info.size == 32 and t.device == "cuda"
            assert (t.C, t.layers, t.batch_size) == ((36, 20, 96) if size == "paper" else (4, 1, 32))
        else:
            assert step.argv[-1] == "tests/test_cuda.py" and "-v" in step.argv and name == "cuda_set"
    one_gpu = gpu_check.plan(cfg, {"gpus": [{}]})[-1][0]
    assert one_gpu.name == "torchrun" and one_gpu.result["status"] == "skipped"
    eager_procs = resolved(gpu_check.plan(cfg, {"gpus": [{}]}))["procs_4"]  # no compiled result: eager
    assert "--compile=0" in eager_procs.argv and "eager" in eager_procs.what


def test_the_cuda_sets_tests_survive_a_stop(tmp_path):
    out = "tests/test_cuda.py::test_a PASSED [ 10%]\ntests/test_cuda.py::test_b[C] FAILED [ 20%]\n" \
          "tests/test_cuda.py::test_c SKIPPED (needs a CUDA GPU) [ 30%]\n"  # then the step was stopped
    res = gpu_check._pytest_tests(None, out)
    assert res["tests"] == {"test_a": "PASSED", "test_b[C]": "FAILED", "test_c": "SKIPPED"}
    assert (res["passed"], res["failed"], res["skipped"], res["failures"]) == (1, 1, 1, ["test_b[C]"])


def test_only_picks_steps_by_name_or_prefix_and_refuses_a_typo(tmp_path, capsys):
    cfg = gpu_check.CheckConfig(size="tiny", device="cpu", out=str(tmp_path / "o"), only="bench_C,procs,torchrun")
    picked = [s.name for g in gpu_check.plan(cfg, {}) for s in g]
    assert picked == ["bench_C_eager", "bench_C_graphs_cold", "bench_C_graphs", "procs_2", "procs_4", "procs_6",
                      "bench_C_compiled", "torchrun"]
    with pytest.raises(SystemExit) as e:  # a typo would run nothing and report a pass: refused, nothing written
        cli.run(gpu_check.main, ["--size=tiny", "--device=cpu", f"--out={tmp_path / 'o'}", "--only=bench_C_eagr"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--only=bench_C_eagr: no step of that name" in err and "bench_C_eager" in err
    assert not (tmp_path / "o").exists()


def test_the_table2_plan_predicts_minutes_and_picks_the_jobs():
    def ok(**result):
        return dict(status="ok", result=result)
    records = {"bench_B_eager": ok(iteration_s=0.06), "bench_C_eager": ok(iteration_s=0.04),
               "bench_B_graphs": ok(iteration_s=0.012), "bench_C_graphs": ok(iteration_s=0.008),
               "procs_2": ok(iterations_per_s=150.0, compile=True), "procs_4": ok(iterations_per_s=240.0, compile=True),
               "procs_6": ok(iterations_per_s=230.0, compile=True), "search_compiled": ok(iteration_s=0.01)}
    p = gpu_summary.table2_plan(records)
    assert p["mode"] == "graphs" and p["overhead"] == pytest.approx(1.25)  # a real epoch: 0.01 s per 0.008 s
    assert p["iterations_per_s"][1] == pytest.approx(100.0)  # B then C alone: 2 / (0.012 + 0.008)
    # 4 at once: a round of 4 runs, then the other 2 at 2-at-once's rate; 6 at once: one round
    four = (4 * 19_550 / 240 + 2 * 19_550 / 150) * 1.25 / 60
    assert p["minutes"][4] == pytest.approx(four, abs=0.1) and p["minutes"][6] == pytest.approx(6 * 19_550 / 230 * 1.25 / 60, abs=0.1)
    assert p["jobs"] == 6 and p["sweep_flags"] == "--jobs=6 --compile=1"  # 230 in all beats 240 then 150
    assert p["compile_s"] == 0 and p["windows"][6] == 2  # 10.6 min of searching: two windows of 500 s
    # each window compiles again from a cold cache: the slower of the two cold benches, once per window
    records["bench_B_graphs_cold"], records["bench_C_graphs_cold"] = ok(compile_s=150.0), ok(compile_s=90.0)
    with_compiles = gpu_summary.table2_plan(records)
    assert with_compiles["minutes"][6] == pytest.approx(p["minutes"][6] + 2 * 150 / 60, abs=0.1)
    # no compiled search epoch ran: the eager one's overhead is over eager's bench, not the compiled one's
    del records["search_compiled"]
    records["search_eager"] = ok(iteration_s=0.05)
    p = gpu_summary.table2_plan(records)
    assert p["overhead"] == pytest.approx(0.05 / 0.04) and p["overhead_from"] == "search_eager"
    records["bench_B_graphs"] = dict(status="skipped")  # only C's graphs ran: a mode that cannot price B
    p = gpu_summary.table2_plan(records)
    assert p["mode"] == "eager" and p["iterations_per_s"][1] == pytest.approx(2 / (0.06 + 0.04))
    assert p["compile_s"] == 0  # eager compiles nothing
    records["bench_C_graphs"] = dict(status="failed")  # compiled failed: the plan is eager's
    del records["search_eager"]
    p = gpu_summary.table2_plan(records)
    assert p["mode"] == "eager" and set(p["minutes"]) == {1} and p["overhead"] == 1.0
    summary = dict(size="paper", started="now", passed=3, ran=4, skipped=3, cut=0, wall_s=480.0, budget_s=480,
                   steps=[{"name": "env", "result": {}}], table2=p)
    text = gpu_summary.markdown(summary)  # what the budget left out is named, with the command that measures it
    assert "Not measured: 2, 4, 6 searches at once" in text and "--task=check --only=procs" in text
    assert gpu_summary.table2_plan({}) == {}


def test_a_stop_from_outside_cuts_the_running_step_and_the_summary_keeps_what_ran(tmp_path, monkeypatch):
    """The window's limit (SIGTERM from gpu_window.py): the running step is stopped at once, the steps not
    started are skipped, the summary says what ran; and it is rewritten after every group, so a check
    killed outright still leaves it (the second step reads the one the first left)."""
    summary_path = tmp_path / "c" / "summary.json"
    quick = gpu_check.Step("quick", "prints", ["-c", "print('{\"x\": 1}')"], "env", gpu_check._last_json)
    peek = gpu_check.Step("peek", "reads the summary so far", ["-c", (
        f"import json; s = json.load(open({str(summary_path)!r})); "
        "print(json.dumps(dict(done=s['done'], steps=[r['name'] for r in s['steps']])))")], "env", gpu_check._last_json)
    stopper = gpu_check.Step("stopper", "stops the check, then hangs", ["-c", (
        "import os, signal, time; os.kill(os.getppid(), signal.SIGTERM); time.sleep(120)")], "env")
    never = gpu_check.Step("never", "not started", ["-c", "pass"], "env")
    monkeypatch.setattr(gpu_check, "plan", lambda cfg, env: [[quick], [peek], [stopper], [never]])
    rc = gpu_check.main(["--size=tiny", "--device=cpu", f"--out={tmp_path / 'c'}", "--budget=600"])
    assert rc == 128 + signal.SIGTERM
    summary = json.loads(summary_path.read_text())
    by = {s["name"]: s for s in summary["steps"]}
    assert by["peek"]["result"] == {"done": False, "steps": ["env", "quick"]}
    assert by["stopper"]["status"] == "cut" and by["never"]["status"] == "skipped" and "outside" in by["never"]["why"]
    assert summary["done"] and (summary["ran"], summary["passed"]) == (3, 3)
    assert signal.getsignal(signal.SIGTERM) is not gpu_check._ask_stop  # the caller's handlers are back


def test_a_step_that_cannot_fit_is_skipped_and_one_the_budget_stops_is_cut(tmp_path, monkeypatch):
    sleepy = gpu_check.Step("sleepy", "sleeps", ["-c", "import time; time.sleep(60)"], "bench_eager")
    big = gpu_check.Step("big", "never starts", ["-c", "pass"], "search_eager")
    monkeypatch.setattr(gpu_check, "plan", lambda cfg, env: [[sleepy], [big]])
    monkeypatch.setitem(gpu_check.NEED, "bench_eager", 1)      # fits the budget: starts, its limit cut to it
    monkeypatch.setitem(gpu_check.NEED, "search_eager", 10**6)  # never fits
    cfg = ["--size=tiny", "--device=cpu", f"--out={tmp_path / 'c'}", "--budget=20"]
    assert gpu_check.main(cfg) == 0  # neither a skipped nor a cut step fails the check
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    by = {s["name"]: s for s in summary["steps"]}
    # stopped by the budget, not run to its end: its limit is what was left of the 20 s budget (not the
    # step kind's own 3 x 90 s), and it ended by SIGTERM (a finished sleep would exit 0)
    assert by["sleepy"]["status"] == "cut" and by["sleepy"]["rc"] == -signal.SIGTERM
    assert 0 < by["sleepy"]["limit_s"] <= 20 < 3 * gpu_check.LIMITS["bench_eager"]
    assert by["big"]["status"] == "skipped" and "out of time" in by["big"]["why"]
    assert (summary["ran"], summary["skipped"], summary["cut"]) == (1, 1, 1)
    # a second check into the same --out gets a folder of its own
    monkeypatch.setattr(gpu_check, "plan", lambda cfg, env: [])
    assert gpu_check.main(cfg) == 0
    assert json.loads((tmp_path / "c-2" / "summary.json").read_text())["out"] == str(tmp_path / "c-2")


def test_a_hanging_step_costs_only_its_own_limit(tmp_path):
    hang = gpu_check.Step("hang", "sleeps", ["-c", "import time; time.sleep(120)"], "env")
    quick = gpu_check.Step("quick", "prints", ["-c", "print('{\"x\": 1}')"], "env", gpu_check._last_json)
    broken = gpu_check.Step("broken", "prints no JSON", ["-c", "print('no')"], "env", gpu_check._last_json)
    recs = gpu_check.run_steps([hang, quick, broken], str(tmp_path), [1, 60, 60])
    assert [r["status"] for r in recs] == ["timeout", "ok", "failed"]
    assert [r["limit_s"] for r in recs] == [1, 60, 60]
    assert [r["rc"] for r in recs] == [-signal.SIGTERM, 0, 0]  # the hanging one stopped by SIGTERM at its limit
    assert recs[1]["result"] == {"x": 1} and "could not read" in recs[2]["error"]


def test_the_tiny_check_runs_end_to_end(tmp_path):
    out = tmp_path / "check"
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--size=tiny", "--device=cpu", f"--out={out}",
                        "--only=bench_C_eager,search_eager,procs_2,train_amp1_cl1"], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    by = {s["name"]: s for s in summary["steps"]}
    assert set(by) == {"env", "bench_C_eager", "search_eager", "procs_2", "train_amp1_cl1"}
    assert all(s["status"] == "ok" for s in by.values()), {k: s.get("tail") for k, s in by.items()}
    env = by["env"]["result"]
    assert env["torch"] and env["auto_device"] and "gpus" in env
    b = by["bench_C_eager"]["result"]
    assert b["option"] == "C" and b["iteration_s"] > 0 and "peak_reserved_mb" in b and not b["compile"]
    p = by["procs_2"]["result"]
    assert p["procs"] == 2 and len(p["results"]) == 2 and p["iterations_per_s"] > 0
    s = by["search_eager"]["result"]
    assert (s["steps"], s["batch"], s["processes"]) == (4, 8, 1) and s["images_per_s"] > 0  # 32 / 32 images
    assert s["gpu_mem_mb"] is None  # no GPU memory on a CPU run
    assert by["train_amp1_cl1"]["result"]["images_per_s"] > 0
    md = (out / "summary.md").read_text()
    assert all(f"| {name} |" in md for name in by if name != "env") and "5 of 5 steps that ran passed" in md
    assert summary["table2"]["mode"] == "eager" and "## Table 2 plan" in md


def test_a_search_steps_summary_line_gives_its_peak_gpu_memory(tmp_path):
    """The real search epoch's history.json row carries the epoch's peak allocated GPU memory on CUDA."""
    folder = tmp_path / "search"
    folder.mkdir()
    (folder / "history.json").write_text(json.dumps([{"seconds": 30.0, "gpu_mem_mb": 734.5, "gpu_reserved_mb": 900.0}]))
    (folder / "log.txt").write_text("search ...: 390 steps per epoch of 64 images, 1 process(es), device cuda\n")
    step = gpu_check.Step("search_eager", "a search epoch", [], "search_eager", folder=str(folder))
    res = gpu_check._search_epoch(step, "")
    assert res["gpu_mem_mb"] == 734.5 and res["iteration_s"] == pytest.approx(30 / 390, abs=1e-4)
    line = gpu_summary.result_text(dict(name="search_eager", result=res))
    assert line.endswith(", epoch 1's peak 734.5 MB allocated / 900.0 MB reserved") and "390 steps x 64" in line


def test_a_result_the_plan_cannot_read_leaves_the_summary_whole(tmp_path):
    """The first GPU may print results of a shape never seen: the plan says why it was not made, and
    every measurement is still written."""
    cfg = gpu_check.CheckConfig(out=str(tmp_path))
    records = [dict(name="env", what="env", status="ok", result={}),
               dict(name="bench_C_eager", what="b", status="ok", result={"images_per_s": 5}),  # no iteration_s
               dict(name="bench_B_eager", what="b", status="ok", result={"images_per_s": 4})]
    summary, text = gpu_check.write_summary(cfg, records, time.time(), "now", done=True)
    assert summary["table2"]["error"].startswith("KeyError") and "Table 2 plan: not made (KeyError" in text
    assert json.loads((tmp_path / "summary.json").read_text())["steps"][1]["result"] == {"images_per_s": 5}
