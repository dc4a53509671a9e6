"""Langevin and annealed Langevin dynamics, with exact scores of toy mixtures.

Statistical checks: fixed seeds, tolerance Z = 4.5 standard errors computed from the sample sizes
(two-sided chance failure ~7e-6 per check), plus any discretisation bias that is derived or
measured in the docstring. Mode weights are the fractions of points whose most probable component
(``GaussianMixture.assign``) is k, compared with the same fractions in a large exact sample.
"""

import math

import pytest
import torch

from sgm_helpers.langevin import DivergenceError, annealed_langevin_dynamics, langevin_dynamics
from sgm_helpers.toy import GaussianMixture, single_gaussian, two_modes
from sgm_helpers.utils import randn

Z = 4.5


def gen(seed):
    return torch.Generator().manual_seed(seed)


def uniform_box(n, half_width, seed):
    """n points uniform on the square [-half_width, half_width]^2, the usual start of Song & Ermon's toy."""
    return (torch.rand(n, 2, generator=gen(seed)) * 2 - 1) * half_width


def mode_stats(m, x):
    """Fractions, means and counts of the points assigned to each component."""
    labels = m.assign(x)
    counts = torch.bincount(labels, minlength=m.n_components)
    means = torch.stack([x[labels == k].double().mean(0) for k in range(m.n_components)])
    var = torch.stack([x[labels == k].double().var(0) for k in range(m.n_components)])
    return counts.double() / len(x), means, var, counts


# --- statistics: what Langevin dynamics reaches --------------------------------------------------


def test_stationary_variance_of_the_discretised_chain():
    """The update x + eps score + sqrt(2 eps) z on a Gaussian N(mu, v) (per axis) is the linear recursion
    x' - mu = (1 - eps / v)(x - mu) + sqrt(2 eps) z, whose stationary variance is

        V = 2 eps / (1 - (1 - eps / v)^2) = v / (1 - eps / (2 v)),

    i.e. the target v plus an O(eps) bias. With eps = 0.1 on the narrow axis (v = 0.25) that bias is 25%,
    which this test resolves: it pins down the update rule (Song & Ermon's eps/2 convention would give
    v / (1 - eps / (4 v)) = 0.278 instead of 0.3125). Start at the mean; after 400 steps the memory of the
    start is (1 - eps / v_max)^400 < 1e-7. The 8000 chains are independent, so the sample variance has
    standard error V sqrt(2 / (n - 1)).
    """
    m, eps, n = single_gaussian(), 0.1, 8000
    x0 = m.means.float().expand(n, 2).clone()
    x = langevin_dynamics(m.score, x0, eps, 400, generator=gen(0)).double()
    v = m.stds[0] ** 2
    expected = v / (1 - eps / (2 * v))
    assert ((x.var(0) - expected).abs() <= Z * expected * math.sqrt(2 / (n - 1))).all(), (x.var(0), expected)
    assert ((x.var(0) - v).abs() > Z * expected * math.sqrt(2 / (n - 1)))[1]  # the bias is real on the narrow axis
    assert ((x.mean(0) - m.means[0]).abs() <= Z * torch.sqrt(expected / n)).all()


def test_langevin_reaches_the_target_when_the_modes_connect():
    """Two overlapping modes (0.7 / 0.3, 3.3 stds apart): particles cross between them, so from a uniform
    start Langevin reaches the mixture, weights included. The valley is only ~1.4 nats below the small
    mode, so crossings take a few time units; 1000 steps of eps = 0.02 are 20 time units. The O(eps)
    discretisation bias on the weights is not resolved with 20000 chains (differences 0.000-0.006 in
    four runs, standard error 0.003), below one standard error here.
    """
    m = GaussianMixture(means=[[-1.25, 0.0], [1.25, 0.0]], stds=0.75, weights=[0.7, 0.3])
    n, n_ref = 4000, 200000
    x = langevin_dynamics(m.score, uniform_box(n, 5.0, 1), 0.02, 1000, generator=gen(2))
    w, mu, _, counts = mode_stats(m, x)
    w_ref, mu_ref, var_ref, counts_ref = mode_stats(m, m.sample(n_ref, gen(3)))
    se_w = torch.sqrt(w_ref * (1 - w_ref) * (1 / n + 1 / n_ref))
    assert ((w - w_ref).abs() <= Z * se_w).all(), (w, w_ref)
    se_mu = torch.sqrt(var_ref / counts[:, None] + var_ref / counts_ref[:, None])
    assert ((mu - mu_ref).abs() <= Z * se_mu).all(), (mu, mu_ref)


def test_plain_langevin_cannot_balance_separated_modes_but_annealed_langevin_can():
    """The notebook's teaching point, on ``two_modes()`` (0.8 / 0.2, 7 apart, std 0.5), from the same start.

    Plain Langevin: each particle settles in the mode whose basin it starts in (crossing the valley,
    25 nats deep, never happens) and each mode is sampled correctly around itself (means within Z SE),
    but the weights are the starting split, about 0.5 / 0.5 for a start symmetric about the valley.

    Annealed Langevin (noise 10 -> 0.1, 20 levels): at large noise the modes merge and particles spread
    in proportion to the weights (noise does not move mass between components), then the modes separate.
    The remaining bias comes from the level where crossings stop, at which the noised modes still overlap
    and particles are split slightly more evenly: with 20000 chains the weight of the 0.8 mode came out
    0.795, 0.800 and 0.798 (standard error 0.003), so the bias is below one standard error at n = 4000
    and the tolerance is Z standard errors. (With 10 levels instead of 20 it is 0.78: too few steps
    at the levels where the modes separate.)
    """
    m, n = two_modes(), 4000
    x0 = uniform_box(n, 5.0, 4)
    start = m.assign(x0)

    x = langevin_dynamics(m.score, x0, 0.02, 500, generator=gen(5))
    w, mu, var, counts = mode_stats(m, x)
    assert (m.assign(x) != start).double().mean() < 0.05  # almost no particle changes basin (measured: 0.7-0.9%)
    assert w[1] - m.weights[1] > 0.25  # the 0.2 mode gets ~half the particles: > 40 standard errors off
    assert ((mu - m.means).abs() <= Z * (var / counts[:, None]).sqrt()).all()

    sigmas = torch.logspace(1, -1, 20)
    x = annealed_langevin_dynamics(m.score, x0, sigmas, step_size=0.1 * 0.1**2, n_steps_each=100, generator=gen(6))
    w, mu, var, counts = mode_stats(m, x)
    assert ((w - m.weights).abs() <= Z * torch.sqrt(m.weights * (1 - m.weights) / n)).all(), w
    # The last level targets the mixture noised by sigma_L = 0.1: the same weights and means.
    assert ((mu - m.means).abs() <= Z * (var / counts[:, None]).sqrt()).all()


# --- mechanics ------------------------------------------------------------------------------------


def test_one_step_is_the_stated_update():
    m = two_modes()
    x0 = torch.randn(6, 2, generator=gen(7))
    x1 = langevin_dynamics(m.score, x0, 0.05, 1, generator=gen(8))
    expected = x0 + 0.05 * m.score(x0) + math.sqrt(0.1) * randn((6, 2), gen(8))
    assert torch.allclose(x1, expected, atol=1e-6)


def test_trajectory_shapes_any_data_shape_and_reproducibility():
    x0 = torch.randn(3, 1, 4, 4, generator=gen(9))
    before = x0.clone()
    score = lambda x: -x  # noqa: E731  (the standard normal)
    traj = langevin_dynamics(score, x0, 0.01, 5, generator=gen(10), return_trajectory=True)
    assert traj.shape == (6, 3, 1, 4, 4)
    assert torch.equal(traj[0], x0) and torch.equal(x0, before)
    assert torch.equal(traj[-1], langevin_dynamics(score, x0, 0.01, 5, generator=gen(10)))
    atraj = annealed_langevin_dynamics(lambda x, s: -x / (1 + s[:, None, None, None] ** 2), x0, [1.0, 0.5, 0.1],
                                       0.01, 4, generator=gen(11), return_trajectory=True)
    assert atraj.shape == (13, 3, 1, 4, 4) and torch.equal(atraj[0], x0)


def test_annealed_step_sizes_and_sigma_argument():
    """eps_i = step_size * sigma_i^2 / sigma_L^2, and the score receives sigma_i as a [B] tensor."""
    sigmas, step_size, b = [2.0, 1.0, 0.5], 0.01, 4
    seen = []

    def score(x, sigma):
        seen.append(sigma.clone())
        return -x / (1 + sigma[:, None] ** 2)

    x0 = torch.randn(b, 2, generator=gen(12))
    traj = annealed_langevin_dynamics(score, x0, torch.tensor(sigmas), step_size, 2, generator=gen(13),
                                      return_trajectory=True)
    assert [s.shape for s in seen] == [(b,)] * 6
    assert [float(s[0]) for s in seen] == [2.0, 2.0, 1.0, 1.0, 0.5, 0.5]
    g, x = gen(13), x0
    for i, sigma in enumerate(sigmas):
        eps = step_size * sigma**2 / sigmas[-1] ** 2
        for k in range(2):
            x = x + eps * (-x / (1 + sigma**2)) + math.sqrt(2 * eps) * randn((b, 2), g)
            assert torch.allclose(traj[1 + 2 * i + k], x, atol=1e-5)


def test_blow_up_raises_naming_the_step():
    calls = []

    def score(x, *sigma):
        calls.append(1)
        return torch.full_like(x, math.inf) if len(calls) > 3 else -x

    with pytest.raises(FloatingPointError, match="step 3") as info:
        langevin_dynamics(score, torch.zeros(2, 2), 0.1, 10, generator=gen(0))
    assert isinstance(info.value, DivergenceError) and info.value.step == 3 and info.value.trajectory is None
    calls.clear()
    assert torch.equal(info.value.x, langevin_dynamics(score, torch.zeros(2, 2), 0.1, 3, generator=gen(0)))
    calls.clear()
    with pytest.raises(FloatingPointError, match=r"noise level 1 \(sigma = 0\.5\), step 1") as info:
        annealed_langevin_dynamics(score, torch.zeros(2, 2), [1.0, 0.5], 0.1, 2, return_trajectory=True)
    assert info.value.step == 3 and info.value.trajectory.shape == (4, 2, 2)  # two steps at level 0, one at level 1


def test_divergence_beyond_twice_the_variance_keeps_the_run_up_to_the_blow_up():
    """On N(0, s^2) one step is x' = (1 - eps / s^2) x + sqrt(2 eps) z. With eps = 2.5 s^2 the factor is -1.5:
    every step jumps past the mean and lands farther away, until float32 overflows (the mixture's score
    squares the distance, so it overflows first, near |x| ~ 1e19, after roughly log(1e19) / log(1.5) ~ 110
    steps). The error keeps the finite iterates: they are exactly the first steps of the same seeded run,
    and they grew geometrically. Just below 2 s^2 (the factor -0.9) the chain stays finite
    over the same number of steps: its stationary variance s^2 / (1 - eps / (2 s^2)) is 20 s^2.
    """
    s2, n = 0.16, 64
    target = GaussianMixture(means=[[0.0, 0.0]], stds=s2 ** 0.5)
    x0 = uniform_box(n, 3.0, seed=1)
    with pytest.raises(DivergenceError, match="step") as info:
        langevin_dynamics(target.score, x0, 2.5 * s2, 2000, generator=gen(2), return_trajectory=True)
    err = info.value
    assert 50 < err.step < 2000
    assert err.trajectory.shape == (err.step + 1, n, 2) and torch.isfinite(err.trajectory).all()
    assert torch.equal(err.trajectory[-1], err.x) and torch.equal(err.trajectory[0], x0)
    prefix = langevin_dynamics(target.score, x0, 2.5 * s2, err.step, generator=gen(2), return_trajectory=True)
    assert torch.equal(prefix, err.trajectory)
    assert err.x.abs().max() > 1e15  # it blew up on its way to overflow, not by a sudden NaN
    stable = langevin_dynamics(target.score, x0, 1.9 * s2, 2000, generator=gen(2))
    assert torch.isfinite(stable).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(step_size=0.0), "step_size"),
    (dict(step_size=-0.1), "step_size"),
    (dict(step_size=float("nan")), "step_size"),
    (dict(n_steps=0), "n_steps"),
    (dict(n_steps=2.5), "n_steps"),
    (dict(x0=torch.zeros(4)), "x0"),
    (dict(x0=torch.zeros(4, 2, dtype=torch.long)), "x0"),
    (dict(x0=torch.tensor([[0.0, math.nan]])), "x0"),
])
def test_langevin_bad_arguments(kwargs, match):
    args = dict(x0=torch.zeros(4, 2), step_size=0.1, n_steps=3) | kwargs
    with pytest.raises(ValueError, match=match):
        langevin_dynamics(lambda x: -x, args["x0"], args["step_size"], args["n_steps"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(sigmas=[]), "at least one"),
    (dict(sigmas=[1.0, 2.0]), "strictly decreasing"),
    (dict(sigmas=[1.0, 1.0]), "strictly decreasing"),
    (dict(sigmas=[1.0, 0.0]), "> 0"),
    (dict(sigmas=[1.0, math.inf]), "> 0"),
    (dict(sigmas="abc"), "sigmas"),
    (dict(step_size=0), "step_size"),
    (dict(n_steps_each=0), "n_steps_each"),
])
def test_annealed_bad_arguments(kwargs, match):
    args = dict(sigmas=[1.0, 0.1], step_size=0.01, n_steps_each=2) | kwargs
    with pytest.raises(ValueError, match=match):
        annealed_langevin_dynamics(lambda x, s: -x, torch.zeros(4, 2), args["sigmas"], args["step_size"],
                                   args["n_steps_each"])


def test_score_of_the_wrong_shape_raises():
    with pytest.raises(ValueError, match="score_fn returned shape"):
        langevin_dynamics(lambda x: x.sum(1), torch.zeros(4, 2), 0.1, 2)
