"""Reprs of the NumPyro kernels, trainer and training result: short, the key numbers, a table in a notebook."""

import pickle

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.contrib.module import eqx_module

from ebmppl.numpyro import EBMTrainer, FlowMCMC, NeuTraHMC, Potential
from ebmppl.options import FlowMCMCOptions, NeuTraOptions, TrainerOptions
from ebmppl.schedule import WarmupSchedule


def model():
    numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))


def potential(z):
    return 0.5 * jnp.sum(z["x"] ** 2)


def check_short(text, name):
    lines = text.splitlines()
    assert lines[0].startswith(f"{name}(") and text.endswith(")")
    assert len(lines) <= 5 and all(len(line) <= 100 for line in lines)
    assert "array([" not in text and "Array(" not in text  # never an array's values


def test_kernel_reprs_show_target_flow_and_options():
    kernel = FlowMCMC(model, num_particles=4, local_kernel="hmc", step_size=0.2)
    text = repr(kernel)
    check_short(text, "FlowMCMC")
    for part in ("model=model", "flow=default", "num_particles=4", "local_kernel='hmc'", "num_leapfrog=8",
                 "step_size=0.2", "target_accept_prob=0.65", "schedule=default"):
        assert part in text
    page = kernel._repr_html_()
    assert page.startswith("<table>") and page.count("<tr>") == 2 + len(FlowMCMCOptions.__dataclass_fields__)

    neutra = NeuTraHMC(potential_fn=potential, fit="forward", schedule=WarmupSchedule(fit_iterations=(9,), window=10))
    text = repr(neutra)
    check_short(text, "NeuTraHMC")
    for part in ("potential_fn=potential", "fit='forward'", "trajectory_length=adapted", "fit_iterations=(9,)"):
        assert part in text
    assert neutra._repr_html_().count("<tr>") == 2 + len(NeuTraOptions.__dataclass_fields__)


def test_trainer_and_result_reprs_after_a_tiny_run():
    net = eqx.nn.MLP(2, "scalar", 8, 1, key=jax.random.key(0))
    base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)

    def ebm(x):
        energy = eqx_module("energy", net)
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", Potential(jax.vmap(energy), event_shape=(2,), base=base), obs=x)

    data = jax.random.normal(jax.random.key(1), (128, 2))
    trainer = EBMTrainer(ebm, optim=optax.adam(1e-3), batch_size=16, pool_size=64, num_rounds=1, num_local_steps=2,
                         num_particles=4, mode_centres=[[-1.0, 0.0], [1.0, 0.0]])
    text = repr(trainer)
    check_short(text, "EBMTrainer")
    for part in ("model=ebm", "method='flow'", "batch_size=16", "num_local_steps=2", "mode_centres=array(2, 2)"):
        assert part in text
    assert trainer._repr_html_().count("<tr>") == 3 + len(TrainerOptions.__dataclass_fields__)

    result = trainer.run(jax.random.key(2), 3, data, progress_bar=False)
    text = repr(result)
    check_short(text, "TrainResult")
    num_params = sum(leaf.size for leaf in jax.tree.leaves(result.params))
    loss = float(result.history["loss"][-1])
    for part in ("method='flow'", "steps=3", f"params={num_params:,}", f"loss={loss:.4g}", "mode_weights=["):
        assert part in text
    page = result._repr_html_()
    assert page.startswith("<table>") and f"{loss:.4g}" in page
    state, params, history = result  # still the tuple it was
    assert result._fields == ("state", "params", "history") and history is result.history
    assert pickle.loads(pickle.dumps(result._replace(state=None, params={}))).method == "flow"
    more = trainer.run(None, 2, data, init_state=result.state, progress_bar=False)
    assert "steps=5 (2 in this run)" in repr(more)
