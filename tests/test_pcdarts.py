"""RF-PCDARTS pieces: partial channels, edge normalisation, the ImageNet search path, DDP search."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import genotypes as G
from harness import imagenet_subset
import search
from harness import search_run
from conftest import make_image_folder
from supernet import MixedOp, build_supernet, set_trainable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_partial_channels_by_hand_stride1():
    op = MixedOp(4, 1, ["none", "skip_connect"], pool_bn=False, k=2)
    x = torch.randn(2, 4, 5, 5)
    y = op(x, torch.tensor([0.3, 0.7]))
    # ops see channels 0-1 (0.7 * identity), channels 2-3 bypass; the shuffle with 2 groups sends
    # input channel g*(C/K) + c to output channel c*K + g: order [0, 2, 1, 3]
    expected = torch.stack([0.7 * x[:, 0], x[:, 2], 0.7 * x[:, 1], x[:, 3]], dim=1)
    assert torch.allclose(y, expected)


def test_partial_channels_by_hand_stride2():
    op = MixedOp(4, 2, ["max_pool_3x3"], pool_bn=False, k=2)
    x = torch.randn(2, 4, 8, 8)
    y = op(x, torch.tensor([1.0]))
    done = F.max_pool2d(x[:, :2], 3, 2, 1)     # the op on the first C/K channels
    rest = F.max_pool2d(x[:, 2:], 2, 2)        # the bypass, max-pooled 2x2 on stride-2 edges
    expected = torch.stack([done[:, 0], rest[:, 0], done[:, 1], rest[:, 1]], dim=1)
    assert y.shape == (2, 4, 4, 4) and torch.equal(y, expected)


def test_k1_without_betas_is_the_plain_supernet():
    plain = build_supernet("darts", 10, C=8, layers=3)
    pc1 = build_supernet("darts", 10, C=8, layers=3, pc_k=1, edge_norm=False)
    assert plain.betas() is None and pc1.betas() is None
    a, b = plain.state_dict(), pc1.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(plain(x), pc1(x))
    # with betas, nodes are weighted by softmax(beta) over their in-edges: a different network
    normed = build_supernet("darts", 10, C=8, layers=3, edge_norm=True)
    assert not torch.allclose(normed(x), plain(x))


def test_edge_normalisation_weights_each_node_by_softmax_beta_over_its_own_in_edges():
    """PC-DARTS' edge normalisation: node i = sum_j softmax(beta[e_i : e_i + i + 2])_j * mixed_edge_j. With a
    beta of 50 on one in-edge per node (softmax 1 in float32), each node is that edge's mixed op alone."""
    torch.manual_seed(0)
    model = build_supernet("darts", 10, C=8, layers=3, edge_norm=True)
    cell = model.cells[0]
    assert not cell.reduction
    s0, s1 = torch.randn(2, 24, 8, 8), torch.randn(2, 24, 8, 8)   # the stem's 3C channels
    weights = F.softmax(model.alphas_normal, dim=-1)                # (14, 8)
    for pick in (lambda n_in: 0, lambda n_in: n_in - 1, lambda n_in: n_in // 2):
        betas, chosen, e = torch.zeros(14), [], 0
        for i in range(4):
            j = pick(i + 2)
            betas[e + j] = 50.0
            chosen.append((e + j, j))
            e += i + 2
        with torch.no_grad():
            out = cell(s0, s1, weights, betas)
            states = [cell.pre0(s0), cell.pre1(s1)]
            for edge, j in chosen:
                states.append(cell.mixed[edge](states[j], weights[edge]))
        assert torch.allclose(out, torch.cat(states[2:], dim=1), atol=1e-6)


def test_logged_edge_weights_are_the_supernets_per_node_softmax():
    """alphas.json's betas (genotypes.edge_normalisation) are the factors the cell multiplies each edge by:
    softmax over each node's own in-edges (2, 3, 4, 5 of them), not over all 14 edges."""
    torch.manual_seed(1)
    betas = {"normal": torch.randn(14), "reduce": torch.randn(14)}
    got = G.edge_normalisation("darts", betas)
    for kind, b in betas.items():
        want, e = [], 0
        for i in range(4):  # as supernet.SearchCell.forward slices them
            want += F.softmax(b[e:e + i + 2], dim=-1).tolist()
            e += i + 2
        assert got[kind] == pytest.approx(want, abs=1e-6) and sum(got[kind]) == pytest.approx(4.0, abs=1e-5)


def test_betas_train_with_alpha_and_enter_derivation():
    model = build_supernet("darts", 10, C=8, layers=3, pc_k=4)
    arch = set_trainable(model, "C", verbose=False)["arch"]
    assert {tuple(p.shape) for p in arch} == {(14, 8), (14,)} and len(arch) == 4
    before = model.betas_normal.detach().clone()
    opt = torch.optim.Adam(arch, 6e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    search.alpha_step(model, arch, [], opt, torch.randn(2, 3, 16, 16), torch.tensor([1, 2]))
    assert not torch.equal(before, model.betas_normal)
    # a strongly preferred edge 1 (node 0's input c_{k-1}) under beta must win node 0 with betas
    with torch.no_grad():
        model.alphas_normal.zero_()
        model.alphas_normal[0, 4] = 3.0          # edge 0: a clear sep_conv_3x3 ...
        model.alphas_normal[1, 5] = 2.0          # ... edge 1 a weaker sep_conv_5x5
        model.betas_normal.zero_()
        model.betas_normal[1] = 5.0              # but beta favours edge 1 heavily
    _, rec = search_run.genotype_record(model.space, model)
    assert G.load_genotype(rec) == G.derive("darts", model.alphas(), model.betas())
    assert G.load_genotype(rec).normal[0] == ("sep_conv_5x5", 1)
    assert G.derive("darts", model.alphas()).normal[0] == ("sep_conv_3x3", 0)


def test_pc_search_smoke(tiny_folder, tmp_path):
    argv = ["--space=darts", "--dataset=imagefolder", f"--data={tiny_folder}", "--C=8", "--layers=3",
            "--pc_k=4", "--batch_size=4", "--epochs=2", "--arch_start=1", f"--out={tmp_path}"]
    cfg = search.make_config(argv)
    assert (cfg.lr, cfg.arch_lr, cfg.lr_min) == (0.1, 6e-4, 0.0)     # PC-DARTS defaults
    model, history = search.search(cfg)
    assert model.cells[0].mixed[0].k == 4
    logged = json.loads((tmp_path / "alphas.json").read_text())[-1]["betas"]
    want = G.edge_normalisation("darts", model.betas())
    assert set(logged) == set(want) == {"normal", "reduce"}
    assert all(logged[k] == pytest.approx(want[k], abs=1e-6) for k in want)
    assert history[0]["valid_acc"] == 0.0 and history[1]["valid_acc"] >= 0.0  # alpha frozen in epoch 1


def test_imagenet_subset_and_stem_smoke(tmp_path):
    root = make_image_folder(tmp_path / "imagenet", classes=2, train_per_class=10, test_per_class=1,
                             size=224)
    out = tmp_path / "run"
    argv = ["--space=s2", "--dataset=imagenet", f"--data={root}", "--C=4", "--layers=3",
            "--batch_size=2", "--epochs=2", "--arch_start=0", "--workers=0", "--weight_frac=0.4",
            "--arch_frac=0.2", f"--out={out}"]
    cfg = search.make_config(argv)
    assert (cfg.pc_k, cfg.warmup_epochs, cfg.arch_lr) == (2, 0, 6e-3)   # PC-DARTS ImageNet defaults ...
    default_batch = search.make_config([a for a in argv if not a.startswith("--batch_size")])
    assert (default_batch.batch_size, default_batch.warmup_epochs) == (1024, 5)  # ... warm-up above 256 only
    assert search.make_config(argv[:-1] + ["--batch_size=512", f"--out={out}"]).warmup_epochs == 5
    assert search.make_config(argv + ["--warmup_epochs=3"]).warmup_epochs == 3  # given: kept
    model, history = search.search(cfg)
    assert model.stem1 is not None and len(history) == 2
    (fw, lw, classes), (fa, la, _) = [imagenet_subset.read_file_list(out / f"subset_{n}.txt")
                                      for n in ("weights", "arch")]
    assert classes == ["class0", "class1"] and len(fw) == 8 and len(fa) == 4   # 40% / 20% per class
    assert not set(fw) & set(fa) and sorted(lw) == [0] * 4 + [1] * 4
    again = imagenet_subset.sample_subset(root, (0.4, 0.2), seed=0)[0]
    assert again[0][0] == fw                                                   # seeded, reproducible


def test_subset_lists_are_the_runs_own(tmp_path):
    """prepare draws the lists once and reads them back while root, seed and fractions match; lists from
    other settings (a run in this --out that never checkpointed) are drawn again, not silently reused;
    class folder names may hold spaces; lists without the sample header (older ones) are drawn again."""
    root = tmp_path / "imagenet"
    make_image_folder(root, classes=2, train_per_class=10, test_per_class=1, size=8)
    for k, name in enumerate(("golden retriever", "tabby cat")):
        os.rename(root / "train" / f"class{k}", root / "train" / name)
    out = tmp_path / "run"
    out.mkdir()
    first = imagenet_subset.prepare(root, out, (0.4, 0.2), seed=0)
    assert first[0][2] == ["golden retriever", "tabby cat"] and len(first[0][0]) == 8 and len(first[1][0]) == 4
    stamp = (out / "subset_weights.txt").stat().st_mtime_ns
    assert imagenet_subset.prepare(root, out, (0.4, 0.2), seed=0) == first  # read back, not redrawn
    assert (out / "subset_weights.txt").stat().st_mtime_ns == stamp
    other = imagenet_subset.prepare(root, out, (0.4, 0.2), seed=1)  # another seed: drawn again
    assert other[0][0] != first[0][0] and imagenet_subset.header(out / "subset_weights.txt")["sample"] == \
        "seed=1 fractions=0.4,0.2"
    assert len(imagenet_subset.prepare(root, out, (0.2, 0.1), seed=1)[0][0]) == 4  # other fractions: again
    for p in out.glob("subset_*.txt"):  # a list from before the sample line: drawn again
        p.write_text("".join(line for line in p.read_text().splitlines(True) if not line.startswith("# sample")))
    assert imagenet_subset.prepare(root, out, (0.4, 0.2), seed=0) == first
    assert imagenet_subset.header(out / "subset_arch.txt")["sample"] == "seed=0 fractions=0.4,0.2"


def test_ddp_search_batch_is_global(tmp_path):
    """--batch_size is the global batch: 2 gloo processes take 32 images each of the same 64-image
    batch, so they run the steps per epoch of 1 process, and alpha follows the 1-process run.

    Not bit for bit: each rank's BN normalises with the statistics of its own 32 images (no SyncBN, as
    in DARTS' and PC-DARTS' multi-GPU code), and Adam's first step moves each alpha by about
    lr * sign(gradient), so a coordinate with a near-zero gradient can go either way. Measured at
    init: the alpha gradient from two half-batches with their own BN statistics has cosine 0.77 to the
    whole batch's (another batch: about 0 or below), and alpha's move after this one step has cosine
    0.60-0.61 between the 1- and 2-process runs (seeds 0 and 1). Asserted: above 0.4."""
    data = make_image_folder(tmp_path / "data", classes=4, train_per_class=32, test_per_class=1)
    common = ["--space=nb201", "--layers=1", "--C=4", "--dataset=imagefolder", f"--data={data}",
              "--batch_size=64", "--epochs=1", "--arch_lr=0.01", "--log_every=0", "--device=cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    search.search(search.make_config(common + [f"--out={one}"]))  # 1 process: this one
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "search.py", *common, f"--out={two}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    logs = [(d / "log.txt").read_text() for d in (one, two)]
    assert all("64 weight / 64 alpha images, 1 steps per epoch of 64 images" in log for log in logs), logs
    assert "1 process(es)" in logs[0] and "2 process(es)" in logs[1]
    # the rows' accuracies count every rank's images (tests/test_ddp.py: an epoch's tally sums every rank's)
    init = build_supernet("nb201", 4, C=4, layers=1, seed=0).alphas_normal.detach()
    moves = [torch.load(d / "checkpoint.pt", weights_only=True)["model"]["alphas_normal"] - init for d in (one, two)]
    assert moves[0].norm() > 0.01
    assert F.cosine_similarity(moves[0].flatten(), moves[1].flatten(), 0) > 0.4


def test_ddp_search_two_processes_agree(tiny_folder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "search.py", "--space=nb201", "--layers=1", "--C=4", "--dataset=imagefolder",
           f"--data={tiny_folder}", "--batch_size=2", "--epochs=2", "--device=cpu", f"--out={out}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (out / "log.txt").read_text()
    assert "2 process(es)" in log and "epoch 2/2" in log   # alpha and the trained weights agree: checked every epoch
