"""Searching directly on ImageNet (paper Table 5, RF-PCDARTS): the per-class search subset as file lists.

PC-DARTS samples, before searching, 10% of every class of the ImageNet training set as the weight set and
another 2.5% of every class as the architecture set (PC-DARTS README and train_search_imagenet.py; PC-DARTS
issue #6). The original copies the images into two ImageFolders and publishes no file lists (PC-DARTS
issue #45). Here the sample is seeded and written as two text files, `subset_weights.txt` and
`subset_arch.txt` (one `relative/path<TAB>label` per line; root, sample settings and classes in `#` header
lines), so a search is reproducible and anyone can inspect or reuse exactly which images it saw.
`stream_loader` streams either list from disk with the training augmentation (RandomResizedCrop 224 + flip)
in the interface search.py loops over; a batch is a function of (seed, epoch, batch index)
(stream.FileLoader), so a search resumes exactly.
"""
import json
import os
import random

from harness import checkpoints
from harness import data
from harness import stream


def sample_subset(root, fractions=(0.1, 0.025), seed=0):
    """Per class, a seeded shuffle of ROOT/train/<class>/ split into disjoint parts of the given
    fractions (each at least one image while the class has images left: a one-image class gives its image
    to the first part only). Returns ([(files, labels) per fraction], classes)."""
    files, labels, classes = data.folder_files(root, True)
    by_class = {}
    for f, y in zip(files, labels):
        by_class.setdefault(y, []).append(f)
    rng = random.Random(seed)
    parts = [([], []) for _ in fractions]
    for y in sorted(by_class):
        items = sorted(by_class[y])  # a fixed order before the seeded shuffle: file-system independent
        rng.shuffle(items)
        start = 0
        for (pf, pl), frac in zip(parts, fractions):
            n = max(1, round(frac * len(items)))
            chosen = items[start:start + n]
            pf += chosen
            pl += [y] * len(chosen)
            start += n
    return parts, classes


def write_file_list(path, root, files, labels, classes, sample=""):
    """`sample`: the settings that drew it (seed, fractions), kept in the header so a later run can tell
    whether the lists are its own. Classes as JSON: a folder name may hold spaces."""
    def write(f):
        f.write(f"# root\t{os.path.abspath(root)}\n# sample\t{sample}\n# classes\t{json.dumps(classes)}\n")
        for file, y in zip(files, labels):
            f.write(f"{os.path.relpath(file, root)}\t{y}\n")
    checkpoints.atomic_write(path, write, mode="w")


def read_file_list(path):
    """-> (files with the root joined, labels, classes). A malformed list is a one-line error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no file list at {path}")
    root, classes, files, labels = None, None, [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise data.DatasetError(f"{path}:{n}: expected 'path<TAB>label', got {line.strip()!r}")
            if parts[0] == "# root":
                root = parts[1]
            elif parts[0] == "# sample":
                continue
            elif parts[0] == "# classes":  # JSON; lists from before that: space-separated
                classes = json.loads(parts[1]) if parts[1].startswith("[") else parts[1].split(" ")
            else:
                files.append(os.path.join(root, parts[0]))
                labels.append(int(parts[1]))
    if root is None or classes is None or not files:
        raise data.DatasetError(f"{path}: not a file list written by imagenet_subset (no root/classes/files)")
    return files, labels, classes


def header(path):
    """A file list's `# key<TAB>value` header lines as a dict ({} when there is no such file)."""
    found = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.startswith("# "):
                    break
                key, _, value = line.rstrip("\n").partition("\t")
                found[key[2:]] = value
    return found


def prepare(root, out, fractions=(0.1, 0.025), seed=0):
    """Sample once and write OUT/subset_{weights,arch}.txt; later calls (a resumed run, the other ranks)
    read them back. Lists drawn from another root or with another seed or fractions (a run in this --out
    that never reached a checkpoint, with other settings) are drawn again: the sample is a function of
    (root, seed, fractions), so lists that match are exactly what drawing again would give."""
    paths = [os.path.join(out, f"subset_{name}.txt") for name in ("weights", "arch")]
    sample = f"seed={seed} fractions={','.join(map(str, fractions))}"
    want = {"root": os.path.abspath(root), "sample": sample}
    if any({k: header(p).get(k) for k in want} != want for p in paths):
        parts, classes = sample_subset(root, fractions, seed)
        for p, (files, labels) in zip(paths, parts):
            write_file_list(p, root, files, labels, classes, sample)
    return [read_file_list(p) for p in paths]


def stream_loader(files, labels, batch_size, device, seed=0, rank=0, world_size=1, workers=4, skip_bad=False):
    """A file list streamed from disk with the search augmentation (RandomResizedCrop 224 + flip) onto
    `device`: a stream.FileLoader, TensorLoader's interface, exact on resume (mid-epoch included). Both halves
    are shuffled (seeded): PC-DARTS' train_search_imagenet.py reads its alpha half unshuffled, in class order (a
    batch of 1024 spans ~32 classes), restarting each epoch; here every alpha batch mixes classes, as on CIFAR."""
    return stream.folder_loader(files, labels, batch_size, True, workers=workers, seed=seed, rank=rank,
                                world_size=world_size, pin_memory=device.type == "cuda", device=device,
                                skip_bad=skip_bad)
