"""--fast=1 (harness/fast_supernet.py): the rearranged NB201 cell computes what the paper's cell computes.

Same parameters (names, objects, state_dict), the same forward values, and the same search: losses,
gradients, alpha and every weight after a few alternating weight / alpha steps of options B and C agree
with the plain supernet's within the float32 tolerance conftest.STEP_TOL states (as for the compiled path); a
search resumed on the other path continues it. (Compiled steps keep the plain cell: search.py.)
"""
import pytest
import torch

from harness import fast_supernet
import search
from conftest import STEP_TOL, alternating_steps, assert_steps_agree
from supernet import NB201SearchCell, build_supernet, set_trainable



def _fast(model, channels_last=True):
    n = fast_supernet.speed_up(model, channels_last)
    return model, n


def test_speed_up_swaps_every_nb201_cell_and_keeps_the_parameters():
    plain = build_supernet("nb201", 10, C=4, layers=1, seed=0)
    model = build_supernet("nb201", 10, C=4, layers=1, seed=0)
    params = {n: p for n, p in model.named_parameters()}
    _, swapped = _fast(model)
    assert swapped == 3  # one cell per stage
    cells = [b for b in model.cells if isinstance(b, NB201SearchCell)]
    assert len(cells) == 3 and all(isinstance(c, fast_supernet.FastNB201Cell) for c in cells)
    assert {n: p for n, p in model.named_parameters()} == params  # the same tensor objects
    assert list(model.state_dict()) == list(plain.state_dict())
    conv = model.cells[0].mixed[0].ops[3].op[1].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    groups = set_trainable(model, "C", verbose=False)  # cell BN is still found inside the swapped cells
    assert len(groups["cell_bn"]) == len(set_trainable(plain, "C", verbose=False)["cell_bn"]) > 0


def test_darts_supernets_stay_plain():
    model = build_supernet("s3", 10, C=4, layers=2)
    before = [type(m) for m in model.modules()]
    assert fast_supernet.speed_up(model, channels_last=False) == 0
    assert [type(m) for m in model.modules()] == before


@pytest.mark.parametrize("track", [False, True])
def test_forward_matches_the_plain_cell(track):
    plain = build_supernet("nb201", 10, C=4, layers=1, seed=0, track_running_stats=track)
    model, _ = _fast(build_supernet("nb201", 10, C=4, layers=1, seed=0, track_running_stats=track))
    with torch.no_grad():  # alpha away from uniform, so that every op's weight matters
        for m in (plain, model):
            m.alphas_normal.copy_(torch.randn(6, 5, generator=torch.Generator().manual_seed(2)))
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(model(x), plain(x), **STEP_TOL)
    for (n, a), b in zip(plain.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(b, a, **STEP_TOL, msg=n)  # running statistics moved alike (track=True)
    plain.eval(), model.eval()
    torch.testing.assert_close(model(x), plain(x), **STEP_TOL)


def _steps(option, fast, steps=3):
    """A few alternating weight/alpha steps (NB201, C=4, one cell per stage) -> per-step record, model."""
    return alternating_steps(option, steps, prepare=_fast if fast else None)


@pytest.mark.parametrize("option", ["B", "C"])
def test_fast_steps_match_plain_steps(option):
    assert_steps_agree(option, _steps(option, False), _steps(option, True))


def test_a_search_resumed_with_the_other_path_continues_it(tiny_folder, tmp_path):
    """--fast is a run key: checkpoints of the channels-last fast model load into the plain one (and the
    momentum buffers of option B's convs with them); the result agrees within float32 rounding."""
    common = [f"--data={tiny_folder}", "--dataset=imagefolder", "--C=4", "--layers=1", "--batch_size=4",
              "--log_every=0", "--option=B", "--epochs=2", "--seed=1"]
    full, _ = search.search(search.make_config(common + [f"--out={tmp_path / 'full'}"]))
    search.search(search.make_config(common + [f"--out={tmp_path / 'cut'}", "--stop_after=1"]))
    resumed, history = search.search(search.make_config([f"--out={tmp_path / 'cut'}", "--resume=1",
                                                         "--fast=0"]))
    assert [h["epoch"] for h in history] == [1, 2]
    assert not isinstance(resumed.cells[0], fast_supernet.FastNB201Cell)
    assert isinstance(full.cells[0], fast_supernet.FastNB201Cell)
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(b, a, **STEP_TOL, msg=n)
