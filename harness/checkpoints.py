"""A run's files on disk and how a run stops: atomic writes, rotated checkpoints, preemption.

Owns `atomic_write` (every file a run writes goes through a temporary file and a rename, so a reader, a
crash or a full disk never sees half a file), `write_json` / `read_json`, `out_dir`, the checkpoints
(`save_checkpoint`, `load_checkpoint`, `has_checkpoint`, `previous_path`, `last_complete`), what a run
folder was run with (`saved_settings`), `record_session` (config.json with one entry per session),
`check_finite` (a non-finite state is never checkpointed), `RunLock` (one run per output folder) and
`StopSignals`.
Checkpoints rotate (`checkpoint.pt` -> `checkpoint.prev.pt`, both complete files written through a
temporary file and a rename), and `load_checkpoint` falls back to the older one when the newest is
damaged (cut short, not loadable, or a record whose bytes fail the zip's CRC-32, which torch.load ignores).
`StopSignals` turns SIGTERM / SIGINT (what SLURM, Kubernetes and spot instances send) into a flag the loops
poll between steps, so a preempted run writes a step-level checkpoint and resumes exactly.
Write errors (disk full, no permission, a file where a folder should be) are one cli.WriteError line
naming the path and the OS reason; cli.run turns them into exit 1, a stop into exit 128 + signum.

search.py, train.py, analysis.py and imagenet_subset.py import these; built on cli.py (its error types)
and ddp.py (the barrier), nothing here knows about architectures. No equation of the paper: the fault handling that
README.md's "When things go wrong" describes.
"""
import contextlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
import zipfile

import torch

from harness import cli, ddp


class CheckpointError(cli.ConfigError):
    """No readable checkpoint to resume from; the message names every file tried and why."""


def atomic_write(path, write, mode="wb", keep=None, hint=""):
    """Write `path` through `write(file)`: into `path.tmpPID` first (flushed, fsynced), then renamed over
    `path`, so a reader, a crash or a full disk never sees half a file. `keep`: move the current `path`
    there first (rotation). A failure removes the temporary file, unless it is complete and `path` is gone
    (rotated away): then it becomes `path` (a second Ctrl-C between the renames loses nothing); an OS error
    becomes one WriteError line naming `path` and the reason (+ `hint`)."""
    tmp, complete = f"{path}.tmp{os.getpid()}", False
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        complete = True
        if keep:  # a crash between the two renames leaves `keep` (complete) and no `path`: load finds it
            os.replace(path, keep)
        os.replace(tmp, path)  # atomic on POSIX and Windows
        _sync_folder(path)
    except BaseException as e:  # also a signal or Ctrl-C mid-write: no debris, and no finished file lost
        if complete and not os.path.exists(path):
            with contextlib.suppress(OSError):
                os.replace(tmp, path)
        if not complete or os.path.exists(path):
            with contextlib.suppress(OSError):
                os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, cli.WriteError):
            raise cli.write_error(path, e, hint) from e
        raise


def _sync_folder(path):
    """fsync the folder holding `path` (POSIX): the renames are then on disk too, not only the file's bytes, so
    after a power loss the newest checkpoint is there under its name. A file system that refuses it: skipped
    (the file is written; only its durability against a power loss is the file system's)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def previous_path(path):
    """checkpoint.pt -> checkpoint.prev.pt: where save_checkpoint keeps the one before."""
    root, ext = os.path.splitext(path)
    return f"{root}.prev{ext}"


def has_checkpoint(path):
    return os.path.isfile(path) or os.path.isfile(previous_path(path))


def auto_resume(argv, default_out):
    """`--resume=auto` -> `--resume=1` where the run's folder (the last --out, else `default_out`) holds a
    checkpoint, else `--resume=0`: one command line for a job a scheduler restarts as it was (torchrun
    --max-restarts, SLURM --requeue), with --resume=1 / 0's checks (a finished run is never started over)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--resume=auto" not in argv:
        return argv
    out = ([a.split("=", 1)[1] for a in argv if a.startswith("--out=")] or [default_out])[-1]
    flag = "--resume=1" if has_checkpoint(os.path.join(out, "checkpoint.pt")) else "--resume=0"
    return [flag if a == "--resume=auto" else a for a in argv]


RESULTS = ("history.json", "metrics.json")  # what a run wrote of its own: per epoch, or once at its end


def refuse_overwrite(out):
    """A new run into `out` where an earlier one left results but no checkpoint (a finished run's is often
    removed, as in results/) would overwrite them: FileExistsError, one line. Called where a new run is
    refused over a checkpoint (`--resume=1` continues that one)."""
    found = [name for name in RESULTS if os.path.isfile(os.path.join(out, name))]
    if found:
        raise FileExistsError(f"{out} holds an earlier run's {' and '.join(found)} and no checkpoint to continue: a "
                              "new run there would overwrite them; give another --out")


def last_complete(path):
    """The newest complete checkpoint file of `path` (itself, else previous_path(path)), or None."""
    return next((p for p in (path, previous_path(path)) if _complete(p)), None)


def _complete(path):
    """A whole torch file: its zip directory there (not for a missing or cut file), every record's CRC-32 right."""
    return zipfile.is_zipfile(path) and not _failed_crc(path)


def save_checkpoint(path, obj):
    """Write `obj` atomically to `path`, keeping the checkpoint it replaces as previous_path(path).

    Only a complete torch file is kept (the zip directory at its end is present, each record's CRC-32 right)
    and never one this process's load_checkpoint skipped as unusable (a whole zip can still fail to load): a
    damaged `path` that a resume skipped is overwritten, never rotated over the good older file. A failed
    write names the complete checkpoint that is left, or says there is none."""
    last = last_complete(path)
    keep = previous_path(path) if last == path and os.path.abspath(path) not in _SKIPPED else None
    # the OS reason before it says what to mend (no space, no permission, a folder in the way)
    hint = (f"; the last complete checkpoint, {last}, is intact: mend that, then --resume=1" if last else
            "; no earlier checkpoint exists: mend that, then run again")
    atomic_write(path, lambda f: torch.save(obj, f), keep=keep, hint=hint)
    _SKIPPED.discard(os.path.abspath(path))  # a good file now: the next save rotates it


def check_finite(loss_sum, path, where, model=None, lower="--lr"):
    """Stop with a FloatingPointError line, before anything is written, when a loss sum is NaN/Inf or (with
    `model`) a parameter is: a checkpoint never holds a non-finite state. The line names the file that
    holds the last good state (the checkpoint at `path`, else the one before it), or says there is none,
    and what to `lower`. Parameters only: they are the same on every DDP rank, so all ranks stop together (one host sync)."""
    finite = math.isfinite(loss_sum)
    if finite and model is not None:
        finite = bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())
    if finite:
        return
    last = last_complete(path)
    # Not "resume with a lower --lr": a resume keeps the run's settings (else a sweep's rerun, which passes
    # its own flags, would quietly undo the change), so it would diverge again.
    kept = (f"the last good state is in {last} (a resume keeps the run's settings): lower {lower} and start "
            "again in a new --out" if last else f"no checkpoint was written before: lower {lower} and start again")
    raise FloatingPointError(f"non-finite loss or weights {where}: stopping without writing a checkpoint; {kept}")


def write_json(path, obj):
    """Write JSON atomically (a reader never sees half a file)."""
    atomic_write(path, lambda f: json.dump(obj, f, indent=1), mode="w")


def read_json(path):
    """A JSON file a run wrote (config.json, ...); a damaged one is one ConfigError line naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:  # JSONDecodeError (truncated), UnicodeDecodeError (binary)
        raise cli.ConfigError(f"{path} is damaged ({type(e).__name__}: {cli.one_line(e)[:80]}); restore it, "
                               "or start afresh with another --out") from None


def saved_settings(out, name="checkpoint.pt"):
    """The settings of the run in folder `out`: its config.json, else (a folder that holds only a
    checkpoint) the config its newest readable checkpoint was written with; None if neither is there
    (an unreadable checkpoint is left for the resume to report)."""
    path = os.path.join(out, "config.json")
    if os.path.isfile(path):
        return read_json(path)
    for p in (os.path.join(out, name), previous_path(os.path.join(out, name))):
        ckpt = _read_checkpoint(p, "cpu", ("config",))[0] if os.path.isfile(p) else None
        if ckpt is not None:
            return ckpt["config"]
    return None


def _read_checkpoint(path, device, required):
    """-> (checkpoint, None) or (None, why it cannot be used)."""
    if os.path.getsize(path) == 0:
        return None, "an empty file"
    if not zipfile.is_zipfile(path):  # torch.save writes a zip whose directory is at the end: cut short, or
        with open(path, "rb") as f:   # no torch file at all (torch.load's own error for a cut file varies)
            return None, "truncated or damaged" if f.read(2) == b"PK" else "not a torch checkpoint"
    bad = _failed_crc(path)
    if bad:
        return None, f"damaged (its record {bad} fails its CRC-32)"
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise for a file we refuse
            warnings.simplefilter("ignore")
            # Checkpoints hold tensors, numbers, strings and lists only, so the safe loader suffices.
            ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001  every way torch.load can fail means "not usable"
        text = str(e)
        if "zip archive" in text or "central directory" in text or isinstance(e, EOFError):
            return None, "truncated or damaged"
        if "Weights only load failed" in text or "load key" in text:
            return None, "not a torch checkpoint"
        return None, f"{type(e).__name__}: {cli.one_line(e)[:120]}"
    missing = [k for k in required if not isinstance(ckpt, dict) or k not in ckpt]
    return (None, f"not a checkpoint of this script (no {', '.join(missing)})") if missing else (ckpt, None)


def _failed_crc(path):
    """The first record of the zip at `path` whose bytes do not match the CRC-32 torch.save wrote for it, else
    None. torch.load does not check these: a flipped bit in a tensor's record (a bad disk, a bad copy) loads as
    a slightly wrong weight, and the run would go on from it. Reading the file once more costs ~20 ms per 60 MB."""
    record = "?"
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                record = info.filename
                if info.CRC == 0 and info.file_size:  # torch >= 2.6 saving with compute_crc32 off: none to check
                    continue
                with z.open(info) as f:  # zipfile compares the record's CRC-32 when it reaches the record's end
                    while f.read(1 << 22):
                        pass
        return None
    except Exception as e:  # noqa: BLE001  a bad CRC (BadZipFile), or a header zipfile cannot follow: damage
        return record if isinstance(e, zipfile.BadZipFile) else f"{record} ({type(e).__name__})"


# The checkpoint files load_checkpoint found unusable in this process (absolute paths): the next save there
# overwrites such a file instead of rotating it over the older, good one it resumed from.
_SKIPPED = set()


def load_checkpoint(path, device="cpu", required=(), log=None):
    """The newest readable of `path` and previous_path(path). Falling back to the older one is said in
    one line (to `log`, else stderr); when neither is usable, a CheckpointError names both files."""
    if not has_checkpoint(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    skipped = []
    for p in (path, previous_path(path)):
        ckpt, why = _read_checkpoint(p, device, required) if os.path.isfile(p) else (None, "missing")
        if ckpt is None:
            skipped.append(f"{p} is {why}")
            if os.path.isfile(p):
                _SKIPPED.add(os.path.abspath(p))
            continue
        _SKIPPED.discard(os.path.abspath(p))
        if skipped:
            (log or (lambda m: print(m, file=sys.stderr)))(
                f"resuming from the older checkpoint {p} (epoch {ckpt.get('epoch')}, step "
                f"{ckpt.get('step', 0)}): {skipped[0]}")
        return ckpt
    raise CheckpointError(f"cannot resume: {skipped[0]} and {skipped[1]}; nothing was overwritten. Start "
                          "afresh with another --out (or without --resume=1 after moving them away)")


def out_dir(path):
    """Create the output folder. An empty name or a file of that name is the user's to fix (ConfigError, exit
    2); what the system refuses (permission, a full disk) is one WriteError line (exit 1)."""
    if not path:
        raise cli.ConfigError("--out is empty: name the output folder")
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:  # a file where the folder (or one above) must be
        raise cli.ConfigError(f"cannot create the output folder {path}: {e.strerror}; name another --out") from e
    except OSError as e:
        raise cli.write_error(path, e, what="cannot create the output folder") from e
    return path


def record_session(out, settings, start, resumed, run_keys, log, schedule="the lr schedule", saved=None):
    """Write OUT/config.json: this session's `settings`, plus a "sessions" list (one entry per session:
    the epoch it started from, when, and the values of the `run_keys` a resume may change), so what each
    epoch followed stays recoverable. A resume that changes `epochs` is said in one line: the epochs
    from `start` on follow `schedule` of the new length. Ending before `start` is refused. `saved`: the
    checkpoint's config, what a resume without config.json knows of the earlier sessions."""
    path = os.path.join(out, "config.json")
    old = (read_json(path) if os.path.isfile(path) else dict(saved or {})) if resumed else {}
    sessions = old.get("sessions") or ([{"from_epoch": 0, **{k: old[k] for k in run_keys if k in old}}]
                                       if old else [])
    if old and old.get("epochs") != settings["epochs"]:
        if settings["epochs"] < start:
            raise cli.ConfigError(f"--epochs={settings['epochs']}: this run has done {start} epochs already")
        log(f"--epochs changed from {old.get('epochs')} to {settings['epochs']} on resume: epochs "
            f"{start + 1}-{settings['epochs']} follow {schedule} of a {settings['epochs']}-epoch run, epochs "
            f"1-{start} followed {old.get('epochs')} (config.json keeps each session)")
    sessions.append({"from_epoch": start, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                     **{k: settings[k] for k in run_keys if k in settings}})
    write_json(path, {**settings, "sessions": sessions})


class RunBusy(cli.ConfigError):
    """Another run holds the output folder."""


def refuse_if_busy(folder):
    """RunBusy (one line naming the holder's pid) when another process runs in `folder`; nothing for a
    folder that does not exist. The check before a run starts (sweeps, a resume), made with RunLock."""
    if os.path.isdir(folder):
        with RunLock(folder):
            pass


def remove_stale_temporaries(out):
    """Remove atomic_write's `NAME.tmpPID` files in `out` whose process is gone (killed mid-write: kill -9, the
    OOM killer); each can be a full-size checkpoint, so repeated preemptions would fill the disk. Called under
    the run's lock; a live process's file is kept."""
    for name in os.listdir(out):
        match = re.fullmatch(r".+\.tmp(\d+)", name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(out, name))


def _alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):  # none; a number no pid can be
        return False
    except PermissionError:  # another user's process
        return True
    return True


_HELD = set()  # the file descriptors of this process's RunLocks


def _drop_held_locks():
    """In a forked child (a DataLoader worker): point each held lock's descriptor at /dev/null. A flock belongs
    to the open file, which the fork shares, so a child would otherwise hold the run's lock past a kill -9 of
    the run (until it noticed and exited); its own copy of the Python file object stays harmless."""
    if not _HELD:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    for fd in _HELD:
        os.dup2(null, fd)
    os.close(null)
    _HELD.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_drop_held_locks)


class RunLock:
    """One run per output folder: an exclusive lock on OUT/.lock for the run's life (`with`).

    fcntl.flock belongs to the open file, so the kernel releases it when the process ends, however it
    ends (SIGKILL and crashes included), and forked children do not keep it (_drop_held_locks): a lock is
    never left stale. A second run into a busy folder stops at once with one line naming the folder and the
    holder's pid. Under DDP only rank 0 locks (enabled=False elsewhere). Without fcntl (Windows) there is no lock."""

    def __init__(self, out, enabled=True):
        self.path, self.enabled, self.file = os.path.join(out, ".lock"), enabled, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        if not self.enabled:
            return self
        try:
            self.file = open(self.path, "a+", encoding="utf-8")
        except OSError as e:
            raise cli.write_error(self.path, e) from e
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            pid = self.file.read().strip() or "unknown"
            self.file.close()
            raise RunBusy(f"{os.path.dirname(self.path) or '.'} is in use by another run (pid {pid}); "
                          "wait for it to end, or pass another --out") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()
        _HELD.add(self.file.fileno())
        remove_stale_temporaries(os.path.dirname(self.path) or ".")
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            _HELD.discard(self.file.fileno())
            self.file.close()  # closing the file releases the lock; the file stays (removing it would race)


# Under DDP a stop waits for the next poll; torchrun SIGKILLs its workers 30 s after it forwards a SIGTERM
# or Ctrl-C (its agent's shutdown timeout), so polls come at least this often (seconds, rank 0's pace).
STOP_WITHIN_S = 5.0
SAME_CTRL_C_S = 1.0  # a second SIGINT sooner than this after the first is the same Ctrl-C (see StopSignals)


class StopSignals:
    """SIGTERM / SIGINT handling for a whole run (`with`; the previous handlers come back on exit).

    While `armed` (the training loop), a signal is only recorded: the loop polls `requested()` between
    steps, writes a checkpoint and calls `stop()`, which raises Preempted (one line, exit 128 + signum).
    A second Ctrl-C stops at once (also after a SIGTERM), unless within SAME_CTRL_C_S of the first: that is
    the same keypress delivered twice (torchrun forwards the SIGINT its process group already got). Unarmed (set-up, final evaluation), SIGTERM stops
    at once (nothing is half done) and SIGINT is a KeyboardInterrupt. Under DDP the ranks agree (an
    all-reduce per poll), so all stop after the same step."""

    def __init__(self, world=1, device="cpu", poll_every=10):
        self.signum, self.world, self.device, self.saved, self.armed = 0, world, device, {}, False
        self.interrupted = False  # a Ctrl-C came (the first one while armed is only recorded)
        self._ctrl_c_at, self._clock = 0.0, time.monotonic  # when it came
        # Poll from the first steps on, until rank 0 has a pace: a session's first steps can be slow (compiling,
        # CPU DDP), and torchrun's SIGKILL 30 s after a stop must not come before its first poll.
        self.poll_every, self.max_every = 1, poll_every
        self._last = None  # (step, time.monotonic()) of the last poll (or first step): rank 0's pace

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread
            for s in (signal.SIGTERM, signal.SIGINT):
                self.saved[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self.saved.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.interrupted and self._clock() - self._ctrl_c_at < SAME_CTRL_C_S:
            return  # one keypress twice: the terminal signals the process group, and torchrun forwards it too
        again = signum == signal.SIGINT and self.interrupted
        if signum == signal.SIGINT and not self.interrupted:
            self.interrupted, self._ctrl_c_at = True, self._clock()
        if self.armed and not again:
            self.signum = self.signum or signum
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            cli.stop_now(signum, frame)

    def requested(self, step=None):
        """The signal number when a stop was asked for (on any rank), else 0. Under DDP the ranks agree
        through an all-reduce and a host sync, so a loop asks with its step number and only every
        `poll_every`-th step polls (a stop then waits at most that many steps); without a step it polls.
        `poll_every` is at most `max_every` and shrinks with slow steps: rank 0 proposes, with each poll,
        as many steps as take STOP_WITHIN_S at its pace since the last poll (0 where it has none), and the
        same all-reduce (MAX; the other ranks put 0) gives every rank that number."""
        if self.world == 1:
            return self.signum
        now, every = time.monotonic(), 0
        if step is not None and self._last is None:
            self._last = (step, now)  # the pace counts from the first step asked about
        if step is not None and step % self.poll_every:
            return 0
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if rank == 0 and step is not None and self._last is not None and step > self._last[0]:
            per_step = (now - self._last[1]) / (step - self._last[0])
            every = max(1, min(self.max_every, int(STOP_WITHIN_S / max(per_step, 1e-9))))
        t = torch.tensor([self.signum, every], device=self.device)
        torch.distributed.all_reduce(t, torch.distributed.ReduceOp.MAX)
        signum, every = t.tolist()
        self.poll_every = int(every) or self.poll_every
        self._last = (step, now) if step is not None else None  # a poll without a step: an epoch's end
        return int(signum)

    def stop(self, where, path, written=True):
        """Raise Preempted once rank 0 has written `path` (the others wait for it); `written=False`: this stop
        wrote nothing, and the checkpoint already at `path` is what a resume continues from."""
        ddp.barrier(self.world)
        signum = self.requested()
        kept = (f"checkpoint written to {path}" if written else  # the last one may be checkpoint.prev.pt: no file named
                f"nothing written, the last checkpoint in {os.path.dirname(path) or '.'} stands")
        raise cli.Preempted(f"stopped by {signal.Signals(signum).name} {where}: {kept}; "
                            f"continue with --resume=1 --out={os.path.dirname(path) or '.'}", signum)
