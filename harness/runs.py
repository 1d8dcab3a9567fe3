"""What every run script shares: config from `--key=value`, device, seeding, RNG state, the run log,
the lr schedule, evaluation and torch.compile (the torchrun/DDP plumbing is ddp.py's).

The user's faults end as one line (`cli`): bad input (spaces.InputError and its subclasses here and
in harness/) exits 2, a failed read or write (disk full, no permission) or running out of GPU memory 1,
naming the path and the OS reason (WriteError), a stop signal 128 + its number (Preempted). Any other
exception is a bug and keeps its traceback. Atomic, rotated checkpoints and the stop signals of the training loops are checkpoints.py's,
built on these error types.

search.py, train.py, analysis.py, bench.py, plot.py and checkpoints.py import these; nothing here knows
about architectures. The config is a dataclass per script (defaults = the paper's values); `parse_config`
applies overrides and rejects unknown keys and badly typed values in one line, like nanoGPT's
configurator but without exec; `check_ranges` refuses a numeric setting outside its range (each script
declares a RANGES dict), `pick_device` a device this machine does not have.
"""
import dataclasses
import math
import os
import random
import signal
import sys
import threading
import time
import typing

import torch
import torch.nn.functional as F

from spaces import InputError


class ConfigError(InputError):
    """A bad command-line flag or a setting that contradicts another."""


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


def differing(settings, saved, allowed=()):
    """The keys of `settings` outside `allowed` whose value differs from `saved` (sorted); a key `saved`
    lacks (a run from before that setting existed) is not compared."""
    return sorted(k for k in settings if k not in allowed and k in saved and saved[k] != settings[k])


def resumed_config(cls, saved, argv, allowed):
    """A resumed run's config: the saved one, with the command line's values for the `allowed` keys
    (epochs, out, device, ...). Changing any other key would silently mix two experiments: an error."""
    cfg, given = parse_config(cls, argv), explicit_keys(argv)
    changed = differing({k: getattr(cfg, k) for k in given}, saved, allowed)
    if changed:
        raise ConfigError(f"--resume=1 continues a run with its saved settings, but you changed "
                          f"{', '.join(changed)} (only {', '.join(sorted(allowed))} may change)")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in saved.items() if k in names}, **{k: getattr(cfg, k) for k in given}})


SEED_RANGE = "[0, 4294967296)"  # what every RNG here takes (numpy's too); seeds + rank stay inside


def check_ranges(cfg, ranges):
    """Refuse a setting outside its range, in one ConfigError line naming the flag and the range.

    `ranges`: key -> the interval as a string, in the usual notation: "(0, inf)" (a learning rate),
    "[0, 1)" (momentum), "[1, inf)" (epochs). A value of None (an optional setting left unset) passes.
    NaN lies in no interval."""
    for key, interval in ranges.items():
        value = getattr(cfg, key)
        if value is None:
            continue
        low, high = (float(v) for v in interval[1:-1].split(","))
        above = value > low if interval[0] == "(" else value >= low
        below = value < high if interval[-1] == ")" else value <= high
        if not (above and below):
            raise ConfigError(f"--{key}={value}: out of range, must lie in {interval}")


def one_line(e):
    return " ".join(str(e).split())  # one line, whatever the message held


def stop_now(signum, frame):
    """SIGTERM outside a training loop (set-up, final evaluation): nothing is half done, stop at once."""
    raise Preempted(f"stopped by {signal.Signals(signum).name} outside the training steps: nothing was lost; "
                    f"rerun (with --resume=1 where OUT/checkpoint.pt exists)", signum)


def user_errors():
    """The exceptions that are the user's mistake, not a bug: bad flags, names, files or data (InputError
    and bench201's file/query errors), a failed read or write (OSError: disk full, no permission,
    missing file) and a loss gone non-finite (FloatingPointError: lower the learning rate)."""
    import bench201  # dependency-free, so it keeps its own error types
    return (InputError, bench201.BenchmarkFileError, bench201.QueryError, OSError, FloatingPointError)


def cli(main, argv=None):
    """Run `main(argv)`; the user's faults end as one line on stderr: bad input (flags, data, arch, a
    damaged checkpoint, a busy output folder) exits 2, a failed read/write (disk full, permission) 1, a
    stop signal 128 + signum. Any other exception is a bug and keeps its traceback (exit 1)."""
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, stop_now) if main_thread else None  # loops: checkpoints.StopSignals
    try:
        return main(argv)
    except Preempted as e:
        print(one_line(e), file=sys.stderr)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is intact; rerun with --resume=1", file=sys.stderr)
        sys.exit(130)
    except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError) as e:  # not a bug: what to lower
        print(f"error: out of memory ({one_line(e).split(' Tried')[0][:120]}): lower --batch_size (the global "
              "batch; under torchrun each process takes batch/N), --C or --layers, or run on more GPUs",
              file=sys.stderr)
        sys.exit(1)
    except user_errors() as e:
        if os.environ.get("RFDARTS_DEBUG"):
            raise
        print(f"error: {one_line(e)} (RFDARTS_DEBUG=1 shows the traceback)", file=sys.stderr)
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
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device={name}: {e}") from None
    # refused here, in one line, rather than as torch's traceback at the first .to(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device={name}: this machine has no CUDA device (or this torch has no CUDA "
                          "support); use --device=auto or --device=cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device={name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"--device={name}: MPS is not available here; use --device=auto or --device=cpu")
    return device


def tune_for(device):
    """Fixed input shapes on CUDA: let cuDNN pick the fastest conv algorithms once per shape (as DARTS'
    and PC-DARTS' scripts do). Not bit-reproducible across runs on CUDA (README says so)."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


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
    if "cuda" in state and torch.cuda.is_available():  # saved with more GPUs visible: the first ones
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def write_error(path, e, hint="", what="could not write"):
    """OSError `e` on `path` as one WriteError line (what, path, the OS reason, `hint`), errno kept."""
    err = WriteError(f"{what} {path}: {e.strerror or one_line(e)}{hint}")
    err.errno = e.errno
    return err


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
                raise write_error(self.path, e) from e


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
