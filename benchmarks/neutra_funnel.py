"""NeuTraHMC on the 10-D Neal's funnel, both backends, against NumPyro's NUTS, in one run.

The funnel: ``v ~ N(0, 3)``, ``x_1..9 | v ~ N(0, exp(v / 2))``; the truth is
mean(v) = 0, std(v) = 3. Every sampler gets 8 chains, 1000 warm-up
iterations and 1000 draws, with its defaults. Each run is a fresh Python
process, as a user's would be: its wall time (from building the kernel to
the last draw) includes JAX's compilation, and no run reuses another's
compiled code. Printed per run: mean and
standard deviation of ``v`` with their errors in Monte-Carlo standard
errors, R-hat, bulk ESS of ``v``, divergences, wall time (compilation
included); then the Pyro / NumPyro time ratio for each seed and whether the
bar holds (|mean v| <= 0.15, |std v - 3| <= 0.15, R-hat <= 1.01, NumPyro
under 60 s, Pyro within 3x NumPyro).

    python benchmarks/neutra_funnel.py --seeds 0 1 2
    python benchmarks/neutra_funnel.py --samplers numpyro-neutra --seeds 0   # one sampler
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import arviz as az
import numpy as np

DIM = 10
SAMPLERS = ("numpyro-neutra", "pyro-neutra", "numpyro-nuts")


def numpyro_funnel():
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def model():
        v = numpyro.sample("v", dist.Normal(0.0, 3.0))
        numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2)).expand([DIM - 1]).to_event(1))

    return model


def run_numpyro(seed: int, kernel_name: str, chains: int, warmup: int, draws: int):
    import jax
    from numpyro.infer import MCMC, NUTS

    from ebmppl.numpyro import NeuTraHMC

    model = numpyro_funnel()
    start = time.perf_counter()
    if kernel_name == "neutra":
        mcmc = MCMC(NeuTraHMC(model), num_warmup=warmup, num_samples=draws, num_chains=chains,
                    chain_method="vectorized", progress_bar=False)
    else:
        mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=draws, num_chains=chains,
                    chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(seed), extra_fields=("diverging",))
    wall = time.perf_counter() - start
    v = np.asarray(mcmc.get_samples(group_by_chain=True)["v"])
    return v, int(np.sum(mcmc.get_extra_fields()["diverging"])), wall


def run_pyro(seed: int, chains: int, warmup: int, draws: int):
    import pyro
    import pyro.distributions as dist
    from pyro.infer import MCMC

    from ebmppl.pyro import NeuTraHMC

    def model():
        v = pyro.sample("v", dist.Normal(0.0, 3.0))
        scale = (v / 2).exp().unsqueeze(-1)
        pyro.sample("x", dist.Normal(0.0, scale).expand(v.shape + (DIM - 1,)).to_event(1))

    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    kernel = NeuTraHMC(model, num_walkers=chains)
    mcmc = MCMC(kernel, warmup_steps=warmup, num_samples=draws, disable_progbar=True)
    mcmc.run()
    wall = time.perf_counter() - start
    v = mcmc.get_samples(group_by_chain=True)["v"].numpy()  # (walkers, draws)
    return v, int(kernel.sample_stats[-1]["diverging"].sum()), wall


def summary(v: np.ndarray) -> dict:
    return dict(
        mean=float(v.mean()), std=float(v.std()),
        z_mean=float(v.mean() / az.mcse(v, method="mean")),
        z_std=float((v.std() - 3.0) / az.mcse(v, method="sd")),
        rhat=float(az.rhat(v)), ess=float(az.ess(v)),
    )


def run_one(name: str, seed: int, chains: int, warmup: int, draws: int) -> dict:
    """One run in this process; the result as a dict."""
    if name == "pyro-neutra":
        v, divergences, wall = run_pyro(seed, chains, warmup, draws)
    else:
        v, divergences, wall = run_numpyro(seed, name.split("-")[1], chains, warmup, draws)
    return dict(summary(v), divergences=divergences, wall=wall)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--one", nargs=2, metavar=("SAMPLER", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    budget = (args.chains, args.warmup, args.draws)
    if args.one:  # a child process: one run, its result as JSON on the last line
        print(json.dumps(run_one(args.one[0], int(args.one[1]), *budget)))
        return
    print(f"{'sampler':16} {'seed':>4} {'mean v':>7} {'(z)':>6} {'std v':>6} {'(z)':>6} {'R-hat':>6} "
          f"{'ESS':>6} {'div':>5} {'wall s':>7}")
    for seed in args.seeds:
        results = {}
        for name in args.samplers:
            command = [sys.executable, __file__, "--one", name, str(seed), "--chains", str(args.chains),
                       "--warmup", str(args.warmup), "--draws", str(args.draws)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            s = results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{name:16} {seed:4d} {s['mean']:7.3f} {s['z_mean']:6.2f} {s['std']:6.3f} {s['z_std']:6.2f} "
                  f"{s['rhat']:6.3f} {s['ess']:6.0f} {s['divergences']:5d} {s['wall']:7.1f}", flush=True)
        walls = {name: s["wall"] for name, s in results.items()}
        if "numpyro-neutra" in walls and "pyro-neutra" in walls:
            print(f"seed {seed}: Pyro / NumPyro NeuTraHMC wall time {walls['pyro-neutra'] / walls['numpyro-neutra']:.2f}")
        for name in ("numpyro-neutra", "pyro-neutra"):
            if name in results:
                s = results[name]
                ok = abs(s["mean"]) <= 0.15 and abs(s["std"] - 3.0) <= 0.15 and s["rhat"] <= 1.01
                if name == "numpyro-neutra":
                    ok = ok and walls[name] < 60.0
                elif "numpyro-neutra" in walls:
                    ok = ok and walls[name] <= 3.0 * walls["numpyro-neutra"]
                print(f"seed {seed}: bar {'holds' if ok else 'MISSED'} for {name}", flush=True)


if __name__ == "__main__":
    main()
