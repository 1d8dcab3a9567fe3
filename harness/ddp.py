"""Data-parallel plumbing shared by search.py and train.py (torchrun, one process per GPU or CPU slot).

    torchrun --nproc_per_node=2 search.py ...      # the same scripts; every helper is a no-op for 1 process

What it owns: the process group (setup / teardown), gradient averaging for steps that take gradients
with torch.autograd.grad (which bypasses DistributedDataParallel's hooks, so the scripts all-reduce
explicitly), keeping rank 0's BN running statistics, exact sums and gathers of per-rank numbers (an
epoch's running loss and accuracy sums: `StepSums`), and the checks that every rank ended with the same
alpha and the same weights. No paper equation lives here: data parallelism must not change what a step
computes, only how many images it sees.
"""
import hashlib
import os

import torch
import torch.distributed as dist

from harness import runs


def setup(device_name="auto"):
    """Read torchrun's environment; init the process group. Returns (rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, runs.pick_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = runs.pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return rank, world, device


def teardown(world):
    if world > 1:
        dist.destroy_process_group()


def per_process_batch(batch_size, world):
    """--batch_size is the global batch: each of `world` processes takes batch_size / world of it."""
    if batch_size % world:
        raise runs.ConfigError(f"--batch_size={batch_size} is the global batch: it must divide over "
                               f"{world} processes")
    return batch_size // world


def barrier(world):
    """Wait for every process (no-op in a single process)."""
    if world > 1:
        dist.barrier()


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
