"""train.py on tiny synthetic ImageFolders (random PNG/JPEG files in a temp dir): network building,
recipes, 1-epoch smoke runs, bit-identical resume, a 2-process DDP run (gloo, CPU), bad inputs."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from harness import checkpoints, cli
from harness import ddp
import genotypes as G
from harness import runs, train_run
import train
from networks import NetworkCIFAR, NetworkImageNet, TinyNetwork

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB201 = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2-core CI machines are shared; more threads only contend
    yield
    torch.set_num_threads(n)


def make_folder(root, size, n_train, n_test, ext="png", classes=("a", "b", "c")):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            os.makedirs(root / split / c)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.{ext}")
    return str(root)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """32 px images: the in-memory TensorLoader path (3 classes, 8 train + 2 test each)."""
    return make_folder(tmp_path_factory.mktemp("small"), 32, 8, 2)


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """80 px images (> data.MAX_SMALL): the streaming ImageNet path at 224 px crops."""
    return make_folder(tmp_path_factory.mktemp("large"), 80, 2, 1, "jpg", ("a", "b"))


def tiny(root, out, *extra):
    return ["--dataset=imagefolder", f"--data={root}", "--C=4", "--batch_size=8", "--subset=16",
            "--device=cpu", f"--out={out}", *extra]


def test_build_network_accepts_every_spec(small, tmp_path):
    path = tmp_path / "genotype.json"  # as search.py writes it: genotype_to_json plus extra keys
    path.write_text(json.dumps({"space": "darts", **G.genotype_to_json(G.PDARTS)}))
    with torch.device("meta"):
        assert isinstance(train.build_network("DARTS_V2", "cifar10"), NetworkCIFAR)
        assert train.build_network(G.DARTS_V1, "cifar100").classifier.out_features == 100
        assert isinstance(train.build_network(str(path), "svhn", C=4, layers=3), NetworkCIFAR)
        assert isinstance(train.build_network(NB201, "ImageNet16-120"), TinyNetwork)
        assert train.build_network(G.RF_DARTS_NB201, "cifar10").classifier.out_features == 10
        net = train.build_network("PC_DARTS_image", "imagenet")
        assert isinstance(net, NetworkImageNet) and net.classifier.out_features == 1000
        assert round(train.count_params(net) * 1e6) == 5_342_464
        assert train.build_network("DARTS_V2", "ImageNet16-120").auxiliary_head is None  # 16 px: no fit
    # Outside the meta context: data.py caches the decoded images, which must stay real tensors.
    assert train.build_network("DARTS_V2", "imagefolder", C=4, layers=3, root=small).auxiliary_head
    with pytest.raises(ValueError, match="auxiliary"):
        train.build_network("DARTS_V2", "ImageNet16-120", auxiliary=True)


def test_recipes(large):
    cfg, _, _, _, _ = train.resolve(["--arch=DARTS_V2"])
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.C, cfg.layers, cfg.auxiliary) == (
        600, 96, 0.025, 36, 20, True)
    cfg, _, _, _, _ = train.resolve([f"--arch={NB201}", "--dataset=cifar100", "--epochs=12"])
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.nesterov, cfg.weight_decay, cfg.grad_clip, cfg.cutout,
            cfg.auxiliary) == (12, 256, 0.1, True, 5e-4, 0.0, 0, False)
    cfg, _, info, _, _ = train.resolve(["--arch=DARTS_V2", "--dataset=imagenet", f"--data={large}"])
    assert info.streaming and (cfg.epochs, cfg.batch_size, cfg.lr, cfg.schedule, cfg.weight_decay,
                               cfg.label_smoothing, cfg.drop_path_prob, cfg.C) == (
        250, 128, 0.1, "step", 3e-5, 0.1, 0.0, 48)
    assert train.learning_rate(cfg, 2) == pytest.approx(0.1 * 0.97 ** 2)
    cfg, _, _, _, _ = train.resolve(["--arch=DARTS_V2", "--epochs=4"])
    assert [train.learning_rate(cfg, e) for e in (0, 2, 4)] == pytest.approx([0.025, 0.0125, 0.0])


def test_pcdarts_recipes_follow_pc_darts_training_scripts(large):
    """--recipe=pcdarts: PC-DARTS' train_imagenet.py as its README runs it (batch 1024, lr 0.5, linear
    decay, warm-up above batch 256) and its train.py on CIFAR (DARTS' recipe with drop path 0.3)."""
    imagenet = ["--arch=PC_DARTS_image", "--recipe=pcdarts", "--dataset=imagenet", f"--data={large}"]
    cfg, _, _, _, said = train.resolve(imagenet)
    assert said == "recipe pcdarts_imagenet (yours: none)"
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.schedule, cfg.warmup_epochs, cfg.weight_decay, cfg.label_smoothing,
            cfg.drop_path_prob, cfg.C, cfg.layers) == (250, 1024, 0.5, "linear", 5, 3e-5, 0.1, 0.0, 48, 14)
    # warm-up: 1/5..5/5 of the linear lr; linear: 0.5 * (245 - e) / 245 to 0.5 / 245 at epoch 244; the
    # last five epochs: 0.5 * (250 - e) / 1225, from 0.5 / 245 again down to 0.5 / 1225
    lrs = [train.learning_rate(cfg, e) for e in (0, 4, 5, 244, 245, 249)]
    assert lrs == pytest.approx([0.1, 0.5 * 241 / 245, 0.5 * 240 / 245, 0.5 / 245, 0.5 / 245, 0.5 / 1225])
    small_batch = train.resolve(imagenet + ["--batch_size=256", "--lr=0.125"])[0]
    assert small_batch.warmup_epochs == 0 and train.learning_rate(small_batch, 0) == 0.125
    cfg = train.resolve(["--arch=DARTS_V2", "--recipe=pcdarts"])[0]
    assert (cfg.epochs, cfg.batch_size, cfg.drop_path_prob, cfg.schedule, cfg.auxiliary) == (600, 96, 0.3, "cosine", True)
    for argv, said in (([f"--arch={NB201}", "--recipe=pcdarts"], "retrains DARTS-space cells, not a NAS-Bench-201"),
                       (["--arch=DARTS_V2", "--recipe=pc"], "--recipe=pc: choose auto, pcdarts or rdarts"),
                       (["--arch=DARTS_V2", "--schedule=linear", "--epochs=5"], "--schedule=linear needs --epochs > 5")):
        with pytest.raises(cli.ConfigError, match=said):
            train.resolve(argv)


def test_what_a_network_cannot_take_is_refused_or_said(large):
    """An NB201 cell on full-size images, or with DARTS' auxiliary head or drop path, is refused in one line
    (TinyNetwork has none of them; they were accepted and ignored); a DARTS net of fewer than 3 cells, all
    reductions, trains with a note that its normal cell is unused."""
    for argv, said in (([f"--arch={NB201}", "--dataset=imagenet", f"--data={large}"], "not on the large images"),
                       ([f"--arch={NB201}", "--auxiliary=1", "--drop_path_prob=0.2"],
                        "--auxiliary=1, --drop_path_prob=0.2: NB201's network has no auxiliary head")):
        with pytest.raises(cli.ConfigError, match=said):
            train.resolve(argv)
    assert train.resolve([f"--arch={NB201}", "--auxiliary=0", "--drop_path_prob=0"])[0].auxiliary is False
    assert train.resolve(["--arch=DARTS_V2", "--layers=2"])[4].endswith(
        "; note: --layers=2 builds only reduction cells, so the normal cell is not used")
    assert "note" not in train.resolve(["--arch=DARTS_V2", "--layers=3"])[4]


def test_robustdarts_cells_retrain_at_rdarts_size_on_cifar100_and_svhn(tmp_path, large):
    """A genotype.json from an S1-S4 search retrains on CIFAR-100 / SVHN as R-DARTS evaluates it (8 cells
    of 16 channels, the rest DARTS' recipe) and on CIFAR-10 at DARTS' 20 x 36; a DARTS-space cell, a
    published one or --recipe=auto never takes R-DARTS' size unless named (--recipe=rdarts)."""
    import json
    from genotypes import DARTS_V2, genotype_to_json
    paths = {}
    for space in ("s3", "darts"):
        paths[space] = tmp_path / f"{space}.json"
        paths[space].write_text(json.dumps({"space": space, **genotype_to_json(DARTS_V2)}))
    for space, dataset, setting, size in (("s3", "cifar100", "rdarts", (16, 8)), ("s3", "svhn", "rdarts", (16, 8)),
                                          ("s3", "cifar10", "darts", (36, 20)), ("darts", "cifar100", "darts", (36, 20))):
        cfg, _, _, _, said = train.resolve([f"--genotype={paths[space]}", f"--dataset={dataset}"])
        assert said == f"recipe {setting} (yours: none)" and (cfg.C, cfg.layers) == size
        assert (cfg.epochs, cfg.batch_size, cfg.drop_path_prob, cfg.cutout, cfg.auxiliary) == (600, 96, 0.2, 16, True)
    cfg, _, _, _, said = train.resolve(["--arch=DARTS_V2", "--recipe=rdarts", "--dataset=svhn"])
    assert said == "recipe rdarts (yours: none)" and (cfg.C, cfg.layers, cfg.auxiliary) == (16, 8, True)
    # on 16-px images the cutout square keeps DARTS' ratio (16 of 32 px), unless given
    assert train.resolve(["--arch=DARTS_V2", "--dataset=ImageNet16-120"])[0].cutout == 8
    assert train.resolve(["--arch=DARTS_V2", "--dataset=ImageNet16-120", "--cutout=16"])[0].cutout == 16
    assert train.resolve([f"--genotype={paths['s3']}", "--dataset=cifar100", "--C=20"])[0].C == 20
    for argv, said in (([f"--arch={NB201}", "--recipe=rdarts"], "not a NAS-Bench-201 cell"),
                       (["--arch=DARTS_V2", "--recipe=rdarts", "--dataset=imagenet", f"--data={large}"],
                        "R-DARTS' CIFAR / SVHN network")):
        with pytest.raises(cli.ConfigError, match=said):
            train.resolve(argv)


@pytest.mark.parametrize("argv, said", [
    (["--arch=DARTS_V2"], "recipe darts (yours: none)"),
    # darts' recipe is the Config defaults, so it changes none of these: they are the user's all the same
    (["--arch=DARTS_V2", "--C=8", "--layers=5", "--epochs=2", "--auxiliary=0", "--seed=3"],
     "recipe darts (yours: auxiliary=0, C=8, epochs=2, layers=5)"),
    ([f"--arch={NB201}", "--epochs=12", "--nesterov=0", "--momentum=0.8"],
     "recipe nb201 (yours: epochs=12, momentum=0.8, nesterov=0)"),
])
def test_the_recipe_line_names_every_recipe_key_the_user_set(argv, said):
    assert train.resolve(argv)[4] == said


def read_run(out):
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    return metrics, checkpoints.load_checkpoint(os.path.join(out, "checkpoint.pt"))


def test_nb201_smoke(small, tmp_path):
    train.main(tiny(small, tmp_path, f"--arch={NB201}", "--layers=1", "--epochs=1"))
    metrics, ckpt = read_run(tmp_path)
    assert ckpt["epoch"] == 1 and ckpt["genotype"] == {"cell": "nb201", "arch": NB201}
    assert metrics["epochs"] == 1 and 0 <= metrics["test_acc"] <= metrics["test_acc_top5"] <= 1 and metrics["macs_m"] > 0
    assert metrics["test_images"] == 6  # the whole test set: 3 classes x 2
    assert set(metrics) >= {"train_loss", "train_acc", "test_loss", "params_m", "seconds"}


def test_the_optimiser_runs_the_recipes_settings_and_each_epochs_lr(small, tmp_path):
    """Read back from the checkpoint's SGD state: DARTS (cnn/train.py) momentum 0.9, wd 3e-4, no Nesterov; NB201
    (AutoDL) Nesterov, wd 5e-4; the last epoch's lr is the schedule's for that epoch, not the starting lr."""
    for arch, extra, nesterov, wd in (("DARTS_V2", "--layers=3", False, 3e-4), (NB201, "--layers=1", True, 5e-4)):
        out = tmp_path / arch[:8].strip("|")
        train.main(tiny(small, out, f"--arch={arch}", extra, "--epochs=3"))
        group = read_run(out)[1]["optimizer"]["param_groups"][0]
        cfg = train.resolve(tiny(small, tmp_path / "cfg", f"--arch={arch}", extra, "--epochs=3"))[0]
        assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, nesterov, wd), arch
        assert group["lr"] == train.learning_rate(cfg, 2) and group["lr"] < cfg.lr / 2, arch  # cosine at 2 of 3


def test_gradients_are_clipped_at_the_recipes_norm(small, tmp_path, monkeypatch):
    """DARTS' recipe clips the weight gradients at norm 5 every step (cnn/train.py); NB201's does not clip."""
    calls, clip = [], torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm, *a, **k: (
        calls.append(max_norm), clip(params, max_norm, *a, **k))[1])
    train.main(tiny(small, tmp_path / "darts", "--arch=DARTS_V2", "--layers=3", "--epochs=1"))
    assert calls == [5.0, 5.0]  # 16 images, batch 8: 2 steps
    calls.clear()
    train.main(tiny(small, tmp_path / "nb201", f"--arch={NB201}", "--layers=1", "--epochs=1"))
    assert calls == []


def test_test_subset_scores_that_many_images_and_says_so(small, tmp_path):
    train.main(tiny(small, tmp_path / "sub", f"--arch={NB201}", "--layers=1", "--epochs=1", "--test_subset=4"))
    assert read_run(tmp_path / "sub")[0]["test_images"] == 4
    with open(tmp_path / "sub" / "log.txt") as f:
        assert "on a 4-image test subset (a check, not the test set)" in f.read()


@pytest.mark.parametrize("flag, message", [
    ("--test_subset=7", "--test_subset=7: the test set has only 6 images"),
    ("--subset=25", "--subset=25: the training set has only 24 images"),  # tiny() asks for 16 first
])
def test_a_subset_larger_than_its_set_is_refused_in_one_line(small, tmp_path, capsys, flag, message):
    # seeded_pick alone would quietly take every image, and the run would say N images it never had
    with pytest.raises(SystemExit) as e:
        cli.run(train.main, tiny(small, tmp_path / "big", f"--arch={NB201}", "--layers=1", flag))
    err = capsys.readouterr().err
    assert e.value.code != 0 and message in err
    assert err.count("\n") == 1, err
    assert not (tmp_path / "big" / "metrics.json").exists()


class Crash(Exception):
    pass


def test_darts_resume_is_bit_identical(small, tmp_path, monkeypatch):
    # Drop path (ramped from 0, so random from epoch 2 on), cutout and the aux head are all on; a run
    # killed right after its epoch-2 checkpoint and resumed must end bit-identical to an unbroken run.
    common = ["--arch=DARTS_V2", "--layers=3", "--epochs=3"]
    train.main(tiny(small, tmp_path / "straight", *common))
    save = checkpoints.save_checkpoint

    def save_then_crash(path, obj):
        save(path, obj)
        if obj["epoch"] == 2:
            raise Crash
    monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        train.main(tiny(small, tmp_path / "split", *common))
    monkeypatch.setattr(checkpoints, "save_checkpoint", save)
    train.main([f"--out={tmp_path / 'split'}", "--resume=1"])
    (m1, c1), (m2, c2) = read_run(tmp_path / "straight"), read_run(tmp_path / "split")
    assert c1["epoch"] == c2["epoch"] == 3 and c1["config"]["auxiliary"]
    assert all(torch.equal(c1["model"][k], c2["model"][k]) for k in c1["model"])
    assert m1["state_sha256"] == m2["state_sha256"] and m1["test_loss"] == m2["test_loss"]
    rows = [json.loads((tmp_path / run / "history.json").read_text()) for run in ("straight", "split")]
    timing = ("seconds", "images_per_s")  # the one thing a resume may change in a row
    assert [r["epoch"] for r in rows[1]] == [1, 2, 3]  # the crashed session's rows came back from the checkpoint
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows[1]] == \
        [{k: v for k, v in r.items() if k not in timing} for r in rows[0]]
    assert rows[0][-1]["train_loss"] == pytest.approx(m1["train_loss"]) and rows[0][0]["drop_path"] == 0.0
    with pytest.raises(cli.ConfigError, match="but you changed lr "):  # a resumed run keeps its settings
        train.main([f"--out={tmp_path / 'split'}", "--resume=1", "--lr=0.5"])
    train.main([f"--out={tmp_path / 'split'}", "--resume=1", "--epochs=4"])  # but may be extended
    assert read_run(tmp_path / "split")[1]["epoch"] == 4


def test_a_resume_continues_from_the_checkpoint_saved_after_it_read_its_settings(small, tmp_path):
    """resolve() reads the checkpoint before the run takes OUT/.lock; another session that ended in between
    (here: ran epoch 2) saved a newer one, which the run must continue, not rotate away for the older."""
    out = tmp_path / "r"
    train.main(tiny(small, out, f"--arch={NB201}", "--layers=1", "--epochs=1"))
    cfg, genotype, info, stale, how = train.resolve([f"--out={out}", "--resume=1", "--epochs=3"])
    assert stale["epoch"] == 1
    train.main([f"--out={out}", "--resume=1", "--epochs=2"])  # meanwhile: epoch 2
    with checkpoints.StopSignals() as stop:
        train.train(cfg, genotype, info, stale, how, 0, 1, torch.device("cpu"), stop)
    assert [line.split("] ")[1] for line in (out / "log.txt").read_text().splitlines() if "] resumed after" in line] == [
        "resumed after epoch 1", "resumed after epoch 2"]
    assert read_run(out)[1]["epoch"] == 3 and checkpoints.load_checkpoint(str(out / "checkpoint.prev.pt"))["epoch"] == 2


def test_resume_auto_starts_then_continues(small, tmp_path):
    """--resume=auto: a new run where --out holds no checkpoint, a resume (here: extended by an epoch) where it
    does; bnnas_search.py and analysis.py read it the same way (an empty folder: a new run)."""
    out = tmp_path / "auto"
    train.main(tiny(small, out, f"--arch={NB201}", "--layers=1", "--epochs=1", "--resume=auto"))
    train.main([f"--out={out}", "--resume=auto", "--epochs=2"])
    assert read_run(out)[1]["epoch"] == 2 and "resumed after epoch 1" in (out / "log.txt").read_text()
    import analysis
    import bnnas_search
    for module in (analysis, bnnas_search):
        assert module.make_config([f"--out={tmp_path / module.__name__}", "--resume=auto"]).resume is False


def test_imagenet_streaming_smoke(large, tmp_path):
    train.main(["--arch=PC_DARTS_image", "--dataset=imagenet", f"--data={large}", "--C=4", "--layers=2",
                "--epochs=1", "--batch_size=4", "--workers=0", f"--out={tmp_path}"])
    metrics, ckpt = read_run(tmp_path)
    assert ckpt["config"]["label_smoothing"] == 0.1 and metrics["test_acc"] in (0.0, 0.5, 1.0)


def _copy(t):
    return None if t is None else t.detach().clone()


def record_forwards(monkeypatch):
    """Per forward on a data batch of a train.py run in this process: dict(training, drop_path (the
    model's drop_path_prob then), out (detached), y) in order; and per backward the loss tensor it ran
    on. Forward hooks and a wrapper around train_run.batches: nothing the run computes is changed (the
    parameter count's forward, which has no batch, is not recorded)."""
    forwards, losses, pending = [], [], []
    real_network, real_batches, real_backward = train._network, train_run.batches, torch.Tensor.backward

    def hook(model, args, out):
        if pending:
            forwards.append(dict(training=model.training, drop_path=float(model.drop_path_prob),
                                 out=tuple(map(_copy, out)) if isinstance(out, tuple) else _copy(out),
                                 y=pending.pop()))

    def network(*a, **k):
        net = real_network(*a, **k)
        net.register_forward_hook(hook)
        return net

    def batches(*a, **k):
        for x, y in real_batches(*a, **k):
            pending[:] = [y.clone()]
            yield x, y

    def backward(self, *a, **k):
        losses.append(self.detach().clone())
        return real_backward(self, *a, **k)

    monkeypatch.setattr(train, "_network", network)
    monkeypatch.setattr(train_run, "batches", batches)
    monkeypatch.setattr(torch.Tensor, "backward", backward)
    return forwards, losses


def test_drop_path_ramps_linearly_from_zero(small, tmp_path, monkeypatch):
    """DARTS' cnn/train.py sets model.drop_path_prob = args.drop_path_prob * epoch / args.epochs before
    each epoch: 0, 0.2/3, 0.4/3 over 3 epochs with 0.2. Checked both in history.json and on the model
    at each training forward (2 steps an epoch); the network applies it in training mode only."""
    forwards, _ = record_forwards(monkeypatch)
    train.main(tiny(small, tmp_path, "--arch=DARTS_V2", "--layers=3", "--epochs=3", "--drop_path_prob=0.2"))
    ramp = [0.2 * e / 3 for e in range(3)]
    rows = json.loads((tmp_path / "history.json").read_text())
    assert [r["drop_path"] for r in rows] == pytest.approx(ramp, abs=1e-12)
    per_step = [p for p in ramp for _ in range(2)]  # 2 training steps an epoch
    assert [f["drop_path"] for f in forwards if f["training"]] == pytest.approx(per_step, abs=1e-12)


def test_imagenet_loss_is_smoothed_ce_plus_aux_and_the_test_loss_plain_ce(large, tmp_path, monkeypatch):
    """The ImageNet recipe's training loss (DARTS' cnn/train_imagenet.py: CrossEntropyLabelSmooth with
    label_smooth 0.1, loss += auxiliary_weight 0.4 * loss_aux) is what each step backpropagates; the test
    loss is plain cross-entropy of the main logits (train_imagenet.py's infer uses nn.CrossEntropyLoss, and
    the aux head is off in eval mode). The expected values are recomputed from the recorded logits."""
    import torch.nn.functional as F
    forwards, losses = record_forwards(monkeypatch)
    train.main(["--arch=PC_DARTS_image", "--dataset=imagenet", f"--data={large}", "--C=4", "--layers=2",
                "--epochs=2", "--batch_size=2", "--workers=0", f"--out={tmp_path}"])
    steps = [f for f in forwards if f["training"]]
    assert len(steps) == len(losses) == 4 and all(isinstance(f["out"], tuple) for f in steps)  # 2 x 2 steps, aux on
    for f, loss in zip(steps, losses):
        (logits, aux), y = f["out"], f["y"]
        want = F.cross_entropy(logits, y, label_smoothing=0.1) + 0.4 * F.cross_entropy(aux, y, label_smoothing=0.1)
        assert loss.item() == pytest.approx(want.item(), rel=1e-6)
        assert loss.item() != pytest.approx((F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)).item(),
                                            rel=1e-4)  # the smoothing matters here: the check can tell
    scored = [f for f in forwards if not f["training"]]
    assert scored and all(torch.is_tensor(f["out"]) for f in scored)  # eval: main logits only
    plain, smoothed = (sum(F.cross_entropy(f["out"], f["y"], reduction="sum", label_smoothing=s).item()
                           for f in scored) / 2 for s in (0.0, 0.1))
    metrics, _ = read_run(tmp_path)
    assert metrics["test_images"] == sum(len(f["y"]) for f in scored) == 2
    # the same float32 per-batch sums, added in float64: equal up to float64 rounding. (An untrained net's
    # two-class logits are near uniform, where smoothing changes the loss by only ~1e-5 relative.)
    assert metrics["test_loss"] == pytest.approx(plain, rel=1e-9) and smoothed != pytest.approx(plain, rel=1e-7)


def test_evaluate_scores_top1_and_top5():
    """Top-5 as DARTS' train_imagenet.py counts it (the paper's Tables 4-5 report top-1 and top-5 errors)."""
    logits = torch.tensor([[0.0, 1, 2, 3, 4, 5, 6],          # label 6: top-1
                           [6.0, 5, 4, 3, 2, 1, 0],          # label 5: 6th of 7, outside the top 5
                           [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]])  # label 2: 5th, top-5 only
    y = torch.tensor([6, 5, 2])
    loss, top1, top5 = runs.evaluate(torch.nn.Identity(), [(logits[:2], y[:2]), (logits[2:], y[2:])])
    assert (top1, top5) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item())
    assert runs.evaluate(torch.nn.Identity(), [(logits[:, :3], torch.tensor([0, 1, 2]))])[2] == 1.0  # 3 classes


def subprocess_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}


# A DARTS cell that never reads input state 0: preprocess0 gets no gradient, which DDP must be told of
# (find_unused_parameters), or it stops at step 2.
NO_S0 = G.Genotype([("sep_conv_3x3", 1), ("skip_connect", 1), ("sep_conv_3x3", 1), ("skip_connect", 2),
                    ("max_pool_3x3", 1), ("skip_connect", 3), ("skip_connect", 4), ("dil_conv_3x3", 2)],
                   G.DARTS_CONCAT, G.DARTS_V2.reduce, G.DARTS_CONCAT)


def test_ddp_two_processes_end_identical(small, tmp_path):
    path = tmp_path / "no_s0.json"
    path.write_text(json.dumps(G.genotype_to_json(NO_S0)))
    args = tiny(small, tmp_path / "run", f"--genotype={path}", "--layers=3", "--epochs=1")  # 2 steps
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "train.py"), *args]
    r = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics, ckpt = read_run(tmp_path / "run")
    assert metrics["world_size"] == 2 and len(metrics["state_sha256"]) == 2
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "find_unused_parameters=True" in log and "preprocess0" in log
    # gradients and BN stats synced (the log tail is in the message: a mismatch was seen once, 1 run in ~10)
    assert metrics["state_sha256"][0] == metrics["state_sha256"][1], log[-2000:]
    assert metrics["state_sha256"][0] == ddp.state_digest(_load_model(ckpt))  # = what rank 0 saved


def _load_model(ckpt):
    cfg = ckpt["config"]
    net = train.build_network(ckpt["genotype"], "imagefolder", C=4, layers=cfg["layers"], auxiliary=cfg["auxiliary"],
                              root=cfg["data"])
    net.load_state_dict(ckpt["model"])
    return net


@pytest.mark.parametrize("args, needle", [
    (["--arch=NOPE"], "unknown genotype 'NOPE'"),
    (["--arch=|nor_conv_3x3~0|+|bogus~0|none~1|+|none~0|none~1|none~2|"], "unknown NB201 op 'bogus'"),
    (["--genotype=/nonexistent/genotype.json"], "no such file"),
    (["--arch=DARTS_V2", "--genotype=x.json"], "exactly one"),
    (["--arch=DARTS_V2", "--schedule=exp"], "--schedule=exp: choose cosine, step or linear"),
    (["--genotype=binary.json"], "--genotype=binary.json: not a genotype.json text file"),
])
def test_bad_inputs_one_line_error(args, needle, capsys, tmp_path, monkeypatch):
    """Each refused in one line, exit 2 (bad input), before anything is written. binary.json: bytes that
    are not UTF-8 text (a PNG header), as a checkpoint or image given by mistake would be."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(SystemExit) as e:
        cli.run(train.main, args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == ["binary.json"]


@pytest.mark.parametrize("flag, needle", [
    ("--lr=-1", "--lr=-1.0: out of range, must lie in (0, inf)"),
    ("--momentum=1", "--momentum=1.0: out of range, must lie in [0, 1)"),
    ("--drop_path_prob=1", "--drop_path_prob=1.0: out of range, must lie in [0, 1)"),
    ("--epochs=0", "--epochs=0: out of range, must lie in [1, inf)"),
    ("--cutout=-4", "--cutout=-4: out of range"),
    ("--nesterov=1", "--nesterov=1 needs --momentum > 0"),
    pytest.param("--device=cuda", "--device=cuda: this machine has no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine")),
])
def test_settings_out_of_range_are_one_line_before_anything_runs(small, tmp_path, capsys, flag, needle):
    argv = tiny(small, tmp_path, "--arch=DARTS_V2", "--layers=2", "--epochs=1", flag)
    if flag == "--nesterov=1":
        argv.append("--momentum=0")
    with pytest.raises(SystemExit) as e:
        cli.run(train.main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and err.count("\n") == 1, err
    assert not os.listdir(tmp_path)  # nothing was written


def test_train_bookkeeping_needs_no_float64(small, tmp_path, no_float64):
    """MPS has no float64: the epoch's running sums and the test-set sums must not need it."""
    with no_float64():
        train.main(tiny(small, tmp_path, f"--arch={NB201}", "--layers=1", "--epochs=1"))
    metrics, _ = read_run(tmp_path)
    assert 0 <= metrics["train_acc"] <= 1 and 0 <= metrics["test_acc"] <= 1


def test_non_finite_training_is_never_checkpointed(small, tmp_path, monkeypatch):
    """NaN images in epoch 2 make the loss and the weights NaN: the run stops before its epoch-2
    checkpoint, naming the epoch-1 one as the last good state, which stays as it was."""
    real = train_run.batches

    def poisoned(loader, *args):
        for x, y in real(loader, *args):
            yield (x * float("nan") if loader.train and loader.epoch == 1 else x), y

    monkeypatch.setattr(train_run, "batches", poisoned)
    with pytest.raises(FloatingPointError, match=f"non-finite loss or weights in epoch 2: stopping without writing "
                                                 f"a checkpoint; the last good state is in {tmp_path}/checkpoint.pt"):
        train.main(tiny(small, tmp_path, f"--arch={NB201}", "--layers=1", "--epochs=2"))
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values()
                                      if v.is_floating_point())


def test_bad_arch_exit_code_from_the_command_line():
    r = subprocess.run([sys.executable, "train.py", "--arch=NOPE"], cwd=ROOT, env=subprocess_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1, r.stderr


def forced_fast_paths_run(root, out):
    """The run of test_cuda_fast_paths_run_on_the_cpu, in the process that calls it: train.py with the
    CUDA fast paths forced on; prints what the optimizer and the scoring saw as one JSON line."""
    seen = []  # per SGD step: every gradient reached its weight, finite, in float32
    real_step = torch.optim.SGD.step

    def step(self, *a, **k):
        seen.append(all(bool(torch.isfinite(p.grad).all()) and p.grad.dtype == torch.float32
                        for g in self.param_groups for p in g["params"] if p.grad is not None))
        return real_step(self, *a, **k)

    scored, real_evaluate = [], runs.evaluate

    def evaluate(model, loader):  # the test-set score: float32 whatever the training ran in (no autocast)
        try:
            scored.append(torch.is_autocast_enabled("cpu"))
        except TypeError:  # torch < 2.4: no device argument, a function per device
            scored.append(torch.is_autocast_cpu_enabled())
        return real_evaluate(model, loader)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "fast_paths", lambda cfg, device: (True, True))
        mp.setattr(torch.optim.SGD, "step", step)
        mp.setattr(runs, "evaluate", evaluate)
        train.main(tiny(root, out, "--arch=DARTS_V2", "--layers=3", "--epochs=1", "--auxiliary=1"))
    print(json.dumps({"seen": seen, "scored": scored}))


def test_cuda_fast_paths_run_on_the_cpu(small, tmp_path):
    """bf16 autocast and channels_last are CUDA-only in a run; forced on here, the same code trains a
    DARTS net (aux head, drop path) forward and backward on the CPU and scores it, in float32.

    In a fresh process: in this suite's worker, on an AVX-512/AMX Xeon (real bf16 CPU kernels), the run
    went non-finite in two of four full-suite runs, never alone or with its file alone; what state of the
    worker did it is not known (not reproduced on an AVX2 CPU, also with glibc's MALLOC_PERTURB_
    filling recycled memory). The CPU never runs bf16 in a real run (train.fast_paths), so the test
    keeps to what it checks: the CUDA path's dtypes and flow, not the CPU's bf16 kernels' state."""
    code = (f"import sys; sys.path.insert(0, 'tests'); from test_train import forced_fast_paths_run; "
            f"forced_fast_paths_run({str(small)!r}, {str(tmp_path)!r})")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(), capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    saw = json.loads(r.stdout.strip().splitlines()[-1])
    metrics, _ = read_run(tmp_path)
    assert saw["seen"] and all(saw["seen"]) and 0 <= metrics["test_acc"] <= 1
    assert math.isfinite(metrics["test_loss"]) and saw["scored"] == [False]


def test_a_rerun_never_overwrites_and_a_resume_never_starts_afresh(small, tmp_path, capsys):
    # a missing --resume=1 would retrain from epoch 1 over a run's checkpoint (days of a 600-epoch run);
    # a mistyped --out with --resume=1 would quietly start a new run instead of continuing one
    argv = tiny(small, tmp_path / "run", f"--arch={NB201}", "--layers=1", "--epochs=1")
    train.main(argv)
    stamp = (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns
    with pytest.raises(SystemExit) as e:
        cli.run(train.main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "checkpoint.pt exists: pass --resume=1 to continue it" in err, err
    assert err.count("\n") == 1, err
    assert (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns == stamp
    # a finished run whose checkpoints were removed (as committed runs are): its results are not overwritten
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (tmp_path / "run" / name).unlink(missing_ok=True)
    kept = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.name.endswith(".json")}
    with pytest.raises(SystemExit) as e:
        cli.run(train.main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "holds an earlier run's history.json and metrics.json and no checkpoint" in err, err
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.name.endswith(".json")} == kept
    with pytest.raises(SystemExit) as e:
        cli.run(train.main, [f"--out={tmp_path / 'typo'}", "--resume=1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "no checkpoint at" in err and "drop --resume=1" in err, err
    assert not (tmp_path / "typo").exists()  # nothing made there
