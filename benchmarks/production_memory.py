"""What a NumPyro FlowMCMC production phase carries, with and without the warm-up's bookkeeping.

Warms up ``--chains`` chains on a ``--dim``-dimensional Gaussian, then samples
in a second ``MCMC.run``; prints the bytes of the state carried through the
production loop (the sum over its leaves), the window's own size, and the
process's peak resident memory. Run it once with the state as warm-up leaves
it and once with ``FlowMCMC.without_adaptation`` (``--drop``); on a commit
before the warm-up was split from the kernel, the first is the only mode.

    python benchmarks/production_memory.py --chains 4000 --dim 32
    python benchmarks/production_memory.py --chains 4000 --dim 32 --drop
"""

from __future__ import annotations

import argparse
import resource

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

from ebmppl.numpyro import FlowMCMC


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--drop", action="store_true", help="sample from FlowMCMC.without_adaptation(state)")
    args = parser.parse_args()

    def model():
        numpyro.sample("x", dist.Normal(0.0, 1.0).expand([args.dim]).to_event(1))

    kernel = FlowMCMC(model)
    mcmc = MCMC(kernel, num_warmup=args.warmup, num_samples=args.samples, num_chains=args.chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.warmup(jax.random.key(0))
    if args.drop:
        mcmc.post_warmup_state = FlowMCMC.without_adaptation(mcmc.post_warmup_state)
    mcmc.run(jax.random.key(1))
    state = mcmc.last_state
    carried = sum(leaf.nbytes for leaf in jax.tree.leaves(state) if isinstance(leaf, jax.Array))
    window = args.chains * args.dim * kernel.schedule.window * jnp.dtype(jnp.float32).itemsize
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"chains {args.chains}, dim {args.dim}, window {kernel.schedule.window} iterations "
          f"({window / 2**20:.1f} MiB); production state carried: {carried / 2**20:.1f} MiB; "
          f"process peak RSS {peak:.0f} MiB; drop={args.drop}")


if __name__ == "__main__":
    main()
