"""What every run script shares: config from `--key=value`, device, seeding, the run log, atomic
checkpoints with RNG state, evaluation, and the torchrun/DDP setup.

search.py, train.py and bench.py import these; nothing here knows about architectures. The config is
a dataclass per script (defaults = the paper's values); `parse_config` applies overrides and rejects
unknown keys and badly typed values in one line, like nanoGPT's configurator but without exec.
"""
import dataclasses
import json
import math
import os
import random
import sys
import time
import typing

import torch
import torch.nn.functional as F


class ConfigError(ValueError):
    pass


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


def cli(main, argv=None):
    """Run `main(argv)`; user errors (bad config, data, arch) end as one line on stderr, exit 2."""
    try:
        return main(argv)
    except (ValueError, FloatingPointError, FileNotFoundError, FileExistsError, NotADirectoryError) as e:
        if os.environ.get("RFDARTS_DEBUG"):
            raise
        msg = " ".join(str(e).split())  # one line, whatever the message held
        print(f"error: {msg} (RFDARTS_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the last epoch-end checkpoint is intact; rerun with --resume=1",
              file=sys.stderr)
        sys.exit(130)


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


def save_checkpoint(path, obj):
    """Write atomically: a crash or SIGKILL mid-write leaves the previous checkpoint intact."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic on POSIX and Windows


def write_json(path, obj):
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def load_checkpoint(path, device="cpu"):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    # Checkpoints hold tensors, numbers, strings and lists only, so the safe loader suffices.
    return torch.load(path, map_location=device, weights_only=True)


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
            with open(self.path, "a") as f:
                f.write(line + "\n")


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


def as_dict(cfg):
    """A config dataclass as a plain dict (for config.json and checkpoints)."""
    return dataclasses.asdict(cfg)
