"""Balanced EBM training (``method="flow"``) vs persistent chains without the flow (``"ula"``), in one run.

Reproduces the synthetic experiments of Grenioux, Moulines, Gabrié (2023):

- Table 3: 2-D, 4 modes at x = -3, -1, 1, 3 (cov 0.05 I), weights .1/.2/.3/.4,
  60k points: MSE of the EBM's mode weights (the EBM normalised on a grid)
  and MSE of the negatives' weights (the whole persistent pool) against the EBM's;
- Table 1: 8 Gaussians and rings: median over test points of
  ``(log p_θ(x) - log p*(x))²``, the EBM normalised on a grid.

Every metric is evaluated every ``--eval-every`` updates and scored as the
median of the last 10 evaluations. The paper's numbers are printed beside
ours.

    python benchmarks/balanced_training.py --steps 3000               # NumPyro, all data sets
    python benchmarks/balanced_training.py --backend pyro --data four
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ebmppl.datasets import eight_gaussians, line_of_four, rings
from ebmppl.diagnostics import grid_mode_weights

PAPER = {  # (ULA-EBM, flow) from the paper's tables
    "four: EBM weight MSE": (1.24e-3, 4.29e-4),
    "four: negatives vs EBM MSE": (1.79e-3, 3.12e-5),
    "eight: median sq. log-density error": (1.86, 0.94),
    "rings: median sq. log-density error": (5.39, 0.40),
}
DATASETS = {"four": line_of_four, "eight": eight_gaussians, "rings": rings}
GRID = np.linspace(-6.0, 6.0, 400)  # even count: the origin is not a grid point
CELL = (GRID[1] - GRID[0]) ** 2
GRID_POINTS = np.stack(np.meshgrid(GRID, GRID), axis=-1).reshape(-1, 2)


def settings(args) -> dict:
    return dict(batch_size=256, pool_size=args.pool, num_rounds=args.rounds, num_local_steps=args.local_steps,
                num_particles=args.particles)


def metrics(name, target, log_density, negatives_weights, test_points) -> dict:
    """The table's metrics for an EBM given by ``log_density`` (numpy in, numpy out)."""
    if name == "four":
        weights = grid_mode_weights(log_density, target.assign, -6.0, 6.0, 400)
        return {"four: EBM weight MSE": float(np.mean((weights - target.weights) ** 2)),
                "four: negatives vs EBM MSE": float(np.mean((negatives_weights - weights) ** 2))}
    values = log_density(GRID_POINTS)
    top = values.max()
    log_z = top + np.log(np.exp(values - top).sum() * CELL)
    error = (log_density(test_points) - log_z - target.log_prob(test_points)) ** 2
    return {f"{name}: median sq. log-density error": float(np.median(error))}


def run_numpyro(name, method, args, seed):
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    import optax
    from numpyro.contrib.module import eqx_module

    from ebmppl.numpyro import EBMTrainer, Potential

    target = DATASETS[name]()
    rng = np.random.default_rng(seed)
    data = jnp.asarray(target.sample(60_000, rng), jnp.float32)
    test = target.sample(5_000, rng)
    net = eqx.nn.MLP(2, "scalar", 64, 3, activation=jax.nn.silu, key=jax.random.key(seed))
    net = eqx.tree_at(lambda m: m.layers[-1].weight, net, net.layers[-1].weight * 0.01)
    base = dist.Normal(0.0, 3.0).expand([2]).to_event(1)

    def model(x):
        energy = eqx_module("energy", net)
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", Potential(jax.vmap(energy), event_shape=(2,), base=base), obs=x)

    schedule = optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.1)
    centres = target.means if name == "four" else None
    trainer = EBMTrainer(model, optim=optax.adam(schedule), method=method, mode_centres=centres, **settings(args))
    state = trainer.init(jax.random.key(seed), data)
    scores, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        state, _ = trainer.update(state, data)
        if step % args.eval_every == 0 and step > args.steps - 10 * args.eval_every:
            potential = trainer._potential("x", state.ebm_params, (data,), {})

            def log_density(x, potential=potential):
                return np.asarray(potential.log_prob(jnp.asarray(x, jnp.float32)), float)

            scores.append(metrics(name, target, log_density, target.mode_weights(np.asarray(state.pool)), test))
    return scores, time.perf_counter() - start


def run_pyro(name, method, args, seed):
    import pyro
    import pyro.distributions as dist
    import torch

    from ebmppl.pyro import EBMTrainer, Potential

    target = DATASETS[name]()
    rng = np.random.default_rng(seed)
    data = torch.tensor(target.sample(60_000, rng), dtype=torch.float32)
    test = target.sample(5_000, rng)
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    layers = [torch.nn.Linear(2, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(),
              torch.nn.Linear(64, 64), torch.nn.SiLU(), torch.nn.Linear(64, 1)]
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        net[-1].weight.mul_(0.01)
    base = dist.Normal(0.0, 3.0).expand([2]).to_event(1)

    def model(x):
        energy = pyro.module("energy", net)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", Potential(lambda y: energy(y).squeeze(-1), event_shape=(2,), base=base), obs=x)

    # lr decays by 10x over the run, as the NumPyro side's cosine schedule ends
    optim = pyro.optim.ClippedAdam({"lr": args.lr, "lrd": 0.1 ** (1 / args.steps)})
    centres = target.means if name == "four" else None
    trainer = EBMTrainer(model, optim=optim, method=method, mode_centres=centres, **settings(args))
    scores, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        trainer.step(data)
        if step % args.eval_every == 0 and step > args.steps - 10 * args.eval_every:
            with torch.no_grad():
                def log_density(x):
                    return trainer.potential.log_prob(torch.tensor(x, dtype=torch.float32)).double().numpy()

                pool_weights = target.mode_weights(trainer.pool.numpy())
                scores.append(metrics(name, target, log_density, pool_weights, test))
    return scores, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["numpyro", "pyro"], default="numpyro")
    parser.add_argument("--data", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=["flow", "ula"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--pool", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-steps", type=int, default=25)
    parser.add_argument("--particles", type=int, default=64)
    args = parser.parse_args()
    run = run_numpyro if args.backend == "numpyro" else run_pyro
    print(f"{'metric':40} {'method':6} {'seed':>4} {'ours':>10} {'paper':>10} {'wall s':>7}")
    for name in args.data:
        for seed in args.seeds:
            for method in args.methods:
                scores, wall = run(name, method, args, seed)
                for metric in scores[0]:
                    ours = float(np.median([s[metric] for s in scores]))
                    paper = PAPER[metric][1 if method == "flow" else 0]
                    print(f"{metric:40} {method:6} {seed:4d} {ours:10.3g} {paper:10.3g} {wall:7.0f}", flush=True)


if __name__ == "__main__":
    main()
