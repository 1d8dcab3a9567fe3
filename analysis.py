"""The paper's Sec. 4 analyses as runs: plain deep nets with only BN trained (Fig. 2), a learnable λ on
every skip of ResNet-50 (Eq. 9-10, Fig. 3) and the relative variance η per conv layer (Eq. 17-18, Fig. 4).

    python analysis.py --exp=plain --depth=18 --setting=convbn   # Fig. 2: 18/50 x convbn/bn, 4 runs
    python analysis.py --exp=lambda --setting=bn --lambda_init=0.5   # Fig. 3: 2 settings x inits 0/0.5/1
    python analysis.py --exp=eta --setting=bn                   # Fig. 4: plain ResNet-50 (the defaults)
    python analysis.py --exp=plain --depth=50 --setting=bn --width=0.125 --subset=2000 --epochs=3 \\
        --dataset=imagefolder --data=../shared/data/cifar10-jpeg --test_subset=1000   # minutes on a CPU

Owns the CIFAR ResNet-18/50 (`build_resnet`: 3x3 stem, no max-pool, stages 64-128-256-512 x width; a
switch for plain blocks, one for λ-gated skips), the two training settings and the loop; η is
`relative_variance` (harness/op_scale.py, shared with the search's op-scale log). OUT gets config.json
(the config + "eta_layers", the conv names of the η lists), history.json (one row per epoch: lr,
train/test loss and error (0-1), seconds, "lambda" per block or "eta" per conv layer, network order),
log.txt and checkpoint.pt (atomic, every epoch; --resume=1 continues). The log ends with the run's
result (`result_line`), after one note when a test loss was far above chance's ln(classes)
(`loss_note`: BN statistics that have not settled, or divergence).
Settings reuse Table 1's options through supernet.set_trainable: convbn = option A (everything trains),
bn = option C (convs frozen at their Kaiming-normal fan-in init; BN γ/β and the classifier train). Every
BN of a ResNet is "outer" BN there, trained in both; λ is the "architecture" parameter: always trained.
Decisions where the paper is silent (README, "Sec. 4 analyses"):
- Recipe ("the training setting of DARTS-", not given in the references): SGD lr 0.1, momentum 0.9, wd
  5e-4, cosine to 0 per epoch, batch 128, crop + flip, 200 epochs (Fig. 3: "the end 100 epochs"
  implies more than 100). The same recipe for Fig. 2 and 4. No weight decay on λ (it would pull λ to 0).
- λ ∈ [0, 1] by projection: λ is used as it is in the forward and clamped to [0, 1] after every SGD
  step. Inits 0 and 1 are exact (a sigmoid cannot represent them) and the gradient of Eq. 10 is never
  squashed; a λ the gradient pushes past 1 stays at 1, which is how "converges to 1" shows.
  ReLU follows the sum, as in ResNet: X_{l+1} = relu(f(X_l) + λ·shortcut(X_l)), also on projections.
- η_l = Var[W_l γ_l / σ_l] / Var[W_l^init] with σ_l = sqrt(running_var + eps) of the BN after conv l
  (the population statistics Eq. 16 assumes, the value the BN divides by in eval mode); variances over
  all elements of the weight tensor. Only Var[W_l^init] (one float per layer) is kept, not the weights.
  η is logged whenever the net is plain (exp plain and eta), so the plain-50 runs also give Fig. 4.
  At init η is ~1.5, not 1: BN removes the channel mean of the ReLU outputs a conv reads (Var of
  ReLU(z) is 0.34, not the 1/2 of He et al.), so σ² ~ 0.68; with zero-mean inputs it is 1 (tested).
- The test split is scored after every epoch (the paper plots test error per epoch); nothing is chosen
  on it. --subset / --test_subset take seeded random images, for runs that fit a CPU.
- Training drops the last partial batch (a batch of a few images would give noisy BN statistics, and
  compiled graphs need static shapes). A stop signal mid-epoch drops that epoch: resume redoes it
  exactly (the loader depends only on (seed, epoch); nothing else is random).
"""
import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import checkpoints, cli
from harness import data
from harness import batching
from harness import runs
# η (Eq. 17-18) lives in the harness, where the search's op-scale log takes it too; harness modules
# never import an entry script
from harness.frozen_state import FrozenState
from harness.op_scale import relative_variance
from supernet import INITS, init_convs, set_trainable


@dataclass
class AnalysisConfig:
    exp: str = "eta"               # plain (Fig. 2) | lambda (Fig. 3) | eta (Fig. 4)
    depth: int = 50                # 18 (basic blocks) | 50 (bottlenecks)
    setting: str = "convbn"        # convbn: conv + BN trained | bn: convs frozen at init, only BN (+ fc)
    width: float = 1.0             # multiplies every stage width (64-128-256-512 at 1)
    lambda_init: float = 0.0       # exp=lambda: initial λ of every skip (paper: 0, 0.5, 1)
    dataset: str = "cifar10"       # cifar10 | cifar100 | svhn | imagefolder (small images)
    data: str = "data"             # dataset root folder
    download: bool = True          # fetch missing cifar/svhn files through torchvision
    subset: int = 0                # train on this many (seeded random) training images; 0: all
    test_subset: int = 0           # test on this many (seeded random) test images; 0: all
    epochs: int = 200              # not given; Fig. 3's "the end 100 epochs" implies more than 100
    batch_size: int = 128          # training batch (the test set is scored in batches of 256)
    lr: float = 0.1                # SGD, cosine to 0 per epoch
    momentum: float = 0.9          # SGD momentum
    weight_decay: float = 5e-4     # on every trained weight but λ
    init: str = "kaiming"          # conv init (supernet.init_convs): kaiming | xavier | pytorch
    seed: int = 0                  # the net's init, the subsets, batch order and augmentation
    device: str = "auto"           # auto | cpu | cuda | cuda:1 | mps
    amp: bool = True               # bf16 autocast for the forward (CUDA only)
    compile: bool = False          # torch.compile the forward
    out: str = "runs/analysis"     # the run's folder: config, history, log, checkpoint
    resume: bool = False           # continue OUT/checkpoint.pt (refused where there is none; auto: start then)


RUN_KEYS = {"epochs", "out", "resume", "device", "amp", "compile", "download"}  # may change on resume
# The range of every numeric setting (cli.check_ranges); depth is one of STAGES; subsets 0: all images.
RANGES = dict(width="(0, inf)", lambda_init="[0, 1]", subset="[0, inf)", test_subset="[0, inf)",
              epochs="[1, inf)", batch_size="[1, inf)", lr="(0, inf)", momentum="[0, 1)",
              weight_decay="[0, inf)", seed=cli.SEED_RANGE)
SETTINGS = {"convbn": "A", "bn": "C"}  # Table 1 options (supernet.OPTIONS) with the same rule
STAGES = {18: (False, (2, 2, 2, 2)), 50: (True, (3, 4, 6, 3))}  # depth: (bottleneck, blocks per stage)


def conv_bn(c_in, c_out, k, stride=1):
    return [nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out)]


class Block(nn.Module):
    """ResNet basic block (2 convs) or bottleneck (1x1, 3x3 with the stride, 1x1 x4, torchvision v1.5):
    out = relu(f(x) + λ·s(x)) (Eq. 9); s = identity, or 1x1 conv + BN where the shape changes.
    plain: no s at all, out = relu(f(x)). x (B, c_in, H, W) -> (B, c_out, H/stride, W/stride)."""

    def __init__(self, c_in, planes, stride, bottleneck, plain=False, skip_lambda=False, lambda_init=1.0):
        super().__init__()
        c_out = planes * (4 if bottleneck else 1)
        if bottleneck:
            layers = [*conv_bn(c_in, planes, 1), nn.ReLU(), *conv_bn(planes, planes, 3, stride), nn.ReLU(),
                      *conv_bn(planes, c_out, 1)]
        else:
            layers = [*conv_bn(c_in, planes, 3, stride), nn.ReLU(), *conv_bn(planes, planes, 3)]
        self.branch = nn.Sequential(*layers)  # f(x); its last module is the BN of the residual branch
        self.plain = plain
        self.shortcut = None if plain or (stride == 1 and c_in == c_out) else nn.Sequential(
            *conv_bn(c_in, c_out, 1, stride))
        self.lam = nn.Parameter(torch.tensor(float(lambda_init))) if skip_lambda and not plain else None

    def forward(self, x):
        out = self.branch(x)
        if not self.plain:
            skip = x if self.shortcut is None else self.shortcut(x)
            out = out + (skip if self.lam is None else self.lam * skip)
        return F.relu(out)


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem conv + BN + ReLU (no max-pool), 4 stages (stride 1, 2, 2, 2), global average
    pool, linear. x (B, 3, H, W) -> logits (B, num_classes)."""

    def __init__(self, depth, num_classes=10, plain=False, skip_lambda=False, width=1.0, lambda_init=1.0):
        super().__init__()
        bottleneck, counts = STAGES[depth]
        planes = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(*conv_bn(3, planes[0], 3), nn.ReLU())
        blocks, c = [], planes[0]
        for i, (p, n) in enumerate(zip(planes, counts)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1  # the first block of stages 2-4 halves H, W
                blocks.append(Block(c, p, stride, bottleneck, plain, skip_lambda, lambda_init))
                c = p * (4 if bottleneck else 1)
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))

    def arch_parameters(self):
        """The λ of every skip (empty without skip_lambda): supernet.param_groups files them as 'arch'."""
        return [b.lam for b in self.blocks if b.lam is not None]


def build_resnet(depth, num_classes=10, plain=False, skip_lambda=False, width=1.0, lambda_init=1.0,
                 init="kaiming"):
    """The CIFAR ResNet-18/50; with skips, width 1 and 10 classes 11,173,962 / 23,520,842 parameters
    (torchvision's counts with a 3x3 stem). Convs: Kaiming-normal fan-in (Sec. 4.2), BN γ=1, β=0."""
    if depth not in STAGES:
        raise cli.ConfigError(f"--depth={depth}: choose 18 or 50")
    if not width > 0:
        raise cli.ConfigError(f"--width={width}: must be positive")
    model = ResNet(depth, num_classes, plain, skip_lambda, width, lambda_init)
    init_convs(model, init)
    return model


def conv_bn_pairs(model):
    """[(name, conv, bn)] in network order: every conv with the BN that normalises its output."""
    mods, pairs = list(model.named_modules()), []
    for (name, m), (_, nxt) in zip(mods, mods[1:]):
        if isinstance(m, nn.Conv2d):
            assert isinstance(nxt, nn.BatchNorm2d), f"{name} is not followed by a BN"
            pairs.append((name, m, nxt))
    return pairs


def init_variances(model):
    return [conv.weight.detach().float().var(correction=0).item() for _, conv, _ in conv_bn_pairs(model)]


FAR_ABOVE_CHANCE = 5  # a test loss above this many times ln(classes) (chance) gets a note (loss_note)


def loss_note(history, num_classes):
    """One line when a test loss of the run was far above ln(num_classes), the loss of a uniform guess
    (FAR_ABOVE_CHANCE times it), else None: a net scored in eval mode with BN running statistics that
    have not settled (few steps: a tiny --subset, early epochs) or a run that diverged."""
    chance = math.log(num_classes)
    far = [r for r in history if not r["test_loss"] <= FAR_ABOVE_CHANCE * chance]  # NaN counts as far
    if not far:
        return None
    worst = max(far, key=lambda r: r["test_loss"] if r["test_loss"] == r["test_loss"] else math.inf)
    return (f"note: the test loss was far above chance (ln({num_classes}) = {chance:.2f}) in {len(far)} of "
            f"{len(history)} epochs, {worst['test_loss']:.3g} at epoch {worst['epoch']}: the BN running "
            "statistics the test pass uses have not settled (few training steps: a small --subset or early "
            "epochs) or the run diverged (train loss rising: lower --lr)")


def result_line(cfg, history):
    """The run's result, the log's last line: the last epoch's test and train loss and error, and the
    mean λ (exp lambda) or median η (plain nets) over the net."""
    last = history[-1]
    extra = ""
    if "lambda" in last:
        extra = f", mean λ {sum(last['lambda']) / len(last['lambda']):.3f}"
    elif "eta" in last:
        extra = f", median η {sorted(last['eta'])[len(last['eta']) // 2]:.3g}"
    return (f"final (epoch {last['epoch']}/{cfg.epochs}): test loss {last['test_loss']:.4g} error "
            f"{last['test_err']:.4f}, train loss {last['train_loss']:.4g} error {last['train_err']:.4f}{extra} "
            f"({os.path.join(cfg.out, 'history.json')})")


def make_config(argv=None):
    """The run's config: a resumed run's saved one (only RUN_KEYS may change), else the command line."""
    argv = checkpoints.auto_resume(argv, AnalysisConfig.out)
    cfg, given = cli.parse_config(AnalysisConfig, argv), cli.explicit_keys(argv)
    cli.check_ranges(cfg, RANGES)
    runs.check_device(cfg.device)
    path = os.path.join(cfg.out, "checkpoint.pt")
    if cfg.resume and not checkpoints.has_checkpoint(path):  # a typo in --out, or a finished run: never a fresh run
        raise FileNotFoundError(f"no checkpoint at {path}: drop --resume=1 to start a new run there")
    if cfg.resume:
        ckpt = checkpoints.load_checkpoint(path, required=("config",))
        return cli.resumed_config(AnalysisConfig, ckpt["config"], argv, RUN_KEYS)
    if cfg.exp not in ("plain", "lambda", "eta"):
        raise cli.ConfigError(f"--exp={cfg.exp}: choose plain (Fig. 2), lambda (Fig. 3) or eta (Fig. 4)")
    if cfg.setting not in SETTINGS:
        raise cli.ConfigError(f"--setting={cfg.setting}: choose convbn (all trained) or bn (only BN)")
    if cfg.exp != "lambda" and "lambda_init" in given:
        raise cli.ConfigError("--lambda_init applies to --exp=lambda only")
    if cfg.depth not in STAGES:
        raise cli.ConfigError(f"--depth={cfg.depth}: choose 18 or 50")
    if cfg.init not in INITS:
        raise cli.ConfigError(f"--init={cfg.init}: choose {', '.join(INITS)}")
    return cfg


def _take(xy, n, seed, what):
    """n seeded random items of (x, y), or all for n = 0."""
    x, y = xy
    keep = data.seeded_pick(len(y), n, seed, f"--{what}", "the data") if n else slice(None)
    return x[keep], y[keep]


def make_loaders(cfg, device):
    """(train loader, test loader, number of classes): small images decoded in memory (data.py)."""
    info = data.dataset_info(cfg.dataset, cfg.data)
    if info.streaming:
        raise cli.ConfigError(f"{cfg.data}: large images; the analyses run on 32 px data (CIFAR-style)")
    x, y = _take(data.load_split(cfg.dataset, cfg.data, True, cfg.download), cfg.subset, cfg.seed, "subset")
    xt, yt = _take(data.load_split(cfg.dataset, cfg.data, False, cfg.download), cfg.test_subset, cfg.seed,
                   "test_subset")
    kw = dict(device=device, mean=info.mean, std=info.std, seed=cfg.seed)
    train = batching.TensorLoader(x, y, cfg.batch_size, train=True, drop_last=True, **kw)
    if len(train) == 0:
        raise cli.ConfigError(f"--batch_size={cfg.batch_size} exceeds the {len(y)} training images")
    return train, batching.TensorLoader(xt, yt, 256, train=False, **kw), info.num_classes


def run(cfg, stop=None):
    """Train one analysis net; returns (model, history). Writes OUT/config.json, history.json, log.txt,
    checkpoint.pt (atomic, every epoch)."""
    device, stop = runs.pick_device(cfg.device), stop or checkpoints.StopSignals()
    checkpoints.out_dir(cfg.out)
    log, path = runs.Log(cfg.out), os.path.join(cfg.out, "checkpoint.pt")
    if not cfg.resume and checkpoints.has_checkpoint(path):
        raise FileExistsError(f"{path} exists: pass --resume=1 to continue it, or another --out")
    if not cfg.resume:  # nor over a finished run's results whose checkpoint is gone
        checkpoints.refuse_overwrite(cfg.out)
    ckpt = None
    if cfg.resume:  # make_config refused --resume=1 without a checkpoint
        ckpt = checkpoints.load_checkpoint(
            path, required=("model", "opt", "epoch", "rng", "history", "init_var"), log=log)
    train_loader, test_loader, num_classes = make_loaders(cfg, device)
    runs.seed_everything(cfg.seed)
    plain = cfg.exp != "lambda"
    model = build_resnet(cfg.depth, num_classes, plain, not plain, cfg.width, cfg.lambda_init, cfg.init)
    init_var = init_variances(model)  # Var[W_init] per conv layer, from the seeded init (CPU)
    model.to(device)  # before the optimiser loads its state: momentum buffers land on the device
    groups = set_trainable(model, SETTINGS[cfg.setting], verbose=False)  # conv / outer_bn / classifier / arch
    lams = groups["arch"]
    frozen = FrozenState(model)  # only BN: the convs are random features, hashed in a checkpoint, not stored
    weights = [p for g in ("conv", "outer_bn", "classifier") for p in groups[g] if p.requires_grad]
    opt = torch.optim.SGD([dict(params=weights), dict(params=lams, weight_decay=0.0)], cfg.lr,
                          momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    pairs, history, start = conv_bn_pairs(model), [], 0
    if ckpt is not None:
        model.load_state_dict(frozen.complete(ckpt, path))
        opt.load_state_dict(ckpt["opt"])
        init_var, history, start = ckpt["init_var"], ckpt["history"], ckpt["epoch"]
        runs.set_rng_state(ckpt["rng"])
        log(f"resumed after epoch {start}")
    conf = runs.as_dict(cfg) | ({"eta_layers": [n for n, _, _ in pairs]} if plain else {})
    checkpoints.write_json(os.path.join(cfg.out, "config.json"), conf)
    n_train = sum(p.numel() for p in weights + lams)
    log(f"{'plain ' if plain else ''}ResNet-{cfg.depth} width {cfg.width} ({cfg.setting}): "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, {n_train:,} trained; "
        f"{len(train_loader)} steps/epoch on {len(train_loader.y)} images, {len(test_loader.y)} test images, "
        f"{device}")
    forward = runs.compile_model(model, cfg.compile, device)
    amp = cfg.amp and device.type == "cuda"

    def checkpoint(epochs_done):
        return dict(model=frozen.strip(model.state_dict()), frozen=frozen.record(), opt=opt.state_dict(),
                    epoch=epochs_done, rng=runs.rng_state(), history=history, config=runs.as_dict(cfg),
                    init_var=init_var)

    if ckpt is None:  # epoch 0: a stop signal in the first epoch leaves a checkpoint to resume from
        checkpoints.save_checkpoint(path, checkpoint(0))
    stop.armed = True  # a stop signal now only sets a flag, polled after every step
    for epoch in range(start, cfg.epochs):
        t0, lr = time.time(), runs.cosine_lr(cfg.lr, epoch, cfg.epochs)
        runs.set_lr(opt, lr)
        train_loader.set_epoch(epoch)
        model.train()
        sums, n = torch.zeros(2, device=device), 0  # loss sum, correct
        for x, y in train_loader:
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                logits = forward(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for lam in lams:  # projected SGD: λ stays in [0, 1]
                    lam.clamp_(0.0, 1.0)
            sums += torch.stack([loss.detach() * len(y), (logits.argmax(1) == y).sum()])
            n += len(y)
            if stop.requested():
                stop.stop(f"in epoch {epoch + 1} (redone on resume from epoch {epoch})", path, written=False)
        train_loss, correct = sums.tolist()
        checkpoints.check_finite(train_loss, path, f"in epoch {epoch + 1}", model)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            test_loss, test_acc, _ = runs.evaluate(model, test_loader)
        row = dict(epoch=epoch + 1, lr=lr, train_loss=train_loss / n, train_err=1 - correct / n,
                   test_loss=test_loss, test_err=1 - test_acc, seconds=time.time() - t0)
        if lams:  # one λ per block, network order
            row["lambda"] = [lam.item() for lam in lams]
        if plain:  # one η per conv layer, network order (names: config.json "eta_layers")
            row["eta"] = [relative_variance(conv, bn, v) for (_, conv, bn), v in zip(pairs, init_var)]
        about = "".join(f" {k} mean/min/max {sum(v) / len(v):.3g} {min(v):.3g} {max(v):.3g}"
                        for k, v in row.items() if k in ("lambda", "eta"))
        history.append(row)
        log(f"epoch {epoch + 1}/{cfg.epochs} lr {lr:.4g} train loss/err {row['train_loss']:.3f}/"
            f"{row['train_err']:.3f} test {test_loss:.3f}/{row['test_err']:.3f} {row['seconds']:.0f}s{about}")
        checkpoints.write_json(os.path.join(cfg.out, "history.json"), history)
        checkpoints.save_checkpoint(path, checkpoint(epoch + 1))
        if stop.requested():
            stop.stop(f"after epoch {epoch + 1}", path)
    stop.armed = False
    note = loss_note(history, num_classes)
    if note:
        log(note)
    log(result_line(cfg, history))
    return model, history


def main(argv=None):
    cfg = make_config(argv)
    checkpoints.out_dir(cfg.out)
    with checkpoints.StopSignals() as stop, checkpoints.RunLock(cfg.out):  # one run per --out, as every script
        run(cfg, stop)
    return cfg.out


if __name__ == "__main__":
    cli.run(main)
