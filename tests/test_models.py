"""ScoreNet: shapes, time handling, output scaling, tutorial checkpoints, bad input."""

import contextlib
import math

import pytest
import torch
import torch.nn as nn

from sgm_helpers import VESDE, Dense, GaussianFourierProjection, ScoreNet, load_tutorial_checkpoint

SDE = VESDE(25.0)


# A separately written copy of the original tutorial's model (its parameter layout, its W as a frozen
# nn.Parameter, its lambda swish), used only to produce state dicts the way the tutorial saved them.
class TutorialGaussianFourierProjection(nn.Module):
    def __init__(self, embed_dim, scale=30.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embed_dim // 2) * scale, requires_grad=False)

    def forward(self, x):
        x_proj = x[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(x_proj), torch.cos(x_proj)], dim=-1)


class TutorialDense(nn.Module):
    def __init__(self, input_dim, output_dim):
        super().__init__()
        self.dense = nn.Linear(input_dim, output_dim)

    def forward(self, x):
        return self.dense(x)[..., None, None]


class TutorialScoreNet(nn.Module):
    def __init__(self, marginal_prob_std, channels=(32, 64, 128, 256), embed_dim=256):
        super().__init__()
        c = channels
        self.embed = nn.Sequential(TutorialGaussianFourierProjection(embed_dim=embed_dim),
                                   nn.Linear(embed_dim, embed_dim))
        self.conv1 = nn.Conv2d(1, c[0], 3, stride=1, bias=False)
        self.dense1 = TutorialDense(embed_dim, c[0])
        self.gnorm1 = nn.GroupNorm(4, num_channels=c[0])
        self.conv2 = nn.Conv2d(c[0], c[1], 3, stride=2, bias=False)
        self.dense2 = TutorialDense(embed_dim, c[1])
        self.gnorm2 = nn.GroupNorm(32, num_channels=c[1])
        self.conv3 = nn.Conv2d(c[1], c[2], 3, stride=2, bias=False)
        self.dense3 = TutorialDense(embed_dim, c[2])
        self.gnorm3 = nn.GroupNorm(32, num_channels=c[2])
        self.conv4 = nn.Conv2d(c[2], c[3], 3, stride=2, bias=False)
        self.dense4 = TutorialDense(embed_dim, c[3])
        self.gnorm4 = nn.GroupNorm(32, num_channels=c[3])
        self.tconv4 = nn.ConvTranspose2d(c[3], c[2], 3, stride=2, bias=False)
        self.dense5 = TutorialDense(embed_dim, c[2])
        self.tgnorm4 = nn.GroupNorm(32, num_channels=c[2])
        self.tconv3 = nn.ConvTranspose2d(c[2] + c[2], c[1], 3, stride=2, bias=False, output_padding=1)
        self.dense6 = TutorialDense(embed_dim, c[1])
        self.tgnorm3 = nn.GroupNorm(32, num_channels=c[1])
        self.tconv2 = nn.ConvTranspose2d(c[1] + c[1], c[0], 3, stride=2, bias=False, output_padding=1)
        self.dense7 = TutorialDense(embed_dim, c[0])
        self.tgnorm2 = nn.GroupNorm(32, num_channels=c[0])
        self.tconv1 = nn.ConvTranspose2d(c[0] + c[0], 1, 3, stride=1)
        self.act = lambda x: x * torch.sigmoid(x)
        self.marginal_prob_std = marginal_prob_std

    def forward(self, x, t):
        embed = self.act(self.embed(t))
        h1 = self.act(self.gnorm1(self.conv1(x) + self.dense1(embed)))
        h2 = self.act(self.gnorm2(self.conv2(h1) + self.dense2(embed)))
        h3 = self.act(self.gnorm3(self.conv3(h2) + self.dense3(embed)))
        h4 = self.act(self.gnorm4(self.conv4(h3) + self.dense4(embed)))
        h = self.act(self.tgnorm4(self.tconv4(h4) + self.dense5(embed)))
        h = self.act(self.tgnorm3(self.tconv3(torch.cat([h, h3], dim=1)) + self.dense6(embed)))
        h = self.act(self.tgnorm2(self.tconv2(torch.cat([h, h2], dim=1)) + self.dense7(embed)))
        h = self.tconv1(torch.cat([h, h1], dim=1))
        return h / self.marginal_prob_std(t)[:, None, None, None]


def _inputs(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, 28, 28, generator=g), torch.rand(batch, generator=g) * 0.9 + 0.05


def _assert_close_to_scale(actual, expected, rel=1e-5):
    """Equal up to float32 rounding: max |actual - expected| <= rel * max |expected|."""
    assert actual.shape == expected.shape
    err, scale = float((actual - expected).abs().max()), float(expected.abs().max())
    assert err <= rel * scale, f"max abs difference {err:.3g} > {rel:g} * {scale:.3g}"


@contextlib.contextmanager
def _swish(model, act):
    old = model.act
    model.act = act
    try:
        yield
    finally:
        model.act = old


@pytest.fixture(scope="module")
def tutorial_model():
    torch.manual_seed(123)
    model = TutorialScoreNet(SDE.marginal_prob_std).eval()
    # Move every weight away from its initialization so a silently skipped key would show.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def test_scorenet_shape_and_float_t_broadcasting():
    torch.manual_seed(0)
    model = ScoreNet(SDE.marginal_prob_std).eval()
    x, _ = _inputs(batch=3)
    with torch.no_grad():
        out_float = model(x, 0.3)
        out_tensor = model(x, torch.full((3,), 0.3))
        out_0d = model(x, torch.tensor(0.3))
    assert out_float.shape == x.shape
    assert torch.isfinite(out_float).all()
    assert torch.equal(out_float, out_tensor)
    assert torch.equal(out_float, out_0d)


def test_scorenet_output_is_divided_by_std():
    # model(x, t) * std(t) is the network's own output: it must not depend on which std function scales it.
    torch.manual_seed(0)
    model = ScoreNet(SDE.marginal_prob_std).eval()
    x, t = _inputs(batch=3)
    other = VESDE(5.0)
    with torch.no_grad():
        a = model(x, t) * SDE.marginal_prob_std(t)[:, None, None, None]
        model.marginal_prob_std = other.marginal_prob_std
        b = model(x, t) * other.marginal_prob_std(t)[:, None, None, None]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(SDE.marginal_prob_std(t), other.marginal_prob_std(t))


def test_examples_are_independent():
    # GroupNorm normalizes per example: one example's output does not depend on the rest of the batch.
    torch.manual_seed(0)
    model = ScoreNet(SDE.marginal_prob_std).eval()
    x, t = _inputs(batch=3)
    with torch.no_grad():
        full = model(x, t)
        single = model(x[1:2], t[1:2])
    _assert_close_to_scale(single, full[1:2])       # convolutions sum in a batch-dependent order


def test_fourier_projection_is_fixed_and_on_the_unit_circle():
    torch.manual_seed(0)
    proj = GaussianFourierProjection(8, scale=30.0)
    assert [name for name, _ in proj.named_parameters()] == []      # never trained
    assert [name for name, _ in proj.named_buffers()] == ["W"]      # but saved, under the tutorial's key
    t = torch.linspace(0, 1, 5)
    emb = proj(t)
    assert emb.shape == (5, 8)
    torch.testing.assert_close(emb[:, :4] ** 2 + emb[:, 4:] ** 2, torch.ones(5, 4))
    torch.testing.assert_close(emb[:, :4], torch.sin(2 * math.pi * t[:, None] * proj.W[None, :]))
    with pytest.raises(ValueError, match="embed_dim"):
        GaussianFourierProjection(7)


def test_dense_adds_two_spatial_dims():
    torch.manual_seed(0)
    layer = Dense(6, 5)
    x = torch.randn(3, 6)
    out = layer(x)
    assert out.shape == (3, 5, 1, 1)
    torch.testing.assert_close(out[:, :, 0, 0], layer.dense(x))


@pytest.mark.parametrize("shape", [(1, 28, 28), (2, 784), (2, 3, 28, 28), (2, 1, 32, 32), (1, 1, 1, 28, 28)])
def test_scorenet_rejects_wrong_batch_shapes(shape):
    model = ScoreNet(SDE.marginal_prob_std)
    with pytest.raises(ValueError, match=r"\[B, 1, 28, 28\]"):
        model(torch.zeros(shape), 0.5)


def test_scorenet_rejects_t_of_the_wrong_shape():
    model = ScoreNet(SDE.marginal_prob_std)
    with pytest.raises(ValueError, match="t as a float or a tensor of shape"):
        model(torch.zeros(2, 1, 28, 28), torch.full((3,), 0.5))


@pytest.mark.parametrize("channels", [(32, 64, 128), (36, 64, 128, 256), (4, 64, 128, 256), (0, 64, 128, 256),
                                      (32, 64, 100, 256), (32, 64, 128, 256, 512)])
def test_scorenet_rejects_bad_channels(channels):
    with pytest.raises(ValueError, match="channels must be"):
        ScoreNet(SDE.marginal_prob_std, channels=channels)


def test_non_default_channels_work():
    torch.manual_seed(0)
    model = ScoreNet(SDE.marginal_prob_std, channels=(32, 32, 64, 64), embed_dim=64)
    x, t = _inputs(batch=2)
    with torch.no_grad():
        assert model(x, t).shape == x.shape


@pytest.mark.parametrize("data_parallel", [False, True])
def test_tutorial_state_dict_loads_and_gives_identical_outputs(tutorial_model, tmp_path, data_parallel):
    wrapped = torch.nn.DataParallel(tutorial_model) if data_parallel else tutorial_model
    state = wrapped.state_dict()
    assert all(k.startswith("module.") for k in state) == data_parallel
    assert "embed.0.W" in tutorial_model.state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)                                 # exactly what the tutorial did

    for source in (str(path), torch.load(path, weights_only=True), path):
        torch.manual_seed(999)                              # a different random W and weights before loading
        model = ScoreNet(SDE.marginal_prob_std)
        assert load_tutorial_checkpoint(model, source) is model
        for key, value in tutorial_model.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key

    x, t = _inputs(batch=2)
    with torch.no_grad():
        out = model.eval()(x, t)
        expected = tutorial_model(x, t)
        # The tutorial's swish x * sigmoid(x) and F.silu round differently in float32 (a relative error
        # of about 1e-7 per layer); with the same swish the outputs are bit-identical.
        _assert_close_to_scale(out, expected)
        with _swish(tutorial_model, torch.nn.functional.silu):
            assert torch.equal(out, tutorial_model(x, t))


def test_other_architecture_is_a_value_error_naming_keys(tutorial_model):
    state = tutorial_model.state_dict()
    narrow = ScoreNet(SDE.marginal_prob_std, channels=(32, 64, 128, 128))
    with pytest.raises(ValueError, match=r"shape mismatches: .*conv4\.weight"):
        load_tutorial_checkpoint(narrow, state)
    partial = {k: v for k, v in state.items() if not k.startswith("tconv1")}
    with pytest.raises(ValueError, match=r"missing keys: tconv1\.bias, tconv1\.weight"):
        load_tutorial_checkpoint(ScoreNet(SDE.marginal_prob_std), partial)
    extra = dict(state, **{"head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected keys: head\.weight"):
        load_tutorial_checkpoint(ScoreNet(SDE.marginal_prob_std), extra)
    mlp = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="does not match this architecture"):
        load_tutorial_checkpoint(mlp, state)


def test_unreadable_or_missing_checkpoint(tmp_path):
    model = ScoreNet(SDE.marginal_prob_std)
    with pytest.raises(FileNotFoundError):
        load_tutorial_checkpoint(model, tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_tutorial_checkpoint(model, junk)
    tensor_file = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_tutorial_checkpoint(model, tensor_file)


# --- the noise-conditional classifier and the class-conditional ScoreNet ------------------------------


def test_time_classifier_shapes_parameters_and_time_dependence():
    from sgm_helpers import TimeClassifier

    torch.manual_seed(0)
    clf = TimeClassifier().eval()
    assert sum(p.numel() for p in clf.parameters()) < 200_000  # small next to ScoreNet's 1.1M
    assert "embed.0.W" in clf.state_dict()  # ScoreNet's time embedding
    x, t = _inputs(batch=3)
    with torch.no_grad():
        logits = clf(x, t)
        assert logits.shape == (3, 10) and torch.isfinite(logits).all()
        assert torch.equal(clf(x, 0.4), clf(x, torch.full((3,), 0.4)))
        assert not torch.allclose(clf(x, 0.1), clf(x, 0.9))  # the time reaches the logits
        _assert_close_to_scale(clf(x[1:2], t[1:2]), logits[1:2])  # examples are independent
    assert TimeClassifier(channels=(32, 32, 64), embed_dim=32, num_classes=3)(x, t).shape == (3, 3)
    with pytest.raises(ValueError, match=r"\[B, 1, 28, 28\]"):
        clf(torch.zeros(2, 28, 28), 0.5)
    with pytest.raises(ValueError, match="channels must be 3 positive multiples of 32"):
        TimeClassifier(channels=(32, 64, 100))


def test_conditional_scorenet_shapes_labels_and_state_dict():
    from sgm_helpers import NULL_CLASS, ConditionalScoreNet

    torch.manual_seed(0)
    model = ConditionalScoreNet(SDE.marginal_prob_std).eval()
    assert NULL_CLASS == 10 and model.label_embed.num_embeddings == 11
    assert torch.all(model.label_embed.weight == 0)  # starts as the unconditional network
    assert set(model.state_dict()) == set(ScoreNet(SDE.marginal_prob_std).state_dict()) | {"label_embed.weight"}
    with torch.no_grad():
        model.label_embed.weight.normal_()
        x, t = _inputs(batch=3)
        out = model(x, t, torch.tensor([0, 5, 10]))
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert torch.equal(model(x, t, 4), model(x, t, torch.tensor([4, 4, 4])))
        assert not torch.allclose(model(x, t, 4), model(x, t, 5))  # the label reaches the score
        _assert_close_to_scale(model(x[2:], t[2:], torch.tensor([10])), out[2:])
    for bad in (torch.tensor([0, 1]), torch.tensor([0.0, 1.0, 2.0]), 11, -1):
        with pytest.raises(ValueError, match=r"y must be class labels in 0\.\.9, or 10 or None"):
            model(x, t, bad)


# --- UNet: the modern score network -------------------------------------------------------------------


def _moved_off_init(model, seed=0, scale=0.05):
    """``model`` with every parameter moved by noise: its zero-initialized layers stop hiding the rest."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


def _small_unet(sde, **kw):
    from sgm_helpers import UNet

    torch.manual_seed(0)
    return _moved_off_init(UNet(sde.marginal_prob_std, **{"channels": (8, 16, 24), "embed_dim": 16, **kw}))


def _sdes():
    from sgm_helpers import VPSDE, subVPSDE

    return [VESDE(25.0), VPSDE(), subVPSDE()]


@pytest.mark.parametrize("sde", _sdes(), ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("num_classes", [None, 10])
def test_unet_shapes_and_output_divided_by_the_sdes_std(sde, num_classes):
    model = _small_unet(sde, num_classes=num_classes)
    x, t = _inputs(batch=3)
    args = () if num_classes is None else (torch.tensor([0, 4, 10]),)
    with torch.no_grad():
        out = model(x, t, *args)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert torch.equal(model(x, 0.3, *args), model(x, torch.full((3,), 0.3), *args))
        assert not torch.allclose(model(x, 0.1, *args), model(x, 0.9, *args))   # the time reaches the output
        # out * std(t) is the network's own output: the same whichever SDE's std divides it.
        other = VESDE(3.0)
        a = out * sde.marginal_prob_std(t)[:, None, None, None]
        model.marginal_prob_std = other.marginal_prob_std
        b = model(x, t, *args) * other.marginal_prob_std(t)[:, None, None, None]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(sde.marginal_prob_std(t), other.marginal_prob_std(t))


def test_unet_defaults_size_and_attention_at_7x7():
    from sgm_helpers import UNet

    model = UNet(SDE.marginal_prob_std)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params * 4 < 20e6                                   # under 20 MB of float32 weights
    assert model.num_classes is None and not hasattr(model, "label_embed")
    seen = []
    model.mid_attention.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    with torch.no_grad():
        out = model(torch.rand(2, 1, 28, 28), 0.5)
    assert seen == [(2, model.channels[-1], 7, 7)]              # attention at the lowest resolution
    assert torch.equal(out, torch.zeros_like(out))             # the last convolution starts at zero
    assert "embed.0.W" in model.state_dict()                    # time_embedding(): ScoreNet's Fourier features
    assert UNet(SDE.marginal_prob_std, attention=False).state_dict().keys() < model.state_dict().keys()


def test_unet_architecture_rebuilds_the_same_network():
    import json

    from sgm_helpers import UNet

    for kw in ({}, {"channels": (8, 16), "num_res_blocks": 2, "attention": False, "embed_dim": 8, "num_classes": 3}):
        model = UNet(SDE.marginal_prob_std, **kw)
        arch = json.loads(json.dumps(model.architecture))        # JSON-ready, as in a manifest
        assert arch["class"] == "UNet"
        rebuilt = UNet(SDE.marginal_prob_std, **{k: v for k, v in arch.items() if k != "class"})
        assert rebuilt.architecture == model.architecture
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in
                                                                        model.state_dict().items()}


@pytest.mark.parametrize("cls", ["ScoreNet", "UNet"])
def test_time_input_log_std_embeds_the_log_noise_level(cls):
    import json

    import sgm_helpers
    from sgm_helpers.models import time_feature
    from sgm_helpers.pretrained import build_model

    net = getattr(sgm_helpers, cls)
    torch.manual_seed(0)
    model = net(SDE.marginal_prob_std, time_input="log_std")
    assert model.architecture["time_input"] == "log_std"
    assert "time_input" not in net(SDE.marginal_prob_std).architecture     # the shipped manifests stay as they are
    rebuilt = build_model(json.loads(json.dumps(model.architecture)), SDE)
    rebuilt.load_state_dict(model.state_dict())
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([1e-5, 1e-3, 0.5])
    assert torch.equal(rebuilt(x, t), model(x, t))
    assert torch.allclose(time_feature(t, SDE.marginal_prob_std, "log_std"), SDE.marginal_prob_std(t).log())

    def relative_change(name, a, b):   # of the Fourier features between two times
        fourier = net(SDE.marginal_prob_std, time_input=name).embed[0]
        fa, fb = (fourier(time_feature(torch.tensor([v]), SDE.marginal_prob_std, name)) for v in (a, b))
        return ((fa - fb).norm() / fa.norm()).item()

    # near t = 0 the tutorial's features of t hardly move over a decade of t; those of log std(t) do
    assert relative_change("t", 1e-5, 1e-4) < 0.05 < 0.5 < relative_change("log_std", 1e-5, 1e-4)
    with pytest.raises(ValueError, match="time_input must be one of 't', 'log_std', got 'sigma'"):
        net(SDE.marginal_prob_std, time_input="sigma")


def test_unet_examples_are_independent():
    model = _small_unet(SDE)
    x, t = _inputs(batch=3)
    with torch.no_grad():
        _assert_close_to_scale(model(x[1:2], t[1:2]), model(x, t)[1:2])


def test_conditional_unet_labels():
    model = _small_unet(SDE, num_classes=10)
    assert model.null_class == 10 and model.label_embed.num_embeddings == 11
    x, t = _inputs(batch=3)
    with torch.no_grad():
        assert torch.equal(model(x, t, 4), model(x, t, torch.tensor([4, 4, 4])))
        assert torch.equal(model(x, t, None), model(x, t, 10))                  # None: the null class
        assert not torch.allclose(model(x, t, 4), model(x, t, 5))               # the label reaches the score
    for bad in (torch.tensor([0, 1]), torch.tensor([0.0, 1.0, 2.0]), 11, -1, "3"):
        with pytest.raises(ValueError, match=r"y must be class labels in 0\.\.9, or 10 or None"):
            model(x, t, bad)
    with pytest.raises(ValueError, match="UNet needs labels: call it as model"):
        model(x, t)


def test_unconditional_unet_refuses_labels():
    model = _small_unet(SDE)
    x, t = _inputs(batch=2)
    with torch.no_grad():
        assert torch.equal(model(x, t, None), model(x, t))
    with pytest.raises(ValueError, match=r"^y: this UNet is unconditional \(num_classes=None\)"):
        model(x, t, torch.tensor([1, 2]))


@pytest.mark.parametrize("kw, match", [
    ({"channels": ()}, "channels must be 1 to 3 positive multiples of 8"),
    ({"channels": (16, 32, 64, 128)}, "channels must be 1 to 3"),
    ({"channels": (12, 32, 96)}, "channels must be"),
    ({"channels": (0, 32, 96)}, "channels must be"),
    ({"channels": (16.0, 32, 96)}, "channels must be"),
    ({"num_res_blocks": 0}, "num_res_blocks must be an integer >= 1"),
    ({"attention": 1}, "attention must be True or False"),
    ({"embed_dim": 0}, "embed_dim must be an integer >= 1"),
    ({"embed_dim": 7}, "embed_dim must be an even integer"),
    ({"num_classes": 0}, "num_classes must be an integer >= 1"),
])
def test_unet_rejects_bad_arguments(kw, match):
    from sgm_helpers import UNet

    with pytest.raises(ValueError, match=match):
        UNet(SDE.marginal_prob_std, **kw)


@pytest.mark.parametrize("shape", [(1, 28, 28), (2, 1, 32, 32), (2, 3, 28, 28)])
def test_unet_rejects_wrong_batch_shapes(shape):
    model = _small_unet(SDE)
    with pytest.raises(ValueError, match=r"UNet takes x of shape \[B, 1, 28, 28\]"):
        model(torch.zeros(shape), 0.5)


def test_unet_trains_every_parameter_from_its_zero_init():
    # The zero-initialized layers (last convolution, second convolution of each block, attention's projection)
    # must not cut the gradient off for good: after a few Adam steps every parameter has been reached.
    from sgm_helpers import UNet, dsm_loss

    torch.manual_seed(0)
    model = UNet(SDE.marginal_prob_std, channels=(8, 16, 16), embed_dim=8, num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, _ = _inputs(batch=4)
    y = torch.tensor([0, 1, 0, 1])
    reached, losses = set(), []
    for _ in range(6):  # the same t, z and dropped labels every step
        loss = dsm_loss(model, x, SDE, generator=torch.Generator().manual_seed(1), y=y, p_uncond=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        reached |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert reached == {n for n, _ in model.named_parameters()}
    assert losses[-1] < losses[0]


class _ExactGaussianVEScore(ScoreNet):
    """Stands in for the trained VE network: the exact score of data N(0, s^2 I) under the source SDE."""

    s = 0.3

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        alpha, std = (f(t.double()).to(x.dtype)[:, None, None, None]
                      for f in (self.source_sde.mean_coeff, self.source_sde.marginal_prob_std))
        return -x / (alpha ** 2 * self.s ** 2 + std ** 2)


@pytest.mark.parametrize("target", ["vp", "subvp", "ve"])
def test_reparameterized_scorenet_turns_the_exact_ve_score_into_the_targets(target):
    from sgm_helpers import ReparameterizedScoreNet, make_sde

    class Exact(ReparameterizedScoreNet, _ExactGaussianVEScore):   # ReparameterizedScoreNet's super() is the exact score
        pass

    sde = make_sde(target)
    model = Exact(sde, VESDE(25.0).config(), channels=(32, 32, 32, 32), embed_dim=8)
    x = torch.randn(5, 1, 28, 28, dtype=torch.float64)
    t = torch.tensor([1e-5, 1e-3, 0.1, 0.5, 0.7], dtype=torch.float64)   # VP: sigma(0.7) = 11.3 > the VE's 9.9
    alpha, std = sde.mean_coeff(t)[:, None, None, None], sde.marginal_prob_std(t)[:, None, None, None]
    exact = -x / (alpha ** 2 * Exact.s ** 2 + std ** 2)                    # the target SDE's own exact score
    torch.testing.assert_close(model(x, t), exact, rtol=1e-9, atol=0)
    t_source, scale = model.source_time(t)
    torch.testing.assert_close(VESDE(25.0).marginal_prob_std(t_source), sde.sigma_of_t(t), rtol=1e-9, atol=0)
    torch.testing.assert_close(scale, 1 / sde.mean_coeff(t))
    if target == "vp":
        assert t_source[-1] > 1.0    # past the source's T: the network's inputs there are new to it


@pytest.mark.parametrize("network", ["ScoreNet", "UNet"])
def test_reparameterized_network_takes_the_networks_weights_and_rebuilds_from_its_architecture(network):
    import json

    import sgm_helpers
    from sgm_helpers import make_sde
    from sgm_helpers.pretrained import build_model

    torch.manual_seed(0)
    ve, vp = VESDE(25.0), make_sde("vp")
    size = dict(channels=(32, 32, 32, 32), embed_dim=8) if network == "ScoreNet" else dict(channels=(8, 16), embed_dim=8)
    net_class, reparameterized = getattr(sgm_helpers, network), getattr(sgm_helpers, f"Reparameterized{network}")
    source = net_class(ve.marginal_prob_std, **size, time_input="log_std")
    if network == "UNet":   # its output convolution starts at zero: give it weights, so the comparison means something
        torch.nn.init.normal_(source.conv_out.weight, std=0.1)
    model = reparameterized(vp, ve, **size, time_input="log_std")
    model.load_state_dict(source.state_dict())                           # the same parameter names, strictly
    arch = json.loads(json.dumps(model.architecture))
    assert arch["class"] == f"Reparameterized{network}" and arch["source_sde"] == {"name": "VESDE", "sigma": 25.0}
    rebuilt = build_model(arch, vp)
    rebuilt.load_state_dict(model.state_dict())
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([1e-5, 0.3, 1.0])
    with torch.no_grad():
        assert torch.equal(rebuilt(x, t), model(x, t))
        alpha = vp.mean_coeff(t)[:, None, None, None]
        t_source, _ = model.source_time(t)
        expected = source(x / alpha, t_source) / alpha
        assert expected.abs().mean() > 1e-3
        torch.testing.assert_close(model(x, t), expected)
        same = reparameterized(ve, ve, **size, time_input="log_std")
        same.load_state_dict(source.state_dict())
        torch.testing.assert_close(same(x, t), source(x, t))              # its own SDE: the network itself
    with pytest.raises(ValueError, match="sde must be an SDE"):
        reparameterized(ve.marginal_prob_std, ve)
