"""dsm_loss: its analytic value for Gaussian data, reproducibility, bad input."""

import math

import pytest
import torch
from scipy.integrate import quad

from sgm_helpers import VESDE, dsm_loss

SDE = VESDE(25.0)
EPS = 1e-5
S0 = torch.tensor([0.5, 2.0])       # data x0 ~ N(0, diag(S0^2)) in D = 2 dims


def exact_score(x, t):
    """grad log p_t for x0 ~ N(0, diag(S0^2)): p_t = N(0, diag(S0^2 + std(t)^2))."""
    return -x / (S0 ** 2 + SDE.marginal_prob_std(t)[:, None] ** 2)


def zero_score(x, t):
    return torch.zeros_like(x)


def _loss_and_stderr(score, chunks=40, chunk_size=2_000, seed=0):
    """dsm_loss over ``chunks`` independent batches: their mean and its standard error."""
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(chunks):
        x0 = torch.randn(chunk_size, 2, generator=g) * S0
        values.append(float(dsm_loss(score, x0, SDE.marginal_prob_std, eps=EPS, generator=g)))
    values = torch.tensor(values, dtype=torch.float64)
    return float(values.mean()), float(values.std() / math.sqrt(chunks))


def test_exact_score_gives_the_analytic_minimum():
    # With s = -x / (s0^2 + std^2), std * s + z = (s0^2 z - std x0) / (s0^2 + std^2), whose variance per
    # dimension is s0^2 / (s0^2 + std^2); so L = sum_d E_{t ~ U(eps, 1)}[s0_d^2 / (s0_d^2 + std(t)^2)].
    def integrand(t, s0):
        return s0 ** 2 / (s0 ** 2 + float(SDE.marginal_prob_std(torch.tensor(t, dtype=torch.float64))) ** 2)

    expected = sum(quad(integrand, EPS, 1.0, args=(float(s0),), epsrel=1e-10, points=[0.01, 0.1])[0]
                   for s0 in S0) / (1.0 - EPS)
    loss, stderr = _loss_and_stderr(exact_score)
    assert abs(loss - expected) < 4 * stderr, (loss, expected, stderr)
    # A sanity check on the test's power: the minimum is well below the loss of the zero score (= D).
    assert expected < 1.0


def test_zero_score_gives_the_data_dimension():
    # With s = 0 the loss is E ||z||^2 = D whatever the data.
    loss, stderr = _loss_and_stderr(zero_score, chunks=20)
    assert abs(loss - 2.0) < 4 * stderr


def test_exact_score_beats_nearby_scores():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(20_000, 2, generator=g) * S0
    state = g.get_state()

    def loss(score):
        g.set_state(state)      # the same t and z draws for every score: a paired comparison
        return float(dsm_loss(score, x0, SDE.marginal_prob_std, eps=EPS, generator=g))

    best = loss(exact_score)
    for scale in (0.9, 1.1):
        assert loss(lambda x, t: scale * exact_score(x, t)) > best


def test_loss_is_reproducible_with_a_generator_and_works_on_images():
    x = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(2))

    def score(x, t):
        assert t.shape == (4,) and ((t >= EPS) & (t <= 1)).all()
        return -x

    a = dsm_loss(score, x, SDE.marginal_prob_std, generator=torch.Generator().manual_seed(3))
    b = dsm_loss(score, x, SDE.marginal_prob_std, generator=torch.Generator().manual_seed(3))
    c = dsm_loss(score, x, SDE.marginal_prob_std, generator=torch.Generator().manual_seed(4))
    assert a.shape == () and torch.isfinite(a)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gradient_reaches_the_model():
    lin = torch.nn.Linear(2, 2)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(5))
    dsm_loss(lambda x, t: lin(x), x, SDE.marginal_prob_std, generator=torch.Generator().manual_seed(6)).backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("eps", [0.0, 1.0, -1e-3, 1.5, float("nan"), "1e-5", None, True])
def test_eps_outside_the_open_unit_interval_is_a_value_error(eps):
    with pytest.raises(ValueError, match=r"eps must be a number in the open interval \(0, 1\)"):
        dsm_loss(zero_score, torch.zeros(2, 2), SDE.marginal_prob_std, eps=eps)


def test_data_without_a_batch_dimension_is_a_value_error():
    with pytest.raises(ValueError, match=r"x must have shape \[B, \.\.\.\]"):
        dsm_loss(zero_score, torch.zeros(3), SDE.marginal_prob_std)


# --- class labels and label dropout; the noise-conditional classifier's loss ------------------------------


class _LabelRecorder(torch.nn.Module):
    """A conditional 'model' that ignores its labels (returns -x) and records them."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t, y):
        self.seen.append(y.clone())
        return -x


def test_labels_leave_the_draws_and_the_value_unchanged():
    # The label dropout draws come after t and z: with a model that ignores labels, the loss with y (and any
    # p_uncond) is bit for bit the unconditional one; and that one is the written-out formula.
    x = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    labels = torch.arange(16) % 10
    plain = dsm_loss(lambda x, t: -x, x, SDE, generator=torch.Generator().manual_seed(8))
    for p in (0.0, 0.5, 1.0):
        with_labels = dsm_loss(_LabelRecorder(), x, SDE, generator=torch.Generator().manual_seed(8), y=labels,
                               p_uncond=p)
        assert torch.equal(with_labels, plain)
    g = torch.Generator().manual_seed(8)
    t = torch.rand(16, generator=g) * (1 - EPS) + EPS
    z = torch.randn(x.shape, generator=g)
    std = SDE.marginal_prob_std(t).view(-1, 1, 1, 1)
    expected = ((-(x + std * z)) * std + z).pow(2).flatten(1).sum(1).mean()
    assert torch.equal(plain, expected)


def test_label_dropout_replaces_labels_by_the_null_class_at_the_given_rate():
    n, p = 20_000, 0.3
    x, labels = torch.zeros(n, 1), torch.arange(n) % 10
    recorder = _LabelRecorder()
    for prob in (0.0, p, 1.0):
        dsm_loss(recorder, x, SDE, generator=torch.Generator().manual_seed(9), y=labels, p_uncond=prob)
    none, some, every = recorder.seen
    assert torch.equal(none, labels) and torch.all(every == 10)
    dropped = some == 10
    assert torch.equal(some[~dropped], labels[~dropped])
    assert abs(float(dropped.double().mean()) - p) < 4.5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("kwargs, match", [
    (dict(p_uncond=0.1), "needs labels y="),
    (dict(y=torch.arange(4), p_uncond=1.5), r"p_uncond must be a probability in \[0, 1\]"),
    (dict(y=torch.arange(4), p_uncond=-0.1), r"p_uncond must be a probability in \[0, 1\]"),
    (dict(y=torch.arange(3)), r"y must be a \[B\] = \[4\] integer tensor"),
    (dict(y=torch.zeros(4)), r"y must be a \[B\] = \[4\] integer tensor"),
    (dict(y=torch.tensor([0, 1, 2, 10])), r"y must hold class labels in 0\.\.9"),
])
def test_bad_labels_or_dropout_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dsm_loss(_LabelRecorder(), torch.zeros(4, 2), SDE, **kwargs)


def test_time_classifier_loss_values_and_gradient():
    from sgm_helpers import three_modes, time_classifier_loss

    # Constant logits: the cross-entropy of a uniform guess, log K, whatever the data.
    x, y = torch.randn(32, 2, generator=torch.Generator().manual_seed(10)), torch.arange(32) % 3
    uniform = time_classifier_loss(lambda x, t: torch.zeros(len(x), 3), x, y, SDE)
    torch.testing.assert_close(uniform, torch.tensor(math.log(3)))
    # The exact posterior log p_t(k | x(t)) of a mixture beats the same posterior at a wrong time (same draws).
    mix = three_modes()
    data, labels = mix.sample(4000, torch.Generator().manual_seed(11), return_labels=True)
    exact = mix.perturbed_log_posterior(SDE)
    frozen = lambda x, t: exact(x, torch.full_like(t, 0.02))  # noqa: E731

    def loss(clf):
        return float(time_classifier_loss(clf, data, labels, SDE, generator=torch.Generator().manual_seed(12)))

    assert loss(exact) < min(loss(frozen), math.log(3))
    # The gradient reaches the classifier; the perturbation is the kernel's, t in [eps, 1].
    lin = torch.nn.Linear(2, 3)
    seen = []

    def clf(x, t):
        seen.append(t)
        return lin(x)

    time_classifier_loss(clf, x, y, SDE, eps=0.25, generator=torch.Generator().manual_seed(13)).backward()
    assert lin.weight.grad.abs().sum() > 0 and ((seen[0] >= 0.25) & (seen[0] <= 1)).all()
    with pytest.raises(ValueError, match=r"y must hold class labels in 0\.\.9"):
        time_classifier_loss(clf, x, torch.full((32,), 10), SDE)
