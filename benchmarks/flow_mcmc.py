"""ebmppl's FlowMCMC (NumPyro and Pyro) vs NUTS (NumPyro and Pyro) vs flowMC, in one run.

Targets: (a) 2-D, unit modes at (±5, 0), weights 0.8/0.2; (b) 10-D, unit
modes at (±6, ±6, 0, ...), weights 0.4/0.3/0.2/0.1; (c) 10-D Neal's funnel
(v ~ N(0, 3²), x_i ~ N(0, e^v), i = 1..9). Every sampler runs 40 chains
(walkers) started from the same N(0, 3² I) points and keeps 500 draws per
chain, except Pyro NUTS, which has no vectorized chains: it runs 4 chains
one after another (the first 4 starting points), 500 warm-up and 5000
draws each. The table gives wall seconds (compilation included), min bulk
ESS, ESS/s, the max error of the mode weights (or of v's mean and std), max
R-hat, and the ratios of ESS/s between samplers.

    python benchmarks/flow_mcmc.py                 # all targets, seed 0
    python benchmarks/flow_mcmc.py --bar           # target (b), both FlowMCMCs, seeds 0-4

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
import pyro
import torch
from numpyro.infer import MCMC, NUTS

sys.path.insert(0, str(Path(__file__).parent))
from ebmppl.datasets import bimodal_pair, four_mode_mixture  # noqa: E402
from ebmppl.numpyro import FlowMCMC  # noqa: E402
from ebmppl.pyro import FlowMCMC as PyroFlowMCMC  # noqa: E402

CHAINS, WARMUP, SAMPLES = 40, 500, 500


def funnel_log_density(x, xp=jnp):
    v, rest = x[0], x[1:]
    return -(v**2) / 18.0 - 0.5 * (rest**2).sum() * xp.exp(-v) - 0.5 * (x.shape[0] - 1) * v


class Target:
    """A log density of one point ``(D,)`` in JAX (``.jax``) and torch (``.torch``)."""

    def __init__(self, log_density, dim, mixture):
        self.jax = lambda x: log_density(x, jnp)
        self.torch = lambda x: log_density(x, torch)
        self.dim, self.mixture = dim, mixture


def targets():
    pair, four = bimodal_pair(heavy=0.8, offset=5.0), four_mode_mixture(dim=10)
    return {
        "(a) 2-D pair .8/.2": Target(pair.log_prob, 2, pair),
        "(b) 10-D 4 modes": Target(four.log_prob, 10, four),
        "(c) 10-D funnel": Target(funnel_log_density, 10, None),
    }


def run_flow_mcmc(target, init, seed):
    mcmc = MCMC(FlowMCMC(potential_fn=lambda x: -target.jax(x)), num_warmup=WARMUP,
                num_samples=SAMPLES, num_chains=CHAINS, chain_method="vectorized",
                progress_bar=False)
    start = time.perf_counter()
    mcmc.run(jax.random.key(seed), init_params=init)
    samples = np.asarray(mcmc.get_samples(group_by_chain=True))
    return samples, time.perf_counter() - start


def run_nuts(target, init, seed):
    mcmc = MCMC(NUTS(potential_fn=lambda x: -target.jax(x)), num_warmup=WARMUP,
                num_samples=SAMPLES, num_chains=CHAINS, chain_method="vectorized",
                progress_bar=False)
    start = time.perf_counter()
    mcmc.run(jax.random.key(seed), init_params=init)
    samples = np.asarray(mcmc.get_samples(group_by_chain=True))
    return samples, time.perf_counter() - start


def run_pyro_flow_mcmc(target, init, seed):
    pyro.set_rng_seed(seed)
    kernel = PyroFlowMCMC(potential_fn=lambda p: -target.torch(p["x"]))
    mcmc = pyro.infer.MCMC(kernel, num_samples=SAMPLES, warmup_steps=WARMUP,
                           initial_params={"x": torch.tensor(np.array(init))},
                           disable_progbar=True)
    start = time.perf_counter()
    mcmc.run()
    samples = mcmc.get_samples(group_by_chain=True)["x"].numpy()  # walkers as chains
    return samples, time.perf_counter() - start


PYRO_NUTS_CHAINS, PYRO_NUTS_SAMPLES = 4, 5000


def run_pyro_nuts(target, init, seed):
    pyro.set_rng_seed(seed)
    kernel = pyro.infer.NUTS(potential_fn=lambda p: -target.torch(p["x"]))
    init = torch.tensor(np.array(init[:PYRO_NUTS_CHAINS]))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "chains will be drawn sequentially"
        mcmc = pyro.infer.MCMC(kernel, num_samples=PYRO_NUTS_SAMPLES, warmup_steps=WARMUP,
                               num_chains=PYRO_NUTS_CHAINS, initial_params={"x": init},
                               disable_progbar=True)
        start = time.perf_counter()
        mcmc.run()
    samples = mcmc.get_samples(group_by_chain=True)["x"].numpy()
    return samples, time.perf_counter() - start


def run_flowmc(target, init, seed):
    from flowmc_runner import run_flowmc as run

    result = run(target.jax, np.asarray(init), num_production_steps=SAMPLES, seed=seed)
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


SAMPLERS = {
    "FlowMCMC": run_flow_mcmc,  # ebmppl.numpyro
    "Pyro FlowMCMC": run_pyro_flow_mcmc,  # ebmppl.pyro
    "NumPyro NUTS": run_nuts,
    "Pyro NUTS": run_pyro_nuts,
    "flowMC": run_flowmc,
}
RATIOS = [("FlowMCMC", "flowMC"), ("Pyro FlowMCMC", "FlowMCMC"), ("Pyro FlowMCMC", "Pyro NUTS")]


def table(seed: int, names: list[str]) -> None:
    print(f"{'target':20} {'sampler':13} {'wall s':>7} {'min ESS':>8} {'ESS/s':>8} {'R-hat':>6}  accuracy")
    for label, target in targets().items():
        init = 3.0 * jax.random.normal(jax.random.key(1000 + seed), (CHAINS, target.dim))
        rows = {}
        for name in names:
            rows[name] = score(*SAMPLERS[name](target, init, seed), target.mixture)
            r = rows[name]
            print(f"{label:20} {name:13} {r['wall']:7.1f} {r['ess']:8.0f} {r['ess_s']:8.1f} "
                  f"{r['rhat']:6.3f}  {r['accuracy']}", flush=True)
        for top, bottom in RATIOS:
            if top in rows and bottom in rows:
                ratio = rows[top]["ess_s"] / rows[bottom]["ess_s"]
                print(f"{label:20} {top} / {bottom} ESS/s ratio: {ratio:.2f}x", flush=True)


BAR_SAMPLERS = {"numpyro": "FlowMCMC", "pyro": "Pyro FlowMCMC"}


def bar(seeds: range) -> None:
    """The acceptance bar of target (b): default FlowMCMC of each backend, seeds
    0-4, each run in a fresh process so that every wall time includes
    compilation; the Pyro kernel's ESS/s is compared with the NumPyro one's."""
    import json
    import subprocess

    for seed in seeds:
        ess_s = {}
        for backend in BAR_SAMPLERS:
            out = subprocess.run([sys.executable, __file__, "--bar-seed", str(seed), "--backend", backend],
                                 check=True, capture_output=True, text=True).stdout
            line, record = out.strip().splitlines()[-2:]
            print(line, flush=True)
            ess_s[backend] = json.loads(record)["ess_s"]
        print(f"seed {seed}: Pyro / NumPyro ESS/s ratio {ess_s['pyro'] / ess_s['numpyro']:.2f}", flush=True)


def bar_seed(seed: int, backend: str) -> None:
    import json

    target = targets()["(b) 10-D 4 modes"]
    init = 3.0 * jax.random.normal(jax.random.key(1000 + seed), (CHAINS, target.dim))
    samples, wall = SAMPLERS[BAR_SAMPLERS[backend]](target, init, seed)
    r = score(samples, wall, target.mixture)
    weights = target.mixture.mode_weights(samples).round(4).tolist()
    print(f"seed {seed} {backend:8}: weights {weights} (max err {r['error']:.4f}), max R-hat "
          f"{r['rhat']:.3f}, min bulk ESS {r['ess']:.0f}, wall {wall:.1f} s, {r['ess_s']:.0f} ESS/s")
    print(json.dumps({"ess_s": r["ess_s"]}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bar", action="store_true", help="target (b), both FlowMCMCs, seeds 0-4")
    parser.add_argument("--bar-seed", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--backend", choices=list(BAR_SAMPLERS), default="numpyro", help=argparse.SUPPRESS)
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated subset")
    args = parser.parse_args()
    if args.bar_seed is not None:
        bar_seed(args.bar_seed, args.backend)
    elif args.bar:
        bar(range(5))
    else:
        table(args.seed, args.samplers.split(","))


if __name__ == "__main__":
    main()
