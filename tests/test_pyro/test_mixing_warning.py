"""The end-of-warm-up check (Pyro): walkers that have not mixed by then get a warning naming ``warmup_steps``.

Target: two unit-variance modes at ±10 (50 nats of barrier), four walkers started in each.
Local moves alone cannot cross it: FlowMCMC with no flow fits and NeuTraHMC with no transport
fits must warn, naming the host's setting and the site. Default FlowMCMC crosses with its flow
and must not warn (the control for false alarms), nor must either kernel on a unimodal target
whose walkers start far out and arrive within the warm-up.
"""

import warnings

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import MCMC

from ebmppl.pyro import FlowMCMC, NeuTraHMC, Potential
from ebmppl.schedule import WarmupSchedule

NO_FITS = WarmupSchedule(fit_iterations=(), window=100)


def two_modes():
    def energy(x):
        return -torch.logsumexp(torch.stack([-0.5 * (x[..., 0] - 10) ** 2, -0.5 * (x[..., 0] + 10) ** 2]), 0)

    pyro.sample("theta", Potential(energy, event_shape=(1,)))


def soft_abs():
    pyro.sample("theta", Potential(lambda x: torch.sqrt(1.0 + x[..., 0] ** 2), event_shape=(1,)))


def split():
    return {"theta": torch.tensor([-10.0] * 4 + [10.0] * 4)[:, None]}


def far():
    return {"theta": 40.0 * torch.arange(1, 9, dtype=torch.float32)[:, None]}


def mixing_warnings(kernel, initial_params, warmup_steps=200, num_samples=50):
    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel, warmup_steps=warmup_steps, num_samples=num_samples, initial_params=initial_params,
                disable_progbar=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.run()
    return mcmc, [str(w.message) for w in caught if "have not mixed" in str(w.message)]


@pytest.mark.parametrize("kernel", [FlowMCMC, NeuTraHMC])
def test_walkers_split_between_modes_get_a_warning_naming_warmup_steps(kernel):
    mcmc, messages = mixing_warnings(kernel(two_modes, schedule=NO_FITS), split())
    assert len(messages) == 1, messages
    assert "warmup_steps=400" in messages[0] and "'theta'" in messages[0] and kernel.__name__ in messages[0]
    # the draws agree: each walker stayed in its mode
    walker_means = mcmc.get_samples(group_by_chain=True)["theta"].numpy().mean(1).ravel()
    assert np.allclose(np.abs(walker_means), 10, atol=1)


def test_flow_mcmc_with_its_flow_mixes_the_modes_and_does_not_warn():
    mcmc, messages = mixing_warnings(FlowMCMC(two_modes), split())
    assert messages == []
    theta = mcmc.get_samples()["theta"].numpy().ravel()
    assert 0.3 < np.mean(theta > 0) < 0.7  # both modes in every walker's draws, weights 1/2


@pytest.mark.parametrize("kernel", [FlowMCMC, NeuTraHMC])
def test_walkers_that_arrive_during_warmup_get_no_warning(kernel):
    mcmc, messages = mixing_warnings(kernel(soft_abs), far())
    assert messages == []


def test_the_warning_is_given_once_at_the_end_of_warmup_only():
    # Pyro's MCMC has no separate warm-up: a run of 200 + 300 iterations warns once, about warm-up
    mcmc, messages = mixing_warnings(FlowMCMC(two_modes, schedule=NO_FITS), split(), num_samples=300)
    assert len(messages) == 1 and "split R-hat between walkers over the last 100 warm-up iterations" in messages[0]
    assert mcmc.get_samples()["theta"].shape == (8 * 300, 1)
