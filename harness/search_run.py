"""The bookkeeping around search.py's loop, so that the loop reads as the algorithm (Eq. 7-8).

Owns: the two search halves as loaders (`make_loaders`, --batch_size as the global batch), an epoch's
running sums over both steps (`Tally`, summed over DDP ranks), the progress and epoch lines, the
epoch's history row (the derived cell, how settled alpha is, benchmark accuracies) and the files an
epoch writes (alphas.json for Fig. 5, history.json, genotype.json). No update rule lives here.
"""
import math
import os
import time

import torch
import torch.nn.functional as F

import genotypes as G
from harness import batching, checkpoints, data, ddp, imagenet_subset, runs


def alpha_entropy(model):
    """Mean entropy (nats) of the per-edge softmax(alpha): log(n_ops) at init, 0 when one-hot."""
    ents = [-(p * p.log()).sum(-1).mean().item()
            for p in (F.softmax(a.detach().float(), -1) for a in model.alphas().values())]
    return sum(ents) / len(ents)


def alpha_margin(model):
    """Smallest gap between the top-2 softmax(alpha) entries over all edges: how close a flip is."""
    gaps = [p.topk(2, dim=-1).values.diff(dim=-1).abs().min().item()
            for p in (F.softmax(a.detach().float(), -1) for a in model.alphas().values())]
    return min(gaps)


def genotype_record(space, model):
    """genotype.json content: the derived cell, plus its NB201 arch string and index in that space."""
    g = G.derive(space, model.alphas(), model.betas())
    rec = {"space": space.name, **G.genotype_to_json(g)}
    if space.name == "nb201":
        rec["nb201_index"] = G.nb201_index(g)
    return g, rec


def make_loaders(cfg, device, rank, world):
    """The two search halves as loaders -> (weight loader, alpha loader, num_classes, description).

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
        kw = dict(device=device, rank=rank, world_size=world, workers=cfg.workers)
        loaders = (imagenet_subset.stream_loader(fw, lw, batch, seed=cfg.seed, **kw),
                   imagenet_subset.stream_loader(fa, la, batch, seed=cfg.seed + 1, **kw))
        return (*loaders, len(classes), f"{len(fw)} weight / {len(fa)} alpha images (file lists in --out)")
    if rank == 0:  # first run: rank 0 downloads cifar/svhn, the other ranks then read its files
        data.fetch(cfg.dataset, cfg.data, cfg.download)
    ddp.wait_for_rank0(world)
    info = data.dataset_info(cfg.dataset, cfg.data, skip_bad=cfg.skip_bad_images)
    (xw, yw), (xa, ya) = data.search_split(cfg.dataset, cfg.data, cfg.subset or None, cfg.seed,
                                           skip_bad=cfg.skip_bad_images)
    kw = dict(device=device, mean=info.mean, std=info.std, train=True, drop_last=True, rank=rank,
              world_size=world)
    loaders = (batching.TensorLoader(xw, yw, batch, seed=cfg.seed, **kw),
               batching.TensorLoader(xa, ya, batch, seed=cfg.seed + 1, **kw))
    if min(len(loader) for loader in loaders) == 0:
        raise runs.ConfigError(f"batch_size={cfg.batch_size} is larger than a search half "
                               f"({len(yw)} / {len(ya)} images)")
    return (*loaders, info.num_classes, f"{len(yw)} weight / {len(ya)} alpha images")


class Tally:
    """One epoch's running sums, kept on the device (no host sync per step): loss sum, correct and
    images of the weight steps and of the alpha steps. `total` sums them over the ranks (exact in
    float64); a mid-epoch checkpoint keeps the total, which a resume gives back to rank 0 only."""

    def __init__(self, device, saved=None):
        self.sums = torch.zeros(6, dtype=torch.float64, device=device)
        if saved is not None:
            self.sums += torch.tensor(saved, dtype=torch.float64, device=device)

    def weight(self, step_result, n):
        self._add(0, *step_result, n)

    def alpha(self, step_result, n):
        self._add(3, *step_result, n)

    def _add(self, at, loss, correct, n):  # (loss, correct) of a step: device tensors
        self.sums[at:at + 2] += torch.stack([loss.double() * n, correct.double()])
        self.sums[at + 2] += n

    def local(self):
        return self.sums.tolist()

    def total(self, world):
        return ddp.all_sum(self.sums.tolist(), self.sums.device, world)

    @staticmethod
    def means(s):
        """(weight loss, weight acc, alpha loss, alpha acc) from summed values."""
        return s[0] / max(s[2], 1), s[1] / max(s[2], 1), s[3] / max(s[5], 1), s[4] / max(s[5], 1)


def progress(log, cfg, epoch, step, steps, tally, t0, ckpt_path):
    """Every --log_every steps: this process's running weight loss and accuracy (rank 0's under DDP),
    and at this epoch's pace so far, about how long the epoch and the run have left."""
    if cfg.log_every and (step + 1) % cfg.log_every == 0:
        s = tally.local()
        check_finite(s[0] + s[3], epoch, ckpt_path)
        loss, acc, _, _ = Tally.means(s)
        elapsed = time.time() - t0
        per_step = elapsed / (step + 1)
        epoch_left = per_step * (steps - step - 1)
        run_left = epoch_left + per_step * steps * (cfg.epochs - epoch - 1)
        log(f"  epoch {epoch + 1} step {step + 1}/{steps} loss {loss:.3f} acc {acc:.3f} ({elapsed:.0f}s; left: "
            f"epoch ~{runs.duration(epoch_left)}, run ~{runs.duration(run_left)})")


def cpu_note(log, cfg, device, epoch, step, steps, t0):
    """A fresh full-size search (the whole dataset) on the CPU: after its third step, one line says
    about how long the run takes here and which flags give a reduced run."""
    if device.type == "cpu" and not cfg.subset and epoch == 0 and step == 2:
        per_step = (time.time() - t0) / 3
        total = runs.duration(per_step * steps * cfg.epochs)
        log(f"note: on the CPU this full-size search takes about {total} here ({per_step:.2f} s per step, {steps} "
            f"steps x {cfg.epochs} epochs); a reduced run: --subset=4000 --C=8 (the 2-core runs of "
            "results/README.md), or a GPU")


def end_of_epoch(cfg, model, space, epoch, lr, sums, seconds, bench, world, arch, ckpt_path):
    """The epoch's history row: losses and accuracies summed over all ranks, the derived cell and how
    settled alpha is (skip count, entropy, margin), softmax(alpha) for Fig. 5, benchmark accuracies."""
    check_finite(sums[0] + sums[3], epoch, ckpt_path)
    if world > 1:
        ddp.check_ranks_agree(arch)
        ddp.keep_rank0_buffers(model, world)  # outer BN running stats saw only this rank's shard
    g, rec = genotype_record(space, model)
    train_loss, train_acc, valid_loss, valid_acc = Tally.means(sums)
    row = dict(epoch=epoch + 1, lr=lr, train_loss=train_loss, train_acc=train_acc, valid_loss=valid_loss,
               valid_acc=valid_acc, seconds=seconds, skip_count=G.skip_count(g), entropy=alpha_entropy(model),
               margin=alpha_margin(model), genotype=rec, alphas=G.edge_softmax(model.alphas(), decimals=6))
    if model.betas() is not None:
        row["betas"] = {k: F.softmax(b.detach().float(), -1).tolist() for k, b in model.betas().items()}
    if bench is not None:
        q = bench.query(rec["arch"], "cifar10")
        row["bench201"] = {k: q[k] for k in ("valid_acc", "test_acc")}
    return row


def epoch_line(cfg, row, with_bench):
    rec = row["genotype"]
    return (f"epoch {row['epoch']}/{cfg.epochs} lr {row['lr']:.4g} train {row['train_loss']:.3f}/"
            f"{row['train_acc']:.3f} valid {row['valid_loss']:.3f}/{row['valid_acc']:.3f} "
            f"{row['seconds']:.0f}s skip {row['skip_count']} entropy {row['entropy']:.4f} "
            f"margin {row['margin']:.2e} {rec.get('arch') or rec['normal']}"
            + (f" bench201 {row['bench201']}" if with_bench else ""))


def write_outputs(out, history):
    """alphas.json (Fig. 5), history.json (one row per epoch, without alphas) and genotype.json."""
    checkpoints.write_json(os.path.join(out, "alphas.json"),
                           [{k: r[k] for k in ("epoch", "alphas", "betas") if k in r} for r in history])
    checkpoints.write_json(os.path.join(out, "history.json"),
                           [{k: v for k, v in r.items() if k not in ("alphas", "betas")} for r in history])
    checkpoints.write_json(os.path.join(out, "genotype.json"), history[-1]["genotype"])


def check_finite(value, epoch, ckpt_path):
    """Stop on a NaN/Inf loss before this epoch's checkpoint is written over the last good one."""
    if not math.isfinite(value):
        kept = f"the checkpoint after epoch {epoch} is kept at {ckpt_path}" if epoch else "no checkpoint yet"
        raise FloatingPointError(f"non-finite loss in epoch {epoch + 1}: stopping; {kept}. "
                                 "Lower --lr or --arch_lr and resume.")
