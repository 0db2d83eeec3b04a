"""FlowMCMC (Pyro): exact identities, target conservation, determinism."""

import numpy as np
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from scipy import stats as scipy_stats

from ebmppl.datasets import GaussianMixture
from ebmppl.pyro.flows import default_flow
from ebmppl.schedule import WarmupSchedule
from .pyro_util import draws, run_flow_mcmc, stats


def std_normal_potential(params):
    return 0.5 * (params["x"] ** 2).sum()


def exact_flow():
    """A flow equal to N(0, I): the proposal is the target."""
    base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
    return dist.TransformedDistribution(base, [T.AffineTransform(torch.zeros(2), torch.ones(2))])


@pytest.mark.parametrize("num_particles, expected", [(2, 1.0), (8, 7 / 8)])
def test_global_move_rate_when_the_proposal_is_the_target(num_particles, expected):
    # IMH accepts every proposal; i-SIR's candidates all weigh the same, so
    # the current state is kept with probability exactly 1/N (the flow alone:
    # the default defensive mixture is not the target).
    torch.manual_seed(1)
    mcmc = run_flow_mcmc(potential_fn=std_normal_potential, flow=exact_flow(),
                         num_particles=num_particles, defensive=0.0, num_warmup=0, num_samples=20,
                         initial_params={"x": torch.randn(8, 2)})
    np.testing.assert_allclose(stats(mcmc)["global_accept_prob"], expected, atol=1e-5)


def test_defensive_proposal_is_the_mixture():
    # flow N(0, 1) and share 1/2: draws of 0.5 N(0, 1) + 0.5 N(0, 2²), and log m is that density;
    # the flow alone (share 0) would give variance 1
    from ebmppl.pyro.flows import defensive_proposal, identity_whitening

    torch.manual_seed(0)
    flow = dist.TransformedDistribution(dist.Normal(torch.zeros(1), torch.ones(1)).to_event(1),
                                        [T.AffineTransform(torch.zeros(1), torch.ones(1))])
    sample, log_prob = defensive_proposal(lambda: flow, identity_whitening(1), 0.5)
    with torch.no_grad():
        x, log_m = sample((40_000,))
        log_m_again = log_prob(x)
    x = x[:, 0].double().numpy()
    var_se = np.sqrt((np.mean(x**4) - np.mean(x**2) ** 2) / x.size)
    assert abs(np.mean(x**2) - 2.5) < 4 * var_se, np.mean(x**2)
    exact = np.logaddexp(np.log(0.5) + scipy_stats.norm.logpdf(x), np.log(0.5) + scipy_stats.norm.logpdf(x, 0, 2))
    np.testing.assert_allclose(log_m.double().numpy(), exact, atol=1e-4)
    np.testing.assert_allclose(log_m_again.double().numpy(), exact, atol=1e-4)


THREE_MODES = GaussianMixture(np.array([[-3.0, 0.0], [2.0, 2.0], [2.0, -3.0]]),
                              np.array([0.7, 1.0, 0.5]), np.array([0.5, 0.3, 0.2]))


def ks_pvalues(x, mixture):
    """KS p-value of each marginal of x (shape (n, 2)) against the mixture's marginal."""
    def cdf(d):
        return lambda t: sum(w * scipy_stats.norm.cdf(t, m[d], s) for m, s, w in
                             zip(mixture.means, mixture.scales, mixture.weights))
    return [scipy_stats.kstest(x[:, d], cdf(d)).pvalue for d in range(2)]


def test_target_is_conserved_with_a_poor_flow():
    # Walkers start at exact draws; an untrained flow proposes badly. Whatever the
    # flow, each kernel step must leave the target invariant.
    num_walkers = 4000
    start = torch.as_tensor(THREE_MODES.sample(num_walkers, np.random.default_rng(0)), dtype=torch.float32)
    torch.manual_seed(5)
    poor_flow = default_flow(2)
    mcmc = run_flow_mcmc(potential_fn=lambda p: THREE_MODES.energy(p["x"], torch), flow=poor_flow,
                         num_warmup=0, num_samples=10, step_size=0.5, initial_params={"x": start})
    x = draws(mcmc)
    assert stats(mcmc)["global_accept_prob"].mean() > 0.05  # the flow moved walkers
    for step in (0, 9):  # after 1 and after 10 kernel steps
        assert min(ks_pvalues(x[:, step], THREE_MODES)) > 1e-3
    # control: the same test has power against mode weights that are off
    wrong = GaussianMixture(THREE_MODES.means, THREE_MODES.scales, np.array([0.4, 0.35, 0.25]))
    assert min(ks_pvalues(wrong.sample(num_walkers, np.random.default_rng(1)), THREE_MODES)) < 1e-3


def test_same_seed_gives_identical_draws():
    kwargs = dict(potential_fn=lambda p: THREE_MODES.energy(p["x"], torch), num_warmup=60,
                  num_samples=20, initial_params={"x": torch.zeros(8, 2)},
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
    from ebmppl.pyro.adaptation.flow_mcmc import score_whitening

    cov = RIDGE_CORR * np.outer(RIDGE_SD, RIDGE_SD)
    fisher = np.linalg.inv(cov)
    w = score_whitening(torch.tensor(100.0 * fisher, dtype=torch.float32), 100)
    got = (w.matrix @ w.matrix.T).double().numpy()
    np.testing.assert_allclose(np.sqrt(np.diag(got)), RIDGE_SD, rtol=0.06)
    np.testing.assert_allclose(np.sqrt(np.diag(got))[2], RIDGE_SD[2], rtol=1e-3)
    assert got[0, 1] / np.sqrt(got[0, 0] * got[1, 1]) < -0.9999
    np.testing.assert_allclose((w.inverse @ w.matrix).numpy(), np.eye(3), atol=1e-4)  # dimensionless
    eigvals, eigvecs = np.linalg.eigh(fisher)
    eigvals = eigvals + 1e-6 * np.abs(eigvals).mean()
    control = (eigvecs / eigvals) @ eigvecs.T
    assert np.sqrt(control[0, 0]) < RIDGE_SD[0] / 300


def test_score_preconditioner_leaves_out_the_mean_score_of_the_way_in():
    """Walkers drawn from a Gaussian target but 20 sd off along its first axis (on their way in):
    the covariance of their scores is still the target's precision, and M M^T its covariance
    (within 10%, 4000 draws); the mean score, 20 times the spread, is left out. Control: counted
    in (score_total not given), it makes the first axis 10 times too narrow."""
    from ebmppl.pyro.adaptation.flow_mcmc import score_whitening

    sd = np.array([1.0, 2.0, 0.5])
    rng = np.random.default_rng(0)
    x = sd * rng.standard_normal((4000, 3)) + np.array([20.0, 0.0, 0.0])
    grad = torch.tensor(-x / sd**2, dtype=torch.float32)
    w = score_whitening(grad.T @ grad, 4000, grad.sum(0))
    np.testing.assert_allclose(np.sqrt(np.diag((w.matrix @ w.matrix.T).numpy())), sd, rtol=0.1)
    control = score_whitening(grad.T @ grad, 4000)
    assert float((control.matrix @ control.matrix.T)[0, 0].sqrt()) < sd[0] / 10
