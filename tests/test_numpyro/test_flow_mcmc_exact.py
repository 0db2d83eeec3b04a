"""FlowMCMC: exact identities, target conservation, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flowjax.bijections import Affine
from flowjax.distributions import StandardNormal, Transformed
from scipy import stats

from ebmppl.datasets import GaussianMixture
from ebmppl.numpyro.flows import default_flow
from ebmppl.schedule import WarmupSchedule
from .npy_util import draws, run_flow_mcmc


def std_normal_potential(x):
    return 0.5 * jnp.sum(x**2)


def exact_flow():
    """A flow equal to N(0, I): the proposal is the target."""
    return Transformed(StandardNormal((2,)), Affine(jnp.zeros(2), jnp.ones(2)))


@pytest.mark.parametrize("num_particles, expected", [(2, 1.0), (8, 7 / 8)])
def test_global_move_rate_when_the_proposal_is_the_target(num_particles, expected):
    # IMH accepts every proposal; i-SIR's candidates all weigh the same, so
    # the current state is kept with probability exactly 1/N (the flow alone:
    # the default defensive mixture is not the target).
    mcmc = run_flow_mcmc(potential_fn=std_normal_potential, flow=exact_flow(),
                         num_particles=num_particles, defensive=0.0, num_chains=8, num_warmup=0, num_samples=20,
                         init_params=jax.random.normal(jax.random.key(1), (8, 2)))
    rate = np.asarray(mcmc.get_extra_fields()["global_accept_prob"])
    np.testing.assert_allclose(rate, expected, atol=1e-5)


def test_defensive_proposal_is_the_mixture():
    # flow N(0, 1) and share 1/2: draws of 0.5 N(0, 1) + 0.5 N(0, 2²), and log m is that density;
    # the flow alone (share 0) would give variance 1
    from ebmppl.numpyro.flows import defensive_proposal, identity_whitening

    flow = Transformed(StandardNormal((1,)), Affine(jnp.zeros(1), jnp.ones(1)))
    sample, log_prob = defensive_proposal(flow, identity_whitening(1), 0.5)
    x, log_m = sample(jax.random.key(0), (40_000,))
    x = np.asarray(x[:, 0], np.float64)
    var_se = np.sqrt((np.mean(x**4) - np.mean(x**2) ** 2) / x.size)
    assert abs(np.mean(x**2) - 2.5) < 4 * var_se, np.mean(x**2)
    exact = np.logaddexp(np.log(0.5) + stats.norm.logpdf(x), np.log(0.5) + stats.norm.logpdf(x, 0, 2))
    np.testing.assert_allclose(np.asarray(log_m), exact, atol=1e-4)
    np.testing.assert_allclose(np.asarray(log_prob(jnp.asarray(x[:, None], jnp.float32))), exact, atol=1e-4)


THREE_MODES = GaussianMixture(np.array([[-3.0, 0.0], [2.0, 2.0], [2.0, -3.0]]),
                              np.array([0.7, 1.0, 0.5]), np.array([0.5, 0.3, 0.2]))


def ks_pvalues(x, mixture):
    """KS p-value of each marginal of x (shape (n, 2)) against the mixture's marginal."""
    def cdf(d):
        return lambda t: sum(w * stats.norm.cdf(t, m[d], s) for m, s, w in
                             zip(mixture.means, mixture.scales, mixture.weights))
    return [stats.kstest(x[:, d], cdf(d)).pvalue for d in range(2)]


def test_target_is_conserved_with_a_poor_flow():
    # Chains start at exact draws; an untrained flow proposes badly. Whatever the
    # flow, each kernel step must leave the target invariant.
    num_chains = 4000
    start = THREE_MODES.sample(num_chains, np.random.default_rng(0))
    poor_flow = default_flow(jax.random.key(5), 2)
    mcmc = run_flow_mcmc(potential_fn=lambda x: THREE_MODES.energy(x, jnp), flow=poor_flow,
                         num_chains=num_chains, num_warmup=0, num_samples=10, step_size=0.5,
                         init_params=jnp.asarray(start, jnp.float32))
    x = draws(mcmc)
    assert float(mcmc.get_extra_fields()["global_accept_prob"].mean()) > 0.05  # the flow moved chains
    for step in (0, 9):  # after 1 and after 10 kernel steps
        assert min(ks_pvalues(x[:, step], THREE_MODES)) > 1e-3
    # control: the same test has power against mode weights that are off
    wrong = GaussianMixture(THREE_MODES.means, THREE_MODES.scales, np.array([0.4, 0.35, 0.25]))
    assert min(ks_pvalues(wrong.sample(num_chains, np.random.default_rng(1)), THREE_MODES)) < 1e-3


def test_same_key_gives_identical_draws():
    kwargs = dict(potential_fn=lambda x: THREE_MODES.energy(x, jnp), num_chains=8, num_warmup=60,
                  num_samples=20, init_params=jnp.zeros((8, 2)),
                  schedule=WarmupSchedule.default(60).replace(fit_steps=30))  # fits, kept short
    first, second = draws(run_flow_mcmc(3, **kwargs)), draws(run_flow_mcmc(3, **kwargs))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, draws(run_flow_mcmc(4, **kwargs)))


# posteriordb's kilpisjarvi: intercept and slope of a trend over years near 2000, correlation -0.99999
RIDGE_SD = np.array([30.0, 0.0075, 0.1])
RIDGE_CORR = np.array([[1.0, -0.99999, 0.0], [-0.99999, 1.0, 0.0], [0.0, 0.0, 1.0]])


def test_score_preconditioner_resolves_a_ridge_whose_scales_span_four_thousand():
    """For a Gaussian target the Fisher information of the score is the inverse covariance, so
    score_whitening's M M^T is the covariance, in float32, where the eigenvalues of F span 1e13:
    within 6% (the jitter, 1e-6 of the mean eigenvalue of F scaled to a unit diagonal, whose ridge
    eigenvalue is 1e-5, narrows the ridge by 4.7%) and 0.1% across it. Control: the eigendecomposition
    of F itself, jittered by 1e-6 of its mean eigenvalue, makes the ridge's width 300 times too small."""
    from ebmppl.numpyro.adaptation.flow_mcmc import score_whitening

    cov = RIDGE_CORR * np.outer(RIDGE_SD, RIDGE_SD)
    fisher = np.linalg.inv(cov)
    w = score_whitening(jnp.asarray(100.0 * fisher, jnp.float32), jnp.asarray(100.0))
    got = np.asarray(w.matrix @ w.matrix.T, np.float64)
    np.testing.assert_allclose(np.sqrt(np.diag(got)), RIDGE_SD, rtol=0.06)
    np.testing.assert_allclose(np.sqrt(np.diag(got))[2], RIDGE_SD[2], rtol=1e-3)
    assert got[0, 1] / np.sqrt(got[0, 0] * got[1, 1]) < -0.9999
    np.testing.assert_allclose(np.asarray(w.inverse @ w.matrix), np.eye(3), atol=1e-4)  # dimensionless
    eigvals, eigvecs = np.linalg.eigh(fisher)
    eigvals = eigvals + 1e-6 * np.abs(eigvals).mean()
    control = (eigvecs / eigvals) @ eigvecs.T
    assert np.sqrt(control[0, 0]) < RIDGE_SD[0] / 300


def test_score_preconditioner_leaves_out_the_mean_score_of_the_way_in():
    """Walkers drawn from a Gaussian target but 20 sd off along its first axis (on their way in):
    the covariance of their scores is still the target's precision, and M M^T its covariance
    (within 10%, 4000 draws); the mean score, 20 times the spread, is left out. Control: counted
    in (score_total not given), it makes the first axis 10 times too narrow."""
    from ebmppl.numpyro.adaptation.flow_mcmc import score_whitening

    sd = np.array([1.0, 2.0, 0.5])
    rng = np.random.default_rng(0)
    x = sd * rng.standard_normal((4000, 3)) + np.array([20.0, 0.0, 0.0])
    grad = jnp.asarray(-x / sd**2, jnp.float32)
    w = score_whitening(grad.T @ grad, jnp.asarray(4000.0), grad.sum(0))
    np.testing.assert_allclose(np.sqrt(np.diag(np.asarray(w.matrix @ w.matrix.T))), sd, rtol=0.1)
    control = score_whitening(grad.T @ grad, jnp.asarray(4000.0))
    assert np.sqrt(np.asarray(control.matrix @ control.matrix.T)[0, 0]) < sd[0] / 10
