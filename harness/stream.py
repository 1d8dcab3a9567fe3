"""Streaming large images from disk (ImageNet-style folders), shared by train.py and imagenet_subset.py.

Public: folder_loader (-> FileLoader), FileLoader, ImageFiles, EpochSampler, BadImage.
Images larger than data.MAX_SMALL px (data.dataset_info(...).streaming) are not decoded into memory (the
TensorLoader path of batching.py) but read per item by DataLoader worker processes through torchvision
transforms, DARTS §5.3's: train RandomResizedCrop(224) + flip (+ ColorJitter for retraining), eval
Resize(256) + CenterCrop(224). FileLoader has TensorLoader's interface (set_epoch(epoch, start_step),
len, iteration, forever), so the training loops do not know which path their data takes.
Decisions where the references are silent:
- Streaming is exact too: each item's random transform is seeded by (seed, epoch, index), so a batch is
  a function of (seed, epoch, batch index) whatever the number of workers, and a run resumes mid-epoch.
- Faults: a worker returns a BadImage for a file PIL cannot read instead of raising in the worker; the
  loader names the first one it meets in one DatasetError line (the run stops: replace the file with a
  readable copy, --resume=1; removing it would change the run's file list). skip_bad=True (a run's
  --skip_bad_images=1) leaves it out of its batch instead, with one warning per file: that batch is an
  image short, every epoch, as a function of the files, so a resume still continues exactly.
"""
import sys

import torch

from harness import data
from harness import batching



class BadImage:
    """What ImageFiles returns for a file PIL cannot read (picklable: it travels back from a worker)."""

    def __init__(self, path, why):
        self.path, self.why = path, why


class ImageFiles(torch.utils.data.Dataset):
    """Large images read from disk per item (PIL, RGB) through a torchvision transform. Keyed by
    (index, epoch, seed) (EpochSampler), the transform's random draws are seeded by that key, so an
    item's augmentation does not depend on the workers or on what they loaded before."""

    def __init__(self, files, labels, transform):
        self.files, self.labels, self.transform = files, labels, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, key):
        from PIL import Image
        i, epoch, seed = key if isinstance(key, tuple) else (key, None, None)
        try:
            with Image.open(self.files[i]) as im:
                img = im.convert("RGB")
        except Exception as e:  # noqa: BLE001  reported by FileLoader in the main process, one line
            return BadImage(self.files[i], data.why_unreadable(e))
        if epoch is None:
            return self.transform(img), self.labels[i]
        # With workers=0 this runs in the training process: fork (and restore) the CPU RNG, which
        # torchvision's transforms draw from, and seed only it (torch.manual_seed would reseed CUDA too).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(batching.key_seed(seed, epoch, i))
            return self.transform(img), self.labels[i]


def _collate(items):
    """-> (the readable items collated, or None if there are none; the BadImages among them)."""
    good = [item for item in items if not isinstance(item, BadImage)]
    return (torch.utils.data.default_collate(good) if good else None,
            [item for item in items if isinstance(item, BadImage)])


class EpochSampler(torch.utils.data.Sampler):
    """This rank's share of an epoch as ImageFiles keys (index, epoch, seed): a permutation drawn from
    (seed, epoch) when shuffling, else file order; shared out as TensorLoader does; from item `start`."""

    def __init__(self, n, shuffle, seed=0, rank=0, world_size=1, batch_size=0):
        self.n, self.shuffle, self.seed, self.rank, self.world_size = n, shuffle, seed, rank, world_size
        self.batch_size = batch_size  # per rank: a training epoch never ends on a one-image batch
        self.epoch = self.start = 0

    def _order(self):
        g = torch.Generator().manual_seed(batching.key_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        return batching.rank_share(order, self.shuffle, self.rank, self.world_size, self.batch_size)

    def __iter__(self):
        return ((i, self.epoch, self.seed) for i in self._order()[self.start:].tolist())

    def __len__(self):
        if self.shuffle:
            return batching.train_share(self.n, self.world_size, self.batch_size)
        return len(range(self.rank, self.n, self.world_size))


class FileLoader(batching.Epochs):
    """Streaming counterpart of TensorLoader, same interface (set_epoch(epoch, start_step), len,
    iteration, forever): batches (x float (B, 3, size, size), y int64 (B,)) decoded by worker processes,
    moved to `device` when given. A batch is a function of (seed, epoch, batch index), so a resumed run
    continues exactly. The first unreadable file met stops it with one data.DatasetError line, or with
    skip_bad=True is left out of its batch (one warning per file on stderr)."""

    def __init__(self, dataset, batch_size, shuffle, seed=0, rank=0, world_size=1, workers=4,
                 pin_memory=False, device=None, skip_bad=False):
        self.sampler = EpochSampler(len(dataset), shuffle, seed, rank, world_size, batch_size)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size, sampler=self.sampler, num_workers=workers, pin_memory=pin_memory,
            collate_fn=_collate, persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed))  # its base seed: never the global RNG
        self.batch_size, self.device, self.skip_bad, self.warned = batch_size, device, skip_bad, set()

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.sampler.epoch, self.sampler.start = self.epoch, self.start * self.batch_size
        for batch, bad in self.loader:
            if bad and not self.skip_bad:
                raise data.DatasetError(
                    f"{bad[0].path}: unreadable image ({bad[0].why}); replace it with a readable copy and continue "
                    "with --resume=1 (removing it would change the run's file list; a new run with "
                    "--skip_bad_images=1 leaves such files out of their batches)")
            if batch is None:
                raise data.DatasetError(f"{bad[0].path}: unreadable image ({bad[0].why}), as is every image of its "
                                        "batch: is this the right folder?")
            for b in bad:
                if b.path not in self.warned:
                    self.warned.add(b.path)
                    print(f"warning: {b.path}: unreadable image ({b.why}), left out of its batch "
                          "(--skip_bad_images=1)", file=sys.stderr, flush=True)
            x, y = batch
            if self.device is not None:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            yield x, y


def folder_loader(files, labels, batch_size, train, mean=data.IMAGENET_MEAN, std=data.IMAGENET_STD, size=224,
                  color_jitter=False, workers=4, seed=0, rank=0, world_size=1, pin_memory=False, device=None,
                  skip_bad=False):
    """FileLoader for large images (DARTS §5.3): train RandomResizedCrop(size) + flip (+ ColorJitter
    (0.4, 0.4, 0.4, 0.2) for retraining), shuffled; eval Resize(size*8/7 = 256) + CenterCrop(size) in
    file order. Distributed: disjoint strided shares, as TensorLoader (eval shares are not padded).
    skip_bad: leave unreadable files out of their batches (FileLoader) instead of stopping."""
    import torchvision.transforms as T
    if train:
        tf = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
        tf += [T.ColorJitter(0.4, 0.4, 0.4, 0.2)] if color_jitter else []
    else:
        tf = [T.Resize(size * 8 // 7), T.CenterCrop(size)]
    ds = ImageFiles(files, labels, T.Compose(tf + [T.ToTensor(), T.Normalize(mean, std)]))
    return FileLoader(ds, batch_size, train, seed, rank, world_size, workers, pin_memory, device, skip_bad)
