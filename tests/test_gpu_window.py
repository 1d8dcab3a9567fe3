"""scripts/gpu_window.py, a GPU window's prepared command, at the tiny size on the CPU: it packs the data,
runs the Table 2 sweep under its hard limit, is stopped there with every search checkpointed, returns at
most 8 files of at most 16 MiB in one flat folder, and the next window continues the runs it returned
(unpacked here, carried back); the check task returns the check's summary; bad input is one line."""
import importlib.util
import json
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import make_image_folder, write_nb201_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_window.py")
spec = importlib.util.spec_from_file_location("gpu_window", SCRIPT)
gpu_window = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_window)


def window(*args, timeout=300, cwd=ROOT):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def returned(out):
    """The files a window returns, checked against the device tool's limits."""
    names = os.listdir(out)
    assert len(names) <= 8 and all(os.path.isfile(os.path.join(out, n)) for n in names), names
    assert all(os.path.getsize(os.path.join(out, n)) <= 16 * 2**20 for n in names)
    assert not [n for n in names if n.startswith(".")]  # no half-written file left
    return set(names)


def epochs_done(runs_out, name):
    with open(os.path.join(runs_out, name, "history.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("window")
    make_image_folder(root / "images")
    (root / "pack").mkdir()
    (root / "pack" / "nb201-public.csv").write_text("an older pack's unzipped table")  # removed: else read
    (root / "pack" / "cifar10-jpeg.tar.gz").write_text("an older pack's other data")  # removed: else read first
    (root / "pack" / "data" / "cifar10-jpeg").mkdir(parents=True)  # a local window's unpacked data, check folder
    (root / "pack" / "check-20261207-000000").mkdir()
    (root / "pack" / "notes.txt").write_text("not the window's: stays")
    write_nb201_table(root / "nb201.csv")
    r = window("--task=pack", f"--data={root / 'images'}", f"--bench201={root / 'nb201.csv'}",
               f"--pack_dir={root / 'pack'}")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(root / "pack")) == ["images.tar.gz", "nb201-public.csv.gz", "notes.txt"]
    (root / "pack" / "notes.txt").unlink()
    assert "the next window carries" in r.stderr, r.stderr  # what the call will send, said before it
    assert "outside the repository: the device tool carries only folders inside it" in r.stderr  # (a tmp folder)
    return root


def test_the_carry_note_says_what_to_leave_out_when_the_next_window_would_not_fit():
    mib = 2**20
    fits = gpu_window.carry_note(22 * mib, 18 * mib, {"B_s1/checkpoint.pt": 14 * mib, "C_s1/checkpoint.pt": mib // 2})
    assert fits == ["the next window carries 54.5 MiB of 64 (tree 22.0, packed data 18.0, 2 checkpoint(s) 14.5)"]
    ckpts = {f"B_s{i}/checkpoint.pt": 14 * mib for i in (1, 2, 3)} | {"C_s1/checkpoint.pt": mib // 2}
    first, over = gpu_window.carry_note(22 * mib, 18 * mib, ckpts)
    assert first.startswith("the next window carries 82.5 MiB of 64")
    # 18.5 MiB over: the two largest checkpoints go, the small one stays
    assert over.startswith("over the limit by 18.5 MiB: `--task=aside` sets results/'s CPU runs aside; still over, "
                           "move B_s1/checkpoint.pt, B_s2/checkpoint.pt out of"), over
    assert "C_s1" not in over and "epoch 0" in over
    # what can stay behind at no loss goes first (a finished run's, a .prev), then the packed folder's leftovers
    ckpts |= {"spare: B_s4/checkpoint.pt": 14 * mib, "spare: C_s1/checkpoint.prev.pt": mib // 2}
    _, over = gpu_window.carry_note(22 * mib, 18 * mib, ckpts, [".gpu/data"])
    assert "--task=pack again removes the packed folder's leftovers (.gpu/data)" in over, over
    assert "move B_s4/checkpoint.pt, C_s1/checkpoint.prev.pt, B_s1/checkpoint.pt, B_s2/checkpoint.pt out" in over
    _, over = gpu_window.carry_note(36 * mib, 18 * mib, {"spare: B_s4/checkpoint.pt": 14 * mib})
    assert over.endswith("move B_s4/checkpoint.pt out of the tree before the call"), over  # nothing lost


def test_aside_moves_the_cpu_runs_out_of_the_tree_and_back(tmp_path, monkeypatch):
    from harness.checkpoints import RunLock
    for name in ("s3-16k/B_s1", "nb201-16k/C_s1", "nb201-full/B_s1"):
        (tmp_path / "results" / name).mkdir(parents=True)
        (tmp_path / "results" / name / "history.json").write_text("[]")
    (tmp_path / "results" / "README.md").write_text("the results chapter")
    monkeypatch.setattr(gpu_window, "ROOT", str(tmp_path))
    monkeypatch.setattr(gpu_window, "ASIDE", str(tmp_path / ".aside"))
    cfg = gpu_window.WindowConfig(task="aside", runs_out="results/nb201-full", pack_dir=str(tmp_path / ".gpu"))
    assert [os.path.basename(f) for f in gpu_window.results_folders(  # a nested --runs_out keeps its parent
        gpu_window.WindowConfig(runs_out="results/s3-16k/B_s1"))] == ["nb201-16k", "nb201-full"]
    with RunLock(str(tmp_path / "results" / "s3-16k" / "B_s1")):  # a search still writes there: refused
        with pytest.raises(gpu_window.cli.ConfigError, match="in use by another run.*stop that run first"):
            gpu_window.set_aside(cfg)
    assert sorted(os.listdir(tmp_path / "results")) == ["README.md", "nb201-16k", "nb201-full", "s3-16k"]
    gpu_window.set_aside(cfg)  # the run ended (its lock file stays, released): the CPU runs go
    assert sorted(os.listdir(tmp_path / "results")) == ["README.md", "nb201-full"]  # the window's own runs stay
    assert (tmp_path / ".aside" / "results" / "s3-16k" / "B_s1" / "history.json").read_text() == "[]"
    (tmp_path / "results" / "s3-16k").mkdir()  # made again meanwhile: back refuses to merge
    with pytest.raises(gpu_window.cli.ConfigError, match="results/s3-16k exists again"):
        gpu_window.bring_back(cfg)
    (tmp_path / "results" / "s3-16k").rmdir()
    gpu_window.bring_back(cfg)
    assert sorted(os.listdir(tmp_path / "results")) == ["README.md", "nb201-16k", "nb201-full", "s3-16k"]
    assert (tmp_path / "results" / "nb201-16k" / "C_s1" / "history.json").exists()
    assert os.listdir(tmp_path / ".aside" / "results") == []


def test_table2_stops_at_its_limit_returns_its_files_and_the_next_window_continues(packed, tmp_path):
    runs_out = tmp_path / "window-tree" / "nb201-full"
    flags = ["--task=table2", "--size=tiny", "--device=cpu", f"--pack_dir={packed / 'pack'}", f"--runs_out={runs_out}",
             "--limit=30", "--reserve=5", "--every=3", "--jobs=2", "--seeds=1", "--epochs=500", "--compile=0"]
    r = window(*flags, f"--out={tmp_path / 'out1'}")
    assert r.returncode == 124, r.stderr  # the limit stopped it: 500 tiny epochs do not fit in 30 s (20 s left no room
    # for both searches to start beside other CPU-bound work on two cores)
    files = returned(tmp_path / "out1")
    assert {"window.md", "window.log", "runs.tar.gz", "checkpoints.tar.gz.0"} <= files
    md = (tmp_path / "out1" / "window.md").read_text()
    assert "stopped at the limit" in md and "| B_s1 |" in md and "| C_s1 |" in md
    with tarfile.open(tmp_path / "out1" / "runs.tar.gz") as tar:
        names = tar.getnames()
    assert {"nb201-full/B_s1/history.json", "nb201-full/C_s1/config.json", "nb201-full/table.md"} <= set(names)
    assert not [n for n in names if "checkpoint" in n]
    with tarfile.open(tmp_path / "out1" / "checkpoints.tar.gz.0") as tar:
        assert sorted(tar.getnames()) == ["nb201-full/B_s1/checkpoint.pt", "nb201-full/C_s1/checkpoint.pt"]

    # back here: unpack into a fresh tree (another machine), run the same command there: it continues
    here = tmp_path / "here" / "nb201-full"
    r = window("--task=unpack", f"--out={tmp_path / 'out1'}", f"--runs_out={here}")
    assert r.returncode == 0, r.stderr
    assert "the next window carries" in r.stderr and "2 checkpoint(s)" in r.stderr, r.stderr
    first = epochs_done(here, "C_s1")
    assert len(first) >= 1 and (here / "C_s1" / "checkpoint.pt").exists()
    flags[flags.index(f"--runs_out={runs_out}")] = f"--runs_out={here}"
    r = window(*flags, f"--out={tmp_path / 'out2'}")
    assert r.returncode == 124, r.stderr
    returned(tmp_path / "out2")
    again = epochs_done(here, "C_s1")
    assert len(again) > len(first) and again[: len(first)] == first  # continued, the first epochs kept
    assert "resum" in (here / "C_s1" / "log.txt").read_text()


def test_check_task_returns_the_checks_summary(packed, tmp_path):
    # run from another folder, with a relative --out: read from here, though the check itself runs in ROOT
    r = window("--task=check", "--size=tiny", "--device=cpu", f"--pack_dir={packed / 'pack'}", "--only=bench_C_eager",
               "--out=out", "--limit=200", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    files = returned(tmp_path / "out")
    assert files == {"window.md", "window.log", "summary.md", "summary.json", "check.tar.gz"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == ["env", "bench_C_eager"] and summary["passed"] == 2


@pytest.mark.parametrize("args, words", [
    (["--task=fly"], "--task=fly"),
    (["--task=table2", "--pack_dir=/nonexistent-pack", "--out=OUTDIR"], "no packed data"),
    (["--task=check"], "--out"),
    (["--task=unpack", "--out=EMPTY"], "no runs.tar.gz"),
])
def test_bad_input_is_one_line(args, words, tmp_path, capsys, monkeypatch):
    """In this process, through cli.run as the script's command line does (the packing fixture and the tasks
    above run it as a subprocess)."""
    (tmp_path / "empty").mkdir()
    args = [a.replace("OUTDIR", str(tmp_path / "o")).replace("EMPTY", str(tmp_path / "empty")) for a in args]
    monkeypatch.delenv("OUT", raising=False)
    with pytest.raises(SystemExit) as e:
        gpu_window.cli.run(gpu_window.main, args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_a_pack_refuses_bad_input_in_one_line_before_it_touches_the_pack_folder(tmp_path, capsys, monkeypatch):
    """Found here, not in the window: no data folder, a table that is not NB201's, or a pack folder that is the
    checkout, holds it, or holds the data (packing clears the folder first). In this process, through cli.run
    as the script's command line does; the pack folder's files are all still there after each refusal."""
    make_image_folder(tmp_path / "images", classes=2, train_per_class=1, test_per_class=1)
    write_nb201_table(tmp_path / "nb201.csv")
    (tmp_path / "other.csv").write_text("index,arch\n")
    (tmp_path / "pack").mkdir()
    (tmp_path / "pack" / "images.tar.gz").write_text("an earlier pack")
    monkeypatch.delenv("OUT", raising=False)
    images, table = f"--data={tmp_path / 'images'}", f"--bench201={tmp_path / 'nb201.csv'}"
    cases = [([f"--data={tmp_path}", table, f"--pack_dir={tmp_path / 'pack'}"], "no train/ folder"),
             ([images, f"--bench201={tmp_path / 'other.csv'}", f"--pack_dir={tmp_path / 'pack'}"], "header is not")]
    cases += [([images, table, f"--pack_dir={d}"], "give a folder of its own") for d in (ROOT, os.path.dirname(ROOT), tmp_path)]
    for args, words in cases:
        with pytest.raises(SystemExit) as e:
            gpu_window.cli.run(gpu_window.main, ["--task=pack", *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and words in err and len(err.strip().splitlines()) == 1, (args, err)
        assert (tmp_path / "pack" / "images.tar.gz").read_text() == "an earlier pack"
    assert os.path.isfile(os.path.join(ROOT, "README.md")) and (tmp_path / "nb201.csv").is_file()


def test_a_pack_skips_files_that_move_under_it(tmp_path):
    """Searches write atomically (name.tmpPID, then a rename) and rotate checkpoints while the window packs:
    an in-flight temporary file and a file gone since the listing are left out, not an error."""
    import io
    (tmp_path / "history.json").write_text("[]")
    (tmp_path / "checkpoint.pt.tmp123").write_bytes(b"half")
    data = gpu_window._tar([(str(tmp_path / "history.json"), "run/history.json"),
                            (str(tmp_path / "checkpoint.pt.tmp123"), "run/checkpoint.pt.tmp123"),
                            (str(tmp_path / "gone.pt"), "run/gone.pt")])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["run/history.json"]


def test_a_later_pack_removes_the_checkpoint_parts_it_no_longer_writes(tmp_path, monkeypatch):
    """Packs run every --every seconds into the same OUT: when a run finishes, its checkpoint leaves the
    pack and the parts shift down; the earlier pack's last part must go, or unpacking it after the newer
    ones would put an older checkpoint over a newer one."""
    monkeypatch.setattr(gpu_window, "PART_BYTES", 1000)  # a part per checkpoint
    runs_out, out = tmp_path / "nb201-full", tmp_path / "out"
    out.mkdir()
    for name in ("B_s1", "C_s1"):
        (runs_out / name).mkdir(parents=True)
        (runs_out / name / "history.json").write_text("[{}]")
        (runs_out / name / "checkpoint.pt").write_bytes(name.encode() * 200)
    (tmp_path / "child.log").write_text("log\n")
    cfg = gpu_window.WindowConfig(task="table2", out=str(out), runs_out=str(runs_out), epochs=2)
    cfg.child = ["sweep.py"]
    gpu_window.pack_results(cfg, str(tmp_path / "work"), str(tmp_path / "child.log"), "running", 0)
    assert {"checkpoints.tar.gz.0", "checkpoints.tar.gz.1"} <= set(os.listdir(out))
    (runs_out / "B_s1" / "history.json").write_text("[{}, {}]")  # B_s1 finished: its checkpoint is not packed
    (runs_out / "B_s1" / "genotype.json").write_text("{}")
    gpu_window.pack_results(cfg, str(tmp_path / "work"), str(tmp_path / "child.log"), "running", 0)
    assert "checkpoints.tar.gz.1" not in returned(out)
    with tarfile.open(out / "checkpoints.tar.gz.0") as tar:
        assert tar.getnames() == ["nb201-full/C_s1/checkpoint.pt"]
