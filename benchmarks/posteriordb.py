"""The posteriordb regression: default FlowMCMC and NeuTraHMC against the reference posteriors, beside NUTS.

Every posterior of ``benchmarks/posteriordb/`` is sampled by each kernel with
its defaults, in each backend, in a fresh Python process (the wall time, from
building the kernel to the last draw, includes JAX's compilation), and checked
as posteriordb's stat_comp_benchmarks do: every parameter's mean within 0.25
reference sd and its sd within 20% of the reference's. Printed per run:
pass/fail, max z (|mean - ref| / ref sd over the parameters), worst
|sd / ref sd - 1|, wall time, min bulk ESS over the parameters (walkers or
chains as ArviZ chains), whether the kernel warned at the end of warm-up
that its walkers had not mixed, and the NeuTraHMC / NUTS wall-time ratio
of each posterior and backend.

Budget (the same for every sampler): 8 chains (NumPyro ``num_chains=8``
vectorized, Pyro ``num_walkers=8``; Pyro's NUTS runs 1 chain of the same
length, since Pyro runs chains in processes), 500 warm-up iterations, 500 draws.

    python benchmarks/posteriordb.py                                  # everything
    python benchmarks/posteriordb.py --backends numpyro --names kidiq-kidscore_momiq
    python benchmarks/posteriordb.py --samplers neutra nuts --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SAMPLERS = ("flow", "neutra", "nuts")
BACKENDS = ("numpyro", "pyro")
KERNEL_NAMES = {"flow": "FlowMCMC", "neutra": "NeuTraHMC", "nuts": "NUTS"}


def run_numpyro(name: str, sampler: str, chains: int, warmup: int, draws: int, seed: int) -> dict:
    import jax
    from numpyro.infer import MCMC, NUTS

    import posteriordb_models as pdb
    from ebmppl.numpyro import FlowMCMC, NeuTraHMC

    model, kwargs = pdb.numpyro_model(name)
    start = time.perf_counter()
    kernel = {"flow": FlowMCMC, "neutra": NeuTraHMC, "nuts": NUTS}[sampler](model)
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), **kwargs)
    samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    return {"wall": time.perf_counter() - start, "chains": chains,
            "draws": pdb.stan_draws(name, samples, batch_ndim=2)}


def run_pyro(name: str, sampler: str, chains: int, warmup: int, draws: int, seed: int) -> dict:
    import pyro
    import torch
    from pyro.infer import MCMC, NUTS

    import posteriordb_models as pdb
    from ebmppl.pyro import FlowMCMC, NeuTraHMC

    torch.set_num_threads(1)
    model, kwargs = pdb.pyro_model(name)
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    if sampler == "nuts":
        kernel = NUTS(model)
    else:
        kernel = {"flow": FlowMCMC, "neutra": NeuTraHMC}[sampler](model, num_walkers=chains)
    mcmc = MCMC(kernel, warmup_steps=warmup, num_samples=draws, disable_progbar=True)
    mcmc.run(**kwargs)
    samples = mcmc.get_samples(group_by_chain=True)  # walkers as chains
    return {"wall": time.perf_counter() - start, "chains": 1 if sampler == "nuts" else chains,
            "draws": pdb.stan_draws(name, samples, batch_ndim=2)}


def run_one(backend: str, name: str, sampler: str, chains: int, warmup: int, draws: int, seed: int) -> dict:
    """One run: the check's verdict, max z, worst sd, wall time, min bulk ESS."""
    import arviz as az
    import numpy as np

    import posteriordb_models as pdb

    runner = run_numpyro if backend == "numpyro" else run_pyro
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = runner(name, sampler, chains, warmup, draws, seed)
    for w in caught:  # shown as they would be, and the end-of-warm-up check's kept for the table
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    warned = any("have not mixed" in str(w.message) for w in caught)
    chains_by_param = {p: np.asarray(v).reshape(out["chains"], -1) for p, v in out["draws"].items()}
    flat = {p: v.ravel() for p, v in chains_by_param.items()}
    result = pdb.check(name, flat)
    ess = min(float(az.ess(v, method="bulk")) for v in chains_by_param.values())
    return {
        "backend": backend, "posterior": name, "sampler": sampler, "passed": bool(result["passed"]),
        "max_z": float(result["max_z"]), "worst_sd": float(result["worst_sd"]), "worst": result["worst"],
        "wall": out["wall"], "min_ess": ess, "warned": warned,
    }


def main(argv=None) -> None:
    import posteriordb_models as pdb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="+", default=list(pdb.NAMES), choices=pdb.NAMES)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--json", help="append every result to this file, one JSON object a line")
    parser.add_argument("--one", nargs=3, metavar=("BACKEND", "NAME", "SAMPLER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    budget = (args.chains, args.warmup, args.draws, args.seed)
    if args.one:  # a child process: one run, its result as JSON on the last line
        print(json.dumps(run_one(*args.one, *budget)))
        return
    print(f"{'backend':8} {'posterior':43} {'kernel':10} {'ok':4} {'max z':>6} {'worst sd':>8} "
          f"{'wall s':>7} {'min ESS':>8} {'warned':>6}", flush=True)
    for backend in args.backends:
        for name in args.names:
            walls = {}
            for sampler in args.samplers:
                command = [sys.executable, __file__, "--one", backend, name, sampler,
                           "--chains", str(args.chains), "--warmup", str(args.warmup),
                           "--draws", str(args.draws), "--seed", str(args.seed)]
                env = dict(os.environ, OMP_NUM_THREADS="1")
                try:
                    out = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env)
                except subprocess.TimeoutExpired:
                    print(f"{backend:8} {name:43} {KERNEL_NAMES[sampler]:10} over the {args.timeout:.0f} s limit",
                          flush=True)
                    continue
                if out.returncode != 0:
                    last = (out.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"{backend:8} {name:43} {KERNEL_NAMES[sampler]:10} FAILED: {last}", flush=True)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                walls[sampler] = r["wall"]
                print(f"{backend:8} {name:43} {KERNEL_NAMES[sampler]:10} {'yes' if r['passed'] else 'NO':4} "
                      f"{r['max_z']:6.3f} {r['worst_sd']:8.3f} {r['wall']:7.1f} {r['min_ess']:8.0f} "
                      f"{'yes' if r['warned'] else 'no':>6}"
                      + ("" if r["passed"] else f"  worst {r['worst']}"), flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(r) + "\n")
            if "neutra" in walls and "nuts" in walls:
                ratio = walls["neutra"] / walls["nuts"]
                print(f"{backend:8} {name:43} NeuTraHMC / NUTS wall time {ratio:.2f}"
                      + ("" if ratio <= 3.0 else "  (over 3x)"), flush=True)


if __name__ == "__main__":
    main()
