"""Faults a cluster or a laptop produces end as one line, never a traceback, and lose nothing:
damaged checkpoints (fallback to checkpoint.prev.pt), SIGTERM mid-epoch (step checkpoint, exact resume),
unreadable images (in memory: all listed; streaming: the first one), a full disk (faked ENOSPC), damaged
genotype / benchmark files, and the first-run download decision (torchvision faked, no network).
Each case runs the real scripts (main through cli.run, or a subprocess) on tiny synthetic data."""
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
import torch
from conftest import make_image_folder

import bench201
import search
from harness import checkpoints, cli, data, stream, train_run
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCH = ["--dataset=imagefolder", "--C=4", "--batch_size=1", "--log_every=1", "--space=nb201",
          "--layers=1", "--epochs=2", "--seed=7", "--device=cpu"]  # 12 steps per epoch


def run_cli(main, argv, capsys):
    """Run a script's main as its command line does -> (exit code, stderr lines)."""
    capsys.readouterr()
    try:
        cli.run(main, argv)
        code = 0
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in err), err
    return code, err


def load(path):
    return torch.load(path, weights_only=True)


def assert_same_run(out_a, out_b):
    a, b = load(os.path.join(out_a, "checkpoint.pt")), load(os.path.join(out_b, "checkpoint.pt"))
    assert a["epoch"] == b["epoch"] and a.get("step", 0) == b.get("step", 0) == 0
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    if "history" in a:  # every epoch's losses, accuracies (search: softmax(alpha), genotype); not its timing
        drop = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}  # noqa: E731
                             for r in rows]
        assert drop(a["history"]) == drop(b["history"])


def truncate(path):
    with open(path, "rb") as f:
        head = f.read()
    with open(path, "wb") as f:
        f.write(head[: len(head) // 2])


@pytest.fixture(scope="module")
def reference(tiny_folder, tmp_path_factory):
    """An uninterrupted 2-epoch search: checkpoint.pt (epoch 2) and the rotated checkpoint.prev.pt (1)."""
    out = str(tmp_path_factory.mktemp("reference"))
    search.search(search.make_config(SEARCH + [f"--data={tiny_folder}", f"--out={out}"]))
    assert load(os.path.join(out, "checkpoint.prev.pt"))["epoch"] == 1
    return out


# search.py's command line with each weight step followed by 0.3 s of sleep (the same numbers, slower): a test that
# signals it after a step has seconds to do so, however loaded the machine, before the run ends by itself
SLOW_SEARCH = """import sys, time
import search
from harness import cli
step = search.weight_step
search.weight_step = lambda *a, **k: (step(*a, **k), time.sleep(0.3))[0]
cli.run(search.main, sys.argv[1:])
"""


def test_search_sigterm_mid_epoch_then_resume_is_bit_identical(reference, tiny_folder, tmp_path, capsys):
    out = tmp_path / "preempted"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SEARCH, *SEARCH, f"--data={tiny_folder}", f"--out={out}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # a real SIGTERM, as SLURM sends it, early in epoch 1 (~7 s of steps left)
        if "epoch 1 step 1/12" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out_text, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.count("\n") == 1 and err.startswith("stopped by SIGTERM in epoch "), err
    ckpt = load(out / "checkpoint.pt")
    assert 0 < ckpt["step"] < 12 and f"in epoch {ckpt['epoch'] + 1} after step {ckpt['step']}/12:" in err
    assert run_cli(search.main, [f"--out={out}", "--resume=1"], capsys) == (0, [])
    e, k = ckpt["epoch"], ckpt["step"]
    assert f"resumed after epoch {e}, step {k} of epoch {e + 1}" in (out / "log.txt").read_text()
    assert_same_run(reference, out)


def test_search_damaged_checkpoints(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    truncate(out / "checkpoint.pt")  # e.g. copied while being written: the older one takes over
    assert checkpoints.last_complete(str(out / "checkpoint.pt")) == str(out / "checkpoint.prev.pt")
    assert run_cli(search.main, [f"--out={out}", "--resume=1"], capsys) == (0, [])
    assert "resuming from the older checkpoint" in (out / "log.txt").read_text()
    assert "checkpoint.pt is truncated or damaged" in (out / "log.txt").read_text()
    assert_same_run(reference, out)
    assert load(out / "checkpoint.prev.pt")["epoch"] == 1  # the damaged file was not rotated over it
    (out / "checkpoint.pt").write_text("x\n")  # not a torch file at all
    truncate(out / "checkpoint.prev.pt")
    before = [(out / n).read_bytes() for n in ("checkpoint.pt", "checkpoint.prev.pt")]
    assert checkpoints.last_complete(str(out / "checkpoint.pt")) is None
    code, err = run_cli(search.main, [f"--out={out}", "--resume=1"], capsys)
    assert code == 2 and len(err) == 1, err
    assert f"{out}/checkpoint.pt is not a torch checkpoint and {out}/checkpoint.prev.pt is truncated" in err[0]
    assert before == [(out / n).read_bytes() for n in ("checkpoint.pt", "checkpoint.prev.pt")]
    (out / "checkpoint.prev.pt").unlink()  # a run directory from before rotation: checkpoint.pt only
    (out / "checkpoint.pt").write_bytes(b"")
    code, err = run_cli(train.main, [f"--out={out}", "--resume=1"], capsys)
    assert code == 2 and len(err) == 1 and "checkpoint.pt is an empty file and" in err[0], err
    assert "checkpoint.prev.pt is missing" in err[0]


def test_a_whole_zip_that_does_not_load_is_never_rotated_over_the_checkpoint_resumed_from(reference, tmp_path, capsys):
    """A checkpoint.pt whose zip is whole but whose pickle is damaged (is_zipfile cannot tell): the resume falls
    back to checkpoint.prev.pt, and the next save overwrites the damaged file instead of rotating it over that
    older one, the only good file left."""
    import zipfile
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    with zipfile.ZipFile(out / "checkpoint.pt") as z:
        entries = [(i, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(out / "checkpoint.pt", "w") as z:
        for info, body in entries:  # the pickle zeroed, every other record as it was
            z.writestr(info, bytes(len(body)) if info.filename.endswith("data.pkl") else body)
    assert zipfile.is_zipfile(out / "checkpoint.pt")
    assert run_cli(search.main, [f"--out={out}", "--resume=1"], capsys) == (0, [])
    assert "resuming from the older checkpoint" in (out / "log.txt").read_text()
    assert_same_run(reference, out)
    assert load(out / "checkpoint.prev.pt")["epoch"] == 1  # the good older file is still there
    assert run_cli(search.main, [f"--out={out}", "--resume=1", "--epochs=3"], capsys) == (0, [])
    assert load(out / "checkpoint.prev.pt")["epoch"] == 2  # and rotation works again from the next save on


def test_a_flipped_bit_in_a_tensor_record_is_caught_by_its_crc(reference, tmp_path, capsys):
    """torch.load does not check the zip's CRC-32s: a checkpoint.pt with one bit flipped inside a tensor loads
    as slightly wrong weights. Here the resume refuses it by its CRC, takes checkpoint.prev.pt, ends as the
    uninterrupted run, and the damaged file is not rotated over that older one."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    record = flip_a_tensor_bit(out / "checkpoint.pt")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2  # loads without complaint
    assert checkpoints.last_complete(str(out / "checkpoint.pt")) == str(out / "checkpoint.prev.pt")
    assert run_cli(search.main, [f"--out={out}", "--resume=1"], capsys) == (0, [])
    log = (out / "log.txt").read_text()
    assert "resuming from the older checkpoint" in log and f"its record {record} fails its CRC-32" in log
    assert_same_run(reference, out)
    assert load(out / "checkpoint.prev.pt")["epoch"] == 1


def flip_a_tensor_bit(path):
    """One bit flipped in the middle of the largest tensor record of the torch zip at `path`; the zip stays whole."""
    import struct
    import zipfile
    with zipfile.ZipFile(path) as z:
        record = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    body = bytearray(open(path, "rb").read())
    name_len, extra_len = struct.unpack("<HH", body[record.header_offset + 26:record.header_offset + 30])
    body[record.header_offset + 30 + name_len + extra_len + record.file_size // 2] ^= 0x10
    open(path, "wb").write(bytes(body))
    return record.filename


def test_a_save_never_rotates_a_checkpoint_that_fails_its_crc_over_the_good_one(tmp_path):
    """No resume in between (the damage came while the run ran): the next save overwrites the damaged
    checkpoint.pt and keeps checkpoint.prev.pt, the last good file."""
    path = str(tmp_path / "checkpoint.pt")
    for epoch in (1, 2):
        checkpoints.save_checkpoint(path, {"epoch": epoch, "w": torch.arange(1000.0)})
    flip_a_tensor_bit(path)
    checkpoints.save_checkpoint(path, {"epoch": 3, "w": torch.arange(1000.0)})
    assert load(path)["epoch"] == 3 and load(checkpoints.previous_path(path))["epoch"] == 1


@pytest.mark.skipif(not hasattr(torch.serialization, "set_crc32_options"), reason="torch < 2.6 always writes CRCs")
def test_a_checkpoint_saved_without_crcs_loads(tmp_path):
    """torch >= 2.6 can save without computing CRC-32s (they are then 0): nothing to check, not damage."""
    path = str(tmp_path / "checkpoint.pt")
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        checkpoints.save_checkpoint(path, {"epoch": 1, "w": torch.arange(1000.0)})
    finally:
        torch.serialization.set_crc32_options(before)
    assert checkpoints._failed_crc(path) is None and checkpoints.last_complete(path) == path
    assert checkpoints.load_checkpoint(path, required=("epoch",))["epoch"] == 1


def test_a_ctrl_c_between_the_rotations_two_renames_loses_no_checkpoint(tmp_path, monkeypatch):
    """save_checkpoint renames checkpoint.pt to checkpoint.prev.pt, then the new file into place; an interrupt
    between the two leaves the new, complete file as checkpoint.pt (and no temporary file)."""
    path = str(tmp_path / "checkpoint.pt")
    checkpoints.save_checkpoint(path, {"epoch": 1})
    real = os.replace

    def replace(src, dst):
        real(src, dst)
        if dst.endswith(".prev.pt"):
            raise KeyboardInterrupt  # a second Ctrl-C, right after the rotation
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load(path)["epoch"] == 2 and load(checkpoints.previous_path(path))["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.prev.pt", "checkpoint.pt"]


def test_a_forked_worker_does_not_keep_the_run_lock_past_a_kill_of_the_run(tmp_path):
    """A streaming run's DataLoader workers are forked; a flock belongs to the open file the fork shares, so a
    worker would hold OUT/.lock until it noticed its parent's kill -9 and exited. Here the child outlives the
    killed run: the folder is free at once all the same."""
    script = (f"import os, signal, time, sys\nsys.path.insert(0, {ROOT!r})\nfrom harness.checkpoints import RunLock\n"
              f"with RunLock({str(tmp_path)!r}):\n    child = os.fork()\n"
              "    if child == 0:\n        time.sleep(60)\n        os._exit(0)\n"
              "    print(child, flush=True)\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    assert proc.wait() == -signal.SIGKILL
    try:
        with checkpoints.RunLock(str(tmp_path)):  # RunBusy while the child held it
            assert os.path.exists(f"/proc/{child}") or sys.platform != "linux"  # the child does live on
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_save_syncs_the_file_then_its_folder(tmp_path, monkeypatch):
    """The bytes reach the disk before the rename, and the folder after it (its entries: the renames), so a
    power loss leaves the newest checkpoint under its name, not only in a lost directory update."""
    import stat
    synced, real = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real(fd))[1])
    checkpoints.save_checkpoint(str(tmp_path / "checkpoint.pt"), {"epoch": 1})
    assert synced == [False, True]


def test_a_run_removes_the_temporary_files_of_writers_killed_mid_write(tmp_path):
    """A kill -9 during a save leaves `checkpoint.pt.tmpPID` (a full-size file); the next run into the folder
    removes those of dead processes when it takes the lock, and keeps a live process's and other files."""
    dead = 2 ** 22 + 1  # above Linux's largest pid: no process has it
    names = [f"checkpoint.pt.tmp{dead}", f"history.json.tmp{dead}", f"checkpoint.pt.tmp{os.getpid()}", "notes.tmp",
             "checkpoint.pt"]
    for name in names:
        (tmp_path / name).write_text("x")
    with checkpoints.RunLock(str(tmp_path)):
        assert sorted(os.listdir(tmp_path)) == sorted([".lock", *names[2:]])


def test_disk_full_keeps_the_last_checkpoint(reference, tiny_folder, tmp_path, capsys, monkeypatch):
    out, save, calls = tmp_path / "full", torch.save, [0]

    def save_until_full(obj, f):  # the second checkpoint (epoch 2) hits a full disk half-way
        calls[0] += 1
        if calls[0] == 2:
            buf = io.BytesIO()
            save(obj, buf)
            f.write(buf.getvalue()[: buf.tell() // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        save(obj, f)

    monkeypatch.setattr(torch, "save", save_until_full)
    code, err = run_cli(search.main, SEARCH + [f"--data={tiny_folder}", f"--out={out}"], capsys)
    monkeypatch.undo()
    assert code == 1 and len(err) == 1, err
    assert f"could not write {out}/checkpoint.pt: No space left on device" in err[0]
    assert "checkpoint.pt" in os.listdir(out) and not [n for n in os.listdir(out) if ".tmp" in n]
    assert load(out / "checkpoint.pt")["epoch"] == 1
    assert run_cli(search.main, [f"--out={out}", "--resume=1"], capsys) == (0, [])
    assert_same_run(reference, out)
    (tmp_path / "file").write_text("")  # --out on or under a file, or empty: the user's to fix, one line, exit 2
    for bad in (tmp_path / "file" / "run", tmp_path / "file"):
        code, err = run_cli(search.main, SEARCH + [f"--data={tiny_folder}", f"--out={bad}"], capsys)
        assert code == 2 and len(err) == 1 and f"cannot create the output folder {bad}: " in err[0], err
    code, err = run_cli(search.main, SEARCH + [f"--data={tiny_folder}", "--out="], capsys)
    assert code == 2 and err == ["error: --out is empty: name the output folder (RFDARTS_DEBUG=1 shows the traceback)"]


def test_train_sigterm_mid_epoch_then_resume_is_bit_identical(tiny_folder, tmp_path, capsys, monkeypatch):
    # DARTS cell with drop path (random from epoch 2 on), cutout and the aux head; SIGTERM in epoch 2
    common = ["--arch=DARTS_V2", "--dataset=imagefolder", f"--data={tiny_folder}", "--C=4", "--layers=3",
              "--batch_size=4", "--subset=16", "--epochs=2"]
    train.main(common + [f"--out={tmp_path / 'straight'}"])
    real = train_run.batches

    def signalled(loader, *args):
        for i, batch in enumerate(real(loader, *args)):
            if loader.train and loader.epoch == 1 and i == 1:
                os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled while step 2 runs
            yield batch

    monkeypatch.setattr(train_run, "batches", signalled)
    code, err = run_cli(train.main, common + [f"--out={tmp_path / 'split'}"], capsys)
    monkeypatch.undo()
    assert code == 128 + signal.SIGTERM and err[0].startswith("stopped by SIGTERM in epoch 2 after step 2/4")
    assert len(err) == 1 and load(tmp_path / "split" / "checkpoint.pt")["step"] == 2
    assert run_cli(train.main, [f"--out={tmp_path / 'split'}", "--resume=1"], capsys) == (0, [])
    assert_same_run(tmp_path / "straight", tmp_path / "split")
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("straight", "split"))
    assert a.pop("seconds") > 0 and b.pop("seconds") > 0 and a == b  # train/test loss, accuracy, digest


def test_unreadable_images_are_listed_before_training(tiny_folder, tmp_path, capsys):
    root = tmp_path / "folder"
    shutil.copytree(tiny_folder, root)
    (root / "train" / "class0" / "broken.jpg").write_text("x\n")
    truncate(root / "train" / "class2" / "3.png")
    argv = SEARCH + [f"--data={root}", "--batch_size=4", "--epochs=1"]
    code, err = run_cli(search.main, argv + [f"--out={tmp_path / 'a'}"], capsys)
    assert code == 2 and len(err) == 1, err
    assert "2 of 25 images are unreadable" in err[0]
    assert f"{root}/train/class0/broken.jpg (not an image)" in err[0]
    assert f"{root}/train/class2/3.png" in err[0] and not (tmp_path / "a" / "checkpoint.pt").exists()
    code, err = run_cli(train.main, ["--arch=DARTS_V2", f"--data={root}", "--dataset=imagefolder",
                                 f"--out={tmp_path / 't'}"], capsys)
    assert code == 2 and len(err) == 1 and "2 of 25 images are unreadable" in err[0], err
    code, err = run_cli(search.main, argv + [f"--out={tmp_path / 'b'}", "--skip_bad_images=1"], capsys)
    assert code == 0 and len(err) == 1 and err[0].startswith("warning: leaving out 2 of 25 images"), err
    assert load(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1


def test_streaming_loader_is_a_function_of_seed_epoch_and_batch(tmp_path):
    root = make_image_folder(tmp_path / "big", classes=2, train_per_class=5, test_per_class=1, size=72)
    files, labels, _ = data.folder_files(root, True)

    def epoch(workers, start=0):
        loader = stream.folder_loader(files, labels, 4, True, size=16, workers=workers, seed=4)
        loader.set_epoch(1, start)
        return [b for b in loader]

    rng = torch.get_rng_state()
    full = epoch(0)
    assert torch.equal(rng, torch.get_rng_state())  # the training process's RNG is left alone
    resumed = epoch(2, start=1)  # with worker processes, from batch 1 on: the same batches
    assert [len(y) for _, y in full] == [4, 4, 2] and len(resumed) == 2
    assert all(torch.equal(a, b) for got, want in zip(resumed, full[1:]) for a, b in zip(got, want))
    loader = stream.folder_loader(files, labels, 4, True, size=16, workers=0, seed=4)
    batches = loader.forever(start_step=len(loader) + 1)
    assert all(torch.equal(next(batches)[0], b[0]) for b in full[1:])
    threes = stream.folder_loader(files, labels, 3, True, size=16, workers=0, seed=4)  # 10 = 3 + 3 + 3 + 1:
    assert len(threes) == 3 and [len(y) for _, y in threes] == [3, 3, 3]  # the one-image batch is dropped


def test_streaming_loader_leaves_an_unreadable_file_out_of_its_batch_with_skip_bad(tmp_path, capsys):
    root = make_image_folder(tmp_path / "big", classes=2, train_per_class=5, test_per_class=1, size=72)
    files, labels, _ = data.folder_files(root, True)
    with open(files[3], "w") as f:
        f.write("x\n")

    def epoch(e, start=0, skip_bad=True, loader=None):
        loader = loader or stream.folder_loader(files, labels, 4, True, size=16, workers=0, seed=4, skip_bad=skip_bad)
        loader.set_epoch(e, start)
        return [b for b in loader]

    with pytest.raises(data.DatasetError, match=f"{files[3]}: unreadable image .*replace it with a readable copy"):
        epoch(0, skip_bad=False)
    capsys.readouterr()
    loader = stream.folder_loader(files, labels, 4, True, size=16, workers=0, seed=4, skip_bad=True)
    fulls = [epoch(e, loader=loader) for e in (0, 1)]  # batches of 4, 4, 2 less the one unreadable image
    assert [(len(full), sum(len(y) for _, y in full)) for full in fulls] == [(3, 9), (3, 9)]
    warning = f"warning: {files[3]}: unreadable image (not an image), left out of its batch (--skip_bad_images=1)"
    assert capsys.readouterr().err.splitlines() == [warning]  # once per loader, not once per epoch
    for e, full in enumerate(fulls):  # the short batch is a function of the files: a resume continues exactly
        resumed = epoch(e, start=1)
        assert len(resumed) == 2 and all(torch.equal(a, b) for got, want in zip(resumed, full[1:]) for a, b in zip(got, want))
    for f in files:  # nothing readable in a batch: one line, not an empty batch
        with open(f, "w") as fh:
            fh.write("x\n")
    with pytest.raises(data.DatasetError, match="as is every image of its batch"):
        epoch(0)


def test_streaming_search_sigterm_resume_and_bad_image(tmp_path, capsys, monkeypatch):
    root = tmp_path / "imagenet"
    make_image_folder(root, classes=2, train_per_class=10, test_per_class=1, size=224)
    argv = ["--space=s2", "--dataset=imagenet", f"--data={root}", "--C=4", "--layers=3", "--batch_size=2",
            "--epochs=2", "--arch_start=0", "--workers=0", "--weight_frac=0.4", "--arch_frac=0.2"]
    search.search(search.make_config(argv + [f"--out={tmp_path / 'straight'}"]))
    real, calls = search.gradient_step, [0]

    def signalled(*args, **kwargs):  # 2 updates per step: SIGTERM during step 3 of 4 in epoch 2
        calls[0] += 1
        if calls[0] == 13:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(search, "gradient_step", signalled)
    out = tmp_path / "split"
    code, err = run_cli(search.main, argv + [f"--out={out}"], capsys)
    monkeypatch.undo()
    assert code == 128 + signal.SIGTERM and err == [err[0]] and "in epoch 2 after step 3/4" in err[0], err
    assert run_cli(search.main, [f"--out={out}", "--resume=1"], capsys) == (0, [])
    assert_same_run(tmp_path / "straight", out)
    # a file damaged later: the streaming loader names it, the last checkpoint stays as it was
    bad = next(line for line in (out / "subset_weights.txt").read_text().splitlines()
               if not line.startswith("# ")).split("\t")[0]  # its first image (after the header)
    (root / bad).write_text("x\n")
    code, err = run_cli(search.main, [f"--out={out}", "--resume=1", "--epochs=3"], capsys)
    assert code == 2 and len(err) == 1 and f"{root / bad}: unreadable image (not an image)" in err[0], err
    assert load(out / "checkpoint.pt")["epoch"] == 2


class FakeCIFAR10:
    """torchvision.datasets.CIFAR10 without a network: 'downloads' by writing the files it checks."""
    calls, online = [], True

    def __init__(self, root, train=True, download=False):
        FakeCIFAR10.calls.append(download)
        folder = os.path.join(root, "cifar-10-batches-py")
        if download:
            if not FakeCIFAR10.online:
                raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
            os.makedirs(folder)
            for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
                open(os.path.join(folder, name), "w").close()
        rng = np.random.default_rng(int(train))
        self.data = rng.integers(0, 256, (24 if train else 6, 32, 32, 3), dtype=np.uint8)
        self.targets = rng.integers(0, 10, len(self.data)).tolist()


def test_first_run_downloads_unless_told_not_to(tmp_path, capsys, monkeypatch):
    import torchvision
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    argv = ["--dataset=cifar10", f"--data={tmp_path / 'data'}", "--C=4", "--layers=1", "--batch_size=4",
            "--epochs=1"]
    code, err = run_cli(search.main, argv + [f"--out={tmp_path / 'a'}", "--download=0"], capsys)
    assert code == 2 and len(err) == 1 and FakeCIFAR10.calls == [], err  # never asked torchvision
    assert f"--download=0; put cifar-10-batches-py/ into {tmp_path / 'data'} (from https://" in err[0]
    code, err = run_cli(train.main, ["--arch=|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "--C=4",
                                 "--layers=1", f"--data={tmp_path / 'data'}", f"--out={tmp_path / 't'}",
                                 "--download=0"], capsys)
    assert code == 2 and len(err) == 1 and "cifar10 not found" in err[0], err
    FakeCIFAR10.online = False
    code, err = run_cli(search.main, argv + [f"--out={tmp_path / 'b'}"], capsys)
    assert code == 2 and err[0].startswith("downloading cifar10") and len(err) == 2, err
    assert "could not download cifar10" in err[1] and "offline? put cifar-10-batches-py/ into" in err[1]
    FakeCIFAR10.online, FakeCIFAR10.calls = True, []
    assert run_cli(search.main, argv + [f"--out={tmp_path / 'c'}"], capsys)[0] == 0
    assert FakeCIFAR10.calls[0] is True and not any(FakeCIFAR10.calls[1:])  # downloaded once, then read
    FakeCIFAR10.calls = []
    assert run_cli(search.main, argv + [f"--out={tmp_path / 'd'}"], capsys) == (0, [])
    assert not any(FakeCIFAR10.calls)  # the files are there: no download


def test_damaged_genotype_and_benchmark_files(tmp_path, capsys):
    torch.save({"a": torch.zeros(100)}, tmp_path / "bench.pth")
    truncate(tmp_path / "bench.pth")
    (tmp_path / "empty.csv").write_text("")
    for path in (tmp_path / "bench.pth", tmp_path / "empty.csv"):
        assert bench201.main([str(path), "--index", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0], err
    (tmp_path / "g.json").write_text('{"cell": "nb')
    (tmp_path / "g.bin").write_bytes(b"\x89PNG\r\n\x1a\n")
    for path in (tmp_path / "g.json", tmp_path / "g.bin"):
        code, err = run_cli(train.main, [f"--genotype={path}", f"--out={tmp_path / 'o'}"], capsys)
        assert code == 2 and len(err) == 1 and str(path) in err[0], err


def test_a_console_that_cannot_encode_the_tables_symbols_gets_them_escaped():
    """Tables and logs print α, ±, ✓: on an ASCII (or cp1252) console or pipe they come out escaped, not
    as a UnicodeEncodeError traceback at the end of a finished run."""
    code = "from harness import cli; cli.run(lambda argv: print('α 93.32 ± 0.13 ✓'))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                          env={**os.environ, "PYTHONIOENCODING": "ascii"}, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-500:]
    assert proc.stdout.decode("ascii").strip() == "\\u03b1 93.32 \\xb1 0.13 \\u2713"


def test_a_stop_whose_clean_up_fails_still_ends_as_the_stop(capsys):
    # A SIGTERM or Ctrl-C inside a lazy import (torch's first optimizer imports torch._dynamo) leaves it half
    # made; clean-up that needs it then raises too. The user asked to stop: one line, exit 128 + N, no traceback.
    def stopped_in_set_up(signum):
        def main(argv):
            try:
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                cli.stop_now(signum, None)
            finally:
                raise AttributeError("module 'sympy' has no attribute 'logic'")  # the half-made import
        return main

    code, err = run_cli(stopped_in_set_up(signal.SIGTERM), [], capsys)
    assert code == 128 + signal.SIGTERM and len(err) == 1 and err[0].startswith("stopped by SIGTERM"), err
    code, err = run_cli(stopped_in_set_up(signal.SIGINT), [], capsys)
    assert code == 130 and len(err) == 1 and "if one was written" in err[0], err  # no checkpoint promised

    def sweep_summary(argv):  # a stop the code re-raises with its own message (sweep.py, retrain_sweep.py)
        try:
            raise cli.Preempted("", signal.SIGTERM)
        except cli.Preempted as e:
            raise cli.Preempted("sweep stopped by SIGTERM: rerun the same command", e.signum) from None
    assert run_cli(sweep_summary, [], capsys) == (143, ["sweep stopped by SIGTERM: rerun the same command"])

    def bug(argv):  # a clean-up failure that follows no stop stays a bug: its traceback is kept
        try:
            raise ValueError("a user error")
        finally:
            raise AttributeError("a bug")
    with pytest.raises(AttributeError):
        cli.run(bug, [])
