"""The bookkeeping around search.py's loop, so that the loop reads as the algorithm (Eq. 7-8).

Owns: the two search halves as loaders (`make_loaders`, --batch_size as the global batch), an epoch's
running sums over both steps (`Tally`, summed over DDP ranks), the progress and epoch lines, the
epoch's history row (the derived cell, how settled alpha is, benchmark accuracies of the searched
dataset, from the table only rank 0 opens: `open_benchmark`) and the files an epoch writes
(alphas.json for Fig. 5, history.json, genotype.json). No update rule lives here.
"""
import os
import time

import torch.nn.functional as F

import genotypes as G
from harness import batching, checkpoints, cli, data, ddp, imagenet_subset, op_scale, rundir, runs
from spaces import get_space


LOWER = "--lr or --arch_lr"  # what a non-finite search loss asks to lower (checkpoints.check_finite)


def alpha_entropy(model):
    """Mean entropy (nats) of the per-edge softmax(alpha): log(n_ops) at init, 0 when one-hot."""
    ents = [-(p * p.log()).sum(-1).mean().item()
            for p in (F.softmax(a.detach().float(), -1) for a in model.alphas().values())]
    return sum(ents) / len(ents)


def alpha_margin(model):
    """Smallest gap between the top-2 softmax(alpha) entries an edge's derivation compares, over all edges
    (genotypes.top2_margins: `none` left out in DARTS-style spaces): how close a flip is."""
    probs = G.edge_softmax(model.alphas(), decimals=9)
    return min(min(G.top2_margins(p, G.choice_ops(model.space, kind))) for kind, p in probs.items())


def genotype_record(space, model):
    """genotype.json content: the derived cell, plus its NB201 arch string and index in that space."""
    g = G.derive(space, model.alphas(), model.betas())
    rec = {"space": space.name, **G.genotype_to_json(g)}
    if space.name == "nb201":
        rec["nb201_index"] = G.nb201_index(g)
    return g, rec


def make_loaders(cfg, device, rank, world, drop_last=False, alpha_on_test=True):
    """The two search halves as loaders -> (weight loader, alpha loader, num_classes, description).
    `drop_last`: leave out the weight half's last partial batch. Alpha batches are full: one per
    step, a seeded pass over the alpha half after another (DARTS draws a random batch of the whole
    size for each alpha step). `alpha_on_test`: data.search_split's. The streamed ImageNet subset
    keeps both halves' partial batches (PC-DARTS' DataLoaders).

    --batch_size is the global batch (the paper's and PC-DARTS' number): each of `world` processes takes
    batch_size / world images of the same global batch (batching.rank_share), so steps per epoch and
    the schedules do not depend on the number of processes."""
    batch = ddp.per_process_batch(cfg.batch_size, world)
    if cfg.dataset == "imagenet":  # stream a per-class sample of a large ImageNet-style folder
        if rank == 0:  # one scan of the folder; the other ranks read the file lists it writes
            imagenet_subset.prepare(cfg.data, cfg.out, (cfg.weight_frac, cfg.arch_frac), cfg.seed)
        ddp.wait_for_rank0(world)
        (fw, lw, classes), (fa, la, _) = imagenet_subset.prepare(
            cfg.data, cfg.out, (cfg.weight_frac, cfg.arch_frac), cfg.seed)
        kw = dict(device=device, rank=rank, world_size=world, workers=cfg.workers, skip_bad=cfg.skip_bad_images)
        loaders = (imagenet_subset.stream_loader(fw, lw, batch, seed=cfg.seed, **kw),
                   imagenet_subset.stream_loader(fa, la, batch, seed=cfg.seed + 1, **kw))
        return (*loaders, len(classes), f"{len(fw)} weight / {len(fa)} alpha images (file lists in --out)")
    if rank == 0:  # first run: rank 0 downloads cifar/svhn, the other ranks then read its files
        data.fetch(cfg.dataset, cfg.data, cfg.download)
    ddp.wait_for_rank0(world)
    info = data.dataset_info(cfg.dataset, cfg.data, skip_bad=cfg.skip_bad_images)
    (xw, yw), (xa, ya) = data.search_split(cfg.dataset, cfg.data, cfg.subset or None, cfg.seed,
                                           skip_bad=cfg.skip_bad_images, alpha_on_test=alpha_on_test)
    kw = dict(device=device, mean=info.mean, std=info.std, train=True, rank=rank, world_size=world)
    loaders = (batching.TensorLoader(xw, yw, batch, seed=cfg.seed, drop_last=drop_last, **kw),
               batching.TensorLoader(xa, ya, batch, seed=cfg.seed + 1, drop_last=True, **kw))
    if min(len(loader) for loader in loaders) == 0:
        raise cli.ConfigError(f"batch_size={cfg.batch_size} is larger than a search half "
                               f"({len(yw)} / {len(ya)} images)")
    return (*loaders, info.num_classes, f"{len(yw)} weight / {len(ya)} alpha images")


class Tally(ddp.StepSums):
    """One epoch's running sums: loss sum, correct and images of the weight steps (0-2) and of the
    alpha steps (3-5), exact and without a host sync per step (ddp.StepSums). `total` sums them over
    the ranks; a mid-epoch checkpoint keeps the total, which a resume gives back to rank 0 only."""

    def __init__(self, device, saved=None):
        super().__init__(device, groups=2, saved=saved)

    def weight(self, step_result, n):  # (loss, correct) of a step: device tensors
        self.add(*step_result, n, group=0)

    def alpha(self, step_result, n):
        self.add(*step_result, n, group=1)

    @staticmethod
    def means(s):
        """(weight loss, weight acc, alpha loss, alpha acc) from summed values."""
        return s[0] / max(s[2], 1), s[1] / max(s[2], 1), s[3] / max(s[5], 1), s[4] / max(s[5], 1)


def progress(log, cfg, epoch, step, steps, tally, t0, ckpt_path, pace=None, world=1):
    """Every --log_every steps: this process's running weight loss and accuracy (rank 0's under DDP),
    and about how long the epoch and the run have left: at `pace` seconds per step (Pace.seconds, this
    session's pace after its warm-up) when given, else at this epoch's pace so far. A non-finite loss
    stops a 1-process run here; under DDP a rank's own sums would stop it alone while the others wait in
    the next all-reduce, so there the checks on all-reduced sums and parameters (a stop, epoch end) do."""
    if cfg.log_every and (step + 1) % cfg.log_every == 0:
        s = tally.local()
        if world == 1:
            checkpoints.check_finite(s[0] + s[3], ckpt_path, f"in epoch {epoch + 1}", lower=LOWER)
        loss, acc, _, _ = Tally.means(s)
        elapsed = time.time() - t0
        per_step = pace or elapsed / (step + 1)
        epoch_left = per_step * (steps - step - 1)
        run_left = epoch_left + per_step * steps * (cfg.epochs - epoch - 1)
        log(f"  epoch {epoch + 1} step {step + 1}/{steps} loss {loss:.3f} acc {acc:.3f} ({elapsed:.0f}s; left: "
            f"epoch ~{runs.duration(epoch_left)}, run ~{runs.duration(run_left)})")


class Pace:
    """Seconds per step of this session, timed from the end of its WARM-th step: the first steps of a
    session compile (--compile=1; on a GPU also CUDA graphs, cuDNN autotuning), and timed from step 0 a
    C=8 run on the 50,000 CIFAR-10 images read 37 s per step for a while against 0.7 s, its first epoch's
    time-left estimates days long. Between steps counts too (an epoch end's evaluation and checkpoint)."""
    WARM = 3

    def __init__(self):
        self.done, self.since = 0, None

    def step(self):
        """Call after each step."""
        self.done += 1
        if self.done == self.WARM:
            self.since = time.time()

    def seconds(self):
        """Seconds per step since the warm-up; None until a step after it has ended."""
        n = self.done - self.WARM
        return (time.time() - self.since) / n if n > 0 else None


class CpuNote:
    """A fresh search on the whole dataset on the CPU: one line, once, in its first epoch, says about how
    long the run takes here (at `pace`, timed over CHECK steps after the warm-up) and which flags give a
    reduced run; none for a run under WORTH seconds (a small dataset read whole)."""
    CHECK = 3
    WORTH = 1800  # seconds: a run shorter than this gets no note

    def __init__(self, log, cfg, device, steps, pace):
        self.log, self.cfg, self.steps, self.pace = log, cfg, steps, pace
        self.on = device.type == "cpu" and not cfg.subset

    def __call__(self, epoch):
        if not self.on or epoch != 0 or self.pace.done != self.pace.WARM + self.CHECK:
            return
        cfg, per_step = self.cfg, self.pace.seconds()
        if per_step * self.steps * cfg.epochs < self.WORTH:  # a small dataset: nothing to warn of
            return
        total = runs.duration(per_step * self.steps * cfg.epochs)
        C = cfg.C or get_space(getattr(cfg, "space", "nb201")).C  # search.py's 0: the space's default
        smaller = "--subset=4000" + (" --C=8" if C > 8 else "")
        self.log(f"note: on the CPU this search of the whole dataset (C={C}) takes about {total} "
                 f"here ({per_step:.2f} s per step, {self.steps} steps x {cfg.epochs} epochs); a reduced run: "
                 f"{smaller} (the 2-core runs of results/README.md), or a GPU")


def end_of_epoch(cfg, model, space, epoch, lr, sums, seconds, bench, world, arch, ckpt_path,
                 probe=None, alpha_grads=None):
    """The epoch's history row: losses and accuracies summed over all ranks, the derived cell and how
    settled alpha is (skip count, entropy, margin), softmax(alpha) for Fig. 5, benchmark accuracies,
    (with a probe, rank 0) each op's mean |gamma| and eta (op_scale.py) beside alpha, and (with
    alpha_grads) the mean and spread of alpha's gradient over the epoch and their ratio, `alpha_snr`; on
    CUDA the epoch's peak GPU memory (`gpu_mem_mb`, `gpu_reserved_mb`: runs.gpu_memory; after a resume,
    of the steps since)."""
    checkpoints.check_finite(sums[0] + sums[3], ckpt_path, f"in epoch {epoch + 1}", model, LOWER)
    if world > 1:  # what trains saw the same averaged gradients on every rank, so it must agree bit for bit
        ddp.check_ranks_agree([*arch, *(p for p in model.weight_parameters() if p.requires_grad)],
                              "alpha or a trained weight")
        ddp.keep_rank0_buffers(model, world)  # outer BN running stats saw only this rank's shard
    g, rec = genotype_record(space, model)
    train_loss, train_acc, valid_loss, valid_acc = Tally.means(sums)
    row = dict(epoch=epoch + 1, lr=lr, train_loss=train_loss, train_acc=train_acc, valid_loss=valid_loss,
               valid_acc=valid_acc, seconds=seconds, skip_count=G.skip_count(g), entropy=alpha_entropy(model),
               margin=alpha_margin(model), genotype=rec, alphas=G.edge_softmax(model.alphas(), decimals=6))
    if model.betas() is not None:
        row["betas"] = G.edge_normalisation(space, model.betas())  # per node over its in-edges, as the supernet
    if bench is not None:  # rank 0 only: the others do not open the file
        q = bench.query(rec["arch"], cfg.bench201_dataset)
        row["bench201"] = {k: q[k] for k in ("dataset", "valid_acc", "test_acc")}
    if probe is not None:
        row["op_scale"] = probe.measure()
    if alpha_grads is not None and alpha_grads.steps:  # none before --arch_start
        row["alpha_snr"], row["alpha_grad"] = alpha_grads.summary()
    row.update(runs.gpu_memory(next(model.parameters()).device))  # CUDA: this epoch's peaks (the first: compiling)
    return row


def open_benchmark(cfg, space, main_proc, log):
    """The --bench201 table (bench201.NB201) on the main process of an nb201 search, else None: a v1_1
    .pth takes ~26 GB of RAM, once per node rather than once per GPU. Logs which dataset's column."""
    if cfg.bench201 and space.name != "nb201" and main_proc:  # said, not silently dropped
        log(f"note: --bench201 is not used: NAS-Bench-201 holds cells of its own space only, not of --space={space.name}")
    if not (cfg.bench201 and space.name == "nb201" and main_proc):
        return None
    import bench201
    bench = bench201.NB201(cfg.bench201)
    own = rundir.BENCH201_COLUMNS.get(cfg.dataset) if cfg.dataset != "imagefolder" else None
    ds = cfg.bench201_dataset
    # refused now, not at the end of an epoch: a cut table (a found cell may be missing from it; its ranks and
    # medians are not the benchmark's) or one without this column (no accuracy in any epoch; one cell is
    # enough to tell: a -simple folder reads one file for it)
    if len(bench) != bench201.CELLS:
        raise cli.ConfigError(f"--bench201={cfg.bench201} holds {len(bench):,} cells, not NAS-Bench-201's "
                              f"{bench201.CELLS:,}: a cut or partial table (export it again)")
    if bench.query(0, ds)["test_acc"] is None:
        raise cli.ConfigError(f"--bench201={cfg.bench201} holds no {rundir.BENCH201_NAMES[ds]} test accuracies: "
                              "pass a table that has them, or another --bench201_dataset")
    guessed = cfg.dataset == "imagefolder" and ds == rundir.BENCH201_COLUMNS["imagefolder"]  # the default
    # the column said with its reason: the searched dataset's own (nothing to add), another one asked for, or
    # an ImageFolder's default (CIFAR-10, named as taken)
    log(f"bench201: {rundir.BENCH201_NAMES[ds]} accuracies from {cfg.bench201}" + (
        "" if own == ds else f" (--bench201_dataset={ds}, not the searched {cfg.dataset})" if own or not guessed
        else f" (--dataset={cfg.dataset} has no benchmark column of its own: taken as --bench201_dataset={ds}; "
        "pass another to change it)"))
    return bench


def epoch_line(cfg, row):
    rec = row["genotype"]
    # before --arch_start no alpha batch is seen: nothing was measured on the alpha half
    valid = "-/-" if row["epoch"] <= cfg.arch_start else f"{row['valid_loss']:.3f}/{row['valid_acc']:.3f}"
    return (f"epoch {row['epoch']}/{cfg.epochs} lr {row['lr']:.4g} train {row['train_loss']:.3f}/"
            f"{row['train_acc']:.3f} valid {valid} "
            f"{row['seconds']:.0f}s skip {row['skip_count']} entropy {row['entropy']:.4f} "
            f"margin {row['margin']:.2e} {rec.get('arch') or rec['normal']}"
            + (" gamma {:.3f} eta {:.3f}".format(*op_scale.summary(row["op_scale"])) if "op_scale" in row else "")
            + (f" snr {row['alpha_snr']:.3f}" if row.get("alpha_snr") is not None else "")
            + runs.gpu_memory_text(row)
            + (f" bench201 {_rounded(row['bench201'])}" if "bench201" in row else ""))


def _rounded(bench):
    """The benchmark's row for the log line, accuracies to 2 decimals as the table has them (history.json
    keeps them whole); still a dict literal, as harness/rundir.py reads the line back."""
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in bench.items()}


def write_outputs(out, history):
    """alphas.json (Fig. 5, with each epoch's op scales and alpha's gradient statistics), history.json
    (one row per epoch, without those) and genotype.json."""
    with_alpha = ("alphas", "betas", "op_scale", "alpha_grad")
    checkpoints.write_json(os.path.join(out, "alphas.json"),
                           [{k: r[k] for k in ("epoch", *with_alpha) if k in r} for r in history])
    checkpoints.write_json(os.path.join(out, "history.json"),
                           [{k: v for k, v in r.items() if k not in with_alpha} for r in history])
    checkpoints.write_json(os.path.join(out, "genotype.json"), history[-1]["genotype"])


def dead_alphas(cfg, model):
    """What in the search leaves some alpha untrained, said before the first step (a cell derived from an
    alpha that never moved is its random initial argmax): alpha steps that start after the last epoch
    (--arch_start, e.g. PC-DARTS' 15 in a short check), and a DARTS-style supernet of fewer than 3 cells,
    which holds no normal cell (reductions sit at layers // 3 and 2 * layers // 3)."""
    notes = []
    if cfg.arch_start >= cfg.epochs:
        notes.append(f"--arch_start={cfg.arch_start} >= --epochs={cfg.epochs}: no alpha step runs, so the cell "
                     "is the argmax of the initial alpha; lower --arch_start for a short check")
    cells = getattr(model, "cells", [])
    if cells and all(getattr(c, "reduction", False) for c in cells):
        notes.append(f"--layers={len(cells)}: every cell is a reduction cell, so the normal cell's alpha gets no "
                     "gradient and its derived cell is its initial argmax; use --layers=3 or more")
    return notes
