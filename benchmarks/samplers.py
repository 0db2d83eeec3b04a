"""Which sampler? FlowMCMC vs NeuTraHMC vs NUTS (NumPyro backend) on three targets with known answers.

Targets:

- ``funnel``: 10-D Neal's funnel, ``v ~ N(0, 3²)``, ``x_1..9 | v ~ N(0, e^v)``
  (standard deviation ``e^(v/2)``); known: mean of v 0, std of v 3.
- ``mixture``: the 10-D 4-mode mixture of ``benchmarks/flow_mcmc.py`` and
  ``python -m ebmppl.app.demo`` (unit Gaussians at ``(±6, ±6, 0, ...)``, weights
  0.4/0.3/0.2/0.1); known: the mode weights.
- ``banana``: 2-D twisted Gaussian, ``x1 ~ N(0, σ1²)``, ``x2 = y + b (x1² - σ1²)``,
  ``y ~ N(0, 1)``, with ``σ1 = 2``, ``b = 0.5``; known: mean of x2 0,
  variance of x2 ``1 + 2 b² σ1⁴ = 9`` (the value of the banana on which
  NumPyro's NeuTra with a BNAF flow gave 1.9).

Samplers, all with their defaults otherwise: ``FlowMCMC`` (``ebmppl.numpyro``)
with 8 chains and ``FlowMCMC-40`` with 40 (its guidance is 20-100 chains),
``NeuTraHMC`` (reverse KL) and ``NeuTraHMC-fw`` (``fit="forward"``) with 8
chains, NumPyro ``NUTS`` with 8 vectorized chains. Each run: 1000 warm-up and
1000 kept draws per chain, chains started from ``N(0, 3² I)`` (the same
points for every sampler of a seed; the first 8 of the 40 for 8 chains), one
fresh compilation per run. Columns: wall seconds (JIT compilation included),
min bulk ESS over coordinates, ESS/s, max R-hat, divergent draws (HMC
samplers), stuck chains (moved in under 1% of the kept draws), and the key
figures with their error in MCSE units (z = (estimate - truth) / MCSE):
funnel, mean and std of v; mixture, max |weight error| and max |z| of the
mode weights (``ebmppl.diagnostics.mode_weight_zscores``); banana, mean and
variance of x2. A run "passes" when every |z| <= 4 and R-hat <= 1.05;
the verdict per target is the 8-chain sampler that passed on every seed
with the best median ESS/s. About 5 minutes per seed on 2 CPU cores.

    python benchmarks/samplers.py                          # all targets and samplers, seed 0
    python benchmarks/samplers.py --seeds 0 1              # two seeds
    python benchmarks/samplers.py --targets funnel banana --samplers NeuTraHMC NUTS
    python benchmarks/samplers.py --quick                  # smoke run, tiny budget
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Callable

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS

from ebmppl.datasets import four_mode_mixture
from ebmppl.diagnostics import mode_weight_zscores
from ebmppl.numpyro import FlowMCMC, NeuTraHMC

CHAINS, WARMUP, SAMPLES = 8, 1000, 1000
PASS_Z, PASS_RHAT = 4.0, 1.05

# --- targets ------------------------------------------------------------------------------

FUNNEL_DIM, FUNNEL_SCALE = 10, 3.0
BANANA_SIGMA, BANANA_B = 2.0, 0.5
BANANA_VAR_X2 = 1.0 + 2.0 * BANANA_B**2 * BANANA_SIGMA**4  # 9


def funnel_log_density(x):
    v, rest = x[0], x[1:]
    return -(v**2) / (2 * FUNNEL_SCALE**2) - 0.5 * jnp.sum(rest**2) * jnp.exp(-v) - 0.5 * (x.shape[0] - 1) * v


def banana_log_density(x):
    x1, x2 = x[0], x[1]
    return -(x1**2) / (2 * BANANA_SIGMA**2) - 0.5 * (x2 - BANANA_B * (x1**2 - BANANA_SIGMA**2)) ** 2


MIXTURE = four_mode_mixture(dim=10)


def mixture_log_density(x):
    return MIXTURE.log_prob(x, jnp)


def _mean_z(values, truth):
    """(estimate, z) of the mean of ``values`` (chains, draws) against ``truth``."""
    estimate = float(values.mean())
    return estimate, (estimate - truth) / float(az.mcse(values, method="mean"))


def funnel_figures(samples):
    v = samples[..., 0]
    mean, z_mean = _mean_z(v, 0.0)
    std = float(v.std())
    z_std = (std - FUNNEL_SCALE) / float(az.mcse(v, method="sd"))
    return f"mean v {mean:+.2f} (z {z_mean:+.1f}), std v {std:.2f} (z {z_std:+.1f})", [z_mean, z_std]


def mixture_figures(samples):
    labels = MIXTURE.assign(samples)
    weights = np.bincount(labels.ravel(), minlength=4) / labels.size
    error = float(np.abs(weights - MIXTURE.weights).max())
    z = mode_weight_zscores(labels, MIXTURE.weights)
    worst = float(np.abs(z).max())
    shown = " ".join(f"{w:.3f}" for w in weights)
    return f"weights {shown}, max err {error:.3f}, max |z| {worst:.1f}", [worst]


def banana_figures(samples):
    x2 = samples[..., 1]
    mean, z_mean = _mean_z(x2, 0.0)
    # the variance as the mean of the centred square, its MCSE from that quantity's ESS
    centred = (x2 - x2.mean()) ** 2
    var, z_var = _mean_z(centred, BANANA_VAR_X2)
    return f"mean x2 {mean:+.2f} (z {z_mean:+.1f}), var x2 {var:.2f} (z {z_var:+.1f})", [z_mean, z_var]


@dataclass(frozen=True)
class Target:
    log_density: Callable  # one point (D,) -> ()
    dim: int
    figures: Callable  # samples (chains, draws, D) -> (text, z-scores)
    label: str


TARGETS = {
    "funnel": Target(funnel_log_density, FUNNEL_DIM, funnel_figures, "10-D funnel"),
    "mixture": Target(mixture_log_density, MIXTURE.dim, mixture_figures, "10-D 4 modes"),
    "banana": Target(banana_log_density, 2, banana_figures, "2-D banana"),
}

# --- samplers -------------------------------------------------------------------------------


def _run(kernel, init, seed, extra_fields=()):
    mcmc = MCMC(kernel, num_warmup=WARMUP, num_samples=SAMPLES, num_chains=init.shape[0],
                chain_method="vectorized", progress_bar=False)
    start = time.perf_counter()
    mcmc.run(jax.random.key(seed), init_params=init, extra_fields=extra_fields)
    samples = np.asarray(mcmc.get_samples(group_by_chain=True))
    wall = time.perf_counter() - start
    extra = mcmc.get_extra_fields(group_by_chain=True)
    divergences = int(np.asarray(extra["diverging"]).sum()) if "diverging" in extra else None
    return samples, wall, divergences


def _potential(target):
    log_density = target.log_density  # a fresh closure per run: every run compiles afresh
    return lambda x: -log_density(x)


def run_flow_mcmc(target, init, seed):
    return _run(FlowMCMC(potential_fn=_potential(target)), init, seed)


def run_neutra(target, init, seed):
    return _run(NeuTraHMC(potential_fn=_potential(target)), init, seed, ("diverging",))


def run_neutra_forward(target, init, seed):
    return _run(NeuTraHMC(potential_fn=_potential(target), fit="forward"), init, seed, ("diverging",))


def run_nuts(target, init, seed):
    return _run(NUTS(potential_fn=_potential(target)), init, seed, ("diverging",))


# name -> (runner, chains)
SAMPLERS = {
    "FlowMCMC": (run_flow_mcmc, 8),
    "FlowMCMC-40": (run_flow_mcmc, 40),
    "NeuTraHMC": (run_neutra, 8),
    "NeuTraHMC-fw": (run_neutra_forward, 8),
    "NUTS": (run_nuts, 8),
}


def score(target, samples, wall, divergences):
    # a chain that moved in under 1% of its kept draws is stuck
    moved = np.any(np.diff(samples, axis=1) != 0, axis=-1).mean(axis=1)
    stuck = int(np.sum(moved < 0.01))
    dataset = az.convert_to_dataset({"x": samples})
    ess = float(az.ess(dataset, method="bulk")["x"].min())
    rhat = float(az.rhat(dataset)["x"].max())
    text, zs = target.figures(samples)
    worst = max(abs(z) if np.isfinite(z) else math.inf for z in zs)
    passed = worst <= PASS_Z and rhat <= PASS_RHAT
    return {"wall": wall, "ess": ess, "ess_s": ess / wall, "rhat": rhat, "div": divergences,
            "stuck": stuck, "text": text, "pass": passed}


HEADER = (f"{'target':13} {'sampler':12} {'chains':>6} {'seed':>4} {'wall s':>7} {'min ESS':>8} "
          f"{'ESS/s':>8} {'R-hat':>6} {'div':>5} {'stuck':>5} {'ok':>3}  key figures (z = error / MCSE)")


def row(label, name, chains, seed, r):
    div = "-" if r["div"] is None else str(r["div"])
    ok = "yes" if r["pass"] else "NO"
    return (f"{label:13} {name:12} {chains:6d} {seed:4d} {r['wall']:7.1f} {r['ess']:8.0f} "
            f"{r['ess_s']:8.1f} {r['rhat']:6.3f} {div:>5} {r['stuck']:5d} {ok:>3}  {r['text']}")


def verdict(label, results):
    """One line: the 8-chain sampler that passed on every seed with the best median ESS/s,
    then how many seeds each sampler passed."""
    num_seeds = len(next(iter(results.values())))
    passes = {name: sum(r["pass"] for r in runs) for name, runs in results.items()}
    speed = {name: float(np.median([r["ess_s"] for r in runs])) for name, runs in results.items()}
    eight = [name for name in results if SAMPLERS[name][1] == CHAINS]
    always = sorted((n for n in eight if passes[n] == num_seeds), key=speed.get, reverse=True)
    sometimes = sorted((n for n in eight if 0 < passes[n] < num_seeds), key=lambda n: (passes[n], speed[n]))
    if always:
        best = always[0]
        others = ", ".join(f"{speed[best] / speed[n]:.1f}x {n}" for n in always[1:])
        text = f"use {best}" + (f" ({others} in ESS/s)" if others else "")
    elif sometimes:
        text = f"no {CHAINS}-chain sampler passed every seed; closest: {sometimes[-1]}"
    else:
        text = f"no {CHAINS}-chain sampler passed"
    tally = ", ".join(f"{name} {passes[name]}/{num_seeds}" for name in results)
    return f"{label}: {text} [seeds passed: {tally}]"


def main():
    global WARMUP, SAMPLES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--samplers", nargs="+", choices=list(SAMPLERS), default=list(SAMPLERS))
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 warm-up, 100 draws")
    args = parser.parse_args()
    if args.quick:
        WARMUP, SAMPLES = 100, 100

    start = time.perf_counter()
    print(f"{WARMUP} warm-up + {SAMPLES} draws per chain; wall includes JIT compilation", flush=True)
    print(HEADER, flush=True)
    verdicts = []
    for key in args.targets:
        target = TARGETS[key]
        results = {}
        for seed in args.seeds:
            init_all = 3.0 * jax.random.normal(jax.random.key(1000 + seed), (40, target.dim))
            for name in args.samplers:
                runner, chains = SAMPLERS[name]
                r = score(target, *runner(target, init_all[:chains], seed))
                results.setdefault(name, []).append(r)
                print(row(target.label, name, chains, seed, r), flush=True)
        verdicts.append(verdict(target.label, results))
    print()
    for line in verdicts:
        print("verdict", line)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
