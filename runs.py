"""What every run script shares: config from `--key=value`, device, seeding, the run log, atomic
checkpoints with RNG state, evaluation, and the torchrun/DDP setup.

Faults end as one line, never a traceback (`cli`): bad input exits 2, a failed write (disk full, no
permission) 1 and names the path and the OS reason, a stop signal 128 + its number. Checkpoints rotate
(`checkpoint.pt` -> `checkpoint.prev.pt`, both complete files written through a temporary file and a
rename), and `load_checkpoint` falls back to the older one when the newest is damaged. `StopSignals`
turns SIGTERM / SIGINT (what SLURM, Kubernetes and spot instances send) into a flag the loops poll
between steps, so a preempted run writes a step-level checkpoint and resumes exactly.

search.py, train.py and bench.py import these; nothing here knows about architectures. The config is
a dataclass per script (defaults = the paper's values); `parse_config` applies overrides and rejects
unknown keys and badly typed values in one line, like nanoGPT's configurator but without exec.
"""
import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
import typing
import warnings
import zipfile

import torch
import torch.nn.functional as F


class ConfigError(ValueError):
    pass


class CheckpointError(ValueError):
    """No readable checkpoint to resume from; the message names every file tried and why."""


class WriteError(OSError):
    """A write that failed (disk full, no permission, a file where a folder should be)."""


class Preempted(Exception):
    """A stop signal ended the run cleanly (after its checkpoint, if one was due); `cli` exits 128 + signum."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum


def _convert(name, text, typ):
    """Convert the string `text` to the annotated type `typ` of config field `name`."""
    args = typing.get_args(typ)
    if type(None) in args:  # "int | None" and friends: "none" means None
        if text.lower() == "none":
            return None
        typ = next(a for a in args if a is not type(None))
    try:
        if typ is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return typ(text)
    except ValueError:
        tname = getattr(typ, "__name__", str(typ))
        raise ConfigError(f"--{name}={text}: expected a value of type {tname}") from None


def parse_config(cls, argv=None, **defaults):
    """Build dataclass `cls` from `--key=value` strings (default: sys.argv[1:]).

    `defaults` are applied before argv (scripts use them for per-setting defaults).
    """
    argv = sys.argv[1:] if argv is None else argv
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = dict(defaults)
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"bad argument {arg!r}: use --key=value (keys: {', '.join(fields)})")
        key, text = arg[2:].split("=", 1)
        key = key.replace("-", "_")
        if key not in fields:
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(fields)}")
        values[key] = _convert(key, text, hints[key])
    return cls(**values)


def explicit_keys(argv=None):
    """The keys given on the command line (so per-setting defaults never override a user's value)."""
    argv = sys.argv[1:] if argv is None else argv
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--") and "=" in a}


def resumed_config(cls, saved, argv, allowed):
    """A resumed run's config: the saved one, with the command line's values for the `allowed` keys
    (epochs, out, device, ...). Changing any other key would silently mix two experiments: an error."""
    cfg, given = parse_config(cls, argv), explicit_keys(argv)
    changed = sorted(k for k in given - set(allowed) if getattr(cfg, k) != saved.get(k, getattr(cfg, k)))
    if changed:
        raise ConfigError(f"--resume=1 continues a run with its saved settings, but you changed "
                          f"{', '.join(changed)} (only {', '.join(sorted(allowed))} may change)")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in saved.items() if k in names}, **{k: getattr(cfg, k) for k in given}})


def _one_line(e):
    return " ".join(str(e).split())  # one line, whatever the message held


def _stop_now(signum, frame):
    """SIGTERM outside a training loop (set-up, final evaluation): nothing is half done, stop at once."""
    raise Preempted(f"stopped by {signal.Signals(signum).name} outside the training steps: nothing was lost; "
                    f"rerun (with --resume=1 where OUT/checkpoint.pt exists)", signum)


def cli(main, argv=None):
    """Run `main(argv)`; every fault ends as one line on stderr: user errors (bad config, data, arch,
    damaged checkpoint) exit 2, failed reads/writes (disk full, permission) 1, a stop signal 128 + signum."""
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _stop_now) if main_thread else None  # loops use StopSignals
    try:
        return main(argv)
    except Preempted as e:
        print(_one_line(e), file=sys.stderr)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is intact; rerun with --resume=1", file=sys.stderr)
        sys.exit(130)
    except (ValueError, FloatingPointError, OSError) as e:
        if os.environ.get("RFDARTS_DEBUG"):
            raise
        print(f"error: {_one_line(e)} (RFDARTS_DEBUG=1 shows the traceback)", file=sys.stderr)
        usage = (ValueError, FloatingPointError, FileNotFoundError, FileExistsError, NotADirectoryError)
        sys.exit(2 if isinstance(e, usage) else 1)  # 1: the system refused a read or write
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old)


def pick_device(name="auto"):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device={name}: {e}") from None


def seed_everything(seed):
    random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def rng_state():
    """Everything random a run consumes, in a form torch.load(weights_only=True) accepts."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_error(path, e, hint="", what="could not write"):
    err = WriteError(f"{what} {path}: {e.strerror or _one_line(e)}{hint}")
    err.errno = e.errno
    return err


def atomic_write(path, write, mode="wb", keep=None, hint=""):
    """Write `path` through `write(file)`: into `path.tmpPID` first (flushed, fsynced), then renamed over
    `path`, so a reader, a crash or a full disk never sees half a file. `keep`: move the current `path`
    there first (rotation). Any failure removes the temporary file; an OS error becomes one WriteError
    line naming `path` and the reason (+ `hint`)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep:  # a crash between the two renames leaves `keep` (complete) and no `path`: load finds it
            os.replace(path, keep)
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException as e:  # also a signal or Ctrl-C mid-write: no debris
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise _write_error(path, e, hint) from e
        raise


def previous_path(path):
    """checkpoint.pt -> checkpoint.prev.pt: where save_checkpoint keeps the one before."""
    root, ext = os.path.splitext(path)
    return f"{root}.prev{ext}"


def has_checkpoint(path):
    return os.path.isfile(path) or os.path.isfile(previous_path(path))


def save_checkpoint(path, obj):
    """Write `obj` atomically to `path`, keeping the checkpoint it replaces as previous_path(path).

    Only a complete torch file is kept (the zip directory at its end is present): a damaged `path` that
    a resume skipped is overwritten, never rotated over the good older file."""
    keep = previous_path(path) if zipfile.is_zipfile(path) else None  # False when missing
    atomic_write(path, lambda f: torch.save(obj, f), keep=keep,
                 hint=f"; the last complete checkpoint is intact: free space, then --resume=1")


def write_json(path, obj):
    """Write JSON atomically (a reader never sees half a file)."""
    atomic_write(path, lambda f: json.dump(obj, f, indent=1), mode="w")


def read_json(path):
    """A JSON file a run wrote (config.json, ...); a damaged one is one ConfigError line naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:  # JSONDecodeError (truncated), UnicodeDecodeError (binary)
        raise ConfigError(f"{path} is damaged ({type(e).__name__}: {_one_line(e)[:80]}); restore it, or "
                          "start afresh with another --out") from None


def _read_checkpoint(path, device, required):
    """-> (checkpoint, None) or (None, why it cannot be used)."""
    if os.path.getsize(path) == 0:
        return None, "an empty file"
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
        return None, f"{type(e).__name__}: {_one_line(e)[:120]}"
    missing = [k for k in required if not isinstance(ckpt, dict) or k not in ckpt]
    return (None, f"not a checkpoint of this script (no {', '.join(missing)})") if missing else (ckpt, None)


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
            continue
        if skipped:
            (log or (lambda m: print(m, file=sys.stderr)))(
                f"resuming from the older checkpoint {p} (epoch {ckpt.get('epoch')}, step "
                f"{ckpt.get('step', 0)}): {skipped[0]}")
        return ckpt
    raise CheckpointError(f"cannot resume: {skipped[0]} and {skipped[1]}; nothing was overwritten. Start "
                          "afresh with another --out (or without --resume=1 after moving them away)")


def out_dir(path):
    """Create the output folder; a file in the way or a missing permission is one WriteError line."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise _write_error(path, e, what="cannot create the output folder") from e
    return path


class StopSignals:
    """SIGTERM / SIGINT handling for a whole run (`with`; the previous handlers come back on exit).

    While `armed` (the training loop), a signal is only recorded: the loop polls `requested()` between
    steps, writes a checkpoint and calls `stop()`, which raises Preempted (one line, exit 128 + signum).
    A second Ctrl-C stops at once. Unarmed (set-up, final evaluation), SIGTERM stops at once (nothing
    is half done) and SIGINT is a KeyboardInterrupt. Under DDP the ranks agree (an all-reduce per poll),
    so all stop after the same step."""

    def __init__(self, world=1, device="cpu"):
        self.signum, self.world, self.device, self.saved, self.armed = 0, world, device, {}, False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread
            for s in (signal.SIGTERM, signal.SIGINT):
                self.saved[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self.saved.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.armed and not (self.signum == signum == signal.SIGINT):
            self.signum = self.signum or signum
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            _stop_now(signum, frame)

    def requested(self):
        """The signal number when a stop was asked for (on any rank), else 0."""
        if self.world == 1:
            return self.signum
        t = torch.tensor([self.signum], device=self.device)
        torch.distributed.all_reduce(t, torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def stop(self, where, path):
        """Raise Preempted once rank 0 has written `path` (the others wait for it)."""
        barrier(self.world)
        signum = self.requested()
        raise Preempted(f"stopped by {signal.Signals(signum).name} {where}: checkpoint written to {path}; "
                        f"continue with --resume=1 --out={os.path.dirname(path) or '.'}", signum)


class Log:
    """Print a line and append it to OUT/log.txt (only on the main process under DDP)."""

    def __init__(self, out=None, enabled=True):
        self.path = os.path.join(out, "log.txt") if out and enabled else None
        self.enabled = enabled
        self.t0 = time.time()

    def __call__(self, msg):
        if not self.enabled:
            return
        line = f"[{time.time() - self.t0:8.1f}s] {msg}"
        print(line, flush=True)
        if self.path:
            try:
                with open(self.path, "a") as f:
                    f.write(line + "\n")
            except OSError as e:
                raise _write_error(self.path, e) from e


def cosine_lr(lr, epoch, epochs, lr_min=0.0, warmup=0):
    """The lr of an epoch: linear warm-up over `warmup` epochs, else cosine from lr to lr_min.

    The value CosineAnnealingLR(T_max=epochs, eta_min=lr_min) gives when stepped once per epoch; as a
    closed form of the epoch it needs no scheduler state in the checkpoint and extends cleanly.
    """
    if epoch < warmup:
        return lr * (epoch + 1) / warmup
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def evaluate(model, loader):
    """Mean cross-entropy and top-1 accuracy over `loader` (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in loader:
        logits = model(x)
        logits = logits[0] if isinstance(logits, tuple) else logits
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += y.numel()
    model.train(was_training)
    return loss_sum / max(n, 1), correct / max(n, 1)


def setup_distributed(device_name="auto"):
    """Read torchrun's environment; init the process group. Returns (rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, pick_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend, rank=rank, world_size=world)
    return rank, world, device


def barrier(world):
    """Wait for every DDP process (no-op in a single process)."""
    if world > 1:
        torch.distributed.barrier()


def as_dict(cfg):
    """A config dataclass as a plain dict (for config.json and checkpoints)."""
    return dataclasses.asdict(cfg)


def compile_model(model, enabled=True, device=None, backend="inductor"):
    """The callable a training loop runs its forward through: `model` itself, or torch.compile of it.

    The compiled module shares the parameters, buffers and state_dict of `model`, so optimisers and
    checkpoints keep using `model`. Shapes are static (dynamic=False: loaders drop the last partial
    batch), so one graph is traced per (train/eval mode, batch shape). On CUDA the graph is replayed
    through CUDA graphs (mode "reduce-overhead"): a new step is marked before every forward, which is
    safe because each step consumes its outputs (loss, logits) before the next forward runs.
    `backend="aot_eager"` traces the same graphs without generating kernels (the fast test suite uses it).
    """
    if not enabled:
        return model
    cuda = device is not None and torch.device(device).type == "cuda"
    mode = "reduce-overhead" if cuda and backend == "inductor" else None
    compiled = torch.compile(model, backend=backend, mode=mode, dynamic=False)
    if mode is None:
        return compiled

    def forward(x):
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(x)
    return forward
