"""train() with VE, VP and sub-VP, likelihood weighting, importance sampling and dequantization: what the
checkpoint records, resuming (refused with other settings, bit-for-bit with the same), and loading a score
model back with its SDE."""

import pytest
import torch

from sgm_helpers import (VESDE, VPSDE, ScoreNet, ToyScoreMLP, load_checkpoint, load_score_checkpoint, make_ema,
                         pretrained_sde, subVPSDE, train)

SETTINGS = dict(likelihood_weighting=True, importance_sampling=True, dequantize=True)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def toy_data(n=64, seed=0):
    """2-D points on the 8-bit grid k / 255 in [0, 1], as dequantize=True wants."""
    return torch.randint(0, 256, (n, 2), generator=gen(seed)).float() / 255.0


def toy_model(sde, seed=1):
    torch.manual_seed(seed)
    return ToyScoreMLP(sde.marginal_prob_std, hidden=16, layers=2)


def run(model, sde, steps, path=None, ema=None, data=None, **kw):
    kw = {"batch_size": 16, "lr": 1e-2, "seed": 3, "progress": False, **SETTINGS, **kw}
    return train(model, toy_data() if data is None else data, sde, steps=steps, checkpoint_path=path, ema_model=ema,
                 **kw)


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("sde", [VESDE(25.0), VPSDE(0.1, 20.0), subVPSDE(0.1, 20.0)], ids=["ve", "vp", "subvp"])
def test_checkpoint_records_the_sde_and_the_loss_settings(tmp_path, sde):
    path = tmp_path / "ckpt.pt"
    losses = run(toy_model(sde), sde, 3, path)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    config = load_checkpoint(path)["config"]
    assert config["sde"] == sde.config()
    assert config["likelihood_weighting"] is True and config["importance_sampling"] is True
    assert config["dequantize"] is True and config["total_steps"] == 3


def test_default_settings_are_recorded_as_false_and_a_bound_std_records_its_sde(tmp_path):
    sde = VPSDE(0.1, 20.0)
    path = tmp_path / "ckpt.pt"
    run(toy_model(sde), sde.marginal_prob_std, 2, path, likelihood_weighting=False, importance_sampling=False,
        dequantize=False)
    config = load_checkpoint(path)["config"]
    assert config["sde"] == sde.config()  # the SDE behind the bound method, not "custom"
    assert not config["likelihood_weighting"] and not config["importance_sampling"] and not config["dequantize"]
    path2 = tmp_path / "custom.pt"
    run(toy_model(sde), lambda t: torch.sqrt(t), 2, path2, likelihood_weighting=False, importance_sampling=False)
    assert load_checkpoint(path2)["config"]["sde"] == "custom marginal_prob_std"


@pytest.mark.parametrize("change,named", [
    (dict(sde=VESDE(25.0)), "sde="),
    (dict(sde=subVPSDE(0.1, 20.0)), "sde="),
    (dict(sde=VPSDE(0.2, 20.0)), "sde="),
    (dict(likelihood_weighting=False, importance_sampling=False),
     "likelihood_weighting=True in the checkpoint, False now"),
    (dict(importance_sampling=False), "importance_sampling=True in the checkpoint, False now"),
    (dict(dequantize=False), "dequantize=True in the checkpoint, False now"),
    (dict(uniform_share=0.5), "uniform_share=0.0 in the checkpoint, 0.5 now"),
])
def test_resuming_with_another_sde_or_weighting_is_refused(tmp_path, change, named):
    sde = VPSDE(0.1, 20.0)
    path = tmp_path / "ckpt.pt"
    run(toy_model(sde), sde, 2, path)
    before = load_checkpoint(path)
    change = dict(change)
    new_sde = change.pop("sde", sde)
    with pytest.raises(ValueError, match="cannot resume") as info:
        run(toy_model(new_sde), new_sde, 4, path, resume=True, **change)
    assert named in str(info.value), str(info.value)
    if named == "sde=":  # both SDEs are named
        assert repr(sde.config()) in str(info.value) and repr(new_sde.config()) in str(info.value)
    after = load_checkpoint(path)
    assert after["step"] == 2 and states_equal(after["model"], before["model"])  # nothing was overwritten


@pytest.mark.parametrize("sde", [VPSDE(0.1, 20.0), subVPSDE(0.1, 20.0)], ids=["vp", "subvp"])
def test_resume_with_the_same_settings_continues_bit_for_bit(tmp_path, sde):
    """3 steps, stop, resume to 7 (64 points, batch 16: the stop is mid-epoch, the run crosses an epoch) equals 7
    steps in one go: the weights, Adam's state (through the weights), the EMA and every loss. The importance-
    sampled times and the dequantization noise come from the same generator, whose state the checkpoint keeps."""
    ref_model = toy_model(sde)
    ref_ema = make_ema(ref_model, 0.9)
    ref_losses = run(ref_model, sde, 7, tmp_path / "ref.pt", ema=ref_ema)

    path = tmp_path / "ckpt.pt"
    first = toy_model(sde)
    run(first, sde, 3, path, ema=make_ema(first, 0.9))
    resumed = toy_model(sde, seed=99)  # other initial weights: they must be replaced by the checkpoint's
    resumed_ema = make_ema(resumed, 0.9)
    losses = run(resumed, sde, 7, path, ema=resumed_ema, resume=True)
    assert losses == ref_losses and len(losses) == 7
    assert states_equal(resumed.state_dict(), ref_model.state_dict())
    assert states_equal(resumed_ema.state_dict(), ref_ema.state_dict())
    # and the settings matter: without importance sampling the same seed gives another run
    other = toy_model(sde)
    assert run(other, sde, 7, importance_sampling=False) != ref_losses


def test_dequantize_with_data_outside_the_unit_interval_is_a_value_error(tmp_path):
    sde = VPSDE()
    path = tmp_path / "ckpt.pt"
    for bad in (toy_data() * 2.0, toy_data() - 0.5):
        with pytest.raises(ValueError, match=r"dequantize=True needs data .* \[0, 1\]"):
            run(toy_model(sde), sde, 2, path, data=bad)
    assert not path.exists()
    run(toy_model(sde), sde, 1, path, data=toy_data() * 2.0, dequantize=False)  # fine without dequantization


def test_train_refuses_importance_sampling_without_likelihood_weighting(tmp_path):
    sde = VPSDE()
    with pytest.raises(ValueError, match="importance_sampling"):
        run(toy_model(sde), sde, 2, tmp_path / "c.pt", likelihood_weighting=False, importance_sampling=True)
    with pytest.raises(ValueError, match="likelihood_weighting"):
        run(toy_model(sde), lambda t: torch.sqrt(t), 2, tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()


# --- loading a score model with its SDE -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def vp_checkpoint(tmp_path_factory):
    """A tiny ScoreNet trained 2 steps for VP with likelihood weighting, importance sampling and dequantization."""
    sde = VPSDE(0.1, 20.0)
    torch.manual_seed(0)
    model = ScoreNet(sde.marginal_prob_std, channels=(32, 32, 32, 32), embed_dim=16)
    ema = make_ema(model, 0.5)
    images = torch.randint(0, 256, (8, 1, 28, 28), generator=gen(0)).float() / 255.0
    path = tmp_path_factory.mktemp("vp") / "ckpt.pt"
    train(model, images, sde, steps=2, batch_size=4, lr=1e-3, checkpoint_path=path, ema_model=ema, progress=False,
          **SETTINGS)
    return path, model, ema


def test_load_score_checkpoint_returns_the_recorded_sde(vp_checkpoint):
    path, model, ema = vp_checkpoint
    loaded, sde = load_score_checkpoint(path, device="cpu")
    assert sde == VPSDE(0.1, 20.0) and type(sde) is VPSDE
    x = torch.rand(3, 1, 28, 28, generator=gen(1))
    t = torch.tensor([0.01, 0.5, 1.0])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), ema.module.eval()(x, t))  # auto: the EMA weights
        raw, _ = load_score_checkpoint(path, which="raw", device="cpu")
        torch.testing.assert_close(raw(x, t), model.eval()(x, t))
        assert not torch.allclose(raw(x, t), loaded(x, t))
    # the same SDE given explicitly, in any of its forms, is accepted
    for same in (VPSDE(), "vp", VPSDE().config(), VPSDE().marginal_prob_std):
        assert load_score_checkpoint(path, sde=same, device="cpu")[1] == VPSDE()


@pytest.mark.parametrize("other", [VESDE(25.0), subVPSDE(0.1, 20.0), VPSDE(0.1, 10.0), "ve"])
def test_load_score_checkpoint_with_another_sde_names_both(vp_checkpoint, other):
    path, _, _ = vp_checkpoint
    with pytest.raises(ValueError, match="trained with") as info:
        load_score_checkpoint(path, sde=other, device="cpu")
    message = str(info.value)
    wanted = VESDE(25.0) if other == "ve" else other
    assert "VPSDE(beta_min=0.1, beta_max=20)" in message and repr(wanted) in message, message


def test_pretrained_sde_is_ve25():
    assert pretrained_sde("mnist-ve25") == VESDE(25.0) and type(pretrained_sde()) is VESDE
    assert pretrained_sde("mnist-ve25") != VPSDE()


def test_a_checkpoint_from_before_uniform_share_resumes_as_share_0_and_refuses_another(tmp_path):
    sde = VPSDE(0.1, 20.0)
    ref = run(toy_model(sde), sde, 4)
    path = tmp_path / "ckpt.pt"
    run(toy_model(sde), sde, 2, path)
    ckpt = torch.load(path, weights_only=False)
    del ckpt["config"]["uniform_share"]           # as written before the setting existed
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="uniform_share=0.0 in the checkpoint, 0.25 now"):
        run(toy_model(sde), sde, 4, path, resume=True, uniform_share=0.25)
    assert run(toy_model(sde), sde, 4, path, resume=True) == ref
