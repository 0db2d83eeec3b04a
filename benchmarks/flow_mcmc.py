"""FlowMCMC vs NumPyro NUTS vs flowMC, side by side, in one run.

Targets: (a) 2-D, unit modes at (±5, 0), weights 0.8/0.2; (b) 10-D, unit
modes at (±6, ±6, 0, ...), weights 0.4/0.3/0.2/0.1; (c) 10-D Neal's funnel
(v ~ N(0, 3²), x_i ~ N(0, e^v), i = 1..9). Every sampler runs 40 chains
started from the same N(0, 3² I) points and keeps 500 draws per chain. The
table gives wall seconds (compilation included), min bulk ESS, ESS/s, the
max error of the mode weights (or of v's mean and std), max R-hat, and the
ratio of FlowMCMC's ESS/s to flowMC's.

    python benchmarks/flow_mcmc.py                 # all targets, seed 0
    python benchmarks/flow_mcmc.py --bar           # target (b), FlowMCMC, seeds 0-4

flowMC is a benchmark-only dependency: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS

sys.path.insert(0, str(Path(__file__).parent))
from ebmppl.datasets import bimodal_pair, four_mode_mixture  # noqa: E402
from ebmppl.numpyro import FlowMCMC  # noqa: E402

CHAINS, WARMUP, SAMPLES = 40, 500, 500


def funnel_log_density(x):
    v, rest = x[0], x[1:]
    return -(v**2) / 18.0 - 0.5 * jnp.sum(rest**2) * jnp.exp(-v) - 0.5 * rest.size * v


def targets():
    pair, four = bimodal_pair(heavy=0.8, offset=5.0), four_mode_mixture(dim=10)
    return {
        "(a) 2-D pair .8/.2": (lambda x: pair.log_prob(x, jnp), 2, pair),
        "(b) 10-D 4 modes": (lambda x: four.log_prob(x, jnp), 10, four),
        "(c) 10-D funnel": (funnel_log_density, 10, None),
    }


def run_flow_mcmc(log_density, init, seed):
    mcmc = MCMC(FlowMCMC(potential_fn=lambda x: -log_density(x)), num_warmup=WARMUP,
                num_samples=SAMPLES, num_chains=CHAINS, chain_method="vectorized",
                progress_bar=False)
    start = time.perf_counter()
    mcmc.run(jax.random.key(seed), init_params=init)
    samples = np.asarray(mcmc.get_samples(group_by_chain=True))
    return samples, time.perf_counter() - start


def run_nuts(log_density, init, seed):
    mcmc = MCMC(NUTS(potential_fn=lambda x: -log_density(x)), num_warmup=WARMUP,
                num_samples=SAMPLES, num_chains=CHAINS, chain_method="vectorized",
                progress_bar=False)
    start = time.perf_counter()
    mcmc.run(jax.random.key(seed), init_params=init)
    samples = np.asarray(mcmc.get_samples(group_by_chain=True))
    return samples, time.perf_counter() - start


def run_flowmc(log_density, init, seed):
    from flowmc_runner import run_flowmc as run

    result = run(log_density, np.asarray(init), num_production_steps=SAMPLES, seed=seed)
    return result["samples"], result["wall_s"]


def score(samples, wall, mixture):
    dataset = az.convert_to_dataset({"x": samples})
    ess = float(az.ess(dataset, method="bulk")["x"].min())
    rhat = float(az.rhat(dataset)["x"].max())
    if mixture is not None:
        error = float(np.abs(mixture.mode_weights(samples) - mixture.weights).max())
        accuracy = f"max weight err {error:.4f}"
    else:
        v = samples[..., 0]
        accuracy = f"v mean err {abs(v.mean()):.2f}, std err {abs(v.std() - 3.0):.2f}"
    return {"wall": wall, "ess": ess, "ess_s": ess / wall, "rhat": rhat, "accuracy": accuracy,
            "error": error if mixture is not None else None}


SAMPLERS = {"FlowMCMC": run_flow_mcmc, "NumPyro NUTS": run_nuts, "flowMC": run_flowmc}


def table(seed: int, names: list[str]) -> None:
    print(f"{'target':20} {'sampler':13} {'wall s':>7} {'min ESS':>8} {'ESS/s':>8} {'R-hat':>6}  accuracy")
    for label, (log_density, dim, mixture) in targets().items():
        init = 3.0 * jax.random.normal(jax.random.key(1000 + seed), (CHAINS, dim))
        rows = {}
        for name in names:
            rows[name] = score(*SAMPLERS[name](log_density, init, seed), mixture)
            r = rows[name]
            print(f"{label:20} {name:13} {r['wall']:7.1f} {r['ess']:8.0f} {r['ess_s']:8.1f} "
                  f"{r['rhat']:6.3f}  {r['accuracy']}", flush=True)
        if "flowMC" in rows and "FlowMCMC" in rows:
            ratio = rows["FlowMCMC"]["ess_s"] / rows["flowMC"]["ess_s"]
            print(f"{label:20} FlowMCMC / flowMC ESS/s ratio: {ratio:.1f}x", flush=True)


def bar(seeds: range) -> None:
    """The acceptance bar of target (b): default FlowMCMC, seeds 0-4, each in a
    fresh process so that every wall time includes compilation."""
    import subprocess

    for seed in seeds:
        subprocess.run([sys.executable, __file__, "--bar-seed", str(seed)], check=True)


def bar_seed(seed: int) -> None:
    log_density, dim, mixture = targets()["(b) 10-D 4 modes"]
    init = 3.0 * jax.random.normal(jax.random.key(1000 + seed), (CHAINS, dim))
    samples, wall = run_flow_mcmc(log_density, init, seed)
    r = score(samples, wall, mixture)
    weights = mixture.mode_weights(samples).round(4).tolist()
    print(f"seed {seed}: weights {weights} (max err {r['error']:.4f}), max R-hat {r['rhat']:.3f}, "
          f"min bulk ESS {r['ess']:.0f}, wall {wall:.1f} s, {r['ess_s']:.0f} ESS/s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bar", action="store_true", help="target (b), FlowMCMC, seeds 0-4")
    parser.add_argument("--bar-seed", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated subset")
    args = parser.parse_args()
    if args.bar_seed is not None:
        bar_seed(args.bar_seed)
    elif args.bar:
        bar(range(5))
    else:
        table(args.seed, args.samplers.split(","))


if __name__ == "__main__":
    main()
