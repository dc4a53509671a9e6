import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from sgm_helpers import ScoreNet, UNet, VESDE, load_classifier, load_mnist, make_ema, save_checkpoint
from sgm_helpers.data import DATA_ENV
from sgm_helpers.losses import dsm_loss
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


def test_mnist_unet_is_the_recorded_unet_for_its_own_sde():
    info = model_info("mnist-unet")
    model, sde = load_pretrained("mnist-unet", device="cpu"), pretrained_sde("mnist-unet")
    assert isinstance(model, UNet) and not model.training
    assert model.architecture == info["architecture"] and model.architecture["time_input"] == "log_std"
    assert isinstance(sde, VESDE) and sde.sigma == info["sde"]["sigma"] == 25.0
    t = torch.tensor([0.3, 0.9])
    torch.testing.assert_close(model.marginal_prob_std(t), sde.marginal_prob_std(t))


def test_mnist_unet_matches_noised_test_digits_better_than_the_tutorials_network():
    """The reason it is bundled: on the same test digits, times and noise (a paired comparison), its denoising
    score matching loss is lower than mnist-ve25's (training loss 13.2 against 17.3)."""
    if not os.environ.get(DATA_ENV):
        pytest.skip(f"{DATA_ENV} is not set: no local MNIST to test against")
    x = load_mnist(train=False, download=False)[0][:256]
    sde = pretrained_sde("mnist-unet")
    losses = {}
    for name in ("mnist-unet", "mnist-ve25"):
        model = load_pretrained(name, device="cpu")
        with torch.no_grad():
            losses[name] = dsm_loss(model, x, sde, generator=torch.Generator().manual_seed(0)).item()
    assert losses["mnist-unet"] < losses["mnist-ve25"] - 1.0, losses


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


# --- every kind of network through a manifest, and through a checkpoint that records its architecture -------------


def _kinds():
    """(name, kind, network factory, SDE or None) for each class the manifest can name."""
    from sgm_helpers import MNISTClassifier, VPSDE, ConditionalScoreNet, TimeClassifier, UNet, subVPSDE

    ve, vp, subvp = VESDE(25.0), VPSDE(), subVPSDE(beta_min=0.2, beta_max=15.0)
    return [
        ("tiny-scorenet", "score_model", lambda: ScoreNet(vp.marginal_prob_std, channels=(32, 32, 32, 64), embed_dim=8),
         vp),
        ("tiny-conditional", "conditional_score_model",
         lambda: ConditionalScoreNet(subvp.marginal_prob_std, channels=(32, 32, 32, 32), embed_dim=8, num_classes=4),
         subvp),
        ("tiny-unet", "score_model", lambda: UNet(ve.marginal_prob_std, channels=(8, 16), embed_dim=8), ve),
        ("tiny-unet-conditional", "conditional_score_model",
         lambda: UNet(vp.marginal_prob_std, channels=(8, 8, 16), num_res_blocks=2, embed_dim=8, num_classes=10), vp),
        ("tiny-time-classifier", "time_classifier",
         lambda: TimeClassifier(channels=(32, 32, 32), embed_dim=8, num_classes=10), ve),
        ("tiny-classifier", "classifier", lambda: MNISTClassifier(feature_dim=16), None),
    ]


def _randomized(model, seed):
    """Every parameter drawn afresh (zero-initialized layers included), so a weight that fails to load shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _call(model, x, t):
    """The model's output: score models with a label where they take one; classifiers with or without t."""
    if getattr(model, "num_classes", None) is not None and hasattr(model, "marginal_prob_std"):
        return model(x, t, torch.arange(len(x)) % model.num_classes)
    if hasattr(model, "embed"):
        return model(x, t)
    return model(x)


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """An empty weights folder standing in for the package's."""
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    return tmp_path


def _architecture(model):
    """The manifest's architecture fields; MNISTClassifier's as scripts/train_classifier.py writes them."""
    if hasattr(model, "architecture"):
        return model.architecture
    return {"class": type(model).__name__, "feature_dim": model.feature_dim, "num_classes": model.num_classes}


def _ship(name, kind, model, sde, folder):
    """Save ``model`` as the package's export scripts do: a plain state dict plus a manifest entry."""
    path = folder / f"{name}.pt"
    torch.save(model.state_dict(), path)
    entry = {"kind": kind, "file": path.name, "sha256": sha256_file(path), "architecture": _architecture(model)}
    if sde is not None:
        entry["sde"] = sde.config()
    pretrained.write_manifest_entry(name, entry)


@pytest.mark.parametrize("i", range(6), ids=[k[0] for k in _kinds()])
def test_every_kind_round_trips_through_the_manifest(weights_dir, i):
    import json

    name, kind, make, sde = _kinds()[i]
    torch.manual_seed(i)
    model = _randomized(make(), seed=i)
    _ship(name, kind, model, sde, weights_dir)
    json.loads((weights_dir / "manifest.json").read_text())             # a plain JSON manifest

    loaded = load_pretrained(name, device="cpu")
    assert type(loaded) is type(model) and not loaded.training
    assert _architecture(loaded) == _architecture(model)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert pretrained.available_models(kind) == [name]
    x, t = torch.rand(3, 1, 28, 28), torch.tensor([0.2, 0.5, 0.9])
    with torch.no_grad():
        assert torch.equal(_call(loaded, x, t), _call(model, x, t))
    if sde is None:
        with pytest.raises(ValueError, match="records no SDE"):
            pretrained_sde(name)
    else:
        assert pretrained_sde(name) == sde
    if hasattr(loaded, "marginal_prob_std"):                            # divided by its own SDE's std
        torch.testing.assert_close(loaded.marginal_prob_std(t), sde.marginal_prob_std(t), rtol=0, atol=0)


def test_manifest_architecture_errors(weights_dir):
    from sgm_helpers import UNet

    model = UNet(VESDE(25.0).marginal_prob_std, channels=(8, 16), embed_dim=8)
    _ship("bad-class", "score_model", model, VESDE(25.0), weights_dir)
    entry = model_info("bad-class")
    for architecture, match in [
        (dict(entry["architecture"], **{"class": "NCSNpp"}), "unknown architecture class 'NCSNpp'; known: "),
        (dict(entry["architecture"], depth=3), r"architecture fields .* do not fit UNet"),
        (dict(entry["architecture"], channels=[8, 32]), r"shape mismatches"),
    ]:
        pretrained.write_manifest_entry("bad-class", dict(entry, architecture=architecture))
        with pytest.raises(ValueError, match=match):
            load_pretrained("bad-class", device="cpu")
    with pytest.raises(ValueError, match=r"^sde: UNet is a score network"):
        pretrained.build_model(model.architecture, sde=None)
    with pytest.raises(ValueError, match="architecture must be a dict with a 'class' entry"):
        pretrained.build_model({"channels": [8, 16]}, VESDE(25.0))


def _checkpoint(path, model, sde, *, record_architecture=True):
    """A package checkpoint of ``model`` whose raw and EMA weights differ, recording its SDE (and architecture)."""
    ema = make_ema(model, decay=0.5)
    for _ in range(2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        ema.update_parameters(model)
    config = {"sde": sde.config()}
    if record_architecture:
        config["architecture"] = model.architecture
    save_checkpoint(path, model, ema_model=ema, step=2, config=config)
    return ema


@pytest.mark.parametrize("num_classes", [None, 10])
def test_load_score_checkpoint_rebuilds_the_recorded_architecture(tmp_path, num_classes):
    from sgm_helpers import VPSDE, UNet

    torch.manual_seed(0)
    sde = VPSDE()
    model = UNet(sde.marginal_prob_std, channels=(8, 16, 16), embed_dim=8, num_classes=num_classes)
    ema = _checkpoint(tmp_path / "unet.pt", model, sde)
    loaded, loaded_sde = load_score_checkpoint(tmp_path / "unet.pt", device="cpu")
    assert isinstance(loaded, UNet) and loaded.architecture == model.architecture and loaded_sde == sde
    for key, value in ema.module.named_parameters():
        assert torch.equal(dict(loaded.named_parameters())[key], value), key
    raw, _ = load_score_checkpoint(tmp_path / "unet.pt", which="raw", device="cpu")
    assert torch.equal(raw.conv_in.weight, model.conv_in.weight)
    assert not torch.equal(raw.conv_in.weight, loaded.conv_in.weight)   # the test tells EMA from raw
    with pytest.raises(ValueError, match="trained with VPSDE"):
        load_score_checkpoint(tmp_path / "unet.pt", sde=VESDE(25.0), device="cpu")


def test_checkpoint_without_a_recorded_architecture_is_read_as_a_scorenet(tmp_path):
    from sgm_helpers import UNet

    sde = VESDE(25.0)
    torch.manual_seed(0)
    _checkpoint(tmp_path / "old.pt", ScoreNet(sde.marginal_prob_std, channels=(32, 32, 32, 32), embed_dim=8), sde,
                record_architecture=False)
    loaded, _ = load_score_checkpoint(tmp_path / "old.pt", device="cpu")
    assert type(loaded) is ScoreNet and loaded.channels == (32, 32, 32, 32)
    # A UNet checkpoint that does not record its architecture cannot be told apart: a clear error, not a guess.
    _checkpoint(tmp_path / "unet.pt", UNet(sde.marginal_prob_std, channels=(8, 16), embed_dim=8), sde,
                record_architecture=False)
    with pytest.raises(ValueError, match="not a ScoreNet state dict"):
        load_score_checkpoint(tmp_path / "unet.pt", device="cpu")


# Weights that are trained and chosen but not shipped yet wait in staging/<name>/ (the file as it will ship, its
# manifest entry, and the test-split files measured so far), so that a long evaluation can go on across sessions.
STAGING = Path(__file__).resolve().parents[1] / "staging"
STAGED = sorted(p for p in STAGING.iterdir() if p.is_dir()) if STAGING.is_dir() else []


@pytest.mark.parametrize("folder", STAGED, ids=lambda p: p.name)
def test_staged_weights_load_and_their_evaluations_were_measured_with_them(folder):
    import json

    from sgm_helpers.sde import SDE
    from sgm_helpers.utils import read_torch_file

    entry = json.loads((folder / "manifest_entry.json").read_text())
    weights = folder / entry["file"]
    assert sha256_file(weights) == entry["sha256"], f"{weights} is not the file its manifest entry records"
    assert entry["sha256"] != model_info(folder.name)["sha256"], "staged weights that are already shipped"
    model = pretrained.model_from_state_dict(read_torch_file(weights, what="staged weights"), entry["architecture"],
                                             SDE.from_config(entry["sde"]))
    assert not model.training
    for path in sorted(folder.rglob("evaluation_*.json")):
        data = json.loads(path.read_text())
        assert f"--model {folder.name} " in data["command"] + " ", f"{path.name} measured another model"
        assert data["weights_sha256"] == entry["sha256"], f"{path.name} was measured with other weights"
