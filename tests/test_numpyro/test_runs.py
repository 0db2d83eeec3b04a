"""A trained run as a prior (NumPyro): load_potential is normalised, keeps its flow, and FlowMCMC samples under it."""

import os
import subprocess
import sys

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

from ebmppl.app.config import RunError
from ebmppl.app.numpyro_run import TrainedPotential
from ebmppl.numpyro import FlowMCMC, load_potential

Y, SIGMA = np.array([1.2, 0.1]), 0.7  # one noisy observation y ~ N(x, σ² I)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "four"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "ebmppl", "train", "--backend", "numpyro", "--steps", "40",
                    "--out", str(folder), "--quiet"], check=True, capture_output=True, env=env, timeout=600)
    return folder


GX, GY = np.linspace(-12.0, 12.0, 601), np.linspace(-4.0, 4.0, 401)
GRID = np.stack(np.meshgrid(GX, GY), -1).reshape(-1, 2)
CELL = (GX[1] - GX[0]) * (GY[1] - GY[0])
LOG_LIKELIHOOD = -0.5 * ((GRID - Y) ** 2).sum(-1) / SIGMA**2


def grid_moments(log_density):
    """Mean and standard deviation of the density ``exp(log_density)`` on the grid."""
    w = np.exp(log_density - log_density.max())
    w /= w.sum()
    mean = w @ GRID
    return mean, np.sqrt(w @ (GRID - mean) ** 2)


@pytest.mark.slow  # a statistical run of ~1 minute: make test-slow (both backends alike)
def test_loaded_potential_is_normalised_and_samples_its_posterior(run):
    potential = load_potential(run)
    log_prior = np.asarray(potential.log_prob(jnp.asarray(GRID, jnp.float32)), float)
    mass = np.exp(log_prior).sum() * CELL
    assert abs(mass - 1.0) < 0.05, mass  # normalised by the run's log Z estimate
    mean, sd = grid_moments(log_prior + LOG_LIKELIHOOD)

    def model():
        x = numpyro.sample("x", potential)
        numpyro.sample("y", dist.Normal(x, SIGMA).to_event(1), obs=jnp.asarray(Y, jnp.float32))

    chains = 20
    mcmc = MCMC(FlowMCMC(model), num_warmup=400, num_samples=500, num_chains=chains,
                chain_method="vectorized", progress_bar=False)
    init = potential.flow.sample(jax.random.key(1), (chains,))
    mcmc.run(jax.random.key(2), init_params={"x": init})
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    ess = np.asarray(az.ess(az.convert_to_dataset({"x": x}), method="mean")["x"])
    mcse = sd / np.sqrt(ess)
    draws = x.reshape(-1, 2)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * mcse), (draws.mean(0), mean, mcse)
    assert np.all(np.abs(draws.std(0) / sd - 1) < 0.1), (draws.std(0), sd)
    # a control: the prior's mean, which a sampler ignoring the observation would find, is far outside
    prior_mean, _ = grid_moments(log_prior)
    assert np.any(np.abs(draws.mean(0) - prior_mean) > 10 * mcse), (draws.mean(0), prior_mean, mcse)


def test_loaded_potential_declares_its_flow_which_survives_tree_maps_and_jit(run):
    potential = load_potential(run)
    assert isinstance(potential, TrainedPotential)
    x = jnp.asarray(GRID[::20_000], jnp.float32)
    expected = np.asarray(potential.flow.log_prob(x))
    copy = jax.tree.map(lambda leaf: leaf, potential)  # a monkeypatched attribute would be dropped here
    assert isinstance(copy, TrainedPotential)
    np.testing.assert_array_equal(copy.flow.log_prob(x), expected)
    jitted = jax.jit(lambda p, y: p.flow.log_prob(y))(potential, x)
    np.testing.assert_allclose(jitted, expected, rtol=1e-5, atol=1e-5)
    zeroed = jax.tree.map(jnp.zeros_like, potential)  # the flow's arrays are the potential's leaves
    assert not np.allclose(zeroed.flow.log_prob(x), expected)


def test_load_potential_refuses_a_pyro_run_and_a_missing_one(tmp_path, run):
    (tmp_path / "config.json").write_text((run / "config.json").read_text().replace('"numpyro"', '"pyro"'))
    with pytest.raises(RunError, match="pyro backend"):
        load_potential(tmp_path)
    with pytest.raises(RunError, match="does not exist"):
        load_potential(tmp_path / "nowhere")
