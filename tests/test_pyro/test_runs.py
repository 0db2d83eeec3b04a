"""A trained run as a prior (Pyro): load_potential is normalised, keeps its flow, and FlowMCMC samples under it."""

import json
import os
import subprocess
import sys

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC

from ebmppl.app.config import RunError
from ebmppl.app.pyro_run import CHECKPOINT, TrainedPotential
from ebmppl.pyro import FlowMCMC, load_potential
from ebmppl.pyro.flows import default_flow

Y, SIGMA = np.array([1.2, 0.1]), 0.7  # one noisy observation y ~ N(x, σ² I)
GX, GY = np.linspace(-12.0, 12.0, 601), np.linspace(-4.0, 4.0, 401)
GRID = np.stack(np.meshgrid(GX, GY), -1).reshape(-1, 2)
CELL = (GX[1] - GX[0]) * (GY[1] - GY[0])
LOG_LIKELIHOOD = -0.5 * ((GRID - Y) ** 2).sum(-1) / SIGMA**2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "four"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "ebmppl", "train", "--backend", "pyro", "--steps", "40",
                    "--out", str(folder), "--quiet"], check=True, capture_output=True, env=env, timeout=600)
    return folder


def grid_moments(log_density):
    """Mean and standard deviation of the density ``exp(log_density)`` on the grid."""
    w = np.exp(log_density - log_density.max())
    w /= w.sum()
    mean = w @ GRID
    return mean, np.sqrt(w @ (GRID - mean) ** 2)


@pytest.mark.slow  # a statistical run of ~1 minute: make test-slow (both backends alike)
def test_loaded_potential_is_normalised_and_samples_its_posterior(run):
    potential = load_potential(run)
    with torch.no_grad():
        log_prior = potential.log_prob(torch.tensor(GRID, dtype=torch.float32)).double().numpy()
    mass = np.exp(log_prior).sum() * CELL
    assert abs(mass - 1.0) < 0.05, mass  # normalised by the run's log Z estimate
    mean, sd = grid_moments(log_prior + LOG_LIKELIHOOD)

    def model():
        x = pyro.sample("x", potential)
        pyro.sample("y", dist.Normal(x, SIGMA).to_event(1), obs=torch.tensor(Y, dtype=torch.float32))

    pyro.set_rng_seed(2)
    walkers = 20
    init = potential.flow().sample((walkers,))
    mcmc = MCMC(FlowMCMC(model, num_walkers=walkers), warmup_steps=400, num_samples=500,
                initial_params={"x": init}, disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples(group_by_chain=True)["x"].numpy()  # (walkers, draws, 2)
    ess = np.asarray(az.ess(az.convert_to_dataset({"x": x}), method="mean")["x"])
    mcse = sd / np.sqrt(ess)
    draws = x.reshape(-1, 2)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * mcse), (draws.mean(0), mean, mcse)
    assert np.all(np.abs(draws.std(0) / sd - 1) < 0.1), (draws.std(0), sd)
    # a control: the prior's mean, which a sampler ignoring the observation would find, is far outside
    prior_mean, _ = grid_moments(log_prior)
    assert np.any(np.abs(draws.mean(0) - prior_mean) > 10 * mcse), (draws.mean(0), prior_mean, mcse)


def test_loaded_potential_declares_the_trained_flow_and_keeps_it_when_expanded(run):
    potential = load_potential(run)
    assert isinstance(potential, TrainedPotential)
    config = json.loads((run / "config.json").read_text())
    trained = default_flow(2)  # the flow saved in the checkpoint, in standardised coordinates
    trained.load_state_dict(torch.load(run / CHECKPOINT, weights_only=False)["state"]["flow_params"])
    loc, scale = torch.tensor(config["loc"]), torch.tensor(config["scale"])
    x = torch.tensor(GRID[::20_000], dtype=torch.float32)
    with torch.no_grad():
        expected = trained().log_prob((x - loc) / scale) - scale.log().sum()
        for declared in (potential, potential.expand((3,))):  # Pyro expands a site's distribution under a plate
            torch.testing.assert_close(declared.flow().log_prob(x), expected)


def test_load_potential_refuses_a_numpyro_run_and_a_missing_one(tmp_path, run):
    (tmp_path / "config.json").write_text((run / "config.json").read_text().replace('"pyro"', '"numpyro"'))
    with pytest.raises(RunError, match="numpyro backend"):
        load_potential(tmp_path)
    with pytest.raises(RunError, match="does not exist"):
        load_potential(tmp_path / "nowhere")
