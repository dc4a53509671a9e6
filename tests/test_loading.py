"""Checkpoints and state dicts load from what torch.load accepts: a str path, a pathlib.Path or an open binary file."""

import io

import pytest
import torch

from sgm_helpers import ScoreNet, VESDE, VPSDE, load_checkpoint, load_score_checkpoint, load_tutorial_checkpoint
from sgm_helpers.training import save_checkpoint


def _net(sde=VESDE()):
    torch.manual_seed(0)
    return ScoreNet(sde.marginal_prob_std, channels=(32, 32, 32, 32), embed_dim=16)


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_tutorial_state_dict_loads_from_a_str_a_path_and_a_bytesio(tmp_path):
    source = _net()
    path = tmp_path / "ckpt.pth"
    torch.save(source.state_dict(), path)
    buffer = io.BytesIO(path.read_bytes())
    for where in (str(path), path, buffer):
        target = ScoreNet(VESDE().marginal_prob_std, channels=(32, 32, 32, 32), embed_dim=16)
        load_tutorial_checkpoint(target, where)
        assert _same_weights(source, target)


def test_a_package_checkpoint_loads_from_an_open_file_with_its_sde(tmp_path):
    sde = VPSDE()
    source = _net(sde)
    path = save_checkpoint(tmp_path / "vp.pt", source, step=3, config={"sde": sde.config()})
    with open(path, "rb") as f:
        ckpt = load_checkpoint(f, _net(sde))
    assert ckpt["step"] == 3
    with open(path, "rb") as f:
        model, loaded_sde = load_score_checkpoint(f, device="cpu")
    assert loaded_sde == sde and _same_weights(source, model)


@pytest.mark.parametrize("bad", [3.5, None, b"not a file object", ["ckpt.pt"]])
def test_anything_else_is_a_value_error_naming_the_argument(bad):
    with pytest.raises(ValueError, match="checkpoint must be a path or an open binary file"):
        load_checkpoint(bad)
    with pytest.raises(ValueError, match="checkpoint must be a path or an open binary file"):
        load_tutorial_checkpoint(_net(), bad)


def test_an_open_file_that_is_not_a_checkpoint_is_a_value_error():
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(io.BytesIO(b"not a torch file"))
