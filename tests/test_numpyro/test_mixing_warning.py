"""The end-of-warm-up check (NumPyro): walkers that have not mixed by then get a warning naming ``num_warmup``.

Target: two unit-variance modes at ±10 (50 nats of barrier), four walkers started in each.
Local moves alone cannot cross it: FlowMCMC with no flow fits and NeuTraHMC with no transport
fits must warn, naming the host's setting and the site. Default FlowMCMC crosses with its flow
and must not warn (the control for false alarms), nor must either kernel on a unimodal target
whose walkers start far out and arrive within the warm-up.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro.infer import MCMC

from ebmppl.numpyro import FlowMCMC, NeuTraHMC, Potential
from ebmppl.schedule import WarmupSchedule

NO_FITS = WarmupSchedule(fit_iterations=(), window=100)


def two_modes():
    def energy(x):
        return -jax.nn.logsumexp(jnp.stack([-0.5 * (x[..., 0] - 10) ** 2, -0.5 * (x[..., 0] + 10) ** 2]), 0)

    numpyro.sample("theta", Potential(energy, event_shape=(1,)))


def soft_abs():
    numpyro.sample("theta", Potential(lambda x: jnp.sqrt(1.0 + x[..., 0] ** 2), event_shape=(1,)))


SPLIT = {"theta": jnp.array([-10.0] * 4 + [10.0] * 4)[:, None]}
FAR = {"theta": 40.0 * jnp.arange(1, 9, dtype=jnp.float32)[:, None]}


def mixing_warnings(kernel, init_params, num_warmup=200):
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=50, num_chains=8, chain_method="vectorized",
                progress_bar=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.run(jax.random.PRNGKey(0), init_params=init_params)
    return mcmc, [str(w.message) for w in caught if "have not mixed" in str(w.message)]


@pytest.mark.parametrize("kernel", [FlowMCMC, NeuTraHMC])
def test_walkers_split_between_modes_get_a_warning_naming_num_warmup(kernel):
    mcmc, messages = mixing_warnings(kernel(two_modes, schedule=NO_FITS), SPLIT)
    assert len(messages) == 1, messages
    assert "num_warmup=400" in messages[0] and "'theta'" in messages[0] and kernel.__name__ in messages[0]
    # the draws agree: each walker stayed in its mode
    walker_means = np.asarray(mcmc.get_samples(group_by_chain=True)["theta"]).mean(1).ravel()
    assert np.allclose(np.abs(walker_means), 10, atol=1)


def test_flow_mcmc_with_its_flow_mixes_the_modes_and_does_not_warn():
    mcmc, messages = mixing_warnings(FlowMCMC(two_modes), SPLIT)
    assert messages == []
    theta = np.asarray(mcmc.get_samples()["theta"]).ravel()
    assert 0.3 < np.mean(theta > 0) < 0.7  # both modes in every walker's draws, weights 1/2


@pytest.mark.parametrize("kernel", [FlowMCMC, NeuTraHMC])
def test_walkers_that_arrive_during_warmup_get_no_warning(kernel):
    mcmc, messages = mixing_warnings(kernel(soft_abs), FAR)
    assert messages == []


def test_the_warning_is_given_once_at_the_end_of_warmup_only():
    kernel = FlowMCMC(two_modes, schedule=NO_FITS)
    mcmc = MCMC(kernel, num_warmup=200, num_samples=50, num_chains=8, chain_method="vectorized", progress_bar=False)
    with pytest.warns(UserWarning, match=r"split R-hat between walkers over the last 100 warm-up iterations"):
        mcmc.warmup(jax.random.PRNGKey(0), init_params=SPLIT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the draws after warm-up are not checked again
        mcmc.run(mcmc.post_warmup_state.rng_key)
    assert mcmc.get_samples()["theta"].shape == (8 * 50, 1)
