"""Make the repository root importable for the tests (the modules are flat files there)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import pytest


def make_image_folder(root, classes=3, train_per_class=8, test_per_class=4, size=16, seed=0):
    """A tiny ImageFolder tree of random PNGs: root/{train,test}/class{k}/{i}.png."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(classes):
            d = os.path.join(root, split, f"class{c}")
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(img).save(os.path.join(d, f"{i}.png"))
    return str(root)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("tiny_folder"))
