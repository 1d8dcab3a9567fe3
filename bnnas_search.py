"""BN-NAS on NAS-Bench-201 (paper Sec. 5.1, Table 3): train the single-path supernet, read the BN
indicator, take the best cell.

    python bnnas_search.py --option=C --epochs=10          # "only BN" (Table 1 option C), 10 epochs
    python bnnas_search.py --option=A --epochs=50          # "conv + BN" (option A)
    python bnnas_search.py --dataset=imagefolder --data=../shared/data/cifar10-jpeg --subset=4000 --C=8 \\
        --bench201=../shared/data/nb201/nb201-public.csv   # the reduced size of the project's NB201 runs
    python bnnas_search.py --resume=1 --out=runs/bnnas     # continue after a crash / Ctrl-C / kill -9

Each step samples one op per edge uniformly (SPOS; bnnas.sample_paths, a function of seed, epoch and
step) and takes one SGD step on the weights Table 1's option trains, through that path only: the ops off
the path get no gradient, so SGD leaves them (and their momentum and weight decay) alone. The weight
settings are NB201's, as search.py uses them for RF-DARTS (SGD 0.025 cosine to 0.001, Nesterov momentum
0.9, weight decay 5e-4 on every trained weight, BN included, gradient norm clipped at 5, batch 64). The
data is search.py's weight half: the same images as the RF-DARTS run it is set beside, in full batches
only (390 steps on 25k images; search.py keeps the last partial batch unless --drop_last=1, as every
search in results/ ran); the alpha half is not used (BN-NAS has no alpha).
After every epoch: each candidate's BN indicator (bnnas.indicators, mean over the cells), the exact best
cell (bnnas.best_cell, the per-edge argmax) and what BN-NAS's evolution finds (bnnas.evolve), with
--bench201 that cell's NB201 accuracies.
Outputs in --out: config.json, log.txt, history.json (a row per epoch: lr, loss, accuracy, seconds, the
cell, its `none` and skip counts, the smallest top-2 gap of the indicators, evolution's cell, benchmark
accuracies), indicators.json (per epoch, each edge's indicators: the mean over cells and every cell's,
as alphas.json holds alpha for search.py), genotype.json (the final cell), indicators.png (drawn at the
end), checkpoint.pt (atomic, every epoch and where SIGTERM / Ctrl-C stopped it; --resume=1 continues
bit-identically on CPU, mid-epoch included). One run per --out (a lock); bad flags end in one line.
"""
import functools
import json
import os
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

import bnnas
import genotypes as G
from harness import batching, checkpoints, cli, data, runs, search_run
from harness.frozen_state import FrozenState
from harness.search_run import Tally
from search import bench201_dataset, check_bench201, gradient_step, weight_groups
from spaces import get_space
from supernet import check_supernet, set_trainable


@dataclass
class BNNASConfig:
    space: str = "nb201"           # the port is to NAS-Bench-201 (paper Sec. 5.1); no other space
    dataset: str = "cifar10"       # cifar10 | cifar100 | svhn | ImageNet16-120 | imagefolder | synthetic
    data: str = "data"             # dataset root (imagefolder: a folder with train/<class>/)
    download: bool = True          # fetch missing cifar/svhn files through torchvision (0: never online)
    option: str = "C"              # Table 3: A = conv + BN trained, C = only BN trained (Table 1's columns)
    epochs: int = 50               # Table 3: 10, 50 and 250
    batch_size: int = 64           # images per step (NB201's search batch)
    lr: float = 0.025              # SGD, cosine per epoch ...
    lr_min: float = 0.001          # ... down to this (NB201)
    momentum: float = 0.9          # SGD momentum (NB201) ...
    nesterov: bool = True          # ... Nesterov's (NB201's DARTS)
    weight_decay: float = 5e-4     # on every trained weight, the cell BN gamma and beta included ...
    bn_decay: bool = True          # ... unless 0 (BN-NAS's own code decays no BN weight: `none` keeps gamma 1;
                                   # --trained_bn=indicators, its code's setting, implies 0 unless given)
    grad_clip: float = 5.0         # max norm of the weight gradients
    C: int = 16                    # initial channels
    layers: int = 5                # cells per stage (N)
    init: str = "kaiming"          # conv init: kaiming | xavier | pytorch (the random features)
    train_classifier: bool = True  # under option C, train the linear classifier too (search.py's default)
    trained_bn: str = "all"        # option C: all (every BN, as RF-DARTS' C) | indicators (only each candidate
                                   # op's last BN, nothing else: BN-NAS's code, bychen515/BNNAS supernet/main.py)
    subset: int = 0                # use only this many training images (0: all), split as search.py does
    skip_bad_images: bool = False  # leave unreadable images out (with a warning) instead of stopping
    seed: int = 0                  # init, data order, paths and the evolution
    device: str = "auto"           # auto | cpu | cuda | cuda:1 | mps
    out: str = "runs/bnnas"
    resume: bool = False           # continue from OUT/checkpoint.pt (auto: where there is one, else start)
    bench201: str = ""             # NB201 benchmark file / CSV: each epoch's cell looked up in it
    bench201_dataset: str = ""     # its dataset column ("": the searched one's; imagefolder: cifar10)
    log_every: int = 50            # a progress line every this many steps
    stop_after: int = 0            # end this session after so many epochs (resume later); 0: run all


# What a resumed run may change; every other setting comes from OUT/config.json (or the checkpoint).
RUN_KEYS = {"epochs", "out", "resume", "device", "stop_after", "log_every", "bench201", "bench201_dataset",
            "download"}
RANGES = dict(epochs="[1, inf)", batch_size="[1, inf)", lr="(0, inf)", lr_min="[0, inf)", momentum="[0, 1)",
              weight_decay="[0, inf)", grad_clip="[0, inf)", C="[1, inf)", layers="[1, inf)", subset="[0, inf)",
              seed=cli.SEED_RANGE, log_every="[0, inf)", stop_after="[0, inf)")
OPTIONS = {"A": "conv + BN", "C": "only BN"}  # Table 3's two settings as Table 1's options
PATH_STREAM = 201  # the third part of each epoch's path seed (seed, epoch, PATH_STREAM): not the loaders'
REQUIRED = ("model", "w_opt", "epoch", "rng", "history")  # what a checkpoint must hold


def make_config(argv=None):
    """The run's config, checked (`validate`). A resume keeps the run's own settings (OUT/config.json,
    else the checkpoint's); only RUN_KEYS may change, and --stop_after belongs to the session giving it."""
    argv = checkpoints.auto_resume(argv, BNNASConfig.out)
    cfg, given = cli.parse_config(BNNASConfig, argv), cli.explicit_keys(argv)
    saved = checkpoints.saved_settings(cfg.out) if cfg.resume else None
    if saved is not None:
        cfg = cli.resumed_config(BNNASConfig, saved, argv, RUN_KEYS)
        cfg = cfg if "stop_after" in given else replace(cfg, stop_after=0)
    elif cfg.trained_bn == "indicators" and "bn_decay" not in given:
        # BN-NAS's code (bychen515/BNNAS) decays no BN weight (SPOS' parameter groups), and sets an exactly
        # zero gradient to None, so SGD never moves `none`'s gamma: the whole of its setting, not half of it
        cfg = replace(cfg, bn_decay=False)
    return validate(cfg)


def validate(cfg):
    """Refuse in one line, before any data is read, what the run would refuse at start-up: a value out of
    range, another space, option B or D, a dataset that is not a small-image one, a --subset below one
    batch per half, a missing data folder or benchmark file; torchrun. Returns cfg with the benchmark's
    dataset resolved (search.bench201_dataset)."""
    cli.check_ranges(cfg, RANGES)
    space = get_space(cfg.space)
    if space.name != "nb201":
        raise cli.ConfigError(f"--space={cfg.space}: BN-NAS is ported to NAS-Bench-201 only (paper Sec. 5.1)")
    if cfg.option.upper() not in OPTIONS:
        raise cli.ConfigError(f"--option={cfg.option}: choose A (conv + BN) or C (only BN), Table 3's settings; "
                               "B and D freeze BN, so every gamma stays 1 and the indicator ranks nothing")
    if cfg.dataset not in data.NAMES:
        raise cli.ConfigError(f"--dataset={cfg.dataset}: choose one of {', '.join(data.NAMES)}")
    if cfg.trained_bn not in ("all", "indicators"):
        raise cli.ConfigError(f"--trained_bn={cfg.trained_bn}: choose all or indicators")
    if cfg.trained_bn == "indicators" and cfg.option.upper() != "C":
        raise cli.ConfigError("--trained_bn=indicators is an only-BN setting: it needs --option=C")
    if cfg.nesterov and not cfg.momentum:
        raise cli.ConfigError("--nesterov=1 needs --momentum > 0 (or pass --nesterov=0)")
    if cfg.subset and cfg.subset // 2 < cfg.batch_size:
        raise cli.ConfigError(f"--subset={cfg.subset}: each half gets about {cfg.subset // 2} images, fewer "
                               f"than one batch (--batch_size={cfg.batch_size})")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise cli.ConfigError("bnnas_search.py runs in one process (a step runs one path): start it "
                               "without torchrun")
    check_supernet(space, cfg.C, cfg.layers, init=cfg.init)
    runs.check_device(cfg.device)
    data.check_present(cfg.dataset, cfg.data, cfg.download)
    if cfg.bench201:
        check_bench201(cfg.bench201)
    return replace(cfg, option=cfg.option.upper(), bench201_dataset=bench201_dataset(cfg, space))


def epoch_paths(cfg, epoch, steps):
    """The epoch's paths, (steps, 6) op indices: a function of (seed, epoch) only, so a resumed epoch
    draws the same ones."""
    g = torch.Generator().manual_seed(batching.key_seed(cfg.seed, epoch, PATH_STREAM))
    return bnnas.sample_paths(g, steps).tolist()


def top2_gap(ind):
    """Smallest gap between an edge's two highest indicators, over the edges: how near a flip is."""
    top2 = np.sort(np.asarray(ind), axis=1)[:, -2:]
    return float((top2[:, 1] - top2[:, 0]).min())


def epoch_row(cfg, model, epoch, lr, sums, seconds, bench):
    """The epoch's history row: loss and accuracy of the single-path steps, the indicators (mean over the
    cells and per cell), the exact best cell and evolution's, and with a benchmark the cell's accuracies."""
    per_cell = bnnas.indicators(model)  # (3N, 6, 5)
    ind = per_cell.mean(0)              # (6, 5): the score's terms
    cell = bnnas.best_cell(ind)
    evolved, scored = bnnas.evolve(ind, seed=cfg.seed)
    loss, acc, _, _ = Tally.means(sums)
    rec = {"space": "nb201", **G.genotype_to_json(cell), "nb201_index": G.nb201_index(cell),
           "score": round(bnnas.cell_score(ind, cell), 6)}
    row = dict(epoch=epoch + 1, lr=lr, train_loss=loss, train_acc=acc, seconds=seconds, genotype=rec,
               skip_count=G.skip_count(cell), none_count=G.op_counts(cell).get("none", 0),
               margin=top2_gap(ind), evolution=dict(arch=evolved.to_str(), cells_scored=scored,
                                                    best_score=bnnas.cell_score(ind, evolved) >= bnnas.cell_score(ind, cell)),
               # the means in full (the cell is their argmax, and gaps are small), every cell's to 7 decimals
               indicators=ind.tolist(), per_cell=np.round(per_cell.numpy(), 7).tolist())
    if bench is not None:
        q = bench.query(rec["arch"], cfg.bench201_dataset)
        row["bench201"] = {k: q[k] for k in ("dataset", "valid_acc", "test_acc")}
    return row


def epoch_line(cfg, row):
    return (f"epoch {row['epoch']}/{cfg.epochs} lr {row['lr']:.4g} train {row['train_loss']:.3f}/{row['train_acc']:.3f} "
            f"{row['seconds']:.0f}s none {row['none_count']} skip {row['skip_count']} gap {row['margin']:.2e} "
            f"{row['genotype']['arch']}" + ("" if row["evolution"]["best_score"] else f" (evolution stopped short: {row['evolution']['arch']})")
            + (f" bench201 {row['bench201']}" if "bench201" in row else ""))


def write_outputs(out, history):
    """indicators.json (per epoch: each edge's indicators, mean over cells and per cell), history.json
    (the rest of each row) and genotype.json (the last cell, with evolution's)."""
    with_ind = ("indicators", "per_cell")
    checkpoints.write_json(os.path.join(out, "indicators.json"),
                           [{k: r[k] for k in ("epoch", *with_ind)} for r in history])
    checkpoints.write_json(os.path.join(out, "history.json"),
                           [{k: v for k, v in r.items() if k not in with_ind} for r in history])
    checkpoints.write_json(os.path.join(out, "genotype.json"), {**history[-1]["genotype"],
                                                                "evolution": history[-1]["evolution"]})


def draw(out, log):
    """OUT/indicators.png, where matplotlib is installed (figures only)."""
    try:
        from harness.bnnas_figure import indicator_figure
    except ImportError as e:
        if not (e.name or "").startswith("matplotlib"):
            raise
        log("note: matplotlib is not installed: no indicators.png")
        return
    log(f"figure: {indicator_figure(out)}")


def search(cfg, device=None, stop=None):
    """Run (or continue) the BN-NAS search `cfg` describes -> (model, history); one run per --out."""
    device = device or runs.pick_device(cfg.device)
    stop = stop or checkpoints.StopSignals(1, device)  # main() installs it; without: default handlers
    checkpoints.out_dir(cfg.out)
    with checkpoints.RunLock(cfg.out), runs.tuned(device):
        return _search(cfg, device, stop)


def _search(cfg, device, stop):
    log = runs.Log(cfg.out)
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    ckpt = checkpoints.load_checkpoint(ckpt_path, required=REQUIRED, log=log) if cfg.resume else None
    if ckpt is not None and "a_opt" in ckpt:  # holds every key of ours too: told apart by α's optimizer
        raise cli.ConfigError(f"{ckpt_path} was written by search.py (it holds α's optimizer): resume it with "
                              "search.py, or give bnnas_search.py another --out")
    if not cfg.resume and checkpoints.has_checkpoint(ckpt_path):
        raise FileExistsError(f"{ckpt_path} exists: pass --resume=1 to continue it, or another --out")
    if not cfg.resume:  # nor over a finished run's results whose checkpoint is gone
        checkpoints.refuse_overwrite(cfg.out)
    saved = cli.saved_settings(BNNASConfig, ckpt.get("config", {})) if ckpt else {}
    differ = cli.differing(runs.as_dict(cfg), saved, RUN_KEYS)  # a key the checkpoint lacks: its default
    if differ:
        raise cli.ConfigError(f"{ckpt_path} was written with other settings than {cfg.out}/config.json "
                               f"({', '.join(differ)}): remove that config.json to continue with the checkpoint's")
    runs.seed_everything(cfg.seed)
    # full batches only, as Table 3's runs (BN-NAS's single-path training has no epoch-end rule to follow)
    weight_loader, _, num_classes, about = search_run.make_loaders(cfg, device, 0, 1, drop_last=True)
    model = bnnas.build_bnnas_supernet(num_classes, cfg.C, cfg.layers, cfg.init, cfg.seed).to(device)
    groups = set_trainable(model, cfg.option, cfg.train_classifier)
    if cfg.trained_bn == "indicators":  # BN-NAS's code: the indicator BNs train, everything else is frozen
        indicator = {id(p) for p in bnnas.indicator_parameters(model)}
        for p in model.parameters():
            p.requires_grad_(id(p) in indicator)
    for name, params in groups.items():  # what trains in the end (after --trained_bn), as set_trainable's table
        if params:
            log(f"option {cfg.option}: {name:10s} {sum(p.numel() for p in params if p.requires_grad):,} of "
                f"{sum(p.numel() for p in params):,} elements trained")
    frozen = FrozenState(model)  # option C: the convs are random features, hashed in a checkpoint, not stored
    weights = [p for p in model.parameters() if p.requires_grad]
    w_opt = torch.optim.SGD(weight_groups(weights, groups["cell_bn"], cfg), cfg.lr, momentum=cfg.momentum,
                            nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    history, start, first = [], 0, 0  # first: steps of epoch `start` done before a stop signal
    if ckpt is not None:
        model.load_state_dict(frozen.complete(ckpt, ckpt_path))
        w_opt.load_state_dict(ckpt["w_opt"])
        history, start, first = ckpt["history"], ckpt["epoch"], ckpt.get("step", 0)
        runs.set_rng_state(ckpt["rng"])
        if history:  # the files say what the checkpoint holds (e.g. killed before an epoch's outputs)
            write_outputs(cfg.out, history)
        log(f"resumed after epoch {start}" + (f", step {first} of epoch {start + 1}" if first else ""))
    checkpoints.record_session(cfg.out, runs.as_dict(cfg), start, ckpt is not None, RUN_KEYS, log,
                               schedule="the cosine lr", saved=ckpt and ckpt.get("config"))
    steps = len(weight_loader)
    log(f"BN-NAS on nb201, option {cfg.option} ({OPTIONS[cfg.option]}) on {cfg.dataset}: {about}, {steps} steps "
        f"per epoch of {cfg.batch_size} images (search.py's weight images; BN-NAS has no alpha), single path, device {device}")
    bench = search_run.open_benchmark(cfg, model.space, True, log)

    def checkpoint(epochs_done, **partial):  # `partial`: where a stop signal cut an epoch
        checkpoints.save_checkpoint(ckpt_path, dict(
            model=frozen.strip(model.state_dict()), frozen=frozen.record(), w_opt=w_opt.state_dict(),
            epoch=epochs_done, rng=runs.rng_state(), config=runs.as_dict(cfg), history=history, **partial))

    last = min(cfg.epochs, start + cfg.stop_after) if cfg.stop_after else cfg.epochs
    stop.armed = True  # from here on a stop signal ends the run after the current step, checkpointed
    pace = search_run.Pace()  # seconds per step after the session's warm-up (compiling)
    cpu_note = search_run.CpuNote(log, cfg, device, steps, pace)  # how long a whole-dataset CPU run takes
    for epoch in range(start, last):
        skip = first if epoch == start else 0  # a stopped epoch continues at its next batch
        tally = Tally(device, ckpt.get("tally") if skip else None)
        lr, t0 = runs.cosine_lr(cfg.lr, epoch, cfg.epochs, cfg.lr_min), time.time() - (ckpt.get("seconds", 0.0) if skip else 0.0)
        runs.set_lr(w_opt, lr)
        model.train()
        weight_loader.set_epoch(epoch, skip)
        paths = epoch_paths(cfg, epoch, steps)
        for step, (x, y) in enumerate(weight_loader, skip):
            # one SGD step through paths[step] only: the ops off it get no gradient (None), SGD skips them
            forward = functools.partial(model, path=paths[step])
            tally.weight(gradient_step(forward, weights, w_opt, x, y, cfg.grad_clip), len(y))
            pace.step()
            if step + 1 < steps:
                search_run.progress(log, cfg, epoch, step, steps, tally, t0, ckpt_path, pace.seconds())
                cpu_note(epoch)
                if stop.requested():
                    checkpoints.check_finite(tally.total(1)[0], ckpt_path, f"in epoch {epoch + 1}", model, "--lr")
                    checkpoint(epoch, step=step + 1, tally=tally.total(1), seconds=time.time() - t0)
                    stop.stop(f"in epoch {epoch + 1} after step {step + 1}/{steps}", ckpt_path)
        sums = tally.total(1)
        checkpoints.check_finite(sums[0], ckpt_path, f"in epoch {epoch + 1}", model, "--lr")
        history.append(epoch_row(cfg, model, epoch, lr, sums, time.time() - t0, bench))
        log(epoch_line(cfg, history[-1]))
        checkpoint(epoch + 1)  # before the outputs, as search.py: a resume rewrites them from the checkpoint
        write_outputs(cfg.out, history)
        if stop.requested():
            stop.stop(f"after epoch {epoch + 1}", ckpt_path)
    stop.armed = False
    if history and history[-1]["epoch"] == cfg.epochs:
        log(f"final cell: {json.dumps(history[-1]['genotype'])}")
        draw(cfg.out, log)
    return model, history


def main(argv=None):
    cfg = make_config(argv)
    device = runs.pick_device(cfg.device)
    with checkpoints.StopSignals(1, device) as stop:
        return search(cfg, device, stop)


if __name__ == "__main__":
    cli.run(main)
