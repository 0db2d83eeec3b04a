"""Helpers shared by the NumPyro tests."""

import jax
import numpy as np
from numpyro.infer import MCMC

from ebmppl.numpyro import FlowMCMC


def run_flow_mcmc(seed=0, *, init_params=None, num_chains=40, num_warmup=500, num_samples=500,
                  model_args=(), **kernel_kwargs):
    """Run FlowMCMC under NumPyro's MCMC; returns the MCMC object.

    Eight i-SIR candidates unless the test asks for another number: the tests check that the kernel
    is a valid MCMC (moments, weights, exact identities), true for any number, within the test
    budget; the default sixteen are measured by benchmarks/flow_mcmc.py --bar and
    benchmarks/standard_targets.py, and the conformance and constraint tests run the defaults."""
    kernel_kwargs.setdefault("num_particles", 8)
    mcmc = MCMC(FlowMCMC(**kernel_kwargs), num_warmup=num_warmup, num_samples=num_samples,
                num_chains=num_chains, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(seed), *model_args, init_params=init_params)
    return mcmc


def draws(mcmc, site=None):
    """Draws grouped by chain as numpy, shape (chains, draws, ...)."""
    samples = mcmc.get_samples(group_by_chain=True)
    return np.asarray(samples if site is None else samples[site])
