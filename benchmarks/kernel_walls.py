"""Wall time of the NumPyro kernels on the 10-D funnel, first call (compiling) and warm calls.

One ``MCMC`` object runs ``--runs`` times with seeds 0, 1, ...: the first call
compiles, the later ones reuse the compiled code, so their time is the
kernel's own. Compare two commits by running it with each on ``PYTHONPATH``,
alternating.

    python benchmarks/kernel_walls.py --kernels neutra flow --runs 3
"""

from __future__ import annotations

import argparse
import time

import jax
from numpyro.infer import MCMC

from neutra_funnel import numpyro_funnel

from ebmppl.numpyro import FlowMCMC, NeuTraHMC

_KERNELS = {"neutra": (NeuTraHMC, 8), "flow": (FlowMCMC, 40)}  # kernel, chains (as in the bar scripts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", nargs="+", choices=sorted(_KERNELS), default=["neutra", "flow"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args()
    model = numpyro_funnel()
    for name in args.kernels:
        kernel, chains = _KERNELS[name]
        mcmc = MCMC(kernel(model), num_warmup=args.warmup, num_samples=args.draws, num_chains=chains,
                    chain_method="vectorized", progress_bar=False)
        walls = []
        for seed in range(args.runs):
            start = time.perf_counter()
            mcmc.run(jax.random.key(seed))
            jax.block_until_ready(mcmc.get_samples())
            walls.append(time.perf_counter() - start)
        print(f"{name:7s} {chains} chains: " + " ".join(f"{wall:.2f}" for wall in walls) + " s (first call compiles)")


if __name__ == "__main__":
    main()
