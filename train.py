"""Retrain a searched cell from scratch and report its test accuracy: the paper's Tables 3-6 numbers.

    python train.py --genotype=runs/search/genotype.json        # what search.py wrote
    python train.py --arch=DARTS_V2 --dataset=cifar100 --data=DIR
    python train.py --arch='|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|'
    torchrun --nproc_per_node=8 train.py --arch=PC_DARTS_image --dataset=imagenet --data=DIR

Owns the Config, the recipe per setting, `build_network` (genotype + dataset -> network) and the loop.
The network classes live in networks.py; data loading and test scoring in harness/train_run.py; flags
in harness/cli.py; logging, RNG state and evaluation in harness/runs.py; DDP in harness/ddp.py;
checkpoints, the run lock and stop signals in harness/checkpoints.py, shared with search.py. Recipes
(quark0/darts cnn/train.py, cnn/train_imagenet.py; AutoDL configs/nas-benchmark/CIFAR.config), applied
to every key not given on the command line (the checkpoint stores the resolved config):

  setting           network          epochs batch lr     schedule        wd    clip aux dp   cutout smooth C  L
  darts             NetworkCIFAR     600    96    0.025  cosine to 0     3e-4  5    0.4 0.2  16     0      36 20
  imagenet          NetworkImageNet  250    128   0.1    x0.97 per epoch 3e-5  5    0.4 0    0      0.1    48 14
  nb201             TinyNetwork      200    256   0.1    cosine to 0     5e-4  0    -   0    0      0      16 5
  rdarts            NetworkCIFAR     as darts, C 16, 8 cells (R-DARTS: S1-S4 cells on CIFAR-100 and SVHN)
  pcdarts           NetworkCIFAR     as darts, drop path 0.3 (PC-DARTS train.py)
  pcdarts_imagenet  NetworkImageNet  250    1024  0.5    linear, 5 warm-up epochs if batch > 256, else as imagenet
  (momentum 0.9 everywhere; nesterov for nb201 only; C, L = init channels, cells (nb201: cells/stage))

--recipe=auto picks by the cell and data: darts = a DARTS/S1-S4 genotype on 32 px data (cifar10, cifar100,
svhn, small imagefolder); rdarts = a cell whose genotype.json names an S1-S4 search, on cifar100 or svhn
(R-DARTS evaluates those at 8 cells of 16 channels, CIFAR-10 at DARTS' 20 x 36: Zela et al., ICLR 2020, and
automl/RobustDARTS src/evaluation/args.py; Table 6 compares with its numbers); imagenet = a DARTS genotype on
an ImageNet-style folder of large images (224 px crops); nb201 = an NB201 cell. --recipe=pcdarts: PC-DARTS'
own (train.py, train_imagenet.py), as RF-PCDARTS "follow[s] the default training setting of PC-DARTS"
(paper Sec. 5); --recipe=rdarts names R-DARTS' size for any DARTS-style cell on 32 px data. Their cutout
is half the image side (DARTS' 16 px on 32 px; 8 on ImageNet16-120's 16 px), unless --cutout is given.
Decisions where the references are silent:
- The lr is a closed-form function of (epoch, epochs), set before each epoch (the values the
  reference's per-epoch scheduler gives), so the checkpoint needs no scheduler object and
  `--resume=1 --epochs=N` extends a run consistently.
- Resume is bit-identical on CPU: model, optimizer, epoch and every process's RNG state are saved;
  the loaders depend only on (seed, epoch, batch index) (harness/batching.py, harness/stream.py), so a
  run stopped by SIGTERM / Ctrl-C mid-epoch (checkpoint at that step; the one before kept as checkpoint.prev.pt)
  continues exactly.
- batch_size is global: each of N processes takes batch_size / N. The test set is evaluated once, at
  the end (per epoch only with --test_every_epoch=1, for reporting; nothing is selected on it).
- A DARTS net on data whose aux-head input is not 8x8-ish (e.g. 16 px ImageNet16-120) trains without
  the auxiliary head unless --auxiliary=1 is given, which then fails with a clear error.
"""
import json
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness import checkpoints, cli, ddp, runs, train_run
from genotypes import NB201Cell, genotype_to_json, load_genotype
from networks import (NetworkCIFAR, NetworkImageNet, TinyNetwork, aux_fits, count_macs,
                      count_params)


@dataclass
class Config:
    arch: str = ""                # published name (DARTS_V2, PC_DARTS_image, ...) or an NB201 arch string
    genotype: str = ""            # or: path to a genotype.json written by search.py
    dataset: str = "cifar10"      # cifar10, cifar100, svhn, ImageNet16-120, imagefolder, imagenet,
                                  # synthetic (random bytes of CIFAR-10's shape, no files: speed only)
    data: str = "data"            # dataset root folder
    download: bool = True         # fetch missing cifar/svhn files through torchvision (0: never online)
    skip_bad_images: bool = False  # leave unreadable images out (with a warning) instead of stopping
    epochs: int = 600             # training epochs (the recipe's: darts 600, imagenet 250, nb201 200)
    batch_size: int = 96          # global, over all processes
    lr: float = 0.025             # initial SGD learning rate
    recipe: str = "auto"          # auto (by cell and data: darts | rdarts | imagenet | nb201) | pcdarts | rdarts
    schedule: str = "cosine"      # cosine (to 0 at `epochs`) | step (lr * lr_gamma^epoch) | linear
                                  # (PC-DARTS: to ~0 at epochs - 5, then a gentler slope to 0)
    warmup_epochs: int = 0        # the first so many epochs scale the lr by (epoch + 1) / warmup_epochs
    lr_gamma: float = 0.97        # schedule=step: the lr's factor per epoch
    momentum: float = 0.9         # SGD momentum
    nesterov: bool = False        # Nesterov momentum (the nb201 recipe's)
    weight_decay: float = 3e-4    # on every parameter, as the references
    grad_clip: float = 5.0        # max global grad norm; 0 = off
    C: int = 36                   # initial channels
    layers: int = 20              # DARTS: cells; NB201: cells per stage (N)
    auxiliary: bool = True        # auxiliary head at cell 2L//3 (DARTS nets only)
    auxiliary_weight: float = 0.4  # loss = CE(main) + w * CE(aux)
    drop_path_prob: float = 0.2   # final drop path probability, ramped linearly from 0
    cutout: int = 16              # cutout side in px; 0 = off
    label_smoothing: float = 0.0  # training loss only; evaluation uses plain CE
    seed: int = 0                 # the subsets, the network's init, batch order, augmentation, drop path
    device: str = "auto"          # auto, cpu, cuda, mps
    ddp_backend: str = "auto"     # torchrun: auto (NCCL on CUDA) | nccl | gloo (gloo lets processes share GPUs)
    out: str = "runs/train"       # checkpoint.pt, log.txt, history.json (per epoch), metrics.json go here
    resume: bool = False          # continue from OUT/checkpoint.pt (refused where there is none; auto: start then)
    amp: bool = True              # bf16 autocast (CUDA only)
    channels_last: bool = True    # NHWC memory format (CUDA only)
    workers: int = 8              # loader processes (streaming ImageNet-style folders only)
    subset: int | None = None     # train on this many (seeded random) training images; None = all
    test_subset: int | None = None  # score on this many (seeded random) test images; None = all (a
                                    # quick check's number, not a result: the log and metrics say so)
    test_every_epoch: bool = False  # also report test accuracy every epoch (reporting only)
    compile: bool = False         # torch.compile the training forward (evaluation stays eager)
    deterministic: bool = False   # CUDA: no cuDNN autotuning, deterministic algorithms: bit-reproducible
    cuda_graphs: bool | None = None  # compiled on CUDA: replay through CUDA graphs (none: on in one
                                     # process, off under torchrun, see cuda_graphs_on)


RECIPES = {
    "darts": {},  # the Config defaults above
    "imagenet": dict(epochs=250, batch_size=128, lr=0.1, schedule="step", lr_gamma=0.97, weight_decay=3e-5,
                     drop_path_prob=0.0, cutout=0, label_smoothing=0.1, C=48, layers=14),
    "nb201": dict(epochs=200, batch_size=256, lr=0.1, nesterov=True, weight_decay=5e-4, grad_clip=0.0,
                  auxiliary=False, drop_path_prob=0.0, cutout=0, C=16, layers=5),
    # PC-DARTS train.py (CIFAR: DARTS' but drop path 0.3) and train_imagenet.py as its README runs it
    # (batch 1024, lr 0.5; the script's defaults are 256 and 0.1); the warm-up only above batch 256
    "pcdarts": dict(drop_path_prob=0.3),
    # R-DARTS' evaluation network for S1-S4 cells on CIFAR-100 and SVHN (its paper; its code's defaults,
    # init_channels 16, layers 8): the size behind Table 6's numbers there; DARTS' recipe otherwise
    "rdarts": dict(C=16, layers=8),
    "pcdarts_imagenet": dict(epochs=250, batch_size=1024, lr=0.5, schedule="linear", warmup_epochs=5,
                             weight_decay=3e-5, drop_path_prob=0.0, cutout=0, label_smoothing=0.1, C=48, layers=14),
}
# The keys a recipe sets (the table above; momentum and the aux weight are the same in all three): the
# ones a user gives are named in the log's recipe line.
RECIPE_KEYS = set().union(*RECIPES.values()) | {"momentum", "auxiliary_weight"}
# What a resumed run may change; any other key must match the checkpoint's config.
RUN_KEYS = {"epochs", "resume", "out", "device", "amp", "channels_last", "workers", "test_every_epoch",
            "download", "compile", "ddp_backend", "cuda_graphs", "deterministic"}
CKPT_KEYS = ("model", "optimizer", "epoch", "rng", "seconds", "config", "genotype", "train")
# The range of every numeric setting (cli.check_ranges); (test_)subset None or 0: every image.
RANGES = dict(epochs="[1, inf)", batch_size="[1, inf)", lr="(0, inf)", lr_gamma="(0, 1]", warmup_epochs="[0, inf)",
              momentum="[0, 1)",
              weight_decay="[0, inf)", grad_clip="[0, inf)", C="[1, inf)", layers="[1, inf)",
              auxiliary_weight="[0, inf)", drop_path_prob="[0, 1)", cutout="[0, inf)", label_smoothing="[0, 1)",
              seed=cli.SEED_RANGE, workers="[0, inf)", subset="[0, inf)",
              test_subset="[0, inf)")


def build_network(genotype_or_arch, dataset, C=None, layers=None, auxiliary=None, root=None):
    """The retraining network for a genotype (object, NB201Cell, arch string, published name, JSON path)
    on `dataset` (root: its folder, needed for imagefolder): NB201 cell -> TinyNetwork; DARTS genotype
    -> NetworkImageNet on 'imagenet' (large images), else NetworkCIFAR. auxiliary=None: on where it fits."""
    return _network(load_genotype(genotype_or_arch), train_run.data_info(dataset, root), C, layers, auxiliary)


def _network(g, info, C, layers, auxiliary):
    if isinstance(g, NB201Cell):
        return TinyNetwork(g, info.num_classes, C or 16, layers or 5)
    if info.streaming:
        return NetworkImageNet(g, info.num_classes, C or 48, layers or 14, auxiliary is not False)
    layers = layers or 20
    fits = aux_fits(info.size, layers)
    if auxiliary and not fits:
        raise cli.ConfigError(f"the CIFAR auxiliary head needs an 8x8 map at cell {2 * layers // 3}, "
                               f"which {info.size} px images do not give: use --auxiliary=0")
    return NetworkCIFAR(g, info.num_classes, C or 36, layers, fits if auxiliary is None else auxiliary)


def resolve(argv, check_out=True):
    """-> (cfg, genotype, DatasetInfo, checkpoint or None, what to log). A resumed run keeps its
    checkpoint's settings; a fresh one takes its setting's recipe for every key not given. Every
    numeric setting is checked against its range (RANGES) and the device against the machine; with
    `check_out`, --out against --resume (False: the settings a fresh run there would have)."""
    argv = checkpoints.auto_resume(argv, Config.out)
    cfg, given = cli.parse_config(Config, argv), cli.explicit_keys(argv)
    cli.check_ranges(cfg, RANGES)
    runs.check_device(cfg.device)
    learning_rate(cfg, 0)  # an unknown --schedule is refused here, before any data is read
    path = os.path.join(cfg.out, "checkpoint.pt")
    if check_out and cfg.resume and not checkpoints.has_checkpoint(path):  # a typo in --out: no fresh run
        raise FileNotFoundError(f"no checkpoint at {path}: drop --resume=1 to start a new run there")
    if check_out and not cfg.resume and checkpoints.has_checkpoint(path):  # nor may a rerun overwrite one
        raise FileExistsError(f"{path} exists: pass --resume=1 to continue it (--epochs=N to extend it), "
                              "or another --out")
    if check_out and not cfg.resume:  # nor over a finished run's results whose checkpoint is gone
        checkpoints.refuse_overwrite(cfg.out)
    if cfg.resume:
        ckpt = checkpoints.load_checkpoint(path, required=CKPT_KEYS)
        cfg = cli.resumed_config(Config, ckpt["config"], argv, RUN_KEYS)
        info = train_run.data_info(cfg.dataset, cfg.data, cfg.skip_bad_images)
        return cfg, load_genotype(ckpt["genotype"]), info, ckpt, "resumed"
    if bool(cfg.arch) == bool(cfg.genotype):
        raise cli.ConfigError("give exactly one of --arch=NAME|NB201-STRING and --genotype=PATH")
    if cfg.genotype and not os.path.isfile(cfg.genotype):
        raise FileNotFoundError(f"--genotype={cfg.genotype}: no such file")
    try:
        genotype = load_genotype(cfg.genotype or cfg.arch)
    except UnicodeDecodeError as e:  # a binary file given as genotype.json
        raise cli.ConfigError(f"--genotype={cfg.genotype}: not a genotype.json text file ({e.reason})") from None
    info = train_run.data_info(cfg.dataset, cfg.data, cfg.skip_bad_images)
    setting = recipe_of(cfg.recipe, genotype, info, cfg.dataset, searched_space(cfg.genotype))
    cfg = cli.parse_config(Config, argv, **RECIPES[setting])
    if setting == "nb201":  # TinyNetwork (NB201's evaluation net) has neither, nor a large-image stem
        if info.streaming:
            raise cli.ConfigError(f"a NAS-Bench-201 cell trains in NB201's 32-px network (16 px: ImageNet16-120), not "
                                  f"on the large images of --dataset={cfg.dataset}: retrain a DARTS-style cell there")
        unused = [f"--{k}={cli.flag_value(getattr(cfg, k))}" for k in ("auxiliary", "drop_path_prob")
                  if k in given and getattr(cfg, k)]
        if unused:
            raise cli.ConfigError(f"{', '.join(unused)}: NB201's network has no auxiliary head and no drop path "
                                  "(DARTS' networks have); drop them for a NAS-Bench-201 cell")
    if cfg.nesterov and not cfg.momentum:
        raise cli.ConfigError("--nesterov=1 needs --momentum > 0 (or pass --nesterov=0)")
    small_batch = cfg.batch_size <= runs.PC_DARTS_WARMUP_ABOVE
    if setting == "pcdarts_imagenet" and "warmup_epochs" not in given and small_batch:
        cfg.warmup_epochs = 0  # PC-DARTS warms up only a batch larger than 256
    learning_rate(cfg, 0)  # e.g. --schedule=linear with too few epochs
    if setting in ("darts", "pcdarts", "rdarts") and "auxiliary" not in given:
        cfg.auxiliary = aux_fits(info.size, cfg.layers)
    if setting in ("darts", "pcdarts", "rdarts") and "cutout" not in given:
        # DARTS' 16 px is half a 32-px side; no reference retrains these cells at another size, where a
        # 16-px square would blank ~56% of a 16-px image (ImageNet16-120): the half side keeps the ratio
        cfg.cutout = info.size // 2
    # every recipe key the command line set, whether or not this setting's recipe changes it from the
    # Config default (darts' recipe is the defaults: it changes none)
    yours = ", ".join(f"{k}={cli.flag_value(getattr(cfg, k))}" for k in sorted(given & RECIPE_KEYS, key=str.lower))
    how = f"recipe {setting} (yours: {yours or 'none'})"
    if setting != "nb201" and not info.streaming and cfg.layers < 3:  # reductions at L//3 and 2L//3: cells 0, 1
        how += f"; note: --layers={cfg.layers} builds only reduction cells, so the normal cell is not used"
    return cfg, genotype, info, None, how


ROBUST_SPACES, RDARTS_DATA = ("s1", "s2", "s3", "s4"), ("cifar100", "svhn")


def searched_space(path):
    """The search space a genotype.json names (search.py writes it), or None (a published cell, an arch
    string, a file without one)."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    return d.get("space") if isinstance(d, dict) else None


def recipe_of(recipe, genotype, info, dataset="cifar10", space=None):
    """The RECIPES entry a run takes: --recipe=auto by the cell, the data and the space the cell was searched
    in; pcdarts PC-DARTS' for them; rdarts R-DARTS' network size."""
    robust = space in ROBUST_SPACES and dataset in RDARTS_DATA
    auto = ("nb201" if isinstance(genotype, NB201Cell) else "imagenet" if info.streaming else
            "rdarts" if robust else "darts")
    if recipe == "auto":
        return auto
    if recipe not in ("pcdarts", "rdarts"):
        raise cli.ConfigError(f"--recipe={recipe}: choose auto, pcdarts or rdarts")
    if auto == "nb201":
        raise cli.ConfigError(f"--recipe={recipe} retrains DARTS-space cells, not a NAS-Bench-201 cell")
    if recipe == "rdarts" and info.streaming:
        raise cli.ConfigError("--recipe=rdarts is R-DARTS' CIFAR / SVHN network; ImageNet takes --recipe=auto")
    return "pcdarts_imagenet" if recipe == "pcdarts" and info.streaming else recipe


def learning_rate(cfg, epoch):
    """The lr of an epoch, set before it (closed form: no scheduler state), warm-up included."""
    E = cfg.epochs
    if cfg.schedule == "cosine":  # CosineAnnealingLR(T_max=epochs, eta_min=0), one value per epoch
        lr = runs.cosine_lr(cfg.lr, epoch, E)
    elif cfg.schedule == "step":  # StepLR(step_size=1, gamma)
        lr = cfg.lr * cfg.lr_gamma ** epoch
    elif cfg.schedule == "linear":  # PC-DARTS train_imagenet.py adjust_lr: the last 5 epochs fall gentler
        if E <= 5:
            raise cli.ConfigError(f"--schedule=linear needs --epochs > 5 (it ends with 5 epochs of its own), not {E}")
        lr = cfg.lr * (E - 5 - epoch) / (E - 5) if E - epoch > 5 else cfg.lr * (E - epoch) / ((E - 5) * 5)
    else:
        raise cli.ConfigError(f"--schedule={cfg.schedule}: choose cosine, step or linear")
    # PC-DARTS' warm-up scales whatever the schedule gives (its lr * (epoch + 1) / 5)
    return lr * (epoch + 1) / cfg.warmup_epochs if epoch < cfg.warmup_epochs else lr


def main(argv=None):
    cfg, genotype, info, ckpt, how = resolve(argv)
    rank, world, device = ddp.setup(cfg.device, cfg.ddp_backend)
    with checkpoints.StopSignals(world, device) as stop:  # SIGTERM / Ctrl-C: checkpoint the step, one line
        return train(cfg, genotype, info, ckpt, how, rank, world, device, stop)


def fast_paths(cfg, device):
    """(bf16 autocast, channels_last): on CUDA, where they pay off; the CPU runs float32 NCHW (tests
    run both paths on the CPU through this function)."""
    cuda = device.type == "cuda"
    return cfg.amp and cuda, cfg.channels_last and cuda


def small_batch_note(cfg, info, world):
    """One line when the ImageNet recipe's global batch leaves few images per process for BN (DARTS'
    128 on 8 GPUs: 16 each), naming PC-DARTS' 8-GPU setting; None otherwise."""
    per = cfg.batch_size // world
    if not info.streaming or world == 1 or per >= 32:
        return None
    return (f"note: --batch_size={cfg.batch_size} is the global batch, {per} images per process for BN on "
            f"{world} processes; PC-DARTS retrained on 8 GPUs with batch 1024 and lr 0.5 (--recipe=pcdarts): "
            f"raise --batch_size, with --lr in proportion, for more per GPU")


def cuda_graphs_on(cfg, world):
    """Whether a compiled forward replays through CUDA graphs (--cuda_graphs; on CUDA only). Default: in
    one process yes, under torchrun no: CUDA graphs on a DistributedDataParallel-wrapped network with
    BN are what PyTorch skips, or has crashed on (pytorch/pytorch issues 139207, 113809, 128218);
    compiled kernels without graphs keep most of the gain. --cuda_graphs=1 forces them."""
    return world == 1 if cfg.cuda_graphs is None else cfg.cuda_graphs


def train(cfg, genotype, info, ckpt, how, rank, world, device, stop):
    """The retraining loop of a resolved run (main); returns the output folder. One run per --out."""
    ddp.per_process_batch(cfg.batch_size, world)  # fail before anything is written
    if rank == 0:
        checkpoints.out_dir(cfg.out)
    with checkpoints.RunLock(cfg.out, enabled=rank == 0), runs.tuned(device, cfg.deterministic):
        return _train(cfg, genotype, info, ckpt, how, rank, world, device, stop)


def _train(cfg, genotype, info, ckpt, how, rank, world, device, stop):
    amp, nhwc = fast_paths(cfg, device)
    fast = device.type == "cuda"
    log, ckpt_path = runs.Log(cfg.out, enabled=rank == 0), os.path.join(cfg.out, "checkpoint.pt")
    if ckpt is not None:  # read again under the lock: a run that ended since resolve() read it may have saved a newer one
        ckpt = checkpoints.load_checkpoint(ckpt_path, required=CKPT_KEYS, log=lambda msg: None)
    log(f"config {json.dumps(runs.as_dict(cfg))}")
    log(f"{how}; genotype {genotype}")
    if small_batch_note(cfg, info, world):
        log(small_batch_note(cfg, info, world))

    runs.seed_everything(cfg.seed)  # same initial weights in every process (DDP also broadcasts them)
    model = _network(genotype, info, cfg.C, cfg.layers, cfg.auxiliary)
    params_m, macs_m = count_params(model), count_macs(model, info.size)
    log(f"{type(model).__name__}: {params_m:.6f} M params (aux head excluded), {macs_m:.2f} M MACs at "
        f"{info.size}x{info.size} (conv + linear), {world} process(es) on {device}")
    model = model.to(device, memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    start, first, seconds, train_stats, history = 0, 0, 0.0, [float("nan")] * 2, []
    runs.seed_everything(runs.rank_seed(cfg.seed, rank))  # drop path masks and noise differ between processes
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start, seconds, train_stats = ckpt["epoch"], ckpt["seconds"], ckpt["train"]
        history = list(ckpt.get("history", []))  # checkpoints from before history.json: its rows from here on
        # steps of epoch `start` done before a preemption; global batch k is the union of the ranks'
        # batches k, so this holds for any number of processes
        first = ckpt.get("step", 0)
        same = ddp.restore_rng(ckpt["rng"], rank, world)  # one RNG state per process
        log(f"resumed after epoch {start}" + (f", step {first} of epoch {start + 1}" if first else "") +
            ("" if same else f"; saved by {len(ckpt['rng'])} processes, so random draws restart from the seed"))
    if rank == 0:
        checkpoints.record_session(cfg.out, runs.as_dict(cfg), start, ckpt is not None, RUN_KEYS, log,
                                   schedule="the lr schedule and the drop-path ramp",
                                   saved=ckpt and ckpt["config"])
    unused = ddp.unused_parameters(model, torch.zeros(2, 3, info.size, info.size, device=device)) if world > 1 else []
    if unused:
        log(f"{len(unused)} parameter tensors get no gradient from this cell ({', '.join(unused[:3])}"
            f"{', ...' if len(unused) > 3 else ''}): DDP runs with find_unused_parameters=True")
    net = model if world == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if fast else None, find_unused_parameters=bool(unused))
    train_loader, test_loader = train_run.make_loaders(cfg, info, ddp.per_process_batch(cfg.batch_size, world),
                                                      device, rank, world)
    steps = len(train_loader)
    # Compiled graphs: one for the full and one for the last partial batch (the test set is scored
    # eagerly, once). drop_path_prob is then a 0-dim tensor filled every epoch, not a float, which the
    # graph would take as a constant and retrace on when the ramp moves (measured: 189 s per retrace,
    # DARTS_V2 C=16); a tensor keeps drop path in the graph at p = 0 too, where its masks are all ones.
    drop_tensor = torch.zeros((), device=device) if cfg.compile and cfg.drop_path_prob > 0 else None
    forward = runs.compile_model(net, cfg.compile, device, cuda_graphs=cuda_graphs_on(cfg, world))
    if cfg.compile:
        log(f"compiled forward, mode {runs.compile_mode(device, cuda_graphs=cuda_graphs_on(cfg, world)) or 'default'}")

    def checkpoint(epochs_done, rng, **partial):  # `partial`: where a preempted epoch stopped
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": {"schedule": cfg.schedule, "lr": lr}, "epoch": epochs_done, "rng": rng,
                "seconds": seconds, "config": runs.as_dict(cfg), "genotype": genotype_to_json(genotype),
                "train": train_stats, "history": history, **partial}

    stop.armed = True  # from here on a stop signal ends the run after the current step, checkpointed
    runs.gpu_memory(device)  # CUDA: the first epoch's peak counts from here
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        lr = learning_rate(cfg, epoch)
        runs.set_lr(optimizer, lr)
        dp = cfg.drop_path_prob * epoch / cfg.epochs if hasattr(model, "drop_path_prob") else 0.0
        # linear ramp from 0 (quark0/darts cnn/train.py); TinyNetwork has none
        model.drop_path_prob = dp if drop_tensor is None else drop_tensor.fill_(dp)
        skip = first if epoch == start else 0  # a preempted epoch continues at its next batch
        train_loader.set_epoch(epoch, skip)  # both loaders: a batch is a function of (seed, epoch, index)
        net.train()
        sums = ddp.StepSums(device, saved=ckpt["sums"] if skip and rank == 0 else None)
        resumed_images = ckpt["sums"][2] if skip and rank == 0 else 0  # not this session's throughput
        for step, (x, y) in enumerate(train_run.batches(train_loader, device, nhwc, [0]), skip):
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                out = forward(x)  # the forward in bf16 on CUDA; loss and backward outside autocast
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if aux is not None:
                loss = loss + cfg.auxiliary_weight * F.cross_entropy(
                    aux.float(), y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP all-reduces the gradients here
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            sums.add(loss, (logits.argmax(1) == y).sum(), len(y))
            if step + 1 < steps and stop.requested(step + 1):  # SIGTERM / Ctrl-C: keep this step, exit
                rng = ddp.gather_rng(world)
                total = sums.total(world)
                checkpoints.check_finite(total[0], ckpt_path, f"in epoch {epoch + 1} by step {step + 1}", model)
                if rank == 0:
                    checkpoints.save_checkpoint(ckpt_path, checkpoint(
                        epoch, rng, step=step + 1, sums=[total[0], int(total[1]), int(total[2])],
                        seconds=seconds + time.time() - t0))
                stop.stop(f"in epoch {epoch + 1} after step {step + 1}/{steps}", ckpt_path)
        ddp.keep_rank0_buffers(model, world)  # each process updated BN running stats on its own shard
        loss_sum, correct, total = sums.total(world)
        checkpoints.check_finite(loss_sum, ckpt_path, f"in epoch {epoch + 1}", model)
        rate = (total - resumed_images) / max(time.time() - t0, 1e-9)  # images/s over all processes
        left = (seconds + time.time() - t0) / (epoch + 1) * (cfg.epochs - epoch - 1)  # at the mean epoch's pace
        train_stats = [loss_sum / max(total, 1), correct / max(total, 1)]
        seconds += time.time() - t0
        mem = runs.gpu_memory(device)  # CUDA: the epoch's peaks (MiB); {} elsewhere
        extra = []
        if cfg.test_every_epoch:  # reported, never used to choose anything
            extra = [("test_acc(report only)", train_run.score_test_set(model, test_loader, device, world, nhwc)[1])]
        log(f"epoch {epoch + 1}/{cfg.epochs} lr {lr:.4g} drop_path {dp:.3f} train {train_stats[0]:.3f}/"
            f"{train_stats[1]:.3f} {time.time() - t0:.0f}s {rate:.0f} img/s, run ~{runs.duration(left)} left"
            + runs.gpu_memory_text(mem)
            + "".join(f" {k} {v:.4f}" for k, v in extra))
        history.append(dict(epoch=epoch + 1, lr=lr, drop_path=dp, train_loss=train_stats[0],
                            train_acc=train_stats[1], seconds=time.time() - t0, images_per_s=rate, **mem,
                            **{k.split("(")[0]: v for k, v in extra}))
        rng = ddp.gather_rng(world)
        if rank == 0:
            checkpoints.save_checkpoint(ckpt_path, checkpoint(epoch + 1, rng))
            checkpoints.write_json(os.path.join(cfg.out, "history.json"), history)  # a row per epoch, for curves
        if stop.requested():
            stop.stop(f"after epoch {epoch + 1}", ckpt_path)
    stop.armed = False

    test_loss, test_acc, test_acc5, test_images = train_run.score_test_set(model, test_loader, device, world, nhwc)
    digests = ddp.all_gather(ddp.state_digest(model), world)
    if rank == 0:
        metrics = dict(train_loss=train_stats[0], train_acc=train_stats[1], test_loss=test_loss,
                       test_acc=test_acc, test_acc_top5=test_acc5, test_images=test_images, params_m=params_m, macs_m=macs_m,
                       epochs=cfg.epochs, seconds=seconds, world_size=world, state_sha256=digests,
                       dataset=cfg.dataset, genotype=genotype_to_json(genotype))
        checkpoints.write_json(os.path.join(cfg.out, "metrics.json"), metrics)
        part = f" on a {test_images}-image test subset (a check, not the test set)" if cfg.test_subset else ""
        log(f"final  test_loss {test_loss:.4f}  test_acc {test_acc:.4f}  top-5 {test_acc5:.4f}{part}  "
            f"({cfg.out}/metrics.json)")
    if len(set(digests)) > 1:  # every rank sees the same digests, so all take part in the gather
        log(f"warning: processes ended with different weights: {', '.join(ddp.differing_keys(model, world))}")
    ddp.teardown(world)
    return cfg.out


if __name__ == "__main__":
    cli.run(main)
