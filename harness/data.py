"""Datasets: reading them (files, torchvision, NB201 pickles), their constants and the search split.

Public: DatasetError, DatasetInfo, dataset_info, check_present, fetch, load_split, search_split, split_arrays,
seeded_pick, read_imagenet16, list_images, folder_files, decode_images, channel_stats; why_unreadable is
shared with stream.py. Batches (augmentation, TensorLoader) are batching.py's; streaming from disk is stream.py's.
Datasets: cifar10 / cifar100 / svhn (torchvision files), ImageNet16-120 (NB201 §10 pickles), imagefolder
(`DIR/train/<class>/<image>`, optional `DIR/test/`), synthetic (random bytes of CIFAR-10's shape, no
files: for measuring speed anywhere). Two paths, chosen by image size: small images
(side <= 64) are decoded once into uint8 (N, 3, H, W) + int64 (N,) in memory and augmented on the device in
whole batches (batching.TensorLoader); large folders (ImageNet-style) stream from disk (stream.folder_loader).

Facts implemented: the search split of DARTS (cifar10, svhn, imagefolder: train set halved,
train_portion 0.5) and of NB201 §4.3 (cifar100, ImageNet16-120: weights on the full train set, α on half
the test set, 'xvalid'); both halves get the training augmentation, as in both papers.
Decisions where the references are silent:
- DARTS halves come from a seeded random permutation, not DARTS' index order: an ImageFolder lists images
  sorted by class, so an index split would give the two halves different classes.
- NB201's xvalid comes from a split file we do not have: a seeded random half of the test set instead.
- subset=N takes N training images by the seeded permutation before splitting; under NB201's rule the α
  set is then cut to N // 2 test images.
- Decoding is sequential: on the 2-core machines a thread pool was slower for 1 KB JPEGs.
- Faults: every file PIL cannot read is reported in one line (paths and count) before training, or
  skipped with skip_bad=True and a one-line warning; the streaming loader (stream.py) names the first one
  it meets, or leaves each out of its batch with skip_bad=True. Missing cifar/svhn files are downloaded through torchvision (fetch) unless download=False.
"""
import functools
import os
import pickle
import sys
from dataclasses import dataclass

import numpy as np
import torch

from spaces import InputError


class DatasetError(InputError):
    """A dataset that is missing or malformed; the message is one line naming the path."""


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    size: int           # image side in pixels (H == W)
    mean: tuple         # per channel, in [0, 1] (after ToTensor)
    std: tuple
    padding: int        # RandomCrop zero padding = size // 8 (4 for 32 px, 2 for 16 px)
    streaming: bool     # True: large images, use stream.folder_loader; False: decoded tensors, batching.TensorLoader


# name: (num_classes, size, mean, std). One set per dataset for every space: NB201's own CIFAR values
# ((125.3, 123.0, 113.9) / 255, (63.0, 62.1, 66.7) / 255; CIFAR-100 likewise) differ from these by < 2e-4.
_CONSTANTS = {
    "cifar10": (10, 32, (0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),  # DARTS
    "cifar100": (100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),  # R-DARTS src/utils.py (PC-DARTS: CIFAR-10's)
    "svhn": (10, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),  # R-DARTS src/utils.py
    "ImageNet16-120": (120, 16, tuple(v / 255 for v in (122.68, 116.66, 104.01)),
                       tuple(v / 255 for v in (63.22, 61.26, 65.09))),  # NB201 §4.1
    # uniform random bytes: mean 255/2 / 255, std sqrt((256^2 - 1) / 12) / 255
    "synthetic": (10, 32, (0.5,) * 3, (((256 ** 2 - 1) / 12) ** 0.5 / 255,) * 3),
}
SYNTHETIC_SIZES = (50_000, 10_000)  # CIFAR-10's train and test sets
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # streaming path (DARTS §5.3)
NAMES = tuple(_CONSTANTS) + ("imagefolder",)
NB201_CONVENTION = ("cifar100", "ImageNet16-120")  # α on half the test set (NB201 §4.3)
MAX_SMALL = 64  # largest image side decoded into memory
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


# ---------------------------------------------------------------------------------------------- readers

def list_images(path, classes=None):
    """ImageFolder split `path/<class>/*` -> (files, labels, classes), labels index the sorted class
    folders, which must equal `classes` when given (those of train/)."""
    if not os.path.isdir(path):
        raise DatasetError(f"{path}: no such folder")
    found = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    if not found:
        raise DatasetError(f"{path}: no class folders")
    if classes is not None and found != list(classes):  # named by difference: ImageNet has 1000 of them
        def some(names):
            return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "") or "none"
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise DatasetError(f"{path}: its class folders differ from train/'s: missing {some(missing)}; "
                           f"not in train/: {some(extra)}")
    files, labels = [], []
    for label, c in enumerate(found):
        names = sorted(n for n in os.listdir(os.path.join(path, c)) if n.lower().endswith(IMG_EXTENSIONS))
        if not names:
            raise DatasetError(f"{os.path.join(path, c)}: no images ({', '.join(IMG_EXTENSIONS)})")
        files += [os.path.join(path, c, n) for n in names]
        labels += [label] * len(names)
    return files, labels, found


def need_train_folder(root):
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: no such folder (--data names a folder with train/<class>/<image>)")
    if not os.path.isdir(os.path.join(root, "train")):
        raise DatasetError(f"{root}: no train/ folder (expected {root}/train/<class>/<image>)")


def test_folder(root):
    """root/test, or root/val where there is no test/ (ImageNet's own train/ + val/ layout); a missing one is
    named as root/test by whoever lists it."""
    test, val = os.path.join(root, "test"), os.path.join(root, "val")
    return val if not os.path.isdir(test) and os.path.isdir(val) else test


def folder_files(root, train):
    """(files, labels, classes) of root/train or the test split (test_folder); classes = sorted train/ folders."""
    need_train_folder(root)
    files, labels, classes = list_images(os.path.join(root, "train"))
    return (files, labels, classes) if train else list_images(test_folder(root), classes)


def _first_size(files):
    """(width, height) of the first file PIL can open (its header only), None if none can: unreadable
    files are left to decode_images / the loader to report."""
    from PIL import Image
    for file in files:
        try:
            with Image.open(file) as im:
                return im.size
        except Exception:  # noqa: BLE001  any unreadable file
            continue
    return None


def _is_large(files):
    """Whether a folder's images stream from disk: the first file PIL can open decides."""
    size = _first_size(files)
    return size is not None and max(size) > MAX_SMALL


def why_unreadable(e):
    """Why PIL could not read a file, short (its messages often repeat the path)."""
    from PIL import UnidentifiedImageError
    return "not an image" if isinstance(e, UnidentifiedImageError) else " ".join(str(e).split())[:80]


def decode_images(files, labels, skip_bad=False):
    """Decode same-size images with PIL (RGB) -> x uint8 (N, 3, H, W), y int64 (N,).

    Every file PIL cannot read is collected first, then reported in one DatasetError line (each path and
    the count); skip_bad=True leaves them out instead, with a one-line warning on stderr."""
    from PIL import Image
    arrays, kept, bad = [], [], []
    for f, y in zip(files, labels):
        try:
            with Image.open(f) as im:
                a = np.asarray(im.convert("RGB"))  # (H, W, 3); convert() decodes: truncation shows here
        except Exception as e:  # noqa: BLE001  UnidentifiedImageError, OSError (truncated), ValueError, ...
            bad.append(f"{f} ({why_unreadable(e)})")
            continue
        if arrays and a.shape != arrays[0].shape:  # (H, W, 3) of this image and of the first
            raise DatasetError(f"{f}: shape {a.shape} differs from {arrays[0].shape} of {kept[0][0]}; "
                               f"small images must share one size")
        arrays.append(a)
        kept.append((f, y))
    if bad:
        msg = f"{len(bad)} of {len(files)} images are unreadable: {'; '.join(bad)}"
        if not skip_bad or not arrays:
            raise DatasetError(f"{msg}. Replace or remove them, or pass --skip_bad_images=1 to leave them out")
        print(f"warning: leaving out {msg}", file=sys.stderr, flush=True)
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([y for _, y in kept], dtype=torch.int64)


class _NumpyUnpickler(pickle.Unpickler):
    """The ImageNet16 batches are trusted data files, still: allow only what a numpy array needs."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
        (m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                         "numpy._core.numeric") for n in ("_reconstruct", "scalar", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")
        return super().find_class(module, name)


def _imagenet16_files(root, train):
    """The pickles of one ImageNet16 split (each checked to be there)."""
    paths = [os.path.join(root, n) for n in ([f"train_data_batch_{i}" for i in range(1, 11)] if train
                                             else ["val_data"])]
    for path in paths:
        if not os.path.isfile(path):
            raise DatasetError(f"{path}: missing (ImageNet16 needs train_data_batch_1..10 and val_data)")
    return paths


def read_imagenet16(root, train, num_classes=120):
    """NB201 §10: pickled dicts {'data': uint8 (N, 768) channel-major, 'labels': 1..1000}; keep labels
    1..num_classes shifted to 0.. -> x uint8 (N, 3, 16, 16), y int64 (N,)."""
    xs, ys = [], []
    for path in _imagenet16_files(root, train):
        with open(path, "rb") as f:
            d = _NumpyUnpickler(f, encoding="latin1").load()
        labels = np.asarray(d["labels"], dtype=np.int64)
        keep = (labels >= 1) & (labels <= num_classes)  # filter per file: the full set would be ~1 GB
        xs.append(np.asarray(d["data"], dtype=np.uint8)[keep].reshape(-1, 3, 16, 16))
        ys.append(labels[keep] - 1)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


_TORCHVISION = {  # name: (class, the files it reads, where they come from)
    "cifar10": ("CIFAR10", [f"cifar-10-batches-py/{n}" for n in ("data_batch_1", "data_batch_2", "data_batch_3",
                                                                 "data_batch_4", "data_batch_5", "test_batch")],
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, unpacked"),
    "cifar100": ("CIFAR100", ["cifar-100-python/train", "cifar-100-python/test"],
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, unpacked"),
    "svhn": ("SVHN", ["train_32x32.mat", "test_32x32.mat"], "http://ufldl.stanford.edu/housenumbers/"),
}


def fetch(name, root, download=True):
    """First run of a torchvision dataset (cifar10, cifar100, svhn): when its files are not all in `root`,
    download them there if `download`, else one DatasetError line saying where to put them. Files that
    are there are used as they are (no network access); other datasets are left alone."""
    if name not in _TORCHVISION:
        return
    cls, files, url = _TORCHVISION[name]
    missing = [f for f in files if not os.path.isfile(os.path.join(root, f))]
    if not missing:
        return
    where = (f"put {files[0].split('/')[0] + '/' if '/' in files[0] else ' and '.join(files)} into {root} "
             f"(from {url}) or pass --data=DIR where they are")
    if not download:
        raise DatasetError(f"{root}: {name} not found ({os.path.join(root, missing[0])} is missing) and "
                           f"--download=0; {where}")
    import torchvision
    print(f"downloading {name} into {root} (first run; --download=0 prevents this)", file=sys.stderr, flush=True)
    try:
        for split in (("train", "test") if name == "svhn" else ("train",)):  # one CIFAR archive has both
            kw = dict(split=split) if name == "svhn" else dict(train=True)
            getattr(torchvision.datasets, cls)(root, download=True, **kw)
    except Exception as e:  # noqa: BLE001  offline (URLError), proxy, checksum, full disk: all one line
        raise DatasetError(f"could not download {name} into {root} ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:120]}); offline? {where}") from e


def check_present(name, root, download=True):
    """Refuse, before any image is read, a dataset the run could not read: an unknown name, a folder
    dataset (imagefolder) without root/train/, ImageNet16-120 without its pickles, cifar/svhn files that
    are missing with download=False (with download they are fetched when the run starts)."""
    if name not in NAMES:
        raise DatasetError(f"{name}: unknown dataset, expected one of {NAMES}")
    if name == "imagefolder":
        need_train_folder(root)
    if name == "ImageNet16-120":
        _imagenet16_files(root, True), _imagenet16_files(root, False)
    if name in _TORCHVISION and not download:
        fetch(name, root, download=False)  # only looks for the files


def _read_torchvision(name, root, train):
    import torchvision
    try:
        if name == "svhn":
            ds = torchvision.datasets.SVHN(root, split="train" if train else "test")
            return torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long()  # data is (N, 3, 32, 32)
        ds = getattr(torchvision.datasets, _TORCHVISION[name][0])(root, train=train)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as e:  # present, damaged
        raise DatasetError(f"{root}: the {name} files are damaged or incomplete ({type(e).__name__}); delete "
                           f"{os.path.dirname(_TORCHVISION[name][1][0]) or 'them'} and rerun to download "
                           f"them again") from e
    return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)


@functools.lru_cache(maxsize=4)  # dataset_info and search_split/load_split share one decode per process
def _load(name, root, train, download, skip_bad):
    if name == "synthetic":
        return synthetic_split(train)
    if name in _TORCHVISION:
        fetch(name, root, download)
        return _read_torchvision(name, root, train)
    if name == "ImageNet16-120":
        return read_imagenet16(root, train)
    if name != "imagefolder":
        raise DatasetError(f"{name}: unknown dataset, expected one of {NAMES}")
    files, labels, _ = folder_files(root, train)
    if _is_large(files):
        raise DatasetError(f"{root}: images larger than {MAX_SMALL} px stream from disk: "
                           "use stream.folder_loader")
    size, want = _first_size(files), None if train else _first_size(folder_files(root, True)[0])
    if size and want and size != want:  # small images are used as they are: a net is scored at its training size
        raise DatasetError(f"{root}: test/ images are {size[0]}x{size[1]} px, train/ images {want[0]}x{want[1]}: "
                           "give both splits one size")
    return decode_images(files, labels, skip_bad)


@functools.lru_cache(maxsize=2)  # one copy per process, whatever --data says
def synthetic_split(train):
    """--dataset=synthetic: CIFAR-10's shape without a file (throughput on any machine, the GPU check):
    uniform random uint8 images (N, 3, 32, 32) and labels in 0..9, N = 50,000 (train) or 10,000
    (test), the same on every call and machine (a fixed numpy generator per split). Nothing to learn in
    it: accuracies stay at chance."""
    rng = np.random.default_rng(1 if train else 2)
    n = SYNTHETIC_SIZES[0 if train else 1]
    x = np.frombuffer(rng.bytes(n * 3 * 32 * 32), dtype=np.uint8).reshape(n, 3, 32, 32)  # 150 MB in ~0.1 s
    return torch.from_numpy(x.copy()), torch.from_numpy(rng.integers(0, 10, n))


def load_split(name, root, train, download=False, skip_bad=False):
    """Full train (train=True) or test set of a small-image dataset -> x uint8 (N, 3, H, W), y int64 (N,).
    download: fetch missing cifar/svhn files; skip_bad: leave unreadable images out (see decode_images).
    Tensors are cached per process and shared: do not modify them in place."""
    return _load(name, os.fspath(root), bool(train), bool(download), bool(skip_bad))


def channel_stats(x):
    """Per-channel mean and std (population) of uint8 images (N, 3, H, W), in [0, 1] units."""
    s = s2 = 0
    for xb in x.split(4096):  # chunks keep the float64 copy small
        xb = xb.double().div_(255)
        s, s2 = s + xb.sum((0, 2, 3)), s2 + xb.square().sum((0, 2, 3))
    n = x.numel() // 3
    mean = s / n
    return tuple(mean.tolist()), tuple((s2 / n - mean ** 2).clamp_min(0).sqrt().tolist())


def dataset_info(name, root=None, download=False, skip_bad=False):
    """Constants of a dataset. imagefolder: classes from train/, mean/std computed over its training images
    (decoded once, shared with load_split), or ImageNet's constants for large (streaming) images."""
    if name in _CONSTANTS:
        k, size, mean, std = _CONSTANTS[name]
        return DatasetInfo(k, size, mean, std, size // 8, False)
    if name != "imagefolder":
        raise DatasetError(f"{name}: unknown dataset, expected one of {NAMES}")
    files, _, classes = folder_files(os.fspath(root), True)
    if _is_large(files):
        return DatasetInfo(len(classes), 224, IMAGENET_MEAN, IMAGENET_STD, 0, True)
    x, _ = load_split(name, root, True, download, skip_bad)
    mean, std = channel_stats(x)
    return DatasetInfo(len(classes), x.shape[-1], mean, std, x.shape[-1] // 8, False)


# ---------------------------------------------------------------------------------------------- search split

def seeded_pick(n, k, seed, flag="k", where="the set"):
    """k of the indices 0..n-1, a seeded random choice in random order, as a list; k > n is refused in one
    line naming the flag (a quiet 'all n' would let a run report images it never had). The CPU generator
    of its own: the same choice on every machine, the global RNG untouched."""
    if k > n:
        raise DatasetError(f"{flag}={k}: {where} has only {n} images")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].tolist()


def split_arrays(train, test=None, subset=None, seed=0):
    """Search split on tensors -> ((x_w, y_w), (x_α, y_α)): the weight half and the α half.
    test None (DARTS): a seeded permutation of train, first floor(n/2) for weights, the rest for α.
    test given (NB201): weights on all of train, α on a seeded random half of test ('xvalid').
    subset=N first takes N training images by the permutation; with the NB201 rule the α set is then
    also cut to N // 2 images, about what the DARTS rule gives α for the same subset."""
    x, y = train
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    if subset is not None:
        if not 2 <= subset <= len(y):
            raise DatasetError(f"subset={subset}: must lie in [2, {len(y)}]")
        perm = perm[:subset]
    if test is None:
        w, a = perm[: len(perm) // 2], perm[len(perm) // 2:]
        return (x[w], y[w]), (x[a], y[a])
    xt, yt = test
    n_alpha = len(yt) // 2 if subset is None else min(len(yt) // 2, subset // 2)
    a = torch.randperm(len(yt), generator=g)[:n_alpha]
    return (x[perm], y[perm]), (xt[a], yt[a])


def search_split(name, root, subset=None, seed=0, download=False, skip_bad=False, alpha_on_test=True):
    """Search data of a small-image dataset -> ((x_w, y_w), (x_α, y_α)), uint8 images, int64 labels.
    See split_arrays. cifar100 and ImageNet16-120 with `alpha_on_test`: NB201's rule (α on half of the
    test set); without it, and every other dataset: DARTS' (halves of the training set, as R-DARTS and
    PC-DARTS search CIFAR-100 too)."""
    train = load_split(name, root, True, download, skip_bad)
    nb201_rule = alpha_on_test and name in NB201_CONVENTION
    test = load_split(name, root, False, download, skip_bad) if nb201_rule else None
    return split_arrays(train, test, subset, seed)
