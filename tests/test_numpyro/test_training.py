"""EBMTrainer (NumPyro): balanced training recovers mode weights; resume is exact; bad input is named."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.contrib.module import eqx_module

from ebmppl.datasets import two_modes
from ebmppl.diagnostics import grid_mode_weights
from ebmppl.numpyro import EBMTrainer, Potential

TARGET = two_modes()  # 1/3 N(-1.5·1, 0.05 I) + 2/3 N(1.5·1, 0.1 I)
DATA = jnp.asarray(TARGET.sample(20_000, np.random.default_rng(0)), jnp.float32)
BASE = dist.Normal(0.0, 2.0).expand([2]).to_event(1)


def make_model(energy_scale=0.01, nan=False):
    net = eqx.nn.MLP(2, "scalar", 32, 2, activation=jax.nn.silu, key=jax.random.key(0))
    net = eqx.tree_at(lambda m: m.layers[-1].weight, net, net.layers[-1].weight * energy_scale)

    def model(x):
        energy = jax.vmap(eqx_module("energy", net))
        if nan:
            energy = lambda y, f=energy: f(y) * jnp.nan  # noqa: E731
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", Potential(energy, event_shape=(2,), base=BASE), obs=x)

    return model


def make_trainer(method, model=None, **kwargs):
    settings = dict(optim=optax.adam(3e-3), method=method, batch_size=256, pool_size=2048, num_rounds=2,
                    num_local_steps=10, num_particles=16, mode_centres=TARGET.centres)
    return EBMTrainer(make_model() if model is None else model, **{**settings, **kwargs})


def ebm_weights(trainer, params):
    potential = trainer.potential(params, DATA)
    return grid_mode_weights(lambda x: np.asarray(potential.log_prob(jnp.asarray(x, jnp.float32))), TARGET.assign)


@pytest.mark.parametrize("method, should_pass", [("flow", True), ("ula", False)])
def test_flow_training_keeps_the_heavy_mode_weight(method, should_pass):
    # Same budget for both; persistent chains without the flow cannot cross between
    # the modes, and the energy drifts to compensate (the paper's failure of ULA-EBM).
    trainer = make_trainer(method)
    result = trainer.run(jax.random.key(0), 1000, DATA, progress_bar=False)
    heavy = ebm_weights(trainer, result.params)[1]
    assert (abs(heavy - 2 / 3) < 0.05) == should_pass, heavy
    for name in ("loss", "energy_data", "energy_negatives"):
        assert np.isfinite(result.history[name]).all()
    assert result.history["mode_weights"].shape == (1000, 2)
    if method == "flow":
        assert result.history["global_accept_prob"][-100:].mean() > 0.5


def test_neutra_training_fits_the_backbone_then_the_energy():
    # NT-EBM: the flow is fitted to the data first and frozen; the model is exp(-E) q.
    trainer = make_trainer("neutra", flow_fit_steps=600, num_local_steps=16)
    assert (trainer.options.num_local_steps, trainer.options.target_accept_prob) == (16, 0.75)
    state = trainer.init(jax.random.key(0), DATA)
    fitted = trainer.flow(state).sample(jax.random.key(1), (20_000,))
    assert abs(float(np.mean(TARGET.assign(np.asarray(fitted)) == 1)) - 2 / 3) < 0.05
    potential = trainer.potential(state.ebm_params, DATA)
    x = DATA[:100]
    expected = -potential.energy(x) + trainer.flow(state).log_prob(x)
    np.testing.assert_allclose(np.asarray(potential.log_prob(x)), np.asarray(expected), rtol=1e-6, atol=1e-6)
    result = trainer.run(jax.random.key(0), 100, DATA, progress_bar=False)
    for a, b in zip(jax.tree.leaves(state.flow_params), jax.tree.leaves(result.state.flow_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the backbone stays frozen
    assert np.isfinite(result.history["loss"]).all()
    assert 0.6 < result.history["local_accept_prob"][-50:].mean() < 0.9  # adapted toward 0.75
    assert abs(ebm_weights(trainer, result.params)[1] - 2 / 3) < 0.05
    assert EBMTrainer(make_model(), optim=optax.adam(1e-3), method="neutra").options.num_local_steps == 128


def test_moving_average_of_the_parameters():
    trainer = make_trainer("flow", ema_decay=0.5)
    states = [trainer.init(jax.random.key(3), DATA)]
    for _ in range(2):
        states.append(trainer.update(states[-1], DATA)[0])
    expected = jax.tree.map(lambda p0, p1, p2: 0.25 * p0 + 0.25 * p1 + 0.5 * p2,
                            *[s.ebm_params for s in states])
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(states[-1].ema_params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)
    assert not np.allclose(np.asarray(jax.tree.leaves(states[2].ebm_params)[-2]),  # the last weights
                           np.asarray(jax.tree.leaves(states[2].ema_params)[-2]))
    result = trainer.run(jax.random.key(3), 2, DATA, progress_bar=False)
    assert result.params is result.state.ema_params
    with pytest.raises(ValueError, match="ema_decay"):
        make_trainer("flow", ema_decay=1.0)


@pytest.mark.parametrize("method", ["flow", "neutra"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, method):
    options = dict(flow_fit_steps=100, num_local_steps=8) if method == "neutra" else {}
    trainer = make_trainer(method, ema_decay=0.9, **options)
    straight = trainer.run(jax.random.key(1), 30, DATA, progress_bar=False).state
    first = trainer.run(jax.random.key(1), 15, DATA, progress_bar=False, checkpoint=tmp_path / "ckpt.npz")
    fresh = make_trainer(method, ema_decay=0.9, **options)  # a new process would build a new trainer
    resumed_state = fresh.load(tmp_path / "ckpt.npz", DATA)
    assert int(resumed_state.step) == 15
    resumed = fresh.run(jax.random.key(99), 15, DATA, progress_bar=False, init_state=resumed_state).state
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(first.state.pool), np.asarray(straight.pool))


def test_bad_checkpoints_are_named(tmp_path):
    trainer = make_trainer("flow")
    state = trainer.init(jax.random.key(0), DATA)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trainer.load(tmp_path / "missing.npz", DATA)
    trainer.save(tmp_path / "ok.npz", state)
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not an ebmppl checkpoint"):
        trainer.load(tmp_path / "cut.npz", DATA)
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not an ebmppl NumPyro training checkpoint"):
        trainer.load(tmp_path / "foreign.npz", DATA)
    other = make_trainer("flow", optim=optax.sgd(1e-3))
    with pytest.raises(ValueError, match="another structure"):
        other.load(tmp_path / "ok.npz", DATA)
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file


def test_nan_data_and_nan_energy_are_named():
    bad = DATA.at[3, 0].set(jnp.nan)
    with pytest.raises(ValueError, match=r"1 rows with NaN or infinite values \(rows \[3\]\)"):
        make_trainer("flow").init(jax.random.key(0), bad)
    trainer = make_trainer("flow", model=make_model(nan=True), max_failures=3)
    with pytest.warns(UserWarning, match="non-finite loss or gradient") as warned:
        with pytest.raises(FloatingPointError, match="3 updates in a row.*step 2"):
            trainer.run(jax.random.key(0), 10, DATA, progress_bar=False)
    assert [str(w.message).endswith(f"at step {i}; update skipped") for i, w in enumerate(warned)] == [True] * 3


def test_model_without_an_observed_potential_is_refused():
    def model(x):
        numpyro.param("w", jnp.zeros(2))
        numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1), obs=x[0])

    with pytest.raises(ValueError, match="exactly one observed Potential site"):
        EBMTrainer(model, optim=optax.adam(1e-3)).init(jax.random.key(0), DATA)
