"""Helpers shared by the Pyro tests."""

import pyro
from pyro.infer import MCMC

from ebmppl.pyro import FlowMCMC


def run_flow_mcmc(seed=0, *, initial_params=None, num_warmup=500, num_samples=500, model_args=(),
                  **kernel_kwargs):
    """Run FlowMCMC under Pyro's MCMC (one Pyro chain of walkers); returns the MCMC object.

    Eight i-SIR candidates unless the test asks for another number: the tests check that the kernel
    is a valid MCMC (moments, weights, exact identities), true for any number, within the test
    budget; the default sixteen are measured by benchmarks/flow_mcmc.py --bar and
    benchmarks/standard_targets.py, and the constraint tests, the doctests and the tutorials run the
    defaults (test_conformance.py weighs eight too)."""
    kernel_kwargs.setdefault("num_particles", 8)
    pyro.set_rng_seed(seed)
    mcmc = MCMC(FlowMCMC(**kernel_kwargs), num_samples=num_samples, warmup_steps=num_warmup,
                initial_params=initial_params, disable_progbar=True)
    mcmc.run(*model_args)
    return mcmc


def draws(mcmc, site="x"):
    """Draws grouped by walker as numpy, shape (walkers, draws, ...)."""
    return mcmc.get_samples(group_by_chain=True)[site].numpy()


def stats(mcmc):
    """The kernel's per-draw statistics, each of shape (walkers, draws)."""
    return {name: value.numpy() for name, value in mcmc.kernel.sample_stats[-1].items()}
