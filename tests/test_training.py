"""train, make_ema, save_checkpoint, load_checkpoint."""

import copy
import math
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from sgm_helpers import (VESDE, ScoreNet, TimeClassifier, dsm_loss, load_checkpoint, make_ema, save_checkpoint,
                         time_classifier_loss, train)
from sgm_helpers.training import _epoch_permutation

SDE = VESDE(25.0)
S0 = torch.tensor([0.5, 2.0])


class MLPScore(nn.Module):
    """A small score model for 2-D data: s(x, t) = net([x, log std(t)]) / std(t)."""

    def __init__(self, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2))

    def forward(self, x, t):
        std = SDE.marginal_prob_std(t)[:, None]
        return self.net(torch.cat([x, torch.log(std)], dim=1)) / std


def _data(n=256, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) * S0


def _model(seed=1):
    torch.manual_seed(seed)
    return MLPScore()


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train(model, steps, **kw):
    kw = {"batch_size": 32, "lr": 1e-2, "progress": False, "seed": 3, **kw}
    return train(model, _data(), SDE.marginal_prob_std, steps=steps, **kw)


def test_train_reduces_the_loss_towards_its_minimum():
    model = _model()
    x_eval = _data(n=4_096, seed=10)

    def eval_loss():
        # the same t and z draws before and after training: a paired comparison with little noise
        with torch.no_grad():
            return float(dsm_loss(model, x_eval, SDE.marginal_prob_std, generator=torch.Generator().manual_seed(11)))

    before = eval_loss()
    losses = _train(model, 100)
    after = eval_loss()
    assert len(losses) == 100 and all(math.isfinite(v) for v in losses)
    # The exact score reaches about 0.71 (tests/test_losses.py); an untrained net is near D = 2 or above.
    assert before > 1.5
    assert after < 0.9
    assert sum(losses[-30:]) / 30 < sum(losses[:30]) / 30
    assert not model.training                  # left in eval mode


def test_one_loss_per_step_and_epochs():
    losses = _train(_model(), None, epochs=2, batch_size=100)    # 256 examples: 3 steps an epoch
    assert len(losses) == 6
    with pytest.raises(ValueError, match="exactly one of epochs= or steps="):
        _train(_model(), 3, epochs=1)
    with pytest.raises(ValueError, match="exactly one of epochs= or steps="):
        _train(_model(), None)


class _TimeIgnoring(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x, t):
        self.calls += 1
        assert t.shape == (x.shape[0],)
        return self.net(x)


def test_images_and_labels_pair_is_accepted():
    images = torch.rand(8, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 9), nn.Unflatten(1, (1, 3, 3)))
    score_model = _TimeIgnoring(model)
    losses = train(score_model, (images, torch.arange(8)), SDE.marginal_prob_std, steps=2, batch_size=4,
                   progress=False)
    assert len(losses) == 2 and score_model.calls == 2


def test_training_is_reproducible_with_a_seed():
    a, b, c = _model(), _model(), _model()
    la, lb, lc = _train(a, 5), _train(b, 5), _train(c, 5, seed=4)
    assert la == lb
    assert _states_equal(a.state_dict(), b.state_dict())
    assert la != lc


@pytest.mark.parametrize("first", [3, 4])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, first):
    # batch_size 100 on 256 examples: 3 steps an epoch (the last one ragged), so the 6 steps span two epochs
    # and the run is cut at an epoch boundary (first = 3) or in the middle of the second epoch (first = 4).
    kw = {"batch_size": 100}
    straight = _model()
    ema_straight = make_ema(straight, decay=0.9)
    straight_path = tmp_path / "straight.pt"
    l_straight = _train(straight, 6, ema_model=ema_straight, checkpoint_path=straight_path, **kw)

    path = tmp_path / "ckpt.pt"
    part = _model()
    l_first = _train(part, first, ema_model=make_ema(part, decay=0.9), checkpoint_path=path, **kw)
    assert len(l_first) == first and load_checkpoint(path)["step"] == first
    resumed = _model(seed=7)                   # a different initialization: everything must come from the file
    ema_resumed = make_ema(resumed, decay=0.9)
    l_resumed = _train(resumed, 6, ema_model=ema_resumed, checkpoint_path=path, resume=True, **kw)

    assert l_resumed == l_straight              # all six losses, the first ones read from the checkpoint
    assert _states_equal(resumed.state_dict(), straight.state_dict())
    assert _states_equal(ema_resumed.state_dict(), ema_straight.state_dict())
    a, b = load_checkpoint(straight_path), load_checkpoint(path)
    assert a["step"] == b["step"] == 6
    assert torch.equal(a["rng"], b["rng"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert _states_equal(sa, sb)


@pytest.mark.parametrize("change, key", [
    ({"batch_size": 64}, "batch_size"), ({"seed": 4}, "seed"), ({"lr": 1e-3}, "lr"), ({"eps": 1e-3}, "eps"),
    ({"precision": "bfloat16"}, "precision"), ({"data": _data(n=200)}, "n_train"),
])
def test_resume_refuses_a_checkpoint_from_other_settings(tmp_path, change, key):
    path = tmp_path / "ckpt.pt"
    _train(_model(), 2, checkpoint_path=path)
    kw = {"batch_size": 32, "lr": 1e-2, "progress": False, "seed": 3, "checkpoint_path": path, "resume": True}
    data = change.pop("data", _data())
    with pytest.raises(ValueError, match=rf"cannot resume from .*ckpt\.pt.*\b{key}="):
        train(_model(), data, SDE.marginal_prob_std, steps=4, **{**kw, **change})
    assert load_checkpoint(path)["step"] == 2          # the checkpoint is left as it was
    assert len(train(_model(), _data(), SDE.marginal_prob_std, steps=4, **kw)) == 4   # same settings, longer run


def test_resume_refuses_another_architecture_with_the_same_parameters(tmp_path):
    path, images = tmp_path / "ckpt.pt", torch.rand(8, 1, 28, 28)
    kw = {"batch_size": 4, "progress": False, "checkpoint_path": path, "resume": True}
    train(ScoreNet(SDE.marginal_prob_std), images, SDE, steps=1, **kw)
    other = ScoreNet(SDE.marginal_prob_std, time_input="log_std")   # the same state-dict keys and shapes
    with pytest.raises(ValueError, match=r"cannot resume from .*ckpt\.pt.*\barchitecture="):
        train(other, images, SDE, steps=2, **kw)


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    a, b = _model(), _model()
    la = _train(a, 3)
    lb = _train(b, 3, checkpoint_path=tmp_path / "new.pt", resume=True)
    assert la == lb and (tmp_path / "new.pt").is_file()


def test_ema_follows_the_documented_average(tmp_path):
    # Record the weights after every step (by resuming one step at a time), then average them by hand:
    # ema_1 = theta_1, ema_k = decay * ema_{k-1} + (1 - decay) * theta_k.
    decay, steps = 0.8, 4
    path = tmp_path / "ema.pt"
    history = []
    for k in range(1, steps + 1):
        model = _model()
        _train(model, k, checkpoint_path=path, resume=True)
        history.append({n: p.detach().clone() for n, p in model.named_parameters()})
    model = _model()
    ema = make_ema(model, decay=decay)
    _train(model, steps, ema_model=ema)
    assert int(ema.n_averaged) == steps
    for name, p in ema.module.named_parameters():
        expected = history[0][name]
        for theta in history[1:]:
            expected = decay * expected + (1 - decay) * theta[name]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)
        assert not torch.equal(p.detach(), dict(model.named_parameters())[name].detach())


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_bad_ema_decay_is_a_value_error(decay):
    with pytest.raises(ValueError, match=r"decay must be in the open interval \(0, 1\)"):
        make_ema(_model(), decay=decay)


def test_checkpoints_are_written_atomically(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    _train(_model(), None, epochs=2, batch_size=128, checkpoint_path=path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]      # no temporary files left behind
    first = load_checkpoint(path)
    assert first["step"] == 4 and len(first["losses"]) == 4
    # A save that fails half-way leaves the previous file intact and no temporary file.
    model = _model()
    with pytest.raises(Exception):
        save_checkpoint(path, model, step=99, unpicklable=lambda: None)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]
    assert load_checkpoint(path)["step"] == 4


def test_bfloat16_training_follows_the_float32_loss_curve():
    # Same weights, batches and noise: the per-step losses agree to bfloat16's ~3 significant digits, the
    # loss still falls, and the weights, Adam state and EMA stay float32.
    torch.manual_seed(0)
    init = ScoreNet(SDE.marginal_prob_std, channels=(32, 32, 64, 64), embed_dim=64)
    images = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    runs = {}
    for precision in ("float32", "bfloat16"):
        model = copy.deepcopy(init)
        ema = make_ema(model, decay=0.9)
        runs[precision] = train(model, images, SDE.marginal_prob_std, steps=6, batch_size=8, lr=1e-3,
                                ema_model=ema, progress=False, precision=precision)
        assert all(p.dtype == torch.float32 for p in [*model.parameters(), *ema.parameters()])
    f32, bf16 = torch.tensor(runs["float32"]), torch.tensor(runs["bfloat16"])
    assert f32[0] != bf16[0]                                 # autocast did change the arithmetic
    torch.testing.assert_close(bf16, f32, rtol=0.01, atol=0.0)
    assert bf16[-2:].mean() < bf16[:2].mean()


def test_checkpoint_round_trip_with_scorenet(tmp_path):
    torch.manual_seed(0)
    model = ScoreNet(SDE.marginal_prob_std, channels=(32, 32, 64, 64), embed_dim=64)
    ema = make_ema(model, decay=0.9)
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "scorenet.pt"
    losses = train(model, images, SDE.marginal_prob_std, steps=2, batch_size=4, lr=1e-3, ema_model=ema,
                   checkpoint_path=path, progress=False)

    torch.manual_seed(5)
    fresh = ScoreNet(SDE.marginal_prob_std, channels=(32, 32, 64, 64), embed_dim=64)
    fresh_ema = make_ema(fresh, decay=0.9)
    optimizer = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    ckpt = load_checkpoint(path, fresh, optimizer=optimizer, ema_model=fresh_ema)
    assert ckpt["step"] == 2 and ckpt["losses"] == losses
    assert _states_equal(fresh.state_dict(), model.state_dict())
    assert _states_equal(fresh_ema.state_dict(), ema.state_dict())
    assert len(optimizer.state) == len(list(fresh.parameters()))
    x, t = images[:2], torch.tensor([0.2, 0.7])
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x, t), model.eval()(x, t))


def test_load_checkpoint_accepts_a_plain_state_dict(tmp_path):
    model = _model()
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    other = _model(seed=2)
    ckpt = load_checkpoint(path, other)
    assert ckpt["step"] == 0 and ckpt["optimizer"] is None
    assert _states_equal(other.state_dict(), model.state_dict())


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))       # would create a file if the pickle were executed


def test_load_checkpoint_refuses_pickled_objects(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": _Payload(str(marker))}, f, protocol=2)
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(path, _model())
    assert not marker.exists()
    torch.save({"format": "x", "model": _TimeIgnoring(nn.Linear(1, 1))}, tmp_path / "module.pt")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "module.pt")


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a dict"):
        load_checkpoint(tmp_path / "list.pt")
    save_checkpoint(tmp_path / "mlp.pt", _model())
    with pytest.raises(ValueError, match=r"missing keys: .*net\.0\.weight|unexpected keys: .*net\.0\.weight"):
        load_checkpoint(tmp_path / "mlp.pt", nn.Sequential(nn.Linear(2, 2)))
    wider = MLPScore(hidden=16)
    with pytest.raises(ValueError, match=r"shape mismatches: .*net\.0\.weight"):
        load_checkpoint(tmp_path / "mlp.pt", wider)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_data_is_a_value_error(bad):
    data = _data()
    data[5, 1] = bad
    with pytest.raises(ValueError, match="data contains NaN or inf"):
        train(_model(), data, SDE.marginal_prob_std, steps=1, progress=False)


@pytest.mark.parametrize("kwargs, name", [
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 2.5}, "batch_size"), ({"lr": 0.0}, "lr"),
    ({"lr": -1e-3}, "lr"), ({"lr": float("nan")}, "lr"), ({"eps": 0.0}, "eps"), ({"eps": 1.0}, "eps"),
    ({"steps": 0}, "steps"), ({"log_every": 0}, "log_every"), ({"precision": "float16"}, "precision"),
    ({"precision": "bf16"}, "precision"),
])
def test_bad_arguments_are_value_errors_naming_them(kwargs, name):
    kw = {"steps": 1, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        train(_model(), _data(), SDE.marginal_prob_std, **kw)


@pytest.mark.parametrize("data", [torch.zeros(0, 2), torch.zeros(5), "data"])
def test_bad_data_is_a_value_error(data):
    with pytest.raises(ValueError, match="data must be a non-empty tensor"):
        train(_model(), data, SDE.marginal_prob_std, steps=1, progress=False)


def test_a_diverging_loss_stops_with_the_step(tmp_path):
    class Exploding(MLPScore):
        calls = 0

        def forward(self, x, t):
            self.calls += 1
            out = super().forward(x, t)
            return out * float("nan") if self.calls >= 3 else out     # NaN from the third step on

    path = tmp_path / "ckpt.pt"
    with pytest.raises(FloatingPointError, match="NaN or inf at step 3 "):
        _train(Exploding(), 8, log_every=5, checkpoint_path=path)
    assert not path.exists()                    # no checkpoint of the broken weights


# --- objectives: a class-conditional score model and a noise-conditional classifier through the same loop


class _CondMLPScore(nn.Module):
    """s(x, t, y) = net([x, log std(t), one_hot(y)]) / std(t) for 2-D data and 3 classes (null class 3),
    recording the labels of every call."""

    num_classes = null_class = 3

    def __init__(self, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3 + 4, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2))
        self.seen = []

    def forward(self, x, t, y):
        self.seen.append(y.clone())
        std = SDE.marginal_prob_std(t)[:, None]
        return self.net(torch.cat([x, torch.log(std), nn.functional.one_hot(y, 4).to(x.dtype)], dim=1)) / std


class _MLPClassifier(nn.Module):
    """logits(x, t) = net([x, log std(t)]) for 2-D data and 2 classes."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, torch.log(SDE.marginal_prob_std(t))[:, None]], dim=1))


def _labels(n=256, k=3):
    return torch.arange(n) % k


def _cond_model(seed=1):
    torch.manual_seed(seed)
    return _CondMLPScore()


def test_conditional_dsm_feeds_each_example_its_own_label():
    model = _cond_model()
    labels = _labels()
    losses = train(model, (_data(), labels), SDE.marginal_prob_std, epochs=1, batch_size=64, lr=1e-2, seed=3,
                   progress=False, objective="conditional_dsm")
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    # p_uncond = 0: the model saw the labels of the epoch's batches, in the permutation's order, none dropped
    assert torch.equal(torch.cat(model.seen), labels[_epoch_permutation(256, 3, 0)])


def test_conditional_dsm_drops_labels_to_the_null_class_with_p_uncond():
    labels = _labels()
    seen = {}
    for p in (0.5, 1.0):
        model = _cond_model()
        train(model, (_data(), labels), SDE.marginal_prob_std, epochs=1, batch_size=64, lr=1e-2, seed=3,
              progress=False, objective="conditional_dsm", p_uncond=p)
        seen[p] = torch.cat(model.seen)
    expected = labels[_epoch_permutation(256, 3, 0)]
    assert (seen[1.0] == 3).all()                                     # p = 1: every label dropped
    dropped = seen[0.5] == 3
    assert torch.equal(seen[0.5][~dropped], expected[~dropped])       # the others are the examples' own labels
    assert 0.3 < dropped.float().mean() < 0.7                         # 256 draws of p = 0.5: sd 0.03


def test_conditional_dsm_learns_the_label():
    # Each class is its own cluster, far apart: a trained conditional model's loss with the true labels is far
    # below its loss with the wrong ones (the same t and z draws), which an untrained one cannot tell apart.
    centers = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    labels = _labels(512)
    data = centers[labels] + 0.3 * torch.randn(512, 2, generator=torch.Generator().manual_seed(0))
    model = _cond_model()

    def eval_loss(y):
        with torch.no_grad():
            return float(dsm_loss(model, data, SDE.marginal_prob_std, generator=torch.Generator().manual_seed(11),
                                  y=y))

    wrong = (labels + 1) % 3
    assert eval_loss(labels) > 0.5 * eval_loss(wrong)
    losses = train(model, (data, labels), SDE.marginal_prob_std, steps=150, batch_size=64, lr=1e-2, seed=3,
                   progress=False, objective="conditional_dsm", p_uncond=0.1)
    assert all(math.isfinite(v) for v in losses)
    assert eval_loss(labels) < 0.2 * eval_loss(wrong)


def _classifier_toy(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.stack([8.0 * labels - 4.0, torch.zeros(n)], dim=1) + 0.5 * torch.randn(n, 2, generator=g)
    return images, labels


def test_time_classifier_objective_trains_a_noise_conditional_classifier():
    torch.manual_seed(0)
    classifier = _MLPClassifier()
    x_eval, y_eval = _classifier_toy(4096, seed=10)

    def eval_loss():
        with torch.no_grad():   # the same t and z draws before and after training: a paired comparison
            return float(time_classifier_loss(classifier, x_eval, y_eval, SDE,
                                              generator=torch.Generator().manual_seed(11)))

    before = eval_loss()
    losses = train(classifier, _classifier_toy(512, seed=0), SDE, steps=150, batch_size=64, lr=1e-2, seed=3,
                   progress=False, objective="time_classifier")
    after = eval_loss()
    assert len(losses) == 150 and all(math.isfinite(v) for v in losses)
    # Two clusters 8 apart: separable while std(t) is small, a coin toss when it is large; the untrained
    # classifier starts near log 2.
    assert before > 0.6
    assert after < 0.4
    assert sum(losses[-30:]) / 30 < sum(losses[:30]) / 30


@pytest.mark.parametrize("change, key", [({"p_uncond": 0.2}, "p_uncond"), ({"objective": "dsm", "p_uncond": 0.0},
                                                                            "objective")])
def test_resume_refuses_another_p_uncond_or_objective(tmp_path, change, key):
    path = tmp_path / "ckpt.pt"
    kw = {"batch_size": 32, "lr": 1e-2, "progress": False, "seed": 3, "checkpoint_path": path,
          "objective": "conditional_dsm", "p_uncond": 0.1}
    data = (_data(), _labels())
    train(_cond_model(), data, SDE.marginal_prob_std, steps=2, **kw)
    config = load_checkpoint(path)["config"]
    assert config["objective"] == "conditional_dsm" and config["p_uncond"] == 0.1
    with pytest.raises(ValueError, match=rf"cannot resume from .*ckpt\.pt.*\b{key}="):
        train(_cond_model(), data, SDE.marginal_prob_std, steps=4, resume=True, **{**kw, **change})
    assert load_checkpoint(path)["step"] == 2
    assert len(train(_cond_model(), data, SDE.marginal_prob_std, steps=4, resume=True, **kw)) == 4


def test_a_package_network_s_checkpoint_records_its_architecture_and_objective(tmp_path):
    torch.manual_seed(0)
    classifier = TimeClassifier(channels=(32, 32, 32), embed_dim=16)
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "clf.pt"
    train(classifier, (images, torch.arange(8)), SDE, steps=1, batch_size=4, checkpoint_path=path, progress=False,
          objective="time_classifier")
    config = load_checkpoint(path)["config"]
    assert config["architecture"] == classifier.architecture == {"class": "TimeClassifier", "channels": [32, 32, 32],
                                                                  "embed_dim": 16, "num_classes": 10}
    assert config["objective"] == "time_classifier" and config["p_uncond"] == 0.0
    rebuilt = TimeClassifier(**{k: v for k, v in config["architecture"].items() if k != "class"})
    load_checkpoint(path, rebuilt)                        # the recorded arguments rebuild the same shapes


@pytest.mark.parametrize("kwargs, match", [
    ({"objective": "classifier"}, r"objective must be one of \('dsm', 'conditional_dsm', 'time_classifier'\)"),
    ({"objective": "conditional_dsm", "data": "images"}, r"objective='conditional_dsm' trains on labelled data"),
    ({"objective": "time_classifier", "data": "images"}, r"objective='time_classifier' trains on labelled data"),
    ({"objective": "conditional_dsm", "labels": torch.arange(256)}, r"labels \(data\[1\]\) must hold class labels "
                                                                    r"in 0\.\.2"),
    ({"objective": "conditional_dsm", "labels": torch.zeros(256)}, r"labels \(data\[1\]\) must be a \[B\] = \[256\] "
                                                                   r"integer tensor"),
    ({"objective": "conditional_dsm", "labels": torch.zeros(255, dtype=torch.long)}, r"labels \(data\[1\]\)"),
    ({"objective": "conditional_dsm", "p_uncond": 1.5}, r"p_uncond must be a probability in \[0, 1\]"),
    ({"objective": "conditional_dsm", "p_uncond": float("nan")}, r"p_uncond must be a probability"),
    ({"p_uncond": 0.1}, r"p_uncond=0.1 .*needs objective='conditional_dsm', not 'dsm'"),
    ({"objective": "time_classifier", "likelihood_weighting": True}, r"likelihood_weighting is for score models"),
    ({"objective": "time_classifier", "dequantize": True}, r"dequantize is for score models"),
    ({"objective": "time_classifier", "likelihood_weighting": True, "importance_sampling": True},
     r"likelihood_weighting and importance_sampling are for score models"),
])
def test_bad_objective_arguments_are_value_errors(kwargs, match):
    kwargs = dict(kwargs)
    data = kwargs.pop("data", None)
    labels = kwargs.pop("labels", _labels())
    data = _data() if data == "images" else (_data(), labels)
    with pytest.raises(ValueError, match=match):
        train(_cond_model(), data, SDE, steps=1, progress=False, **kwargs)


def test_data_given_as_another_sequence_is_a_value_error():
    with pytest.raises(ValueError, match=r"an \(images, labels\) pair, got a sequence of 3"):
        train(_model(), (_data(), _labels(), _labels()), SDE.marginal_prob_std, steps=1, progress=False)


# --- under torchrun: each process's slice of the global batch comes with its own labels -------------------------


def test_two_processes_feed_each_example_its_own_label(tmp_path):
    # This file is the worker (see the bottom): 2 CPU processes train a conditional model with label dropout on
    # 12 examples in global batches of 4, each recording the labels its model saw.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             __file__, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**env, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)     # the launcher and both workers
        log, _ = proc.communicate()
    assert proc.returncode == 0, log[-5000:]
    seen = [torch.load(tmp_path / f"seen_rank{r}.pt", weights_only=True) for r in (0, 1)]
    labels, perm = _labels(12), _epoch_permutation(12, 3, 0)
    assert len(seen[0]) == len(seen[1]) == 3
    for k in range(3):
        expected = labels[perm[4 * k:4 * k + 4]]
        assert seen[0][k].shape == seen[1][k].shape == (2,)           # rank r: the r-th half of the global batch
        got = torch.cat([seen[0][k], seen[1][k]])
        kept = got != _CondMLPScore.null_class
        assert torch.equal(got[kept], expected[kept])
    dropped = torch.cat([torch.cat(s) for s in seen]) == _CondMLPScore.null_class
    assert dropped.any() and not dropped.all()                        # p_uncond = 0.5 reached the null class 3


def _labelled_worker(out: Path) -> None:
    torch.set_num_threads(1)
    model = _cond_model()
    train(model, (_data(12), _labels(12)), SDE.marginal_prob_std, steps=3, batch_size=4, lr=1e-2, seed=3,
          progress=False, objective="conditional_dsm", p_uncond=0.5)
    torch.save(model.seen, out / f"seen_rank{os.environ['RANK']}.pt")


def test_checkpoints_add_up_the_wall_time_of_every_run(tmp_path):
    path = tmp_path / "ckpt.pt"
    _train(_model(), 2, checkpoint_path=path)
    first = load_checkpoint(path)["train_seconds"]
    assert first > 0
    _train(_model(), 4, checkpoint_path=path, resume=True)
    assert load_checkpoint(path)["train_seconds"] > first
    # a checkpoint that did not record it (written before this existed): the total is unknown, not undercounted
    ckpt = torch.load(path, weights_only=True)
    del ckpt["train_seconds"]
    torch.save(ckpt, path)
    _train(_model(), 6, checkpoint_path=path, resume=True)
    assert load_checkpoint(path)["step"] == 6 and load_checkpoint(path)["train_seconds"] is None


if __name__ == "__main__":
    _labelled_worker(Path(sys.argv[1]))

