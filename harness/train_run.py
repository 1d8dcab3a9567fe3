"""train.py's data and scoring, so that its loop reads as the training step: the dataset's constants
(`data_info`, 'imagenet' = a folder of large images), the train and test loaders of this process's
share of the global batch (`make_loaders`), batches moved to the device (`batches`) and the test-set
score (top-1, top-5) summed over all processes, in float32 (`score_test_set`).
"""
import os

import torch

from harness import batching, cli, data, ddp, runs, stream


def data_info(dataset, root=None, skip_bad=False):
    """data.DatasetInfo; 'imagenet' is a folder of large images (1000 classes, 224 px when root is None)."""
    if dataset != "imagenet":
        return data.dataset_info(dataset, root, skip_bad=skip_bad)
    if root is None:
        return data.DatasetInfo(1000, 224, data.IMAGENET_MEAN, data.IMAGENET_STD, 0, True)
    info = data.dataset_info("imagefolder", root, skip_bad=skip_bad)
    if not info.streaming:
        raise cli.ConfigError(f"--dataset=imagenet: {root} holds small images; use --dataset=imagefolder")
    return info


# --subset / --test_subset draw with seed and seed + 1: generators of their own, so the training images and
# their order do not depend on the test subset; a subset larger than its set stops in one line
SUBSET, TEST_SUBSET = ("--subset", "the training set"), ("--test_subset", "the test set")


def make_loaders(cfg, info, batch, device, rank, world):
    """(train, test) loaders of this process's shard; `batch` images per process and step."""
    if info.streaming:  # ImageNet-style folder: decode from disk per step (DARTS' ImageNet transforms)
        files, labels, classes = data.list_images(os.path.join(cfg.data, "train"))
        if cfg.subset:
            keep = data.seeded_pick(len(files), cfg.subset, cfg.seed, *SUBSET)
            files, labels = [files[i] for i in keep], [labels[i] for i in keep]
        test_files, test_labels, _ = data.list_images(data.test_folder(cfg.data), classes)
        if cfg.test_subset:
            keep = data.seeded_pick(len(test_files), cfg.test_subset, cfg.seed + 1, *TEST_SUBSET)
            test_files, test_labels = [test_files[i] for i in keep], [test_labels[i] for i in keep]
        common = dict(mean=info.mean, std=info.std, size=info.size, workers=cfg.workers, seed=cfg.seed,
                      rank=rank, world_size=world, pin_memory=device.type == "cuda", skip_bad=cfg.skip_bad_images)
        return (stream.folder_loader(files, labels, batch, True, color_jitter=True, **common),
                stream.folder_loader(test_files, test_labels, batch, False, **common))
    name = "imagefolder" if cfg.dataset == "imagenet" else cfg.dataset
    if rank == 0:  # first run: rank 0 downloads cifar/svhn, the other ranks then read its files
        data.fetch(name, cfg.data, cfg.download)
    ddp.wait_for_rank0(world)
    x, y = data.load_split(name, cfg.data, True, skip_bad=cfg.skip_bad_images)
    if cfg.subset:
        keep = data.seeded_pick(len(y), cfg.subset, cfg.seed, *SUBSET)
        x, y = x[keep], y[keep]
    xt, yt = data.load_split(name, cfg.data, False, skip_bad=cfg.skip_bad_images)
    if cfg.test_subset:
        keep = data.seeded_pick(len(yt), cfg.test_subset, cfg.seed + 1, *TEST_SUBSET)
        xt, yt = xt[keep], yt[keep]
    common = dict(mean=info.mean, std=info.std, seed=cfg.seed, rank=rank, world_size=world)
    return (batching.TensorLoader(x, y, batch, device, train=True, cutout=cfg.cutout, **common),
            batching.TensorLoader(xt, yt, batch, device, train=False, **common))


def batches(loader, device, channels_last, count):
    """Batches on `device` (NHWC if channels_last); adds each batch's size to count[0]."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for x, y in loader:
        count[0] += len(y)
        yield x.to(device, non_blocking=True, memory_format=fmt), y.to(device, non_blocking=True)


def score_test_set(model, loader, device, world, nhwc):
    """(plain-CE loss, top-1 accuracy, top-5 accuracy, images scored) over the whole test set (every process
    scores its shard), in float32 whatever the training ran in: the reported number must not depend on bf16
    rounding."""
    n = [0]
    loss, acc, acc5 = runs.evaluate(model, batches(loader, device, nhwc, n))
    loss_sum, correct, correct5, total = ddp.all_sum([loss * n[0], acc * n[0], acc5 * n[0], n[0]], device, world)
    return loss_sum / max(total, 1), correct / max(total, 1), correct5 / max(total, 1), int(total)
