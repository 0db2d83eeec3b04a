"""Sites of every constraint family (real, positive, interval, simplex, ordered, LKJ
Cholesky) sampled by both kernels with their defaults, moments against known values
(``tests/test_common/constrained.py``); the Pyro side is ``tests/test_pyro/test_constraints.py``.

NeuTraHMC once crashed at ``init`` on any constrained site (it substituted unconstrained
values into the model); these runs are its regression tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

from ebmppl.numpyro import FlowMCMC, NeuTraHMC
from test_common.constrained import DIRICHLET, failures


def model():
    numpyro.sample("loc", dist.Normal(1.0, 2.0))
    numpyro.sample("scale", dist.Gamma(3.0, 2.0))
    numpyro.sample("frac", dist.Beta(2.0, 3.0))
    numpyro.sample("probs", dist.Dirichlet(jnp.asarray(DIRICHLET)))
    ordered = dist.TransformedDistribution(
        dist.Normal(0.0, 1.0).expand([3]).to_event(1), dist.transforms.OrderedTransform()
    )
    numpyro.sample("cuts", ordered)
    numpyro.sample("corr", dist.LKJCholesky(3, 2.0))


@pytest.mark.parametrize("kernel", [FlowMCMC, NeuTraHMC])
def test_every_constraint_family_has_its_known_moments(kernel):
    mcmc = MCMC(kernel(model), num_warmup=300, num_samples=400, num_chains=8,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0))
    samples = mcmc.get_samples(group_by_chain=True)
    assert samples["probs"].shape == (8, 400, 3) and samples["corr"].shape == (8, 400, 3, 3)
    np.testing.assert_allclose(np.asarray(samples["probs"]).sum(-1), 1.0, atol=1e-5)
    assert (np.diff(np.asarray(samples["cuts"]), axis=-1) > 0).all()
    corr = np.asarray(samples["corr"])
    np.testing.assert_allclose((corr**2).sum(-1), 1.0, atol=1e-4)  # unit rows: a correlation matrix
    assert failures(samples) == []


def test_the_moment_check_rejects_draws_of_another_distribution():
    """The control: exact draws of the wrong Beta and Dirichlet are caught."""
    keys = jax.random.split(jax.random.key(1), 6)
    shape = (8, 400)  # the kernels' test: 8 chains, 400 draws
    wrong = {
        "loc": dist.Normal(1.0, 2.0).sample(keys[0], shape),
        "scale": dist.Gamma(3.0, 2.0).sample(keys[1], shape),
        "frac": dist.Beta(3.0, 2.0).sample(keys[2], shape),  # the parameters swapped
        "probs": dist.Dirichlet(jnp.asarray(DIRICHLET[::-1].copy())).sample(keys[3], shape),
        "cuts": jnp.cumsum(jnp.exp(dist.Normal(0.0, 1.0).sample(keys[4], shape + (3,))), -1),
        "corr": dist.LKJCholesky(3, 2.0).sample(keys[5], shape),
    }
    names = {row[0].split("#")[0] for row in failures(wrong)}
    assert {"frac", "probs", "cuts"} <= names and "corr" not in names and "loc" not in names and "scale" not in names
