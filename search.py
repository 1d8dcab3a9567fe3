"""RF-DARTS search: alternate first-order weight and architecture steps on a supernet (Eq. 7-8, xi = 0).

    python search.py                                  # RF-DARTS (option C) on NAS-Bench-201, CIFAR-10
    python search.py --space=darts --option=B         # plain DARTS (first order) on the DARTS space
    python search.py --space=s3 --dataset=svhn        # RobustDARTS S3 searched directly on SVHN
    python search.py --dataset=imagefolder --data=../shared/data/cifar10-jpeg --subset=4000 --C=8
    python search.py --space=darts --pc_k=4           # RF-PCDARTS (partial channels + edge norm.)

Each iteration takes a weight step on a batch of the weight half (SGD over the parameters that Table 1's
option trains: for RF-DARTS the BN affine weights) and an alpha step on a batch of the alpha half
(Adam), each computing gradients for its own parameters only. Defaults per space are the reference
settings (NB201's DARTS-V1 for nb201; DARTS for the DARTS-style spaces; PC-DARTS when pc_k > 1).
Outputs in --out: config.json, log.txt, history.json, alphas.json (softmax(alpha) per epoch, Fig. 5, and
alpha's gradient mean and std per entry: harness/alpha_grads.py), genotype.json, checkpoint.pt (atomic,
every epoch and at the step where SIGTERM / Ctrl-C stopped it; the one before is kept as
checkpoint.prev.pt; --resume=1 continues bit-identically on CPU, mid-epoch included, with the run's own
settings: config.json's, else the checkpoint's). `make_config` refuses in one line, before any
data is read, whatever the search would refuse at start-up (`validate`; the sweep's pre-flight).
"""
import contextlib
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F

import architect
from harness import checkpoints, cli, data, ddp, fast_supernet, op_scale, rundir, runs, search_run
from harness.alpha_grads import AlphaGrads
from harness.frozen_state import FrozenState
from harness.search_run import Tally
from spaces import get_space
from supernet import build_supernet, check_supernet, set_trainable


@dataclass
class SearchConfig:
    space: str = "nb201"           # nb201 | darts | s1 | s2 | s3 | s4
    dataset: str = "cifar10"       # cifar10 | cifar100 | svhn | ImageNet16-120 | imagefolder | imagenet
                                   # | synthetic (random bytes of CIFAR-10's shape, no files: speed only)
    data: str = "data"             # dataset root (imagefolder/imagenet: a folder with train/<class>/)
    download: bool = True          # fetch missing cifar/svhn files through torchvision (0: never online)
    option: str = "C"              # Table 1: A | B (DARTS) | C (RF-DARTS) | D
    epochs: int = 50               # paper: 50 on NB201 (Sec. 5.1); the DARTS / PC-DARTS / R-DARTS searches': 50
    batch_size: int = 64           # global batch per step, both halves, over all processes (PC-DARTS: 256)
    lr: float = 0.025              # SGD on the trainable weights, cosine per epoch ...
    lr_min: float = 0.001          # ... down to this (DARTS code and NB201 use 0.001; PC-DARTS 0)
    momentum: float = 0.9          # SGD momentum of the weight step
    nesterov: bool = True          # NB201's DARTS: True; DARTS code: False
    weight_decay: float = 5e-4     # NB201 5e-4; DARTS 3e-4; applied to every trainable weight incl. BN
    bn_decay: bool = True          # weight decay on the cell BN affine weights too (0: none there; the
                                   # paper is silent; decay shrinks the parametric ops' gamma, not the skip)
    grad_clip: float = 5.0         # max norm of the weight gradients
    warmup_epochs: int = 0         # linear lr warm-up epochs (PC-DARTS ImageNet: 5 if the batch is > 256)
    arch_lr: float = 3e-4          # Adam on alpha (and beta): lr 3e-4 (PC-DARTS 6e-4) ...
    arch_weight_decay: float = 1e-3  # ... betas (0.5, 0.999), weight decay 1e-3
    arch_start: int = 0            # first epoch with alpha steps (PC-DARTS: 15; on ImageNet 35)
    arch_grad_clip: float = 0.0    # max norm of the alpha gradients (0: none; PC-DARTS ImageNet: 5)
    unrolled: bool = False         # second-order alpha gradient (DARTS Eq. 7; architect.py)
    arch_first: bool = False       # alpha step before the weight step (DARTS) or after (NB201 DARTS-V1)
    C: int = 0                     # initial channels (0: the space's default, 16)
    layers: int = 0                # nb201: cells per stage (5); DARTS-style: cells (8); 0: default
    pc_k: int = 1                  # partial channels K (1: off; 4: PC-DARTS on CIFAR, 2 on ImageNet)
    weight_frac: float = 0.1       # imagenet: per-class fraction sampled for the weights ...
    arch_frac: float = 0.025       # ... and for alpha (PC-DARTS), written as file lists in --out
    workers: int = 4               # imagenet: data loading processes
    init: str = "kaiming"          # conv init: kaiming | xavier | pytorch
    train_classifier: bool = True  # train the linear classifier under options C/D too
    track_running_stats: bool = False  # cell BN running statistics (default: batch statistics only)
    subset: int = 0                # use only this many training images (0: all)
    drop_last: bool = False        # 1: leave out the weight half's last partial batch; 0: it is a step, as in
                                   # DARTS and NB201 (25k images, batch 64: 391 steps, x 50 epochs: 19,550);
                                   # imagenet's streamed subset keeps it either way (PC-DARTS' loaders)
    alpha_on_test: bool = True     # cifar100, ImageNet16-120: weights on the whole training set, alpha on a
                                   # seeded half of the test set (NB201); 0: halves of the training set (DARTS,
                                   # R-DARTS: the DARTS-style spaces' default); other datasets: always halves
    skip_bad_images: bool = False  # leave unreadable images out (with a warning) instead of stopping
    seed: int = 0                  # the supernet's init (unless --init_seed), the split into two halves,
                                   # batch order, augmentation
    init_seed: int | None = None   # the supernet's init alone (random features, alpha): fixed while --seed
                                   # varies the data; none: --seed
    device: str = "auto"           # auto | cpu | cuda | cuda:1 | mps
    ddp_backend: str = "auto"      # torchrun: auto (NCCL on CUDA) | nccl | gloo (gloo lets processes share GPUs)
    out: str = "runs/search"       # the run's folder: config, log, history, alphas, genotype, checkpoint
    resume: bool = False           # continue from OUT/checkpoint.pt (auto: where there is one, else start)
    bench201: str = ""             # optional NB201 benchmark file/CSV: log each epoch's accuracies ...
    bench201_dataset: str = ""     # ... of this dataset: cifar10 | cifar100 | ImageNet16-120 ("": the
                                   # searched one's; imagefolder: cifar10, the CIFAR-10 JPEG copy)
    log_every: int = 50            # a progress line every this many steps
    compile: bool = False          # torch.compile the supernet's forward (CUDA: with CUDA graphs)
    deterministic: bool = False    # CUDA: no cuDNN autotuning, deterministic algorithms: bit-reproducible
    fast: bool = True              # NB201, eager steps: the rearranged cell of harness/fast_supernet.py (the
                                   # same sums, float32 rounding apart), channels-last; 0: supernet.py as is
    stop_after: int = 0            # end this session after so many epochs (resume later); 0: run all

    # Settings added with a default other than what the runs before them did: a saved config.json that
    # lacks the key ran with this value (cli.saved_settings). Those runs dropped the last partial batch.
    ADDED_LATER: ClassVar[dict] = dict(drop_last=True)


# Per-setting defaults, applied to keys the user did not set on the command line.
DARTS_DEFAULTS = dict(weight_decay=3e-4, nesterov=False, arch_first=True, alpha_on_test=False)
# PC-DARTS train_search.py (lr_min 0 on its main branch, b74702f; its V100_python1.0/ copy: 0.001)
PC_DEFAULTS = dict(batch_size=256, lr=0.1, lr_min=0.0, arch_lr=6e-4, arch_start=15)
IMAGENET_DEFAULTS = dict(pc_k=2, batch_size=1024, lr=0.5, lr_min=0.0, warmup_epochs=5, arch_lr=6e-3,
                         arch_start=35, arch_grad_clip=5.0)  # PC-DARTS train_search_imagenet.py


# What a resumed search may change; every other setting comes from OUT/config.json (or the checkpoint).
RUN_KEYS = {"epochs", "out", "resume", "device", "stop_after", "log_every", "bench201", "bench201_dataset",
            "workers", "compile", "download", "ddp_backend", "deterministic", "fast"}
# The range of every numeric setting (cli.check_ranges); C and layers 0: the space's default.
RANGES = dict(epochs="[1, inf)", batch_size="[1, inf)", lr="(0, inf)", lr_min="[0, inf)", momentum="[0, 1)",
              weight_decay="[0, inf)", grad_clip="[0, inf)", warmup_epochs="[0, inf)", arch_lr="(0, inf)",
              arch_weight_decay="[0, inf)", arch_start="[0, inf)", arch_grad_clip="[0, inf)", C="[0, inf)",
              layers="[0, inf)", pc_k="[1, inf)", weight_frac="(0, 1]", arch_frac="(0, 1]", workers="[0, inf)",
              subset="[0, inf)", seed=cli.SEED_RANGE, init_seed=cli.SEED_RANGE, log_every="[0, inf)",
              stop_after="[0, inf)")
DATASETS = data.NAMES + ("imagenet",)


def make_config(argv=None):
    """The run's config, checked (`validate`). A resume keeps the run's own settings: OUT/config.json,
    else (a folder that holds only a checkpoint) the checkpoint's config; only RUN_KEYS may change.
    A new run: the command line over the per-setting defaults."""
    argv = checkpoints.auto_resume(argv, SearchConfig.out)
    cfg, given = cli.parse_config(SearchConfig, argv), cli.explicit_keys(argv)
    if cfg.resume and not checkpoints.has_checkpoint(os.path.join(cfg.out, "checkpoint.pt")):
        # before anything is made there: a mistyped --out leaves no folder behind
        checkpoints.refuse_if_busy(cfg.out)  # a run still in its first epoch there: say whose it is
        raise FileNotFoundError(f"no checkpoint at {os.path.join(cfg.out, 'checkpoint.pt')}: drop --resume=1 "
                                "to start a new run there")
    saved = checkpoints.saved_settings(cfg.out) if cfg.resume else None
    if saved is not None:  # `--resume=1 --out=DIR` alone continues a run
        cfg = cli.resumed_config(SearchConfig, saved, argv, RUN_KEYS)
        # stop_after belongs to the session that gave it, not to the run
        return validate(cfg if "stop_after" in given else replace(cfg, stop_after=0))
    extra = dict(DARTS_DEFAULTS) if cfg.space.lower() != "nb201" else {}
    if cfg.dataset == "imagenet":
        extra.update(IMAGENET_DEFAULTS)
    elif cfg.pc_k > 1:
        extra.update(PC_DEFAULTS)
    if cfg.unrolled:  # DARTS-V2 order: the virtual step reads the momentum from before this SGD step
        extra["arch_first"] = True
    if extra.get("warmup_epochs") and "batch_size" in given and cfg.batch_size <= runs.PC_DARTS_WARMUP_ABOVE:
        extra["warmup_epochs"] = 0  # PC-DARTS warms up only a batch larger than 256
    cfg = validate(replace(cfg, **{k: v for k, v in extra.items() if k not in given}))
    if cfg.dataset == "imagenet" and "batch_size" not in given:
        print(f"note: --batch_size={cfg.batch_size} is PC-DARTS' global batch, run on 8 GPUs; on fewer or "
              "smaller cards lower it (with --lr and --arch_lr in proportion) if it does not fit", file=sys.stderr)
    return cfg


def validate(cfg):
    """Refuse in one line, before any data is read or any model is built, what the search would refuse
    at start-up: a value out of its range (RANGES), a bad name (space, option, dataset, init, device), a
    combination the supernet cannot build (nb201 with --pc_k > 1, a --C the partial channels or the
    ImageNet stem cannot split), a --subset too small for a batch in each half, a missing data folder
    or benchmark file. The sweep checks every run with it before any starts. Returns cfg with the
    benchmark's dataset resolved (--bench201_dataset)."""
    cli.check_ranges(cfg, RANGES)
    space = get_space(cfg.space)
    if cfg.option.upper() not in "ABCD" or len(cfg.option) != 1:
        raise cli.ConfigError(f"--option={cfg.option}: choose A, B, C (RF-DARTS) or D (paper Table 1)")
    if cfg.dataset not in DATASETS:
        raise cli.ConfigError(f"--dataset={cfg.dataset}: choose one of {', '.join(DATASETS)}")
    if cfg.dataset == "imagenet" and space.cell != "darts":
        raise cli.ConfigError("--dataset=imagenet searches a DARTS-style space (the NB201 net is for "
                               "32 px images); pick --space=darts or s1..s4")
    if cfg.unrolled and not cfg.bn_decay:
        raise cli.ConfigError("--unrolled=1 models one SGD parameter group; drop --bn_decay=0")
    if cfg.unrolled and not cfg.arch_first:
        raise cli.ConfigError("--unrolled=1 takes the alpha step before the weight step; drop --arch_first=0")
    if cfg.nesterov and not cfg.momentum:
        raise cli.ConfigError("--nesterov=1 needs --momentum > 0 (or pass --nesterov=0)")
    if cfg.dataset == "imagenet" and cfg.weight_frac + cfg.arch_frac > 1:
        raise cli.ConfigError(f"--weight_frac={cfg.weight_frac} and --arch_frac={cfg.arch_frac}: the two "
                               "samples are disjoint, so they must add up to at most 1")
    if cfg.subset and cfg.dataset != "imagenet" and cfg.subset // 2 < cfg.batch_size:  # alpha batches are full
        raise cli.ConfigError(f"--subset={cfg.subset}: each search half gets about {cfg.subset // 2} images, "
                               f"fewer than one batch (--batch_size={cfg.batch_size})")
    ddp.per_process_batch(cfg.batch_size, int(os.environ.get("WORLD_SIZE", "1")))  # torchrun's world
    check_supernet(space, cfg.C or None, cfg.layers or None, "imagenet" if cfg.dataset == "imagenet" else "cifar",
                   cfg.pc_k, init=cfg.init)
    runs.check_device(cfg.device)
    data.check_present("imagefolder" if cfg.dataset == "imagenet" else cfg.dataset, cfg.data, cfg.download)
    if cfg.bench201 and space.name == "nb201":
        check_bench201(cfg.bench201)
    return replace(cfg, bench201_dataset=bench201_dataset(cfg, space))


def check_bench201(path):
    """--bench201 refused at a glance (missing, a folder that is no benchmark, another CSV) before any data
    is read or written; the table itself is read once the run starts (bench201.check_file)."""
    import bench201  # the standard library only
    try:
        bench201.check_file(path)
    except bench201.BenchmarkFileError as e:
        raise cli.ConfigError(f"--bench201={e}") from None


def bench201_dataset(cfg, space):
    """The NB201 dataset whose accuracies --bench201 looks up: --bench201_dataset, else the searched
    dataset's own (rundir.BENCH201_COLUMNS: an ImageFolder is taken to be CIFAR-10); "" if it has none."""
    if cfg.bench201_dataset:
        import bench201
        try:
            return bench201.canonical_dataset(cfg.bench201_dataset)
        except bench201.QueryError:
            raise cli.ConfigError(f"--bench201_dataset={cfg.bench201_dataset}: choose one of "
                                   f"{', '.join(bench201.DATASETS)}") from None
    column = rundir.BENCH201_COLUMNS.get(cfg.dataset, "")
    if cfg.bench201 and space.name == "nb201" and not column:
        raise cli.ConfigError(f"--bench201: NAS-Bench-201 has no {cfg.dataset} results; pass "
                               "--bench201_dataset=cifar10, cifar100 or ImageNet16-120 to look up those")
    return column


def weight_groups(weights, cell_bn, cfg):
    """SGD parameter groups: one (every weight decayed, as in DARTS and NB201), or with --bn_decay=0 the
    cell BN affine weights in a group of their own without weight decay."""
    if cfg.bn_decay:
        return [dict(params=weights)]
    no_decay = {id(p) for p in cell_bn}
    return [dict(params=[p for p in weights if id(p) not in no_decay]),
            dict(params=[p for p in weights if id(p) in no_decay], weight_decay=0.0)]


def gradient_step(model, params, opt, x, y, clip=0.0):
    """Cross-entropy on (x, y), gradients for `params` only, optional norm clip, one optimiser step.

    Returns the loss and the number of correct predictions, as device tensors (no host sync).
    """
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    # allow_unused: e.g. a 2-cell DARTS net has only reduction cells, so alphas_normal gets no gradient
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    if all(g is None for g in grads):  # a step that updates nothing is a bug, never a result
        raise RuntimeError("the loss does not depend on any parameter this step updates: their gradients "
                           "are all None (a compiled graph traced for the other step's parameters? see "
                           "harness/runs.py:compile_model)")
    ddp.average_grads(grads)  # autograd.grad bypasses DDP's hooks
    for p, g in zip(params, grads):
        p.grad = g
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return loss.detach(), (logits.argmax(1) == y).sum()


def weight_step(model, weights, arch, opt, x, y, clip=0.0):
    """Eq. 8: SGD on the weights Table 1's option trains (RF-DARTS: the BN affine weights) on a weight
    batch; alpha (and beta) stop requiring grad meanwhile, for the reason alpha_step gives."""
    with no_grad_for(arch):
        return gradient_step(model, weights, opt, x, y, clip)


def alpha_step(model, arch, weights, opt, x, y, clip=0.0):
    """Eq. 7 with xi = 0 (first order): Adam on alpha (and beta) on an alpha batch; no weight gradient.

    The weights stop requiring grad for this step. Eager autograd would skip their gradients anyway
    (autograd.grad walks back only to `arch`), but a torch.compile'd forward is traced with one backward
    graph per set of requires_grad flags, and that graph returns a gradient for every input that
    requires one: with the flags unchanged, a compiled alpha step would compute every weight gradient
    and throw it away. Switched off, the alpha step gets a graph of its own without them.
    """
    with no_grad_for(weights):
        return gradient_step(model, arch, opt, x, y, clip)


@contextlib.contextmanager
def no_grad_for(params):
    """Inside: `params` do not require grad (those that did get their flag back on exit)."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def search(cfg, rank=0, world=1, device=None, stop=None):
    """Run (or continue) the search that `cfg` describes; one run per --out (checkpoints.RunLock)."""
    device = device or runs.pick_device(cfg.device)
    stop = stop or checkpoints.StopSignals(world, device)  # main() installs it; without: default handlers
    checkpoints.out_dir(cfg.out)
    with checkpoints.RunLock(cfg.out, enabled=rank == 0), runs.tuned(device, cfg.deterministic):
        return _search(cfg, rank, world, device, stop)


def _search(cfg, rank, world, device, stop):
    main_proc = rank == 0
    log = runs.Log(cfg.out, enabled=main_proc)
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    required = ("model", "w_opt", "a_opt", "epoch", "rng", "history")
    ckpt = checkpoints.load_checkpoint(ckpt_path, required=required, log=log) if cfg.resume else None
    if not cfg.resume and checkpoints.has_checkpoint(ckpt_path):
        raise FileExistsError(f"{ckpt_path} exists: pass --resume=1 to continue it, or another --out")
    if not cfg.resume:  # nor over a finished run's results whose checkpoint is gone
        checkpoints.refuse_overwrite(cfg.out)
    # the checkpoint is the truth: e.g. a config.json copied from another run (a key it lacks: its default)
    saved = cli.saved_settings(SearchConfig, ckpt.get("config", {})) if ckpt else {}
    differ = cli.differing(runs.as_dict(cfg), saved, RUN_KEYS)
    if differ:
        what = ", ".join(f"{k}={saved[k]!r} not {getattr(cfg, k)!r}" for k in differ)
        raise cli.ConfigError(f"{ckpt_path} was written with other settings than {cfg.out}/config.json "
                               f"({what}): remove that config.json to continue with the checkpoint's settings")
    runs.seed_everything(cfg.seed)
    train_loader, arch_loader, num_classes, about = search_run.make_loaders(
        cfg, device, rank, world, cfg.drop_last, cfg.alpha_on_test)
    model = build_supernet(cfg.space, num_classes, C=cfg.C or None, layers=cfg.layers or None,
                           stem="imagenet" if cfg.dataset == "imagenet" else "cifar", pc_k=cfg.pc_k,
                           init=cfg.init, track_running_stats=cfg.track_running_stats,
                           seed=cfg.seed if cfg.init_seed is None else cfg.init_seed).to(device)
    # In place, same parameters. Compiled steps keep supernet.py's cell: inductor already shares the
    # ReLUs and pools (CSE) and runs the convs channels-last, and it compiles the rearranged cell ~10x
    # slower for no gain (results/README.md, "Speed").
    swapped = fast_supernet.speed_up(model) if fast_supernet.applies(cfg.fast, cfg.compile) else 0
    # mean |gamma| and eta per edge and op every epoch (harness/op_scale.py); Var[W_init] is read here,
    # before a checkpoint overwrites the initial weights
    probe = op_scale.make_probe(model, arch_loader) if main_proc else None
    # the same model on every rank (built above); from here S4's noise differs between ranks
    runs.seed_everything(runs.rank_seed(cfg.seed, rank))
    space = model.space
    groups = set_trainable(model, cfg.option, cfg.train_classifier, verbose=main_proc)
    # Table 1's frozen tensors (C, D: every conv) keep their seeded init: a checkpoint stores their hash, not
    # them, and a resume takes them from this fresh build once the hashes agree (harness/frozen_state.py)
    frozen = FrozenState(model)
    arch = groups["arch"]
    weights = [p for p in model.weight_parameters() if p.requires_grad]
    w_opt = torch.optim.SGD(weight_groups(weights, groups["cell_bn"], cfg), cfg.lr, momentum=cfg.momentum,
                            nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    a_opt = torch.optim.Adam(arch, cfg.arch_lr, betas=(0.5, 0.999), weight_decay=cfg.arch_weight_decay)
    history, start, first = [], 0, 0  # first: steps of epoch `start` done before a preemption
    steps = len(train_loader)
    if ckpt is not None:
        # n images that N processes cannot share as 1 did: alpha's stream (k-th step, k-th batch of an
        # endless pass over the alpha half) would shift without a word
        if (ckpt.get("steps", steps), ckpt.get("alpha_batches", len(arch_loader))) != (steps, len(arch_loader)):
            raise cli.ConfigError(
                f"{ckpt_path}: its epochs have {ckpt['steps']} steps and {ckpt.get('alpha_batches', '?')} alpha "
                f"batches, with {world} process(es) {steps} and {len(arch_loader)} (the last partial batch does not "
                f"split over them; a training epoch drops a last batch of one image per process): resume with the "
                f"process count it ran with")
        model.load_state_dict(frozen.complete(ckpt, ckpt_path))
        w_opt.load_state_dict(ckpt["w_opt"])
        a_opt.load_state_dict(ckpt["a_opt"])
        history, start, first = ckpt["history"], ckpt["epoch"], ckpt.get("step", 0)
        if main_proc and history:  # the files say what the checkpoint holds (e.g. a history.json cut short)
            search_run.write_outputs(cfg.out, history)
        same = ddp.restore_rng(ckpt["rng"], rank, world)
        log(f"resumed after epoch {start}" + (f", step {first} of epoch {start + 1}" if first else "") +
            ("" if same else "; saved by another number of processes, so random draws restart from the seed")
            + (f"; all {cfg.epochs} epochs are done, nothing to run (--epochs=N extends it)"
               if start == cfg.epochs and not first else ""))  # fewer: record_session refuses it
    if main_proc:
        checkpoints.record_session(cfg.out, runs.as_dict(cfg), start, ckpt is not None, RUN_KEYS, log,
                                   schedule="the cosine lr", saved=ckpt and ckpt.get("config"))
    ddp.barrier(world)
    log(f"search {space.name} option {cfg.option.upper()} on {cfg.dataset}: {about}, {steps} steps per "
        f"epoch of {cfg.batch_size} images, {world} process(es), device {device}"
        + (f"; --fast=1: {swapped} cells rearranged, channels-last" if swapped else ""))
    # what is in force: the per-setting defaults (DARTS_DEFAULTS, PC_DEFAULTS, ...) differ from --help's
    log(f"weights: SGD lr {cfg.lr:g} -> {cfg.lr_min:g} (cosine), momentum {cfg.momentum:g}"
        f"{' (Nesterov)' if cfg.nesterov else ''}, weight decay {cfg.weight_decay:g}; alpha: Adam lr {cfg.arch_lr:g}, "
        f"weight decay {cfg.arch_weight_decay:g}, from epoch {cfg.arch_start + 1}; each iteration: "
        + ("alpha step, then weight step" if cfg.arch_first or cfg.unrolled else "weight step, then alpha step"))
    for note in search_run.dead_alphas(cfg, model):
        log(f"note: {note}")
    bench = search_run.open_benchmark(cfg, space, main_proc, log)

    # Compiled: two graphs, one per step (each step switches the other's requires_grad off).
    # Only full batches run compiled: an epoch's last partial batch (one step in 391) runs eagerly rather
    # than compile two more graphs for it (minutes on a CPU, a good part of a short GPU window).
    forward = runs.compile_model(model, cfg.compile, device, batch=ddp.per_process_batch(cfg.batch_size, world))

    alpha_grads = AlphaGrads(model.alphas())  # each epoch's mean and spread of alpha's gradient

    def update_alpha(xa, ya, x, y):
        if cfg.unrolled:  # second order (DARTS Eq. 7, RF-DARTS Eq. 5 with xi > 0): the virtual step needs (x, y)
            result = architect.unrolled_arch_step(model, weights, w_opt, a_opt, (x, y), (xa, ya),
                                                  sync=ddp.average_grads, clip=cfg.arch_grad_clip)
        else:
            result = alpha_step(forward, arch, weights, a_opt, xa, ya, cfg.arch_grad_clip)
        alpha_grads.add()  # reads the .grad the step just used (a measurement: changes nothing)
        return result

    def checkpoint(epochs_done, **partial):  # collective: every rank's RNG; `partial`: a preempted epoch
        state = dict(model=frozen.strip(model.state_dict()), frozen=frozen.record(), w_opt=w_opt.state_dict(),
                     a_opt=a_opt.state_dict(), epoch=epochs_done, rng=ddp.gather_rng(world),
                     config=runs.as_dict(cfg), history=history, steps=steps, alpha_batches=len(arch_loader),
                     **partial)
        if main_proc:
            checkpoints.save_checkpoint(ckpt_path, state)

    # alpha batch k is the k-th alpha step's: none are drawn (or decoded) before arch_start. Done: every step
    # of the whole epochs since arch_start, plus the `first` steps of a stopped epoch if alpha trained in it
    alpha_steps_done = max(start - cfg.arch_start, 0) * steps + (first if start >= cfg.arch_start else 0)
    arch_batches = arch_loader.forever(start_step=alpha_steps_done)
    last = min(cfg.epochs, start + cfg.stop_after) if cfg.stop_after else cfg.epochs
    stop.armed = True  # from here on a stop signal ends the run after the current step, checkpointed
    pace = search_run.Pace()  # seconds per step after the session's warm-up (compiling)
    cpu_note = search_run.CpuNote(log, cfg, device, steps, pace)  # how long a whole-dataset CPU run takes
    runs.gpu_memory(device)  # CUDA: the first epoch's peak counts from here (the build and data before: not)
    for epoch in range(start, last):
        skip = first if epoch == start else 0  # a preempted epoch continues at its next batch
        tally = Tally(device, ckpt.get("tally") if skip and main_proc else None)
        alpha_grads.start(ckpt.get("alpha_grads") if skip else None)
        seconds = ckpt.get("seconds", 0.0) if skip else 0.0
        lr, t0 = runs.cosine_lr(cfg.lr, epoch, cfg.epochs, cfg.lr_min, cfg.warmup_epochs), time.time() - seconds
        runs.set_lr(w_opt, lr)
        model.train()
        # the loader starts at batch `skip`; the step count below does too
        train_loader.set_epoch(epoch, skip)
        search_alpha = epoch >= cfg.arch_start
        for step, (x, y) in enumerate(train_loader, skip):
            xa, ya = next(arch_batches) if search_alpha else (None, None)  # a batch of the alpha half
            if search_alpha and cfg.arch_first:      # DARTS: the alpha step first (Eq. 7)
                tally.alpha(update_alpha(xa, ya, x, y), len(ya))
            tally.weight(weight_step(forward, weights, arch, w_opt, x, y, cfg.grad_clip), len(y))  # Eq. 8
            if search_alpha and not cfg.arch_first:  # NB201's DARTS-V1: the alpha step second (Eq. 7)
                tally.alpha(update_alpha(xa, ya, x, y), len(ya))
            pace.step()
            if step + 1 < steps:  # progress line, and a stop signal: checkpoint this step, then exit
                search_run.progress(log, cfg, epoch, step, steps, tally, t0, ckpt_path, pace.seconds(), world)
                cpu_note(epoch)
                if stop.requested(step + 1):  # never a checkpoint of a non-finite state
                    sums = tally.total(world)
                    checkpoints.check_finite(sums[0] + sums[3], ckpt_path, f"in epoch {epoch + 1} by step {step + 1}",
                                             model, search_run.LOWER)
                    checkpoint(epoch, step=step + 1, tally=sums, alpha_grads=alpha_grads.state(),
                               seconds=time.time() - t0)
                    stop.stop(f"in epoch {epoch + 1} after step {step + 1}/{steps}", ckpt_path)
        row = search_run.end_of_epoch(cfg, model, space, epoch, lr, tally.total(world), time.time() - t0,
                                      bench, world, arch, ckpt_path, probe, alpha_grads)
        history.append(row)
        log(search_run.epoch_line(cfg, row))
        checkpoint(epoch + 1)  # first: killed between the two, a resume rewrites the outputs from it; the other
        if main_proc:          # way round a folder with outputs and no checkpoint could neither resume nor restart
            search_run.write_outputs(cfg.out, history)
        if stop.requested():
            stop.stop(f"after epoch {epoch + 1}", ckpt_path)
    stop.armed = False
    cell = json.dumps(history[-1]["genotype"]) if history else "none"
    if last < cfg.epochs:  # --stop_after ended this session: the cell is not the search's result yet
        log(f"stopped after epoch {last} of {cfg.epochs} (--stop_after={cfg.stop_after}); the cell so far: "
            f"{cell}; continue with --resume=1 --out={cfg.out}")
    else:  # the cell after the last epoch's alpha steps, as NB201's DARTS-V1.py reports it; DARTS' and PC-DARTS'
        # train_search.py log a cell at each epoch's start, so their last is after 49 of 50 (here history[-2])
        log(f"final genotype: {cell}")
        # the cell's way on (train.py reads genotype.json and picks the recipe of its space and dataset)
        log("retrain it: python train.py " + " ".join(shlex.quote(a) for a in (
            f"--genotype={os.path.join(cfg.out, 'genotype.json')}", f"--dataset={cfg.dataset}", f"--data={cfg.data}")))
    return model, history


def main(argv=None):
    cfg = make_config(argv)
    rank, world, device = ddp.setup(cfg.device, cfg.ddp_backend)
    try:
        with checkpoints.StopSignals(world, device) as stop:
            search(cfg, rank, world, device, stop)
    finally:
        ddp.teardown(world)


if __name__ == "__main__":
    cli.run(main)
