import hashlib
import shutil

import pytest
import torch

from sgm_helpers import ScoreNet, VESDE, load_classifier, make_ema, save_checkpoint
from sgm_helpers import pretrained
from sgm_helpers.pretrained import (checkpoint_state_dict, load_pretrained, load_score_checkpoint, model_info,
                                    pretrained_sde, sha256_file)


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000  # 1.28 MB: read in two 1 MiB blocks
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_load_pretrained_is_an_eval_scorenet_matching_the_manifest():
    info = model_info("mnist-ve25")
    model, sde = load_pretrained(device="cpu"), pretrained_sde()
    assert isinstance(model, ScoreNet) and not model.training
    assert next(model.parameters()).device == torch.device("cpu")
    assert list(model.channels) == info["architecture"]["channels"]
    assert isinstance(sde, VESDE) and sde.sigma == info["sde"]["sigma"] == 25.0
    t = torch.tensor([0.3, 0.9])
    torch.testing.assert_close(model.marginal_prob_std(t), sde.marginal_prob_std(t))
    with torch.no_grad():
        out = model(torch.rand(2, 1, 28, 28), t)
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()


def test_unknown_name_raises_and_lists_the_known_ones():
    with pytest.raises(ValueError, match="mnist-ve25"):
        load_pretrained("mnist-ve99", device="cpu")
    with pytest.raises(ValueError, match="known names"):
        pretrained_sde("nope")
    with pytest.raises(ValueError, match="mnist-classifier"):  # a classifier is not a score model
        load_classifier(device="cpu", name="mnist-ve25")


@pytest.fixture
def tampered_weights(tmp_path, monkeypatch):
    """A copy of the package's weights folder with one byte of every weights file flipped."""
    for f in pretrained.WEIGHTS_DIR.iterdir():
        if f.suffix in (".pt", ".json"):
            shutil.copy(f, tmp_path / f.name)
    for f in tmp_path.glob("*.pt"):
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    return tmp_path


def test_sha256_mismatch_raises(tampered_weights):
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_pretrained(device="cpu")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_classifier(device="cpu")


def test_missing_weights_file_raises(tampered_weights):
    (tampered_weights / "mnist-ve25.pt").unlink()
    with pytest.raises(FileNotFoundError, match="mnist-ve25"):
        load_pretrained(device="cpu")


def _tiny_trained_checkpoint(path):
    """A small ScoreNet whose raw and EMA weights differ, saved as a package checkpoint."""
    torch.manual_seed(0)
    sde = VESDE(25.0)
    model = ScoreNet(sde.marginal_prob_std, channels=(32, 32, 32, 32), embed_dim=8)
    ema = make_ema(model, decay=0.5)
    for _ in range(2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update_parameters(model)
    save_checkpoint(path, model, ema_model=ema, step=2)
    return model, ema


def test_checkpoint_weights_ema_raw_and_auto(tmp_path):
    path = tmp_path / "ckpt.pt"
    model, ema = _tiny_trained_checkpoint(path)
    ema_params = dict(ema.module.named_parameters())
    for which, expected in [("ema", ema_params), ("auto", ema_params), ("raw", dict(model.named_parameters()))]:
        loaded, sde = load_score_checkpoint(path, sde=VESDE(25.0), which=which, device="cpu")
        assert loaded.channels == (32, 32, 32, 32) and loaded.embed_dim == 8 and not loaded.training
        for name, p in loaded.named_parameters():
            torch.testing.assert_close(p, expected[name], rtol=0, atol=0)
        torch.testing.assert_close(loaded.embed[0].W, model.embed[0].W, rtol=0, atol=0)
    assert not torch.equal(ema_params["conv1.weight"], model.conv1.weight)  # the test distinguishes them


def test_plain_state_dict_checkpoint_has_no_ema(tmp_path):
    model, _ = _tiny_trained_checkpoint(tmp_path / "ckpt.pt")
    plain = tmp_path / "tutorial_ckpt.pth"
    torch.save(model.state_dict(), plain)
    loaded, _ = load_score_checkpoint(plain, device="cpu")  # auto: the raw weights
    torch.testing.assert_close(loaded.conv1.weight, model.conv1.weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match="no EMA"):
        checkpoint_state_dict(model.state_dict(), "ema")
    with pytest.raises(ValueError, match="which must be one of"):
        checkpoint_state_dict(model.state_dict(), "average")


def test_bad_checkpoint_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_score_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_score_checkpoint(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="ScoreNet"):
        load_score_checkpoint(other)
