"""Potential: an unnormalized NumPyro distribution."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS

from ebmppl.numpyro import Potential


def quadratic(x):
    return 0.5 * jnp.sum(x**2, -1)


def test_log_prob_is_minus_energy_plus_base():
    x = jnp.array([[0.5, -1.0], [2.0, 0.0]])
    np.testing.assert_allclose(Potential(quadratic, event_shape=(2,)).log_prob(x), -quadratic(x))
    base = dist.Normal(1.0, 2.0).expand([2]).to_event(1)
    tilted = Potential(quadratic, event_shape=(2,), base=base)
    np.testing.assert_allclose(tilted.log_prob(x), -quadratic(x) + base.log_prob(x), rtol=1e-6)


def test_base_with_other_event_shape_is_refused():
    with pytest.raises(ValueError, match=r"event_shape \(3,\).*event_shape \(2,\)"):
        Potential(quadratic, event_shape=(2,), base=dist.Normal(0, 1).expand([3]).to_event(1))


def test_sampling_directly_says_to_use_mcmc():
    with pytest.raises(NotImplementedError, match="FlowMCMC or NUTS"):
        Potential(quadratic, event_shape=(2,)).sample(jax.random.key(0))


def test_nuts_samples_a_potential_site_with_positive_support():
    # exp(-x) on x > 0 is Exponential(1): mean 1, within 3 MCSE.
    def model():
        numpyro.sample("x", Potential(lambda x: x, event_shape=(), support=dist.constraints.positive))

    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=1000, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(0))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    assert x.min() > 0
    assert abs(x.mean() - 1.0) < 3 * float(az.mcse(x, method="mean"))


def test_observed_site_in_a_plate():
    data = jnp.arange(6.0).reshape(3, 2)

    def model():
        with numpyro.plate("data", 3):
            numpyro.sample("obs", Potential(quadratic, event_shape=(2,)), obs=data)

    trace = numpyro.handlers.trace(model).get_trace()
    np.testing.assert_allclose(trace["obs"]["fn"].log_prob(data), -quadratic(data))


@pytest.mark.slow  # a statistical run of ~1 minute: make test-slow (both backends alike)
def test_flow_backbone_potential_is_sampled_by_flow_mcmc():
    # p ∝ exp(-E) q with E = ½ x₀²/4: FlowMCMC in data space against exact draws of q reweighted by exp(-E)
    import equinox as eqx

    from ebmppl.numpyro.flows import neutra_flow
    from .npy_util import draws, run_flow_mcmc

    flow = neutra_flow(jax.random.key(0), 2)
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [leaf + 0.2 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    flow = eqx.combine(jax.tree.unflatten(treedef, leaves), static)
    energy = lambda x: x[..., 0] ** 2 / 8  # noqa: E731
    potential = Potential(energy, event_shape=(2,), base=flow)
    assert potential.backbone is flow

    def model():
        numpyro.sample("x", potential)

    x = draws(run_flow_mcmc(0, model=model, num_chains=20, num_warmup=300, num_samples=300), "x")
    exact = np.asarray(flow.sample(jax.random.key(2), (400_000,)))
    weights = np.exp(-np.asarray(energy(exact)))
    truth = (weights[:, None] * exact).sum(0) / weights.sum()
    truth_se = np.sqrt((weights[:, None] ** 2 * (exact - truth) ** 2).sum(0)) / weights.sum()  # self-normalised IS
    for i in range(2):
        mcse = float(az.mcse(x[..., i], method="mean"))
        z = (x[..., i].mean() - truth[i]) / np.hypot(mcse, truth_se[i])
        assert abs(z) < 3, (i, x[..., i].mean(), truth[i], mcse, truth_se[i])


def test_flow_backbone_potential_passes_through_jit_and_tree_maps():
    """The flow base's arrays are pytree leaves: jit takes the potential, a tree map reaches the flow."""
    import equinox as eqx

    from ebmppl.numpyro.flows import neutra_flow

    flow = neutra_flow(jax.random.key(0), 2)
    params, static = eqx.partition(flow, eqx.is_inexact_array)  # perturbed: not the identity it starts as
    params = jax.tree.map(lambda leaf: leaf + 0.2 * jnp.ones_like(leaf), params)
    flow = eqx.combine(params, static)
    potential = Potential(lambda x: jnp.sum(x**2, -1), event_shape=(2,), base=flow)
    x = jnp.array([[0.5, 0.0], [2.0, 1.0]])
    expected = potential.log_prob(x)
    np.testing.assert_allclose(jax.jit(lambda p, y: p.log_prob(y))(potential, x), expected, rtol=1e-6)
    copy = jax.tree.map(lambda leaf: leaf, potential)
    np.testing.assert_array_equal(copy.log_prob(x), expected)
    zeroed = jax.tree.map(jnp.zeros_like, potential)  # the flow's loc follows the map
    assert not np.allclose(zeroed.log_prob(x), expected)
