"""Balanced EBM training (``method="flow"``) vs persistent chains without the flow (``"ula"``) and NT-EBM (``"neutra"``).

Reproduces the synthetic experiments of Grenioux, Moulines, Gabrié (2023):

- Table 3: 2-D, 4 modes at x = -3, -1, 1, 3 (cov 0.05 I), weights .1/.2/.3/.4,
  60k points: MSE of the EBM's mode weights (the EBM normalised on a grid)
  and MSE of the negatives' weights (the whole persistent pool) against the EBM's;
- Table 1: 8 Gaussians and rings: median over test points of
  ``(log p_θ(x) - log p*(x))²``, the EBM normalised on a grid.

Every metric is evaluated every ``--eval-every`` updates and scored as the
median of the last 10 evaluations. The paper's numbers for the same method
(ULA-EBM, NT-EBM or theirs) are printed beside ours.

    python benchmarks/balanced_training.py --seeds 0 1 2              # NumPyro, all data sets
    python benchmarks/balanced_training.py --backend numpyro pyro     # both, with time ratios
    python benchmarks/balanced_training.py --methods neutra --seeds 0 1 2   # the NT-EBM rows

``neutra`` (NT-EBM: the flow fitted to the data by maximum likelihood, then
frozen as the backbone of ``exp(-E) q``; negatives from 128 MALA steps in the
flow's latent space from flow draws, acceptance 0.75) runs with the
trainer's defaults for that method; ``--rounds``, ``--local-steps`` and
``--particles`` set the other methods' chains.

The defaults are a far lighter budget than the paper's (2000 updates of 256
points, 4096 chains, 2 rounds of one i-SIR move with 32 candidates and 20
MALA steps, against 100 epochs of 60k points, i.e. 23k updates, with 8192
chains and 128 chain steps per update, a global move with 64 candidates
every 25).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ebmppl.datasets import eight_gaussians, line_of_four, rings
from ebmppl.diagnostics import grid_mode_weights

PAPER = {  # ULA-EBM, NT-EBM and flow (their method) from the paper's tables
    "four: EBM weight MSE": {"ula": 1.24e-3, "neutra": 9.87e-4, "flow": 4.29e-4},
    "four: negatives vs EBM MSE": {"ula": 1.79e-3, "neutra": 3.85e-4, "flow": 3.12e-5},
    "eight: median sq. log-density error": {"ula": 1.86, "neutra": 0.97, "flow": 0.94},
    "rings: median sq. log-density error": {"ula": 5.39, "neutra": 0.62, "flow": 0.40},
}
DATASETS = {"four": line_of_four, "eight": eight_gaussians, "rings": rings}
GRID = np.linspace(-6.0, 6.0, 400)  # even count: the origin is not a grid point
CELL = (GRID[1] - GRID[0]) ** 2
GRID_POINTS = np.stack(np.meshgrid(GRID, GRID), axis=-1).reshape(-1, 2)


def settings(args, method) -> dict:
    common = dict(batch_size=256, pool_size=args.pool, ema_decay=args.ema or None)
    if method == "neutra":  # the NT-EBM baseline's own chain settings (the trainer's defaults)
        return common
    return dict(common, num_rounds=args.rounds, num_local_steps=args.local_steps, num_particles=args.particles)


def ebm_weights(target, log_density) -> np.ndarray:
    """Mode weights of the EBM ``log_density`` (numpy in, numpy out), normalised on the grid."""
    return grid_mode_weights(log_density, target.assign, -6.0, 6.0, 400)


def metrics(name, target, log_density, test_points, negatives_weights, current_weights) -> dict:
    """The table's metrics for the trained EBM ``log_density`` (numpy in, numpy out).

    The negatives' weights are compared with those of the EBM they were drawn
    for, the current iterate (``current_weights``; the trained EBM itself
    without ``--ema``).
    """
    if name == "four":
        weights = ebm_weights(target, log_density)
        return {"four: EBM weight MSE": float(np.mean((weights - target.weights) ** 2)),
                "four: negatives vs EBM MSE": float(np.mean((negatives_weights - current_weights) ** 2))}
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

    schedule = optax.cosine_decay_schedule(args.lr, args.steps, alpha=args.lr_floor)
    centres = target.means if name == "four" else None
    trainer = EBMTrainer(model, optim=optax.adam(schedule), method=method, mode_centres=centres,
                         **settings(args, method))
    state = trainer.init(jax.random.key(seed), data)
    scores, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        state, _ = trainer.update(state, data)
        if step % args.eval_every == 0 and step > args.steps - 10 * args.eval_every:
            def log_density(x, params):
                potential = trainer.potential(params, data)
                return np.asarray(potential.log_prob(jnp.asarray(x, jnp.float32)), float)

            pool_weights = target.mode_weights(np.asarray(state.pool))
            current = ebm_weights(target, lambda x: log_density(x, state.ebm_params)) if name == "four" else None
            scores.append(metrics(name, target, lambda x: log_density(x, state.ema_params), test, pool_weights,
                                  current))
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

    # lr decays to lr_floor x lr over the run, where the NumPyro side's cosine schedule ends
    optim = pyro.optim.ClippedAdam({"lr": args.lr, "lrd": args.lr_floor ** (1 / args.steps)})
    centres = target.means if name == "four" else None
    trainer = EBMTrainer(model, optim=optim, method=method, mode_centres=centres, **settings(args, method))
    state = trainer.init(data)
    scores, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        state, _ = trainer.update(state, data)
        if step % args.eval_every == 0 and step > args.steps - 10 * args.eval_every:
            def log_density(x, params):
                potential = trainer.potential(params, data)
                with torch.no_grad():
                    return potential.log_prob(torch.tensor(x, dtype=torch.float32)).double().numpy()

            pool_weights = target.mode_weights(state.pool.numpy())
            current = ebm_weights(target, lambda x: log_density(x, state.ebm_params)) if name == "four" else None
            scores.append(metrics(name, target, lambda x: log_density(x, state.ema_params), test, pool_weights,
                                  current))
    return scores, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", nargs="+", choices=["numpyro", "pyro"], default=["numpyro"],
                        help="both: each run in both, with the Pyro / NumPyro time ratio")
    parser.add_argument("--data", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", choices=["flow", "ula", "neutra", "short-run"],
                        default=["flow", "ula", "neutra"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--lr-floor", type=float, default=0.1, help="final learning rate / initial")
    parser.add_argument("--pool", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--particles", type=int, default=32)
    parser.add_argument("--ema", type=float, default=0.99, help="ema_decay of the energy's parameters (0: none)")
    args = parser.parse_args()
    runners = {"numpyro": run_numpyro, "pyro": run_pyro}
    print(f"{'metric':40} {'backend':8} {'method':6} {'seed':>4} {'ours':>10} {'paper':>10} {'wall s':>7}")
    for name in args.data:
        for seed in args.seeds:
            for method in args.methods:
                walls = {}
                for backend in args.backend:
                    scores, walls[backend] = runners[backend](name, method, args, seed)
                    for metric in scores[0]:
                        ours = float(np.median([s[metric] for s in scores]))
                        paper = PAPER[metric].get(method, float("nan"))
                        print(f"{metric:40} {backend:8} {method:6} {seed:4d} {ours:10.3g} {paper:10.3g} "
                              f"{walls[backend]:7.0f}", flush=True)
                if len(walls) == 2:
                    print(f"{name}: Pyro / NumPyro wall time {method} seed {seed}: "
                          f"{walls['pyro'] / walls['numpyro']:.2f}", flush=True)


if __name__ == "__main__":
    main()
