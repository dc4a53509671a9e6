"""The toy mixtures: exact densities and scores, sampling, the diffused mixtures, the named examples, the plots.

Statistical checks use fixed seeds and a tolerance of Z = 4.5 standard errors computed from the sample
size (a two-sided 4.5-sigma band fails by chance with probability ~7e-6).
"""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import animation  # noqa: E402
from scipy.stats import multivariate_normal  # noqa: E402

from sgm_helpers import VESDE, VPSDE, subVPSDE  # noqa: E402
from sgm_helpers.likelihood import exact_divergence  # noqa: E402
from sgm_helpers.plotting import animate_trajectories, plot_density_and_score, plot_trajectories  # noqa: E402
from sgm_helpers.toy import Gaussian, GaussianMixture, ring, single_gaussian, three_modes, two_modes  # noqa: E402

Z = 4.5


def gen(seed):
    return torch.Generator().manual_seed(seed)


def mixture_3d():
    """A 3-D mixture with diagonal, unequal variances: exercises the general case."""
    return GaussianMixture(means=[[0.0, 1.0, -1.0], [2.0, -1.0, 0.5]], stds=[[0.5, 1.0, 0.3], [1.2, 0.4, 0.8]],
                           weights=[0.35, 0.65])


# --- construction ------------------------------------------------------------------------------


def test_stds_forms_and_equal_default_weights():
    means = [[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]
    a = GaussianMixture(means, 0.5)
    b = GaussianMixture(means, [0.5, 0.5, 0.5])
    c = GaussianMixture(means, [[0.5, 0.5]] * 3)
    for m in (a, b, c):
        assert m.stds.shape == (3, 2) and torch.all(m.stds == 0.5)
        assert torch.allclose(m.weights, torch.full((3,), 1 / 3, dtype=torch.float64))
    assert (a.n_components, a.dim) == (3, 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(means=[0.0, 1.0], stds=1.0), "means must have shape"),
    (dict(means=[[0.0, 1.0]], stds=0.0), "stds must all be > 0"),
    (dict(means=[[0.0, 1.0]], stds=[-1.0]), "stds must all be > 0"),
    (dict(means=[[0.0, 1.0], [1.0, 0.0]], stds=[1.0, 1.0, 1.0]), "stds must be a number"),
    (dict(means=[[0.0, float("nan")]], stds=1.0), "means contains NaN"),
    (dict(means=[[0.0, 1.0], [1.0, 0.0]], stds=1.0, weights=[0.5, 0.4]), "must sum to 1"),
    (dict(means=[[0.0, 1.0], [1.0, 0.0]], stds=1.0, weights=[1.5, -0.5]), "weights must all be > 0"),
    (dict(means=[[0.0, 1.0], [1.0, 0.0]], stds=1.0, weights=[1.0]), "weights must have shape"),
    (dict(means="abc", stds=1.0), "means must be numbers"),
])
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)


def test_bad_points_and_sigma_raise():
    m = three_modes()
    with pytest.raises(ValueError, match="D = 2"):
        m.log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="floating-point"):
        m.score(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="sigma"):
        m.score(torch.zeros(4, 2), sigma=-1.0)
    with pytest.raises(ValueError, match="sigma"):
        m.score(torch.zeros(4, 2), sigma=torch.ones(3))
    with pytest.raises(ValueError, match="n must be an integer"):
        m.sample(0)
    with pytest.raises(ValueError, match="sde"):
        m.perturbed_score(25.0)


# --- exact densities and scores -----------------------------------------------------------------


def test_log_prob_matches_scipy_in_3d():
    m = mixture_3d()
    x = torch.randn(50, 3, generator=gen(0), dtype=torch.float64) * 2
    expected = np.log(sum(float(w) * multivariate_normal(mu.numpy(), np.diag(s.numpy() ** 2)).pdf(x.numpy())
                          for w, mu, s in zip(m.weights, m.means, m.stds)))
    assert np.allclose(m.log_prob(x).numpy(), expected, rtol=0, atol=1e-10)


def test_density_integrates_to_one_in_2d():
    m = three_modes()
    g = torch.linspace(-8, 10, 721, dtype=torch.float64)  # 8+ stds past every mode: the tails are < 1e-14
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    p = m.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
    assert abs(float(p.sum() * (g[1] - g[0]) ** 2) - 1.0) < 1e-6


@pytest.mark.parametrize("make", [three_modes, two_modes, mixture_3d])
def test_score_is_the_gradient_of_log_prob(make):
    m = make()
    x = torch.randn(40, m.dim, generator=gen(1), dtype=torch.float64) * 4
    sigma = torch.rand(40, generator=gen(2), dtype=torch.float64) * 3
    for s in (0.0, 0.7, sigma):
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(m.log_prob(xr, s).sum(), xr)
        assert torch.allclose(m.score(x, s), grad, rtol=1e-10, atol=1e-12)


def test_score_divergence_is_the_laplacian():
    m = mixture_3d()
    x = torch.randn(30, 3, generator=gen(3), dtype=torch.float64) * 3
    for s in (0.0, 1.3):
        _, div = exact_divergence(lambda x_, _t: m.score(x_, s), x, None)
        assert torch.allclose(m.score_divergence(x, s), div, rtol=1e-10, atol=1e-12)


def test_far_away_points_get_finite_scores_pointing_home():
    """logsumexp keeps far points finite in float32; a ratio of densities would give 0 / 0 = NaN.

    Far away the widest component dominates, so the score is that component's own score.
    """
    m = GaussianMixture(means=[[0.0, 0.0], [3.0, 0.0]], stds=[0.5, 1.0], weights=[0.5, 0.5])
    x = torch.tensor([[1e4, -2e4], [-300.0, 50.0], [1e3, 1e3]])
    assert (m.log_prob(x).exp() == 0).all()  # the densities themselves underflow
    score = m.score(x)
    assert torch.isfinite(score).all() and torch.isfinite(m.log_prob(x)).all()
    widest = -(x - torch.tensor([3.0, 0.0])) / 1.0
    assert torch.allclose(score, widest, rtol=1e-5)
    assert torch.equal(m.assign(x), torch.ones(3, dtype=torch.long))


def test_responsibilities_and_assign():
    m = two_modes()
    x = torch.tensor([[2.5, 2.5], [-2.5, -2.5], [0.0, 0.0]])
    r = m.responsibilities(x)
    assert torch.allclose(r.sum(1), torch.ones(3))
    assert torch.equal(m.assign(x), torch.tensor([0, 1, 0]))  # at the midpoint the heavier mode wins
    assert torch.allclose(r[2], m.weights.float())  # equidistant from equal-width modes: the prior weights


def test_results_follow_x_dtype_and_leading_dims():
    m = three_modes()
    x = torch.randn(4, 5, 2, generator=gen(4))
    assert m.score(x).shape == (4, 5, 2) and m.score(x).dtype == torch.float32
    assert m.log_prob(x).shape == (4, 5)
    assert m.log_prob(x.double()).dtype == torch.float64


# --- sampling ------------------------------------------------------------------------------------


def test_samples_have_the_mixture_moments_and_label_frequencies():
    m = three_modes()
    n = 20000
    x, labels = m.sample(n, gen(5), return_labels=True, dtype=torch.float64)
    assert x.shape == (n, 2) and labels.shape == (n,)
    freq = torch.bincount(labels, minlength=3).double() / n
    se = torch.sqrt(m.weights * (1 - m.weights) / n)
    assert ((freq - m.weights).abs() <= Z * se).all()
    # Mean: SE per coordinate sqrt(Var / n); covariance entry (i, j): SE ~ sqrt((C_ii C_jj + C_ij^2) / n),
    # exact for a Gaussian; the mixture's fourth moments are bounded by a few times that here, so Z SE with
    # the Gaussian SE doubled is conservative.
    cov = m.covariance()
    assert ((x.mean(0) - m.mean()).abs() <= Z * torch.sqrt(torch.diag(cov) / n)).all()
    se_cov = 2 * torch.sqrt((torch.outer(torch.diag(cov), torch.diag(cov)) + cov**2) / n)
    assert ((torch.cov(x.T) - cov).abs() <= Z * se_cov).all()
    # Each label's points come from its own component.
    for k in range(3):
        xk = x[labels == k]
        assert ((xk.mean(0) - m.means[k]).abs() <= Z * m.stds[k] / math.sqrt(len(xk))).all()


def test_sampling_is_reproducible():
    m = ring()
    assert torch.equal(m.sample(100, gen(6)), m.sample(100, gen(6)))
    assert not torch.equal(m.sample(100, gen(6)), m.sample(100, gen(7)))


# --- the mixture under noise, and the VE SDE's p_t -----------------------------------------------


def test_noised_and_perturbed_agree():
    m, sde = three_modes(), VESDE(25.0)
    x = torch.randn(16, 2, generator=gen(8), dtype=torch.float64) * 5
    t = torch.rand(16, generator=gen(9), dtype=torch.float64)
    std = sde.marginal_prob_std(t)
    assert torch.allclose(m.perturbed_score(sde)(x, t), m.score(x, std), rtol=1e-12)
    assert torch.allclose(m.perturbed_log_prob(sde)(x, t), m.log_prob(x, std), rtol=1e-12)
    # A scalar t and a function t -> std(t) work too; noised(s) is the same mixture as sigma = s.
    assert torch.allclose(m.perturbed_score(sde.marginal_prob_std)(x, 0.5),
                          m.noised(float(sde.marginal_prob_std(0.5))).score(x), rtol=1e-12)
    assert torch.allclose(m.noised(1.5).log_prob(x), m.log_prob(x, 1.5), rtol=1e-12)


def test_perturbed_score_obeys_tweedie():
    """The noised score is the score of x + sigma z (x from the mixture), checked through Tweedie's formula

        E[x0 | x_sigma] = x_sigma + sigma^2 grad log p_sigma(x_sigma),

    so the residual r = x0 - x_sigma - sigma^2 score(x_sigma) has mean 0 and is uncorrelated with x_sigma.
    A score for the wrong sigma (or of the clean mixture) fails both by many standard errors.
    """
    m, sigma, n = two_modes(), 1.5, 20000
    x0 = m.sample(n, gen(10), dtype=torch.float64)
    xs = x0 + sigma * torch.randn(n, 2, generator=gen(11), dtype=torch.float64)
    for s, ok in ((sigma, True), (1.2 * sigma, False)):
        r = x0 - xs - s**2 * m.score(xs, s)
        stats = torch.cat([r, r * (xs - xs.mean(0)), r.flip(1) * (xs - xs.mean(0))], 1)  # [n, 6] zero-mean under H0
        z = stats.mean(0) / (stats.std(0) / math.sqrt(n))
        assert bool((z.abs() <= Z).all()) == ok, z


# --- the named examples --------------------------------------------------------------------------


def test_named_examples():
    tm = two_modes()
    assert torch.allclose(tm.weights, torch.tensor([0.8, 0.2], dtype=torch.float64))
    assert torch.allclose(three_modes().mean(), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    r = ring(n_modes=6, radius=3.0, std=0.2)
    assert r.n_components == 6 and torch.allclose(r.means.norm(dim=1), torch.full((6,), 3.0, dtype=torch.float64))
    assert torch.allclose(r.mean(), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    sg = single_gaussian()
    x = torch.randn(10, 2, generator=gen(12), dtype=torch.float64)
    assert torch.allclose(sg.score(x), -(x - sg.means[0]) / sg.stds[0] ** 2)  # linear in x
    for make in (two_modes, three_modes, ring, single_gaussian):
        assert make.__doc__ and make().dim == 2
    with pytest.raises(ValueError, match="n_modes"):
        ring(n_modes=0)
    with pytest.raises(ValueError, match="radius"):
        ring(radius=-1.0)


# --- plots ---------------------------------------------------------------------------------------


def test_plot_density_and_score_labels_and_arrows():
    ax = plot_density_and_score(two_modes(), extent=(-5, 5, -5, 5), grid_size=40, n_arrows=7)
    assert ax.get_xlabel() and ax.get_ylabel() and "score" in ax.get_title()
    (quiver,) = [c for c in ax.collections if isinstance(c, matplotlib.quiver.Quiver)]
    u, v = quiver.U, quiver.V
    assert quiver.N == 49 and np.allclose(np.hypot(u, v), 1.0)  # normalised arrows: direction only
    # A plain log-density function without a score: contours only.
    ax2 = plot_density_and_score(lambda x: -0.5 * (x**2).sum(1), grid_size=30)
    assert not any(isinstance(c, matplotlib.quiver.Quiver) for c in ax2.collections)
    with pytest.raises(ValueError, match="extent"):
        plot_density_and_score(two_modes(), extent=(1, 0, 0, 1))
    plt.close("all")


def test_plot_and_animate_trajectories():
    traj = torch.cumsum(torch.randn(12, 5, 2, generator=gen(13)), 0)
    ax = plot_trajectories(traj, density=ring())
    assert ax.get_title() and ax.get_xlabel() and len(ax.lines) == 5
    anim = animate_trajectories(traj, times=torch.linspace(1, 0, 12), max_frames=3, tail=2)
    assert isinstance(anim, animation.FuncAnimation)
    html = anim.to_jshtml()  # what a notebook displays; must work headless (Agg)
    assert html.count("data:image/png;base64") == 3
    with pytest.raises(ValueError, match=r"\[T, B, 2\]"):
        plot_trajectories(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="times"):
        animate_trajectories(traj, times=[0.0, 1.0])
    plt.close("all")


# --- the exact noisy posterior of the components ---------------------------------------------------------


@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
def test_perturbed_log_posterior_is_bayes_rule_for_scores(sde_name):
    # log p_t(k | x) is normalized and equals the diffused mixture's responsibilities, and
    # grad log p_t(x) + grad log p_t(k | x) = grad log p_t(x | k): the score of component k alone, diffused.
    from sgm_helpers import make_sde

    sde = make_sde(sde_name)
    m = mixture_3d()
    x = torch.randn(40, 3, generator=gen(30), dtype=torch.float64) * 2
    t = torch.rand(40, generator=gen(31), dtype=torch.float64) * 0.9 + 0.05
    log_post = m.perturbed_log_posterior(sde)(x, t)
    assert log_post.shape == (40, 2)
    torch.testing.assert_close(torch.logsumexp(log_post, -1), torch.zeros(40, dtype=torch.float64))
    t0 = float(t[0])
    torch.testing.assert_close(log_post[:1].exp(), m.diffused(sde, t0).responsibilities(x[:1]))
    for k in range(2):
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(m.perturbed_log_posterior(sde)(xr, t)[:, k].sum(), xr)
        alone = GaussianMixture(m.means[k:k + 1], m.stds[k:k + 1]).perturbed_score(sde)
        torch.testing.assert_close(m.perturbed_score(sde)(x, t) + grad, alone(x, t))


# --- a Gaussian with a full covariance -----------------------------------------------------------


@pytest.mark.parametrize("sde", [VESDE(25.0), VPSDE(), subVPSDE()], ids=repr)
def test_full_covariance_gaussian_score_is_the_gradient_of_the_diffused_density(sde):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64)
    gaussian = Gaussian([1.0, -2.0, 0.5], a @ a.T + 0.1 * torch.eye(3, dtype=torch.float64))
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([1e-3, 0.1, 0.4, 0.7, 1.0], dtype=torch.float64)
    alpha, std = sde.mean_coeff(t), sde.marginal_prob_std(t)
    expected = torch.stack([torch.func.grad(lambda xi: torch.distributions.MultivariateNormal(
        alpha[i] * gaussian.mean, alpha[i] ** 2 * gaussian.cov + std[i] ** 2 * torch.eye(3, dtype=torch.float64)
    ).log_prob(xi))(x[i]) for i in range(5)])
    torch.testing.assert_close(gaussian.perturbed_score(sde)(x, t), expected, rtol=1e-7, atol=1e-9)
    images = x.float().reshape(5, 1, 1, 3)                      # any shape with D values per example
    assert gaussian.perturbed_score(sde)(images, t.float()).shape == images.shape


def test_full_covariance_gaussian_samples_and_conditional():
    rho = 0.9
    gaussian = Gaussian([0.0, 0.0], [[1.0, rho], [rho, 1.0]])
    mean, cov = gaussian.conditional(torch.tensor([True, False]), [1.0])
    torch.testing.assert_close(mean, torch.tensor([rho], dtype=torch.float64))          # rho x1
    torch.testing.assert_close(cov, torch.tensor([[1 - rho ** 2]], dtype=torch.float64))  # 1 - rho^2
    x = gaussian.sample(20_000, generator=torch.Generator().manual_seed(1))
    assert x.dtype == torch.float32 and x.shape == (20_000, 2)
    torch.testing.assert_close(torch.cov(x.T.double()), gaussian.cov, rtol=0, atol=0.03)


@pytest.mark.parametrize("mean, cov, match", [
    ([0.0, 0.0], [[1.0, 0.5], [0.4, 1.0]], "symmetric"),
    ([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]], "positive definite"),
    ([0.0, 0.0], [[1.0]], r"mean must be \[D\] and cov \[D, D\]"),
    ([0.0, float("nan")], [[1.0, 0.0], [0.0, 1.0]], "mean contains NaN"),
])
def test_a_bad_full_covariance_gaussian_is_a_value_error(mean, cov, match):
    with pytest.raises(ValueError, match=match):
        Gaussian(mean, cov)


def test_a_conditional_needs_known_and_unknown_coordinates():
    gaussian = Gaussian([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]])
    for known in ([True, True], [False, False], [True, False, True]):
        with pytest.raises(ValueError, match="known must be a"):
            gaussian.conditional(torch.tensor(known), [1.0])
