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
