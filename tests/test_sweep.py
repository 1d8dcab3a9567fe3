"""sweep.py: options x seeds of a tiny search, N at a time; the table and figures; a second invocation
skips finished runs; a killed sweep resumes to the result of an uninterrupted run; bad flags and
failed runs."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from harness import runs
import search
import sweep
from conftest import fake_nb201_accuracy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flags(folder, table, *extra):
    return ["--dataset=imagefolder", f"--data={folder}", "--C=4", "--layers=1", "--batch_size=4",
            "--log_every=0", "--device=cpu", f"--bench201={table}", *extra]


def test_sweep_table_figures_skip_and_a_failed_run(tiny_folder, nb201_table, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = [f"--out={out}", "--options=BC", "--seeds=1,2", "--jobs=2", "--threads=1",
            *flags(tiny_folder, nb201_table, "--epochs=2")]
    (out / "B_s2").mkdir(parents=True)
    (out / "B_s2" / "checkpoint.pt").write_bytes(b"not a checkpoint")  # this run will fail on resume
    summary = sweep.main(argv)
    assert (out / "table.md").is_file() and (out / "figures" / "sweep_skip_and_bench.png").is_file()
    assert (out / "figures" / "sweep_fig1.png").is_file()
    table = json.loads((out / "table.json").read_text())
    assert table == json.loads(json.dumps(summary))
    states = {f"{o}_s{r['seed']}": r["state"] for o, s in table.items() for r in s["seeds"]}
    assert states["B_s1"] == states["C_s1"] == states["C_s2"] == "finished"
    assert states["B_s2"].startswith("failed (exit 2): error: cannot resume"), states
    for option, n in (("B", 1), ("C", 2)):
        recs = [r for r in table[option]["seeds"] if r["state"] == "finished"]
        accs = [fake_nb201_accuracy(json.loads((out / f"{option}_s{r['seed']}" / "genotype.json").read_text())
                                    ["nb201_index"]) for r in recs]
        assert table[option]["n"] == n and [r["bench_test_acc"] for r in recs] == pytest.approx(accs)
        assert table[option]["bench_test_acc"]["mean"] == pytest.approx(sum(accs) / n)
    assert "| B_s2 | failed (exit 2)" in (out / "table.md").read_text()
    # the same command again: finished runs are skipped and left as they were
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("?_s?/history.json")}
    capsys.readouterr()
    sweep.main(argv)
    said = capsys.readouterr().out
    assert all(f"{name}: finished before, skipped" in said for name in ("B_s1", "C_s1", "C_s2")), said
    assert {p: p.stat().st_mtime_ns for p in out.glob("?_s?/history.json")} == stamps


def test_a_killed_sweep_resumes_to_the_uninterrupted_result(tiny_folder, nb201_table, tmp_path):
    common = flags(tiny_folder, nb201_table, "--epochs=20")
    out = tmp_path / "sweep"
    cmd = [sys.executable, "sweep.py", f"--out={out}", "--options=C", "--seeds=3", "--threads=1", *common]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "C_s3" / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # the sweep dies at once; its search gets SIGTERM and checkpoints
    proc.wait()
    lock = out / "C_s3" / ".lock"
    while time.time() < deadline:  # the search has exited once its lock can be taken
        try:
            with open(lock, "a+") as f:
                import fcntl
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.05)
    assert len(json.loads((out / "C_s3" / "history.json").read_text())) < 20  # really cut short
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=240).returncode == 0
    full, _ = search.search(search.make_config(common + ["--option=C", "--seed=3", f"--out={tmp_path / 'full'}"]))
    resumed = torch.load(out / "C_s3" / "checkpoint.pt", weights_only=True)["model"]
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed[name]), name


def test_bad_flags_fail_before_any_run(tmp_path, capsys):
    for argv, needle in ((["--lr=fast"], "--lr=fast: expected a value of type float"),
                         (["--seed=3"], "the sweep sets these per run"),
                         (["--options=BX"], "--options=BX"), (["--space=nope"], "unknown search space")):
        with pytest.raises(SystemExit) as e:
            runs.cli(sweep.main, [f"--out={tmp_path / 's'}", *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and needle in err and err.count("\n") == 1, err
        assert not any((tmp_path / "s").glob("*_s*"))  # no run started


class FakeSearch:
    """subprocess.Popen for the sweep's searches: records each one's environment and stays running for
    two polls, so the sweep has several running at once."""
    started = []

    def __init__(self, cmd, env=None, **kwargs):
        FakeSearch.started.append((cmd[-1], env.get("CUDA_VISIBLE_DEVICES"),  # --out=, its GPU, the others'
                                   [f.env.get("CUDA_VISIBLE_DEVICES") for f in FakeSearch.live]))
        self.env, self.polls, self.pid, self.returncode = env, 0, 1000 + len(FakeSearch.started), None
        FakeSearch.live.append(self)

    def poll(self):
        self.polls += 1
        if self.polls > 2:
            self.returncode = 0
            if self in FakeSearch.live:
                FakeSearch.live.remove(self)
        return self.returncode


def test_searches_are_spread_over_the_gpus_and_name_their_device(tmp_path, monkeypatch):
    """With GPUs 3 and 5 visible (mocked), --jobs=2 runs up to two searches per GPU, each seeing only
    its own GPU; device.txt and the table name it. --device=cpu or an explicit cuda:K spread nothing."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert sweep.visible_gpus(["--device=auto"]) == sweep.visible_gpus(["--device=cuda"]) == ["3", "5"]
    assert sweep.visible_gpus(["--device=cpu"]) == sweep.visible_gpus(["--device=cuda:1"]) == []
    cfg, rest = sweep.parse([f"--out={tmp_path}", "--options=BC", "--seeds=1,2,3", "--jobs=2", "--C=4"])
    jobs = sweep.plan(cfg, rest)
    FakeSearch.started, FakeSearch.live = [], []
    monkeypatch.setattr(sweep.subprocess, "Popen", FakeSearch)
    monkeypatch.setattr(sweep.time, "sleep", lambda s: None)
    status = sweep.run_all(cfg, jobs, say=lambda msg: None)
    assert len(FakeSearch.started) == 6 and set(status.values()) == {0}
    for _, gpu, others in FakeSearch.started:  # at most --jobs=2 searches on one GPU at any time
        assert gpu in ("3", "5") and others.count(gpu) < 2
    assert [g for _, g, _ in FakeSearch.started[:4]] == ["3", "5", "3", "5"]  # the least busy GPU first
    first = tmp_path / "B_s1"
    assert (first / "device.txt").read_text().endswith(" GPU 3\n") and sweep.run_devices(first) == "GPU 3"
    summary, _ = sweep.summarize(jobs, status)
    assert summary["B"]["seeds"][0]["device"] == "GPU 3" and "| unfinished | | | | | | | GPU 3 |" in sweep.markdown(summary)
    sweep.note_device(first, None, ["--device=cpu"])  # a later session on the CPU
    assert sweep.run_devices(first) == "GPU 3, cpu"
