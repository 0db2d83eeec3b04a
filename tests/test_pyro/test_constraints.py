"""Sites of every constraint family (real, positive, interval, simplex, ordered, LKJ
Cholesky) sampled by both kernels with their defaults, moments against known values
(``tests/test_common/constrained.py``); the NumPyro side is ``tests/test_numpyro/test_constraints.py``.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC

from ebmppl.pyro import FlowMCMC, NeuTraHMC
from test_common.constrained import DIRICHLET, failures


def model():
    pyro.sample("loc", dist.Normal(1.0, 2.0))
    pyro.sample("scale", dist.Gamma(3.0, 2.0))
    pyro.sample("frac", dist.Beta(2.0, 3.0))
    pyro.sample("probs", dist.Dirichlet(torch.as_tensor(DIRICHLET, dtype=torch.get_default_dtype())))
    ordered = dist.TransformedDistribution(
        dist.Normal(0.0, 1.0).expand([3]).to_event(1), [dist.transforms.OrderedTransform()]
    )
    pyro.sample("cuts", ordered)
    pyro.sample("corr", dist.LKJCholesky(3, 2.0))


@pytest.mark.parametrize("kernel", [FlowMCMC, NeuTraHMC])
def test_every_constraint_family_has_its_known_moments(kernel):
    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel(model, num_walkers=8), warmup_steps=300, num_samples=400, disable_progbar=True)
    mcmc.run()
    samples = {name: value.numpy() for name, value in mcmc.get_samples(group_by_chain=True).items()}
    assert samples["probs"].shape == (8, 400, 3) and samples["corr"].shape == (8, 400, 3, 3)
    np.testing.assert_allclose(samples["probs"].sum(-1), 1.0, atol=1e-5)
    assert (np.diff(samples["cuts"], axis=-1) > 0).all()
    np.testing.assert_allclose((samples["corr"] ** 2).sum(-1), 1.0, atol=1e-4)
    assert failures(samples) == []


def test_the_moment_check_rejects_draws_of_another_distribution():
    """The control: exact draws of the wrong Beta and Dirichlet are caught."""
    torch.manual_seed(1)
    shape = (8, 400)  # the kernels' test: 8 chains, 400 draws
    wrong = {
        "loc": dist.Normal(1.0, 2.0).sample(shape),
        "scale": dist.Gamma(3.0, 2.0).sample(shape),
        "frac": dist.Beta(3.0, 2.0).sample(shape),  # the parameters swapped
        "probs": dist.Dirichlet(torch.as_tensor(DIRICHLET[::-1].copy(), dtype=torch.float32)).sample(shape),
        "cuts": torch.cumsum(torch.exp(torch.randn(shape + (3,))), -1),
        "corr": dist.LKJCholesky(3, 2.0).sample(shape),
    }
    names = {row[0].split("#")[0] for row in failures({k: v.numpy() for k, v in wrong.items()})}
    # "corr" is caught too: torch's LKJCholesky.sample (torch 2.13) is off for dim 3, the sd of
    # L[2, 0] is 0.464 where the LKJ(2) marginal has 0.408 (NumPyro's sampler and both kernels,
    # which use log_prob only, give 0.408)
    assert {"frac", "probs", "cuts"} <= names and "loc" not in names and "scale" not in names
