"""EBMTrainer (Pyro): balanced training recovers mode weights; resume is exact; bad input is named."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from ebmppl.datasets import two_modes
from ebmppl.diagnostics import grid_mode_weights
from ebmppl.pyro import EBMTrainer, Potential

TARGET = two_modes()  # 1/3 N(-1.5·1, 0.05 I) + 2/3 N(1.5·1, 0.1 I)
DATA = torch.tensor(TARGET.sample(20_000, np.random.default_rng(0)), dtype=torch.float32)
BASE = dist.Normal(0.0, 2.0).expand([2]).to_event(1)


def make_model(nan=False):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.SiLU(), torch.nn.Linear(32, 32),
                              torch.nn.SiLU(), torch.nn.Linear(32, 1))
    with torch.no_grad():
        net[-1].weight.mul_(0.01)  # energy ≈ 0 at the start

    def model(x):
        energy = pyro.module("energy", net)

        def energy_fn(y):
            value = energy(y).squeeze(-1)
            return value * torch.nan if nan else value

        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", Potential(energy_fn, event_shape=(2,), base=BASE), obs=x)

    return model


def make_trainer(method, model=None, seed=0, **kwargs):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    settings = dict(optim=pyro.optim.Adam({"lr": 3e-3}), method=method, batch_size=256, pool_size=2048,
                    num_rounds=2, num_local_steps=10, num_particles=8, mode_centres=TARGET.centres)
    return EBMTrainer(make_model() if model is None else model, **{**settings, **kwargs})


def ebm_weights(trainer, params):
    potential = trainer.potential(params, DATA)
    with torch.no_grad():
        return grid_mode_weights(
            lambda x: potential.log_prob(torch.tensor(x, dtype=torch.float32)).numpy(), TARGET.assign
        )


@pytest.mark.slow  # 1,000 Pyro training steps a method, about 3 minutes: make test-slow (NumPyro's twin runs by default)
@pytest.mark.parametrize("method, should_pass", [("flow", True), ("ula", False)])
def test_flow_training_keeps_the_heavy_mode_weight(method, should_pass):
    # Same budget for both; persistent chains without the flow cannot cross between
    # the modes, and the energy drifts to compensate (the paper's failure of ULA-EBM).
    trainer = make_trainer(method)
    result = trainer.run(1000, DATA, progress_bar=False)
    heavy = ebm_weights(trainer, result.params)[1]
    assert (abs(heavy - 2 / 3) < 0.05) == should_pass, heavy
    for name in ("loss", "energy_data", "energy_negatives"):
        assert np.isfinite(result.history[name]).all()
    assert np.shape(result.history["mode_weights"]) == (1000, 2)
    if method == "flow":
        assert np.mean(result.history["global_accept_prob"][-100:]) > 0.5


def test_neutra_training_fits_the_backbone_then_the_energy():
    # NT-EBM: the flow is fitted to the data first and frozen; the model is exp(-E) q.
    trainer = make_trainer("neutra", flow_fit_steps=600, num_local_steps=16)
    assert (trainer.options.num_local_steps, trainer.options.target_accept_prob) == (16, 0.75)
    state = trainer.init(DATA)
    with torch.no_grad():
        fitted = trainer.flow(state)().sample((20_000,))
    assert abs(float(np.mean(TARGET.assign(fitted.numpy()) == 1)) - 2 / 3) < 0.05
    x = DATA[:100]
    potential = trainer.potential(state.ebm_params, DATA)
    with torch.no_grad():
        expected = -potential.energy(x) + trainer.flow(state)().log_prob(x)
        torch.testing.assert_close(potential.log_prob(x), expected, rtol=1e-6, atol=1e-6)
    before = list(state.flow_params.values())
    result = trainer.run(100, DATA, progress_bar=False, init_state=state)
    for a, b in zip(before, result.state.flow_params.values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the backbone stays frozen
    assert np.isfinite(result.history["loss"]).all()
    assert 0.6 < np.mean(result.history["local_accept_prob"][-50:]) < 0.9  # adapted toward 0.75
    assert abs(ebm_weights(trainer, result.params)[1] - 2 / 3) < 0.05
    assert EBMTrainer(make_model(), optim=pyro.optim.Adam({"lr": 1e-3}), method="neutra").options.num_local_steps == 128


def test_moving_average_of_the_parameters():
    trainer = make_trainer("flow", ema_decay=0.5)
    state, _ = trainer.update(trainer.init(DATA), DATA)  # the average starts at the initial parameters
    first_average = list(state.ema_params.values())
    iterates = []
    for _ in range(2):
        state, _ = trainer.update(state, DATA)
        iterates.append(list(state.ebm_params.values()))
    with trainer.averaged_params():  # the model's own parameters, in Pyro's param store
        averaged = [pyro.param(name).detach().clone() for name in state.ebm_params]
    for a1, p2, p3, average in zip(first_average, *iterates, averaged):
        torch.testing.assert_close(average, 0.25 * a1 + 0.25 * p2 + 0.5 * p3, rtol=1e-5, atol=1e-7)
    for current, name in zip(iterates[-1], state.ebm_params):  # the iterate is back after the block
        torch.testing.assert_close(pyro.param(name).detach(), current, rtol=0, atol=0)
    assert not torch.allclose(averaged[-2], iterates[-1][-2])
    with pytest.raises(ValueError, match="ema_decay"):
        make_trainer("flow", ema_decay=1.0)


@pytest.mark.parametrize("method", ["flow", "neutra"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, method):
    options = dict(flow_fit_steps=100, num_local_steps=8) if method == "neutra" else {}
    straight = make_trainer(method, ema_decay=0.9, **options).run(30, DATA, progress_bar=False)
    make_trainer(method, ema_decay=0.9, **options).run(15, DATA, progress_bar=False, checkpoint=tmp_path / "ckpt.pt")
    fresh = make_trainer(method, seed=99, ema_decay=0.9, **options)  # a new process would build a new trainer
    state = fresh.load(tmp_path / "ckpt.pt", DATA)
    assert state.step == 15
    resumed = fresh.run(15, DATA, progress_bar=False, init_state=state)
    a_state, b_state = straight.state, resumed.state
    for a, b in zip([*a_state.ebm_params.values(), *a_state.ema_params.values()],
                    [*b_state.ebm_params.values(), *b_state.ema_params.values()]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(a_state.flow_params.values(), b_state.flow_params.values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a_state.pool, b_state.pool, rtol=0, atol=0)
    assert straight.history["loss"][15:].tolist() == resumed.history["loss"].tolist()


def test_bad_checkpoints_are_named(tmp_path):
    trainer = make_trainer("flow")
    state, _ = trainer.update(trainer.init(DATA), DATA)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trainer.load(tmp_path / "missing.pt", DATA)
    trainer.save(tmp_path / "ok.pt", state)
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not an ebmppl checkpoint"):
        trainer.load(tmp_path / "cut.pt", DATA)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an ebmppl Pyro training checkpoint"):
        trainer.load(tmp_path / "foreign.pt", DATA)
    other = make_trainer("flow", optim=pyro.optim.SGD({"lr": 1e-3}))
    with pytest.raises(ValueError, match="does not fit this trainer"):
        other.load(tmp_path / "ok.pt", DATA)
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file


def test_nan_data_and_nan_energy_are_named():
    bad = DATA.clone()
    bad[3, 0] = torch.nan
    with pytest.raises(ValueError, match=r"1 rows with NaN or infinite values \(rows \[3\]\)"):
        make_trainer("flow").step(bad)
    trainer = make_trainer("flow", model=make_model(nan=True), max_failures=3)
    with pytest.warns(UserWarning, match="non-finite loss or gradient") as warned:
        with pytest.raises(FloatingPointError, match="3 updates in a row.*step 2"):
            for _ in range(10):
                trainer.step(DATA)
    assert [str(w.message).endswith(f"at step {i}; update skipped") for i, w in enumerate(warned)] == [True] * 3


def test_model_without_an_observed_potential_is_refused():
    def model(x):
        pyro.param("w", torch.zeros(2))
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1), obs=x[0])

    with pytest.raises(ValueError, match="exactly one observed Potential site"):
        EBMTrainer(model, optim=pyro.optim.Adam({"lr": 1e-3})).step(DATA)
