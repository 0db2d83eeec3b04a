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
from .npy_util import draws, run_flow_mcmc


def std_normal_potential(x):
    return 0.5 * jnp.sum(x**2)


def exact_flow():
    """A flow equal to N(0, I): the proposal is the target."""
    return Transformed(StandardNormal((2,)), Affine(jnp.zeros(2), jnp.ones(2)))


@pytest.mark.parametrize("num_particles, expected", [(2, 1.0), (8, 7 / 8)])
def test_global_move_rate_when_the_proposal_is_the_target(num_particles, expected):
    # IMH accepts every proposal; i-SIR's candidates all weigh the same, so
    # the current state is kept with probability exactly 1/N.
    mcmc = run_flow_mcmc(potential_fn=std_normal_potential, flow=exact_flow(),
                         num_particles=num_particles, num_chains=8, num_warmup=0, num_samples=20,
                         init_params=jax.random.normal(jax.random.key(1), (8, 2)))
    rate = np.asarray(mcmc.get_extra_fields()["global_accept_prob"])
    np.testing.assert_allclose(rate, expected, atol=1e-5)


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
                  num_samples=20, init_params=jnp.zeros((8, 2)))
    first, second = draws(run_flow_mcmc(3, **kwargs)), draws(run_flow_mcmc(3, **kwargs))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, draws(run_flow_mcmc(4, **kwargs)))
