"""The posteriordb models of ``benchmarks/posteriordb_models.py``: both models trace,
draws map to every reference parameter, and the Pyro log density (one point, and
all walkers at once as ``ebmppl``'s kernels evaluate it) equals NumPyro's up to a
constant in unconstrained space."""

import numpy as np
import pytest
import torch
from numpyro.infer.util import constrain_fn, potential_energy
from pyro.infer.mcmc.util import initialize_model as pyro_initialize_model

from ebmppl.pyro.kernels.target import model_target
from test_common.posteriordb import pdb


# float32 sums of up to 5,000 terms: the gap must be constant to this relative precision
RTOL = 2e-5


def unconstrained_points(name, num, seed=0, radius=0.5):
    """``num`` points ``{site: array}``, uniform on (-radius, radius) in unconstrained space.

    The sites and their unconstrained shapes are the Pyro model's (NumPyro's
    must be the same, or its potential energy fails); a small radius keeps
    arma's MA coefficient |theta| < 1, where its errors stay finite.
    """
    model, kwargs = pdb.pyro_model(name)
    params, _, _, _ = pyro_initialize_model(model, model_kwargs=kwargs, num_chains=1)
    rng = np.random.default_rng(seed)
    shapes = {site: tuple(value.shape) for site, value in params.items()}
    return [{site: rng.uniform(-radius, radius, shape) for site, shape in shapes.items()} for _ in range(num)]


def numpyro_energies(name, points):
    """NumPyro's potential energy (minus the log joint, Jacobian included) at each point."""
    model, kwargs = pdb.numpyro_model(name)
    return np.array([float(potential_energy(model, (), kwargs, point)) for point in points])


def _torch(point):
    return {site: torch.as_tensor(value, dtype=torch.get_default_dtype()) for site, value in point.items()}


def pyro_energies(name, points):
    """Pyro's potential energy (``initialize_model``'s ``potential_fn``) at each point."""
    model, kwargs = pdb.pyro_model(name)
    _, potential_fn, _, _ = pyro_initialize_model(model, model_kwargs=kwargs, num_chains=1)
    with torch.no_grad():
        return np.array([float(potential_fn(_torch(point))) for point in points])


def pyro_batched_logdensity(name, points):
    """The log density of all points at once, as walkers of ``model_target``."""
    model, kwargs = pdb.pyro_model(name)
    target, layout, _, _ = model_target(model, (), kwargs, num_walkers=len(points))
    stacked = {site: torch.stack([_torch(p)[site] for p in points]) for site in layout.names}
    return target.logdensity(layout.flatten(stacked)).double().numpy(), layout


def assert_constant_gap(a, b, scale):
    gap = a - b
    assert np.all(np.isfinite(gap)), gap
    assert np.ptp(gap) <= RTOL * (1.0 + scale), (gap, scale)


@pytest.mark.parametrize("name", pdb.NAMES)
def test_models_trace_and_draws_map_to_every_reference_parameter(name):
    reference = pdb.load(name)["reference"]
    model, kwargs = pdb.numpyro_model(name)
    (point,) = unconstrained_points(name, 1)
    values = constrain_fn(model, (), kwargs, point)
    draws = pdb.stan_draws(name, {site: np.asarray(v)[None] for site, v in values.items()})
    assert list(draws) == list(reference)
    assert all(d.shape == (1,) and np.isfinite(d).all() for d in draws.values())

    # Pyro draws as a kernel returns them: (draws, walkers, *site shape), maybe plate-padded
    model, kwargs = pdb.pyro_model(name)
    _, _, transforms, trace = pyro_initialize_model(model, model_kwargs=kwargs, num_chains=1)
    samples = {
        site: trace.nodes[site]["value"].detach().expand((2, 3) + trace.nodes[site]["value"].shape)
        for site in transforms
    }
    draws = pdb.stan_draws(name, samples, batch_ndim=2)
    assert list(draws) == list(reference)
    assert all(d.shape == (6,) for d in draws.values())


@pytest.mark.parametrize("name", pdb.NAMES)
def test_pyro_and_numpyro_log_densities_agree_up_to_a_constant(name):
    points = unconstrained_points(name, 3)
    numpyro_energy = numpyro_energies(name, points)
    pyro_energy = pyro_energies(name, points)
    scale = np.abs(numpyro_energy).max()
    assert_constant_gap(numpyro_energy, pyro_energy, scale)
    batched, layout = pyro_batched_logdensity(name, points)
    assert_constant_gap(batched, -pyro_energy, scale)
    assert np.abs(batched + pyro_energy).max() <= RTOL * (1.0 + scale)
    assert layout.dim == pdb.INFO[name]["dim"]


def test_check_passes_the_reference_itself_and_fails_a_shifted_one():
    name = "kidiq-kidscore_momiq"
    rng = np.random.default_rng(0)
    reference = pdb.load(name)["reference"]
    z = rng.standard_normal(4000)
    draws = {p: r["mean"] + r["sd"] * (z - z.mean()) / z.std(ddof=1) for p, r in reference.items()}
    result = pdb.check(name, draws)
    assert result["passed"] and result["max_z"] < 1e-9 and result["worst_sd"] < 1e-9
    draws["sigma"] = draws["sigma"] + 0.5 * reference["sigma"]["sd"]
    result = pdb.check(name, draws)
    assert not result["passed"] and result["worst"] == "sigma"
    assert result["params"]["sigma"]["z"] == pytest.approx(0.5)


def test_load_names_the_missing_path(tmp_path, monkeypatch):
    monkeypatch.setattr(pdb, "DATA_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        pdb.load("arma-arma11")
