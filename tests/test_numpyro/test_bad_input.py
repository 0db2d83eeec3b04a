"""Bad input gets a clear error, never silent corruption."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from flowjax.distributions import StandardNormal
from flowjax.flows import block_neural_autoregressive_flow
from numpyro.infer import MCMC

from ebmppl.numpyro import FlowMCMC, Potential
from .npy_util import draws, run_flow_mcmc


def test_energy_of_wrong_output_shape_names_both_shapes():
    bad = Potential(lambda x: jnp.sum(x**2, -1, keepdims=True), event_shape=(2,))
    with pytest.raises(ValueError, match=r"\(5, 1\).*\(5, 2\).*\(5,\)"):
        bad.log_prob(jnp.zeros((5, 2)))

    def model():
        numpyro.sample("x", bad)

    with pytest.raises(ValueError, match=r"energy returned shape \(1,\)"):
        run_flow_mcmc(model=model, num_chains=4, num_warmup=10, num_samples=10)


def test_nan_region_is_never_entered_and_rejections_are_counted():
    def potential(x):  # a standard normal, undefined where x[0] > 0.5
        return jnp.where(x[0] > 0.5, jnp.nan, 0.5 * jnp.sum(x**2))

    mcmc = run_flow_mcmc(potential_fn=potential, num_chains=20, num_warmup=200, num_samples=200,
                         init_params=-jnp.ones((20, 2)))
    x = draws(mcmc)
    assert x[..., 0].max() <= 0.5
    assert int(mcmc.last_state.num_nonfinite.sum()) > 0
    assert np.isfinite(np.asarray(mcmc.get_extra_fields()["potential_energy"])).all()


def test_energy_nan_everywhere_fails_at_initialisation():
    with pytest.raises(ValueError, match="NaN or infinite at every initial point"):
        run_flow_mcmc(potential_fn=lambda x: jnp.nan * jnp.sum(x), num_chains=4,
                      init_params=jnp.zeros((4, 2)))

    def model():
        numpyro.sample("x", Potential(lambda x: jnp.nan * jnp.sum(x, -1), event_shape=(2,)))

    with pytest.raises(ValueError, match="not finite at any initial point"):
        run_flow_mcmc(model=model, num_chains=4)


def test_flow_with_no_exact_inverse_is_refused():
    bnaf = block_neural_autoregressive_flow(jax.random.key(0), base_dist=StandardNormal((2,)))
    with pytest.raises(ValueError, match="no exact inverse"):
        run_flow_mcmc(potential_fn=lambda x: jnp.sum(x**2), flow=bnaf, num_chains=4,
                      init_params=jnp.zeros((4, 2)))


@pytest.mark.parametrize("num_chains, chain_method", [(1, "vectorized"), (2, "sequential")])
def test_single_chain_or_non_vectorized_is_refused(num_chains, chain_method):
    mcmc = MCMC(FlowMCMC(potential_fn=lambda x: jnp.sum(x**2)), num_warmup=10, num_samples=10,
                num_chains=num_chains, chain_method=chain_method, progress_bar=False)
    with pytest.raises(ValueError, match="chain_method='vectorized'"):
        mcmc.run(jax.random.key(0), init_params=jnp.zeros((num_chains, 2)))


def test_potential_fn_without_init_params_is_refused():
    with pytest.raises(ValueError, match="needs `init_params`"):
        run_flow_mcmc(potential_fn=lambda x: jnp.sum(x**2), num_chains=4)


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_defensive_share_out_of_range_is_refused(share):
    with pytest.raises(ValueError, match=r"defensive must be in \[0, 1\)"):
        FlowMCMC(potential_fn=lambda x: x, defensive=share)
