"""Checkpoints without the random features: what option C / D (Table 1) never trains is not saved.

Under RF-DARTS every convolution keeps its seeded initialisation for the whole search, so those tensors
are a function of (seed, --init, torch's random number generator), not of the run's progress: 94% of an
option-C checkpoint at C=16 (7.2 MB with them, 0.35 MB without, at the start of a run). A checkpoint holds
their names and one SHA-256 over their bytes instead; a resume builds the supernet from the seed as a
fresh run does, checks that the rebuilt tensors hash the same, and only then takes them. If they do not
(a torch whose generator draws other numbers, another --init), the resume stops in one line instead of
continuing with other features. Parameters that train (BN affine, the classifier, α) and every buffer are
saved as before; options A and B train the convolutions (B freezes only the cell BN's γ = 1, β = 0), so
their checkpoints barely shrink. A checkpoint written before this existed (no "frozen" entry) holds the
whole model and loads as it is.

Used by search.py, bnnas_search.py and analysis.py (its only-BN nets: a ResNet-50 is 94 MB at width 1,
nearly all convs); generic over any nn.Module whose frozen parameters are those with requires_grad off
right after Table 1's set_trainable (the steps toggle requires_grad later, so it is read once, then).
"""
import hashlib

import torch

from harness.checkpoints import CheckpointError


def _digest(named):
    """SHA-256 hex of [(name, tensor)]: names, dtypes, shapes and bytes, in order; device-independent."""
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class FrozenState:
    """The frozen parameters of `model` as they are now (call right after set_trainable, before a
    checkpoint is loaded): `strip` drops them from a state_dict and says what they were, `complete`
    puts them back into a checkpoint's state_dict after checking they are the ones it was saved with."""

    def __init__(self, model):
        self.model = model
        self.names = [n for n, p in model.named_parameters() if not p.requires_grad]
        params = dict(model.named_parameters())
        self.sha256 = _digest((n, params[n]) for n in self.names)

    def record(self):
        """What a checkpoint keeps of the frozen parameters (its "frozen" entry)."""
        return dict(names=list(self.names), sha256=self.sha256)

    def strip(self, state):
        """model.state_dict() without the frozen parameters."""
        drop = set(self.names)
        return {k: v for k, v in state.items() if k not in drop}

    def complete(self, ckpt, path):
        """The model state to load from checkpoint `ckpt` (read from `path`): its "model" entry, with the
        frozen parameters taken from this model when the checkpoint stored only their record."""
        saved = ckpt.get("frozen")
        if saved is None:  # written before frozen state was left out: the whole model is there
            return ckpt["model"]
        if saved["names"] != self.names:
            raise CheckpointError(f"{path}: its run froze {len(saved['names'])} parameter tensors, this one "
                                  f"{len(self.names)}: not a checkpoint of this option and supernet")
        if saved["sha256"] != self.sha256:
            raise CheckpointError(
                f"{path}: the random features this seed builds here (SHA-256 {self.sha256[:12]}) are not the "
                f"ones the run searched with ({saved['sha256'][:12]}): the checkpoint stores only their hash "
                "(harness/frozen_state.py), so resume with the torch version, --init and --init_seed that started "
                "the run")
        own = self.model.state_dict()
        return {**ckpt["model"], **{n: own[n] for n in self.names}}
