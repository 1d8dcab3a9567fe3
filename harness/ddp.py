"""Data-parallel plumbing shared by search.py and train.py (torchrun, one process per GPU or CPU slot).

    torchrun --nproc_per_node=2 search.py ...      # the same scripts; every helper is a no-op for 1 process

What it owns: the process group (setup / teardown, which GPU each process takes, the long wait for
rank 0's data preparation), the parameters a network leaves without gradient (DDP must know them),
gradient averaging for steps that take gradients with torch.autograd.grad (which bypasses
DistributedDataParallel's hooks, so the scripts all-reduce explicitly), keeping rank 0's BN running
statistics, exact sums and gathers of per-rank numbers (an epoch's running loss and accuracy sums:
`StepSums`), and the checks that every rank ended with the same alpha and the same weights. No paper
equation lives here: data parallelism must not change what a step computes, only how many images it sees.
"""
import copy
import datetime
import hashlib
import inspect
import os

import torch
import torch.distributed as dist

from harness import cli, runs


# Rank 0 alone prepares data on a first run (a CIFAR download, the scan of an ImageNet folder for the
# subset lists) while the other ranks wait: on a gloo group of their own with this timeout, not on the
# default group, whose NCCL watchdog would end the run after its 10 minutes.
DATA_WAIT = datetime.timedelta(hours=2)
_DATA_GROUP = []  # the gloo group for that wait, made by setup


def setup(device_name="auto", backend="auto"):
    """Read torchrun's environment; init the process group. Returns (rank, world_size, device).

    backend: auto (NCCL on CUDA, gloo on the CPU) | nccl | gloo. On CUDA each process takes the GPU of
    its local rank; more processes on a node than GPUs is refused in one line (NCCL refuses two ranks
    on one GPU), unless backend=gloo, which shares them (process k on GPU k mod count). The process
    group is given this process's GPU (NCCL binds to it at once instead of guessing from the rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if backend not in ("auto", "nccl", "gloo"):
        raise cli.ConfigError(f"--ddp_backend={backend}: choose auto, nccl or gloo")
    if world == 1:
        return 0, 1, runs.pick_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = runs.pick_device(device_name)
    if device.type == "cuda":
        device = gpu_of(local, int(os.environ.get("LOCAL_WORLD_SIZE", world)), torch.cuda.device_count(),
                        backend == "gloo", rank)
        torch.cuda.set_device(device)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    params = inspect.signature(dist.init_process_group).parameters.values()  # device_id: torch >= 2.3
    bind = any(p.name == "device_id" or p.kind is p.VAR_KEYWORD for p in params)
    dist.init_process_group(backend, rank=rank, world_size=world,
                            **(dict(device_id=device if backend == "nccl" else None) if bind else {}))
    _DATA_GROUP[:] = [dist.new_group(backend="gloo", timeout=DATA_WAIT)]  # collective: every rank makes it
    return rank, world, device


def gpu_of(local, local_world, count, share, rank=0):
    """The GPU of the process with this local rank: its own, or with `share` (gloo) local mod count.
    More processes on this node than GPUs without `share`: one ConfigError line on rank 0 (the other
    ranks exit 2 without repeating it; torchrun then stops them all)."""
    if local_world > count and not share:
        if rank:
            raise SystemExit(2)
        raise cli.ConfigError(
            f"torchrun started {local_world} processes on this node but {count} GPU(s) are visible: use "
            f"--nproc_per_node={count} (one process per GPU; NCCL refuses two on one GPU), or --ddp_backend=gloo "
            f"to share the GPUs (slower collectives)")
    if count == 0:
        raise cli.ConfigError("--device=cuda under torchrun, but no GPU is visible")
    return torch.device("cuda", local % count)


def teardown(world):
    if world > 1:
        _DATA_GROUP.clear()
        dist.destroy_process_group()


def per_process_batch(batch_size, world):
    """--batch_size is the global batch: each of `world` processes takes batch_size / world of it."""
    if batch_size % world:
        raise cli.ConfigError(f"--batch_size={batch_size} is the global batch: it must divide over "
                               f"{world} processes")
    return batch_size // world


def barrier(world):
    """Wait for every process (no-op in a single process)."""
    if world > 1:
        dist.barrier()


def wait_for_rank0(world):
    """The other ranks wait while rank 0 prepares data (downloads, folder scans): a barrier on the gloo
    group `setup` made, with DATA_WAIT's timeout (no-op in a single process)."""
    if world > 1:
        dist.barrier(group=_DATA_GROUP[0] if _DATA_GROUP else None)


def average_grads(grads, bucket_mb=25):
    """Average gradients over ranks in place (None entries, unused parameters, are skipped).

    Flattened into buckets of about `bucket_mb` MB (DistributedDataParallel's default size), one
    all_reduce per bucket: the DARTS supernet has hundreds of small tensors, one call each would be
    hundreds of collectives per step."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world, bucket, size = dist.get_world_size(), [], 0
    todo = [g for g in grads if g is not None]
    for i, g in enumerate(todo):
        bucket.append(g)
        size += g.numel() * g.element_size()
        if size >= bucket_mb * 2**20 or i == len(todo) - 1:
            flat = torch._utils._flatten_dense_tensors(bucket)
            dist.all_reduce(flat)
            flat.div_(world)
            for g_, v in zip(bucket, torch._utils._unflatten_dense_tensors(flat, bucket)):
                g_.copy_(v)
            bucket, size = [], 0


def unused_parameters(model, example):
    """Names of the trainable parameters that one training forward and backward of `model` on `example`
    leaves without a gradient. DistributedDataParallel must be told of them (find_unused_parameters),
    else it stops at step 2 waiting for their gradients: a DARTS cell that never reads input state 0
    (or only through `noise`, which ignores its input) leaves that preprocessing layer out. (NB201's
    `none` is x * 0, which keeps a zero gradient path.) Runs on a copy, with the RNG forked, so the
    model, its BN statistics and the run's random draws are untouched."""
    probe = copy.deepcopy(model).train()
    with torch.random.fork_rng(devices=[example.device] if example.is_cuda else []):
        out = probe(example)
        sum(o.float().sum() for o in (out if isinstance(out, tuple) else (out,)) if o is not None).backward()
    return [n for n, p in probe.named_parameters() if p.requires_grad and p.grad is None]


def gather_rng(world):
    """Every rank's RNG state, in rank order (what a checkpoint keeps; collective under DDP)."""
    return all_gather(runs.rng_state(), world)


def restore_rng(saved, rank, world):
    """Set this rank's RNG from a checkpoint's gather_rng list (or one state, as older runs saved it).
    Returns False, changing nothing, when another number of processes saved it."""
    saved = [saved] if isinstance(saved, dict) else saved
    if len(saved) != world:
        return False
    runs.set_rng_state(saved[rank])
    return True


def keep_rank0_buffers(model, world):
    """Each rank updated BN running statistics on its own shard: give every rank rank 0's."""
    if world > 1:
        for b in model.buffers():
            dist.broadcast(b, 0)


def check_ranks_agree(tensors, what="alpha"):
    """Every rank must hold the same tensors (they saw the same averaged gradients)."""
    for t in tensors:
        ref = t.detach().clone()
        dist.broadcast(ref, 0)
        if not torch.equal(ref, t.detach()):
            raise RuntimeError(f"{what} differs between DDP ranks: gradient averaging is broken")


def all_sum(values, device, world):
    """Element-wise sum of a list of numbers over ranks, in float64 (exact for counts and loss sums).

    The float64 tensor lives where every backend has float64: on the GPU for NCCL (which reduces GPU
    tensors only), else on the CPU (gloo reduces CPU tensors); MPS, which has no float64, never holds it."""
    if world == 1:
        return [float(v) for v in values]
    on = device if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(t)
    return t.tolist()


class StepSums:
    """An epoch's running sums of (loss * images, correct, images) in `groups` triples (search.py: the
    weight and the alpha steps), exact and on any device. A step's mean loss and correct count stay on
    the device (`add` appends them as one float32 pair: no host sync per step); `local` brings the pending
    steps to the host in one transfer and adds them in step order in Python floats (float64). So the sums
    are exact, the same wherever they are read (a resumed epoch adds exactly as an uninterrupted one),
    and no device needs float64 (MPS has none). float32 holds a step's values exactly: the loss is float32
    already, a count of correct predictions is below 2^24. `saved`: the sums a mid-epoch checkpoint kept."""

    def __init__(self, device, groups=1, saved=None):
        self.device = device
        self.sums = [0.0] * (3 * groups) if saved is None else [float(v) for v in saved]
        self._pending = []  # (first slot, float32 device tensor (loss, correct), images) per step

    def add(self, loss, correct, n, group=0):
        """One step: its mean loss and correct count (0-dim device tensors) over `n` images."""
        self._pending.append((3 * group, torch.stack([loss.detach().float(), correct.float()]), n))

    def local(self):
        """This process's sums, as a list of floats (a host sync if steps are pending)."""
        if self._pending:
            values = torch.stack([v for _, v, _ in self._pending]).tolist()
            for (at, _, n), (loss, correct) in zip(self._pending, values):
                self.sums[at] += loss * n
                self.sums[at + 1] += correct
                self.sums[at + 2] += n
            self._pending = []
        return list(self.sums)

    def total(self, world):
        """The sums over every process (collective under DDP)."""
        return all_sum(self.local(), self.device, world)


def all_gather(obj, world):
    """[obj of rank 0, obj of rank 1, ...] for any picklable obj (e.g. each rank's RNG state)."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _bytes(t):
    return t.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes()


def state_digest(model):
    """sha256 of every parameter and buffer: equal on all processes iff they kept them in sync."""
    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(_bytes(t))
    return h.hexdigest()


def differing_keys(model, world):
    """The state_dict keys whose values are not the same on every process (a collective: all call it)."""
    mine = {k: hashlib.sha256(_bytes(t)).hexdigest() for k, t in model.state_dict().items()}
    every = all_gather(mine, world)
    return [k for k in mine if len({d.get(k) for d in every}) > 1]
