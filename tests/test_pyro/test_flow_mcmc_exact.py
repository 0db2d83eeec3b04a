"""FlowMCMC (Pyro): exact identities, target conservation, determinism."""

import numpy as np
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from scipy import stats as scipy_stats

from ebmppl.datasets import GaussianMixture
from ebmppl.pyro.flows import default_flow
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
    # the current state is kept with probability exactly 1/N.
    torch.manual_seed(1)
    mcmc = run_flow_mcmc(potential_fn=std_normal_potential, flow=exact_flow(),
                         num_particles=num_particles, num_warmup=0, num_samples=20,
                         initial_params={"x": torch.randn(8, 2)})
    np.testing.assert_allclose(stats(mcmc)["global_accept_prob"], expected, atol=1e-5)


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
                  num_samples=20, initial_params={"x": torch.zeros(8, 2)})
    first, second = draws(run_flow_mcmc(3, **kwargs)), draws(run_flow_mcmc(3, **kwargs))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, draws(run_flow_mcmc(4, **kwargs)))
