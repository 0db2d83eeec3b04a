"""log_evidence (NumPyro): the evidence of sampled models against closed forms."""

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS

from ebmppl.numpyro import FlowMCMC, NeuTraHMC, Potential, log_evidence
from tests.test_common.evidence import A0, B0, K0, LOG_C, M0, MEANS, WEIGHTS, Y, normal_gamma_log_evidence


def normal_gamma(y):
    tau = numpyro.sample("tau", dist.Gamma(A0, B0))  # positive: sampled as log tau
    mu = numpyro.sample("mu", dist.Normal(M0, 1 / jnp.sqrt(K0 * tau)))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1 / jnp.sqrt(tau)), obs=y)


def energy(x):
    log_mixture = jax.scipy.special.logsumexp(
        jnp.log(WEIGHTS) - 0.5 * jnp.sum((x[..., None, :] - MEANS) ** 2, -1), -1) - jnp.log(2 * jnp.pi)
    return -log_mixture + LOG_C


def mixture():
    numpyro.sample("x", Potential(energy, event_shape=(2,)))


def finished_run(kernel, *args, num_warmup=300):
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=100, num_chains=8, chain_method="vectorized",
                progress_bar=False)
    mcmc.run(jax.random.key(0), *args)
    return mcmc


@pytest.mark.parametrize("kernel", [FlowMCMC, NeuTraHMC])
def test_normal_gamma_evidence_within_three_standard_errors(kernel):
    truth = normal_gamma_log_evidence()
    estimate = log_evidence(jax.random.key(1), finished_run(kernel(normal_gamma), jnp.asarray(Y)))
    assert abs(estimate.log_z - truth) < 3 * estimate.stderr, (estimate, truth)
    assert estimate.ess > 0.5 * estimate.num_samples
    # a control: a constant off by 0.05 (or a Jacobian of log tau left out) would be caught
    assert abs(estimate.log_z - (truth + 0.05)) > 3 * estimate.stderr
    assert abs(estimate.log_z - (truth - 0.05)) > 3 * estimate.stderr


def test_mixture_potential_evidence_is_minus_its_constant():
    estimate = log_evidence(jax.random.key(2), finished_run(FlowMCMC(mixture)), 20_000)
    assert abs(estimate.log_z - (-LOG_C)) < 3 * estimate.stderr, estimate
    assert abs(estimate.log_z - (-LOG_C + 0.05)) > 3 * estimate.stderr


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="FlowMCMC or NeuTraHMC"):
        log_evidence(jax.random.key(0), MCMC(NUTS(mixture), num_warmup=10, num_samples=10))
    with pytest.raises(ValueError, match="no finished run"):
        log_evidence(jax.random.key(0), MCMC(FlowMCMC(mixture), num_warmup=10, num_samples=10, num_chains=4,
                                             chain_method="vectorized"))
    unfitted = finished_run(FlowMCMC(mixture), num_warmup=0)
    with pytest.raises(ValueError, match="never fitted"):
        log_evidence(jax.random.key(0), unfitted)
    with pytest.raises(ValueError, match="defensive"):
        log_evidence(jax.random.key(0), unfitted, defensive=1.0)
