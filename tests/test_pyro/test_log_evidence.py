"""log_evidence (Pyro): the evidence of sampled models against closed forms."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS

from ebmppl.pyro import FlowMCMC, NeuTraHMC, Potential, log_evidence
from tests.test_common.evidence import A0, B0, K0, LOG_C, M0, MEANS, WEIGHTS, Y, normal_gamma_log_evidence


def normal_gamma(y):
    tau = pyro.sample("tau", dist.Gamma(A0, B0))  # positive: sampled as log tau
    mu = pyro.sample("mu", dist.Normal(M0, 1 / torch.sqrt(K0 * tau)))
    with pyro.plate("data", y.shape[0], dim=-1):
        pyro.sample("y", dist.Normal(mu, 1 / torch.sqrt(tau)), obs=y)


def energy(x):
    means, weights = torch.as_tensor(MEANS, dtype=x.dtype), torch.as_tensor(WEIGHTS, dtype=x.dtype)
    log_mixture = torch.logsumexp(
        weights.log() - 0.5 * ((x[..., None, :] - means) ** 2).sum(-1), -1) - math.log(2 * math.pi)
    return -log_mixture + LOG_C


def mixture():
    pyro.sample("x", Potential(energy, event_shape=(2,)))


def finished_run(kernel, *args, warmup_steps=300):
    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel, warmup_steps=warmup_steps, num_samples=100, disable_progbar=True)
    mcmc.run(*args)
    return mcmc


@pytest.mark.parametrize("kernel", [FlowMCMC, NeuTraHMC])
def test_normal_gamma_evidence_within_three_standard_errors(kernel):
    truth = normal_gamma_log_evidence()
    mcmc = finished_run(kernel(normal_gamma, num_walkers=8), torch.tensor(Y, dtype=torch.float32))
    estimate = log_evidence(mcmc)
    assert abs(estimate.log_z - truth) < 3 * estimate.stderr, (estimate, truth)
    assert estimate.ess > 0.5 * estimate.num_samples
    # a control: a constant off by 0.05 (or a Jacobian of log tau left out) would be caught
    assert abs(estimate.log_z - (truth + 0.05)) > 3 * estimate.stderr
    assert abs(estimate.log_z - (truth - 0.05)) > 3 * estimate.stderr


def test_mixture_potential_evidence_is_minus_its_constant():
    estimate = log_evidence(finished_run(FlowMCMC(mixture, num_walkers=8)), 20_000)
    assert abs(estimate.log_z - (-LOG_C)) < 3 * estimate.stderr, estimate
    assert abs(estimate.log_z - (-LOG_C + 0.05)) > 3 * estimate.stderr


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="FlowMCMC or NeuTraHMC"):
        log_evidence(MCMC(NUTS(mixture), warmup_steps=10, num_samples=10))
    with pytest.raises(ValueError, match="no finished run"):
        log_evidence(MCMC(FlowMCMC(mixture, num_walkers=4), warmup_steps=10, num_samples=10))
    unfitted = finished_run(FlowMCMC(mixture, num_walkers=4), warmup_steps=0)
    with pytest.raises(ValueError, match="never fitted"):
        log_evidence(unfitted)
    with pytest.raises(ValueError, match="defensive"):
        log_evidence(unfitted, defensive=1.0)
