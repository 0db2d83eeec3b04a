"""EBMTrainer has one API in both backends: the same calls, the same results' fields, the same resume guarantees.

Each test drives NumPyro's and Pyro's trainers through the same calls; the
only host difference, the key, comes from ``Side.keys`` (NumPyro: a JAX key
as the first argument of ``init`` and ``run``; Pyro: none, Pyro's RNG seeded).
Tiny networks and few steps: these check the API and exact resumption, not
the statistics (``test_training.py`` in each backend's folder does).
"""

import importlib
import warnings

import numpy as np
import pytest

SETTINGS = dict(batch_size=16, pool_size=32, num_rounds=1, num_local_steps=2, num_particles=4)
SMALL_FLOW = dict(num_layers=2, nn_width=8, knots=4)


class NumPyroSide:
    """The NumPyro trainer, its model and its arrays."""

    name = "numpyro"

    def __init__(self):
        import jax

        self.jax = jax
        self.data = jax.random.normal(jax.random.key(1), (256, 2))

    def keys(self, seed: int) -> tuple:
        return (self.jax.random.key(seed),)

    def trainer(self, nan: bool = False, **kwargs):
        import equinox as eqx
        import numpyro
        import numpyro.distributions as dist
        import optax
        from numpyro.contrib.module import eqx_module

        from ebmppl.numpyro import EBMTrainer, Potential
        from ebmppl.numpyro.flows import default_flow

        jax = self.jax
        net = eqx.nn.MLP(2, "scalar", 8, 1, activation=jax.nn.silu, key=jax.random.key(0))
        base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)

        def model(x):
            energy = jax.vmap(eqx_module("energy", net))
            if nan:
                energy = lambda y, f=energy: f(y) * jax.numpy.nan  # noqa: E731
            with numpyro.plate("data", x.shape[0]):
                numpyro.sample("x", Potential(energy, event_shape=(2,), base=base), obs=x)

        flow = lambda key, dim: default_flow(key, dim, **SMALL_FLOW)  # noqa: E731
        return EBMTrainer(model, flow=flow, optim=optax.adam(1e-2), **{**SETTINGS, **kwargs})

    def leaves(self, tree) -> list:
        jax = self.jax
        return [np.asarray(jax.random.key_data(leaf) if jax.numpy.issubdtype(leaf.dtype, jax.dtypes.prng_key)
                           else leaf) for leaf in jax.tree.leaves(tree)]

    def sample(self, flow, n: int) -> np.ndarray:
        return np.asarray(flow.sample(self.jax.random.key(0), (n,)))

    def log_prob(self, potential, x) -> np.ndarray:
        return np.asarray(potential.log_prob(x))


class PyroSide:
    """The Pyro trainer, its model (in a fresh parameter store) and its tensors."""

    name = "pyro"

    def __init__(self):
        import torch

        self.torch = torch
        self.data = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))

    def keys(self, seed: int) -> tuple:
        import pyro

        pyro.set_rng_seed(seed)
        return ()

    def trainer(self, nan: bool = False, **kwargs):
        import pyro
        import pyro.distributions as dist

        from ebmppl.pyro import EBMTrainer, Potential
        from ebmppl.pyro.flows import default_flow

        torch = self.torch
        pyro.clear_param_store()  # a new process would start with an empty one
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1))
        base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)

        def model(x):
            energy = pyro.module("energy", net)

            def energy_fn(y):
                value = energy(y).squeeze(-1)
                return value * torch.nan if nan else value

            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", Potential(energy_fn, event_shape=(2,), base=base), obs=x)

        flow = lambda dim: default_flow(dim, **SMALL_FLOW)  # noqa: E731
        return EBMTrainer(model, flow=flow, optim=pyro.optim.Adam({"lr": 1e-2}), **{**SETTINGS, **kwargs})

    def leaves(self, tree) -> list:
        torch = self.torch
        if isinstance(tree, torch.Tensor):
            return [tree.numpy()]
        if isinstance(tree, dict):
            return [leaf for key in sorted(tree, key=str) for leaf in self.leaves(tree[key])]
        if isinstance(tree, (list, tuple)):
            return [leaf for item in tree for leaf in self.leaves(item)]
        return [np.asarray(tree)]

    def sample(self, flow, n: int) -> np.ndarray:
        import pyro

        pyro.set_rng_seed(0)  # as NumPyro's fixed key: the same flow gives the same draws
        with self.torch.no_grad():
            return flow().sample((n,)).numpy()

    def log_prob(self, potential, x) -> np.ndarray:
        with self.torch.no_grad():
            return potential.log_prob(x).numpy()


@pytest.fixture(params=[pytest.param("numpyro"), pytest.param("pyro")])
def side(request):
    return NumPyroSide() if request.param == "numpyro" else PyroSide()


def assert_same(side, a, b):
    left, right = side.leaves(a), side.leaves(b)
    assert len(left) == len(right) > 0
    for x, y in zip(left, right):
        np.testing.assert_array_equal(x, y)


def test_load_in_a_fresh_trainer_continues_bitwise(side, tmp_path):
    trainer = side.trainer(ema_decay=0.9)
    state = trainer.init(*side.keys(0), side.data)
    for _ in range(3):
        state, _ = trainer.update(state, side.data)
    trainer.save(tmp_path / "state", state)
    straight, straight_stats = [], []
    for _ in range(2):
        state, stats = trainer.update(state, side.data)
        straight.append(state)
        straight_stats.append(stats["loss"])

    fresh = side.trainer(ema_decay=0.9)  # another model object, built afresh
    side.keys(99)  # Pyro: its RNG elsewhere; the state's RNG state must take over
    resumed = fresh.load(tmp_path / "state", side.data)
    assert int(resumed.step) == 3
    for expected, expected_loss in zip(straight, straight_stats):
        resumed, stats = fresh.update(resumed, side.data)
        assert_same(side, expected, resumed)
        assert float(stats["loss"]) == float(expected_loss)


def test_run_returns_state_params_and_history(side):
    trainer = side.trainer(ema_decay=0.5, mode_centres=[[-1.0, -1.0], [1.0, 1.0]])
    result = trainer.run(*side.keys(0), 4, side.data, progress_bar=False)
    assert result._fields == ("state", "params", "history")
    assert int(result.state.step) == 4 and int(result.state.failures) == 0
    assert result.params is result.state.ema_params
    assert sorted(result.history) == ["energy_data", "energy_negatives", "global_accept_prob", "local_accept_prob",
                                      "loss", "mode_weights"]
    assert all(isinstance(values, np.ndarray) and len(values) == 4 for values in result.history.values())
    assert result.history["mode_weights"].shape == (4, 2)
    log_prob = side.log_prob(trainer.potential(result.params, side.data), side.data[:5])
    assert log_prob.shape == (5,) and np.isfinite(log_prob).all()
    # the averaged parameters are not the last iterate: the potential follows the parameters given
    last = side.log_prob(trainer.potential(result.state.ebm_params, side.data), side.data[:5])
    assert not np.array_equal(log_prob, last)
    draws = side.sample(trainer.flow(result.state), 7)
    assert draws.shape == (7, 2) and np.isfinite(draws).all()
    # resuming from the result's state continues the run
    more = trainer.run(*side.keys(1), 2, side.data, progress_bar=False, init_state=result.state)
    assert int(more.state.step) == 6


def test_failure_counter_survives_save_and_load(side, tmp_path):
    trainer = side.trainer(nan=True, method="ula", max_failures=3)
    state = trainer.init(*side.keys(0), side.data)
    with pytest.warns(UserWarning, match="non-finite loss or gradient"):
        for _ in range(2):
            state, stats = trainer.update(state, side.data)
    assert int(state.failures) == 2 and not stats["finite"]
    trainer.save(tmp_path / "state", state)
    fresh = side.trainer(nan=True, method="ula", max_failures=3)
    resumed = fresh.load(tmp_path / "state", side.data)
    assert int(resumed.failures) == 2
    with pytest.warns(UserWarning, match="at step 2; update skipped"):
        with pytest.raises(FloatingPointError, match="3 updates in a row.*step 2"):
            fresh.update(resumed, side.data)


def test_loading_a_neutra_run_does_not_refit_the_backbone(side, tmp_path, monkeypatch):
    module = importlib.import_module(f"ebmppl.{side.name}.training.trainer")
    fits = []

    def counting_fit_flow(*args, **kwargs):
        fits.append(1)
        return fit(*args, **kwargs)

    fit = module.fit_flow
    monkeypatch.setattr(module, "fit_flow", counting_fit_flow)
    trainer = side.trainer(method="neutra", flow_fit_steps=20, num_local_steps=2)
    state = trainer.init(*side.keys(0), side.data)
    assert len(fits) == 1
    trainer.save(tmp_path / "state", state)
    fresh = side.trainer(method="neutra", flow_fit_steps=20, num_local_steps=2)
    loaded = fresh.load(tmp_path / "state", side.data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a finite update, without a skip
        updated, _ = fresh.update(loaded, side.data)
    assert len(fits) == 1  # neither load nor update fitted the flow
    assert_same(side, state.flow_params, loaded.flow_params)
    np.testing.assert_array_equal(side.sample(fresh.flow(loaded), 5), side.sample(trainer.flow(state), 5))
    assert_same(side, state.flow_params, updated.flow_params)  # the backbone stays frozen
    # the flow-backbone potential of the loaded trainer is the saved one's
    x = side.data[:5]
    np.testing.assert_array_equal(side.log_prob(fresh.potential(loaded.ebm_params, side.data), x),
                                  side.log_prob(trainer.potential(state.ebm_params, side.data), x))
