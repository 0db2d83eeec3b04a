"""Reprs of the Pyro kernels, trainer and training result: short, the key numbers, a table in a notebook."""

import pickle

import pyro
import pyro.distributions as dist
import torch

from ebmppl.options import FlowMCMCOptions, NeuTraOptions, TrainerOptions
from ebmppl.pyro import EBMTrainer, FlowMCMC, NeuTraHMC, Potential
from ebmppl.schedule import WarmupSchedule


def model():
    pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))


def potential(z):
    return 0.5 * torch.sum(z["x"] ** 2)


def check_short(text, name):
    lines = text.splitlines()
    assert lines[0].startswith(f"{name}(") and text.endswith(")")
    assert len(lines) <= 5 and all(len(line) <= 100 for line in lines)
    assert "tensor(" not in text and "array([" not in text  # never an array's values


def test_kernel_reprs_show_target_flow_walkers_and_options():
    kernel = FlowMCMC(model, num_walkers=8, num_particles=4, local_kernel="hmc", step_size=0.2)
    text = repr(kernel)
    check_short(text, "FlowMCMC")
    for part in ("model=model", "flow=default", "num_walkers=8", "num_particles=4", "local_kernel='hmc'",
                 "num_leapfrog=8", "step_size=0.2", "target_accept_prob=0.65", "schedule=default"):
        assert part in text
    page = kernel._repr_html_()
    assert page.startswith("<table>") and page.count("<tr>") == 3 + len(FlowMCMCOptions.__dataclass_fields__)

    neutra = NeuTraHMC(potential_fn=potential, fit="forward", schedule=WarmupSchedule(fit_iterations=(9,), window=10))
    text = repr(neutra)
    check_short(text, "NeuTraHMC")
    for part in ("potential_fn=potential", "fit='forward'", "trajectory_length=adapted", "fit_iterations=(9,)"):
        assert part in text
    assert "num_walkers" not in text  # not given: known once the kernel runs
    assert neutra._repr_html_().count("<tr>") == 2 + len(NeuTraOptions.__dataclass_fields__)


def test_trainer_and_result_reprs_after_a_tiny_run():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1))
    base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)

    def ebm(x):
        energy = pyro.module("energy", net)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", Potential(lambda y: energy(y).squeeze(-1), event_shape=(2,), base=base), obs=x)

    data = torch.randn(128, 2)
    trainer = EBMTrainer(ebm, optim=pyro.optim.Adam({"lr": 1e-3}), batch_size=16, pool_size=64, num_rounds=1,
                         num_local_steps=2, num_particles=4, mode_centres=[[-1.0, 0.0], [1.0, 0.0]])
    text = repr(trainer)
    check_short(text, "EBMTrainer")
    for part in ("model=ebm", "method='flow'", "batch_size=16", "num_local_steps=2", "mode_centres=array(2, 2)"):
        assert part in text
    assert trainer._repr_html_().count("<tr>") == 3 + len(TrainerOptions.__dataclass_fields__)

    result = trainer.run(3, data, progress_bar=False)
    text = repr(result)
    check_short(text, "TrainResult")
    num_params = sum(p.numel() for p in net.parameters())
    loss = float(result.history["loss"][-1])
    for part in ("method='flow'", "steps=3", f"params={num_params:,}", f"loss={loss:.4g}", "mode_weights=["):
        assert part in text
    page = result._repr_html_()
    assert page.startswith("<table>") and f"{loss:.4g}" in page
    state, params, history = result  # still the tuple it was
    assert result._fields == ("state", "params", "history") and history is result.history
    assert pickle.loads(pickle.dumps(result)).method == "flow"
    more = trainer.run(2, data, init_state=result.state, progress_bar=False)
    assert "steps=5 (2 in this run)" in repr(more)
