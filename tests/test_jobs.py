"""harness/jobs.py: run_all runs the script it is given (not only search.py), with each job's argv,
its --device read through that script's config, the thread count in its environment, its stderr kept
in the run folder, one line per history row it adds, and its exit status; finished jobs are skipped."""
import os
from dataclasses import dataclass

from harness import runs
from harness.jobs import Job, run_all

# A stand-in for an entry script: one history row, a line on stderr, the exit status it is told
CHILD = """
import json, os, sys
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:])
with open(os.path.join(flags["out"], "history.json"), "w") as f:
    json.dump([{"epoch": 1, "threads": os.environ["OMP_NUM_THREADS"],
                "compile_threads": os.environ.get("TORCHINDUCTOR_COMPILE_THREADS")}], f)
print("last words of " + os.path.basename(flags["out"]), file=sys.stderr)
sys.exit(int(flags["code"]))
"""


@dataclass
class ChildConfig:  # the child's config dataclass: run_all reads --device from a job's argv with it
    device: str = "auto"
    out: str = ""
    code: int = 0


def test_run_all_runs_the_script_it_is_given(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)  # unset: each child's compile pool = its threads
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    made = [Job(f"j{c}", str(tmp_path / f"j{c}"), [f"--out={tmp_path / f'j{c}'}", f"--code={c}", "--device=cpu"],
                "new", 1) for c in (0, 3)]
    said, ends = [], []
    status, signum = run_all([*made, Job("j9", str(tmp_path / "j9"), [], "done", 1)], str(script), ChildConfig,
                             per_device=2, threads=1, say=said.append,
                             epoch_line=lambda name, row: f"{name}: epoch {row['epoch']}, {row['threads']} thread(s), "
                                                          f"{row['compile_threads']} compile",
                             on_end=ends.append)
    assert (status, signum) == ({"j0": 0, "j3": 3}, 0)  # a failed run's status comes back as it is
    assert len(ends) == 2 and len(ends[0]) == 1 and ends[1] == status  # told as each run ends, status so far
    assert said[0] == "2 of 3 searches to run, 2 at a time, 1 CPU thread(s) each (--threads=1)"
    assert "j9: finished before, skipped" in said and not os.path.exists(tmp_path / "j9")
    for c in (0, 3):
        assert f"j{c}: epoch 1, 1 thread(s), 1 compile" in said
        assert any(line.startswith(f"j{c}: ended, exit {c}, ") for line in said), said
        assert (tmp_path / f"j{c}" / "stderr.txt").read_text() == f"last words of j{c}\n"
        assert (tmp_path / f"j{c}" / "device.txt").read_text().endswith(f" {runs.cpu_device(1)}\n")


def test_runs_to_resume_start_before_new_ones(tmp_path):
    """A rerun sweep continues its checkpointed runs before it starts new ones (one at a time here: the
    order they start in is the order they end in); new runs keep their given order."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    jobs = [Job(name, str(tmp_path / name), [f"--out={tmp_path / name}", "--device=cpu"], state, 1)
            for name, state in (("B_s1", "new"), ("C_s1", "done"), ("B_s2", "new"), ("C_s2", "resume"))]
    said = []
    run_all(jobs, str(script), ChildConfig, per_device=1, threads=1, say=said.append)
    assert [line.split(":")[0] for line in said if "(pid" in line] == ["C_s2", "B_s1", "B_s2"]
    assert "C_s2: resumed (pid" in " ".join(said)
