"""Tests for data.py on tiny synthetic data (PNG folders, fake ImageNet16 pickles); CPU only."""
import os
import pickle
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import data  # noqa: E402
from harness import batching  # noqa: E402
from harness import stream  # noqa: E402
from harness.data import DatasetError  # noqa: E402
import search  # noqa: E402

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-jpeg")


def pixel(label, i, size):
    """A distinct, known image per (class, index): uint8 (size, size, 3)."""
    rng = np.random.default_rng(1000 * label + i)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def make_folder(root, classes=("b", "a", "c"), n=4, size=8, test=True):
    for split in ("train", "test") if test else ("train",):
        for label, c in enumerate(sorted(classes)):
            os.makedirs(root / split / c, exist_ok=True)
            for i in range(n):
                Image.fromarray(pixel(label, i, size)).save(root / split / c / f"{i:03d}.png")
    return root


def assert_error(fn, path):
    with pytest.raises(DatasetError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg


# ---------------------------------------------------------------------------------------------- readers

def test_imagefolder_decode(tmp_path):
    root = make_folder(tmp_path / "ds")
    x, y = data.load_split("imagefolder", root, train=True)
    assert x.shape == (12, 3, 8, 8) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert y.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # sorted classes a, b, c
    assert torch.equal(x[5], torch.from_numpy(pixel(1, 1, 8)).permute(2, 0, 1))
    xt, yt = data.load_split("imagefolder", root, train=False)
    assert xt.shape == (12, 3, 8, 8)
    info = data.dataset_info("imagefolder", root)
    assert (info.num_classes, info.size, info.padding, info.streaming) == (3, 8, 1, False)
    xf = x.double() / 255
    assert np.allclose(info.mean, xf.mean((0, 2, 3))) and np.allclose(info.std, xf.std((0, 2, 3), correction=0))


def test_imagefolder_errors(tmp_path):
    assert_error(lambda: data.load_split("imagefolder", tmp_path / "nope", True), tmp_path / "nope")
    (tmp_path / "notrain").mkdir()
    assert_error(lambda: data.load_split("imagefolder", tmp_path / "notrain", True), tmp_path / "notrain")
    (tmp_path / "noclass" / "train").mkdir(parents=True)
    assert_error(lambda: data.load_split("imagefolder", tmp_path / "noclass", True), tmp_path / "noclass")
    root = make_folder(tmp_path / "empty", test=False)
    (root / "train" / "d").mkdir()
    assert_error(lambda: data.load_split("imagefolder", root, True), root / "train" / "d")
    root = make_folder(tmp_path / "mism")
    os.rename(root / "test" / "c", root / "test" / "z")
    assert_error(lambda: data.load_split("imagefolder", root, False), root / "test")
    assert_error(lambda: data.list_images(str(root / "test"), ["a", "b", "c"]), root / "test")
    with pytest.raises(DatasetError, match="differ from train/'s: missing c; not in train/: z$"):
        data.list_images(str(root / "test"), ["a", "b", "c"])
    with pytest.raises(DatasetError, match="missing c, k0, k1, k2, k3 and 3 more; not in train/: z$"):  # 1000 classes: a few
        data.list_images(str(root / "test"), ["a", "b", "c"] + [f"k{i}" for i in range(7)])
    root = make_folder(tmp_path / "notest", test=False)
    assert_error(lambda: data.load_split("imagefolder", root, False), root / "test")
    root = make_folder(tmp_path / "sizes", test=False)
    Image.fromarray(pixel(0, 9, 6)).save(root / "train" / "c" / "999.png")
    assert_error(lambda: data.load_split("imagefolder", root, True), root / "train" / "c" / "999.png")
    root = make_folder(tmp_path / "splits", test=False)  # test/ at another size: no silent rescoring
    make_folder(tmp_path / "other", size=12)
    os.rename(tmp_path / "other" / "test", root / "test")
    assert_error(lambda: data.load_split("imagefolder", root, False), root)
    with pytest.raises(DatasetError, match="test/ images are 12x12 px, train/ images 8x8"):
        data.load_split("imagefolder", root, False)


def test_large_images_stream(tmp_path):
    root = make_folder(tmp_path / "big", classes=("x", "y"), n=2, size=80)
    info = data.dataset_info("imagefolder", root)
    assert info.streaming and info.num_classes == 2 and info.mean == data.IMAGENET_MEAN
    assert_error(lambda: data.load_split("imagefolder", root, True), root)
    files, labels, classes = data.folder_files(str(root), train=True)
    for train in (True, False):
        loader = stream.folder_loader(files, labels, 2, train, size=32, color_jitter=train, workers=0)
        xb, yb = next(iter(loader))
        assert xb.shape == (2, 3, 32, 32) and yb.shape == (2,)


def test_an_imagenet_style_val_folder_is_the_test_split(tmp_path):
    """ImageNet comes as train/ + val/: without a test/ the val/ folder is the test split; test/ wins where both
    are; neither: the error names test/."""
    root = make_folder(tmp_path / "big", classes=("x", "y"), n=2, size=80)
    os.rename(root / "test", root / "val")
    assert data.test_folder(str(root)) == str(root / "val")
    files, labels, _ = data.folder_files(str(root), train=False)
    assert sorted(os.path.relpath(f, root).split(os.sep)[0] for f in files) == ["val"] * 4 and labels == [0, 0, 1, 1]
    make_folder(tmp_path / "big", classes=("x", "y"), n=1, size=80)  # a test/ beside it
    assert data.test_folder(str(root)) == str(root / "test")
    assert data.test_folder(str(tmp_path)) == str(tmp_path / "test")


def test_streamed_item_leaves_the_cuda_rng_alone(tmp_path, monkeypatch):
    """With workers=0 an item's seeded transform runs in the training process: it must seed (and give
    back) the CPU generator only, never reseed CUDA's (torch.manual_seed would)."""
    root = make_folder(tmp_path / "big", classes=("x",), n=1, size=80)
    files, labels, _ = data.folder_files(str(root), train=True)
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(seed))
    loader = stream.folder_loader(files, labels, 1, True, size=32, workers=0)
    before = torch.get_rng_state()
    next(iter(loader))
    assert calls == [] and torch.equal(torch.get_rng_state(), before)


def test_constants_and_torchvision_missing(tmp_path):
    info = data.dataset_info("ImageNet16-120")
    assert (info.num_classes, info.size, info.padding) == (120, 16, 2) and abs(info.mean[0] - 122.68 / 255) < 1e-9
    assert data.dataset_info("cifar10").padding == 4 and data.dataset_info("cifar100").num_classes == 100
    with pytest.raises(DatasetError):
        data.dataset_info("mnist")
    assert_error(lambda: data.load_split("cifar10", tmp_path, True), tmp_path)


def write_pickle(path, obj, protocol):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def test_imagenet16(tmp_path):
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"train_data_batch_{k}" for k in range(1, 11)] + ["val_data"]):
        labels = [1, 120, 121, 1000, 60, 7][: 3 + i % 4]
        raw = rng.integers(0, 256, (len(labels), 768), dtype=np.uint8)
        write_pickle(tmp_path / name, {"data": raw, "labels": labels, "mean": raw.mean(0)}, 2 + i % 4)
        if name == "val_data":
            val_raw, val_labels = raw, labels
    x, y = data.read_imagenet16(tmp_path, train=True)
    assert x.shape[1:] == (3, 16, 16) and x.dtype == torch.uint8 and y.min() >= 0 and y.max() <= 119
    xv, yv = data.read_imagenet16(tmp_path, train=False)
    keep = [i for i, lab in enumerate(val_labels) if lab <= 120]
    assert yv.tolist() == [val_labels[i] - 1 for i in keep]
    r = val_raw[keep[1]]  # channel-major: (c, row, col) -> c*256 + row*16 + col
    assert xv[1, 2, 3, 4] == r[2 * 256 + 3 * 16 + 4] and xv[1, 0, 15, 0] == r[15 * 16]
    write_pickle(tmp_path / "val_data", {"data": os.system}, 2)  # anything but numpy is refused
    with pytest.raises(pickle.UnpicklingError):
        data.read_imagenet16(tmp_path, train=False)
    os.remove(tmp_path / "train_data_batch_7")
    assert_error(lambda: data.read_imagenet16(tmp_path, train=True), tmp_path / "train_data_batch_7")


def test_alpha_on_test_picks_nb201s_or_darts_split(tmp_path):
    """ImageNet16-120 (as cifar100): NB201's search puts alpha on half of the test set; DARTS-style
    searches (R-DARTS, PC-DARTS on CIFAR-100) halve the training set. Train pixels 0-9, test 255."""
    for i, name in enumerate([f"train_data_batch_{k}" for k in range(1, 11)] + ["val_data"]):
        raw = np.full((4, 768), 255 if name == "val_data" else i, dtype=np.uint8)
        write_pickle(tmp_path / name, {"data": raw, "labels": [1, 2, 3, 4]}, 2)
    (xw, _), (xa, _) = data.search_split("ImageNet16-120", tmp_path, seed=0, alpha_on_test=True)
    assert len(xw) == 40 and (xw < 255).all() and len(xa) == 2 and (xa == 255).all()
    (xw, _), (xa, _) = data.search_split("ImageNet16-120", tmp_path, seed=0, alpha_on_test=False)
    assert len(xw) == len(xa) == 20 and (xw < 255).all() and (xa < 255).all()
    assert search.make_config(["--space=s3", "--dataset=cifar100"]).alpha_on_test is False
    assert search.make_config(["--dataset=cifar100"]).alpha_on_test is True  # NB201's space
    assert search.make_config(["--space=s3", "--dataset=cifar100", "--alpha_on_test=1"]).alpha_on_test is True


@pytest.mark.skipif(not os.path.isdir(REAL), reason="no ../shared/data/cifar10-jpeg")
def test_real_cifar10_jpeg():
    x, y = data.load_split("imagefolder", REAL, train=False)
    assert x.shape == (10000, 3, 32, 32) and torch.bincount(y).tolist() == [1000] * 10
    assert np.allclose(data.channel_stats(x)[0], (0.494, 0.485, 0.450), atol=2e-3)


# ---------------------------------------------------------------------------------------------- split

def ids(n):
    return torch.zeros(n, 3, 2, 2, dtype=torch.uint8), torch.arange(n)


def test_split_darts():
    (xw, yw), (xa, ya) = data.split_arrays(ids(11), seed=3)
    assert len(yw) == 5 and len(ya) == 6 and len(xw) == 5
    assert sorted(yw.tolist() + ya.tolist()) == list(range(11))
    (_, yw2), (_, ya2) = data.split_arrays(ids(11), seed=3)
    assert torch.equal(yw, yw2) and torch.equal(ya, ya2)
    assert not torch.equal(data.split_arrays(ids(11), seed=4)[0][1], yw)
    assert yw.tolist() != sorted(yw.tolist()) or ya.tolist() != sorted(ya.tolist())  # not index order
    (_, yw), (_, ya) = data.split_arrays(ids(100), subset=10, seed=0)
    assert len(yw) == len(ya) == 5 and not set(yw.tolist()) & set(ya.tolist())
    with pytest.raises(DatasetError):
        data.split_arrays(ids(10), subset=11)


def test_split_nb201():
    train, (xt, yt) = ids(20), ids(10)
    (_, yw), (_, ya) = data.split_arrays(train, (xt, yt + 100), seed=0)
    assert sorted(yw.tolist()) == list(range(20)) and len(ya) == 5 and ya.min() >= 100
    assert len(set(ya.tolist())) == 5
    (_, yw), (_, ya) = data.split_arrays(train, (xt, yt + 100), subset=6, seed=0)
    assert len(yw) == 6 and len(ya) == 3
    first, again = (data.split_arrays(train, (xt, yt), seed=1)[1][1] for _ in range(2))
    assert torch.equal(first, again)
    # a seeded random half of the test set, not its first images: another seed draws another half
    halves = {tuple(sorted(data.split_arrays(train, (xt, yt), seed=s)[1][1].tolist())) for s in range(5)}
    assert len(halves) > 1


def test_search_split_imagefolder(tmp_path):
    root = make_folder(tmp_path / "ds", test=False)
    (xw, yw), (xa, ya) = data.search_split("imagefolder", root, seed=0)
    assert xw.shape == xa.shape == (6, 3, 8, 8)


# ---------------------------------------------------------------------------------------------- loader

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def images(n=10, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g), torch.arange(n)


def normalise(x):
    return (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_eval_loader():
    x, y = images(10)
    loader = batching.TensorLoader(x, y, 4, "cpu", MEAN, STD, train=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and [len(b[1]) for b in batches] == [4, 4, 2]
    xb = torch.cat([b[0] for b in batches])
    assert xb.dtype == torch.float32 and xb.device.type == "cpu"
    assert torch.equal(torch.cat([b[1] for b in batches]), y) and torch.allclose(xb, normalise(x), atol=1e-6)
    assert len(batching.TensorLoader(x, y, 4, "cpu", MEAN, STD, drop_last=True)) == 2


def reference_crop_flip(img, p, dy, dx, flip):
    """Per-image RandomCrop(H, padding=p) then flip, as torchvision does it on a zero-padded image."""
    H, W = img.shape[-2:]
    out = F.pad(img, (p, p, p, p))[:, dy:dy + H, dx:dx + W]
    return out.flip(-1) if flip else out


def test_crop_flip_matches_reference():
    x, _ = images(6, size=8)
    dy, dx = torch.tensor([0, 8, 3, 4, 1, 7]), torch.tensor([8, 0, 3, 4, 6, 2])
    flip = torch.tensor([0, 1, 1, 0, 1, 0]).bool()
    out = batching.crop_flip(x, 4, dy, dx, flip)
    for i in range(6):
        assert torch.equal(out[i], reference_crop_flip(x[i], 4, int(dy[i]), int(dx[i]), bool(flip[i])))


def test_train_loader_augments_by_crop_flip():
    x, y = images(12, size=8)
    loader = batching.TensorLoader(x, y, 5, "cpu", MEAN, STD, padding=2, seed=1)
    flips = 0
    for xb, yb in loader:
        for img, i in zip(xb, yb.tolist()):
            cands = [f for f in (0, 1) for dy in range(5) for dx in range(5)
                     if torch.allclose(img, normalise(reference_crop_flip(x[i], 2, dy, dx, f)[None])[0], atol=1e-6)]
            assert cands, "augmented image is no crop/flip of its source"
            flips += cands[0]
    assert 0 < flips < 12


def test_loader_determinism_and_epochs():
    x, y = images(20)
    a = batching.TensorLoader(x, y, 8, "cpu", MEAN, STD, seed=5, cutout=4)
    b = batching.TensorLoader(x, y, 8, "cpu", MEAN, STD, seed=5, cutout=4)
    a.set_epoch(3), b.set_epoch(3)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    order3 = torch.cat([yb for _, yb in a])
    a.set_epoch(4)
    assert not torch.equal(order3, torch.cat([yb for _, yb in a]))
    it0, it5 = a.forever(0), a.forever(5)  # resuming at global step k = skipping k batches (len 3)
    first = [next(it0) for _ in range(8)]
    for (x0, y0), (x5, y5) in zip(first[5:], [next(it5) for _ in range(3)]):
        assert torch.equal(x0, x5) and torch.equal(y0, y5)


def test_shards_disjoint_and_cover():
    x, y = images(12)
    single = batching.TensorLoader(x, y, 4, "cpu", MEAN, STD, seed=2)
    full = {int(i): img for xb, yb in single for img, i in zip(xb, yb)}
    seen = []
    for rank in range(3):
        shard = batching.TensorLoader(x, y, 4, "cpu", MEAN, STD, seed=2, rank=rank, world_size=3)
        assert len(shard) == 1
        for xb, yb in shard:
            seen += yb.tolist()
            for img, i in zip(xb, yb.tolist()):
                assert torch.equal(img, full[i])  # same augmentation as the single-process epoch
    assert sorted(seen) == list(range(12))
    evals = [yb.tolist() for r in range(3) for _, yb in
             batching.TensorLoader(x[:10], y[:10], 4, "cpu", MEAN, STD, train=False, rank=r, world_size=3)]
    assert sorted(sum(evals, [])) == list(range(10))
    # training cuts an epoch to a multiple of the ranks (every rank takes as many steps); evaluation keeps all
    t = torch.arange(10)
    assert [batching.rank_share(t, True, r, 3).tolist() for r in range(3)] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert [len(batching.rank_share(t, False, r, 3)) for r in range(3)] == [4, 3, 3]


def test_training_epoch_never_ends_on_one_image():
    # BatchNorm in training mode refuses one value per channel (the CIFAR auxiliary head's BN on 1x1), so
    # a training epoch whose last batch per rank would hold one image drops it: SVHN-like 8 x 37 images,
    # 8 ranks of 12 each (global 96) would end on [..., 1] on every rank
    n, ws, b = 8 * 37, 8, 12
    x, y = torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.arange(n)
    for rank in (0, 7):
        shard = batching.TensorLoader(x, y, b, "cpu", MEAN, STD, seed=1, rank=rank, world_size=ws)
        assert [len(yb) for _, yb in shard] == [12, 12, 12] and len(shard) == 3
        sampler = stream.EpochSampler(n, True, seed=1, rank=rank, world_size=ws, batch_size=b)
        assert len(sampler) == len(list(sampler)) == 36
        assert [i for i, _, _ in sampler] == shard_order(n, ws, rank, seed=1)[:36]
    assert batching.train_share(37, 1, 12) == 36 and batching.train_share(38, 1, 12) == 38
    assert batching.train_share(37, 1, 1) == 37  # batch 1: every batch holds one image anyway
    # evaluation keeps every image (no BN statistics are computed from its batches)
    ev = batching.TensorLoader(x[:37], y[:37], 12, "cpu", MEAN, STD, train=False)
    assert [len(yb) for _, yb in ev] == [12, 12, 12, 1]
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm2d(2).train()(torch.zeros(1, 2, 1, 1))  # why: what the dropped batch would raise


def shard_order(n, ws, rank, seed):
    """The epoch-0 permutation of n images, this rank's strided share (before any cut)."""
    g = torch.Generator().manual_seed(batching.key_seed(seed, 0))
    return torch.randperm(n, generator=g)[rank::ws].tolist()


def test_cutout_clipped_square():
    x = torch.ones(3, 3, 8, 8)
    out = batching.cutout(x, 4, torch.tensor([0, 4, 7]), torch.tensor([0, 4, 2]))
    for i, (cy, cx) in enumerate([(0, 0), (4, 4), (7, 2)]):
        mask = np.ones((8, 8), np.float32)  # DARTS utils.Cutout with numpy clipping
        mask[np.clip(cy - 2, 0, 8):np.clip(cy + 2, 0, 8), np.clip(cx - 2, 0, 8):np.clip(cx + 2, 0, 8)] = 0
        assert torch.equal(out[i], torch.from_numpy(mask).expand(3, 8, 8))
    assert int((out[0] == 0).sum()) == 3 * 4 and int((out[1] == 0).sum()) == 3 * 16


def test_synthetic_dataset_is_cifar10_shaped_without_files(tmp_path):
    """--dataset=synthetic: the search split is 25,000 / 25,000 images of 3x32x32 bytes with labels
    0..9, the same whatever --data says (nothing is read or written there); the test set has 10,000."""
    (xw, yw), (xa, ya) = data.search_split("synthetic", tmp_path / "absent")
    assert xw.shape == xa.shape == (25_000, 3, 32, 32) and xw.dtype == torch.uint8 and len(yw) == len(ya)
    assert 0 <= int(yw.min()) and int(yw.max()) == 9 and not (tmp_path / "absent").exists()
    x, y = data.load_split("synthetic", "elsewhere", True)
    assert torch.equal(torch.sort(torch.cat([yw, ya])).values, torch.sort(y).values)  # a split of it
    assert len(data.load_split("synthetic", "elsewhere", False)[1]) == 10_000
    info = data.dataset_info("synthetic")
    assert (info.num_classes, info.size, info.streaming) == (10, 32, False)
    mean, std = data.channel_stats(x[:2000])  # the constants normalise it to about N(0, 1) per channel
    assert mean == pytest.approx(info.mean, abs=0.01) and std == pytest.approx(info.std, abs=0.01)


def test_search_runs_on_synthetic_data(tmp_path):
    import search
    _, history = search.search(search.make_config([
        "--dataset=synthetic", f"--data={tmp_path / 'absent'}", "--subset=16", "--C=4", "--layers=1",
        "--batch_size=4", "--epochs=1", "--device=cpu", f"--out={tmp_path / 'run'}"]))
    assert "8 weight / 8 alpha images" in (tmp_path / "run" / "log.txt").read_text() and len(history) == 1
