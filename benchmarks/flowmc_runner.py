"""Run flowMC (0.6.x, a benchmark-only peer, not a dependency of ebmppl) on a target.

flowMC's RQ-spline + MALA bundle with its own defaults (spline flow 8 bins,
4 layers, MLP 32x32, MALA step 0.1 adapted, lr 1e-3), and the schedule of
its examples: loops of 50 MALA and 50 flow steps, 20 training loops of 5
epochs, then production loops until each chain has the requested draws.
"""

from __future__ import annotations

import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["run_flowmc"]


def run_flowmc(log_density, initial_position, *, num_production_steps: int = 500, seed: int = 0) -> dict:
    """Sample ``log_density`` with flowMC from ``initial_position``.

    Args:
        log_density: JAX function ``(D,) -> scalar``, unnormalized.
        initial_position: array ``(n_chains, D)``, where every chain starts.
        num_production_steps: production draws kept per chain (a multiple of 100).
        seed: seed of flowMC's key.

    Returns:
        dict with ``samples`` (n_chains, num_production_steps, D), ``wall_s``
        (compilation included), ``global_accept`` and ``local_accept`` (production means).
    """
    from flowMC.resource_strategy_bundle.RQSpline_MALA import RQSpline_MALA_Bundle
    from flowMC.Sampler import Sampler

    n_chains, n_dims = np.shape(initial_position)
    n_local = n_global = 50
    if num_production_steps % (n_local + n_global):
        raise ValueError("num_production_steps must be a multiple of 100")
    start = time.perf_counter()
    key = jax.random.key(seed) if hasattr(jax.random, "key") else jax.random.PRNGKey(seed)
    bundle = RQSpline_MALA_Bundle(
        rng_key=key,
        n_chains=n_chains,
        n_dims=n_dims,
        logpdf=lambda x, data: log_density(x),
        n_local_steps=n_local,
        n_global_steps=n_global,
        n_training_loops=20,
        n_production_loops=num_production_steps // (n_local + n_global),
        n_epochs=5,
    )
    with tempfile.TemporaryDirectory() as outdir:
        sampler = Sampler(n_dim=n_dims, n_chains=n_chains, rng_key=key,
                          resource_strategy_bundles=bundle, outdir=outdir, checkpoint_interval=0.0)
        sampler.sample(jnp.asarray(initial_position, jnp.float32), {})
    resources = sampler.resources
    samples = np.asarray(resources["positions_production"].data)
    wall = time.perf_counter() - start
    return {
        "samples": samples,
        "wall_s": wall,
        # each buffer starts at -inf and is filled only in its own half of every loop
        "global_accept": _finite_mean(resources["global_accs_production"].data),
        "local_accept": _finite_mean(resources["local_accs_production"].data),
    }


def _finite_mean(values) -> float:
    values = np.asarray(values)
    return float(values[np.isfinite(values)].mean())


if __name__ == "__main__":
    means = jnp.array([[5.0, 0.0], [-5.0, 0.0]])

    def pair(x):
        return jax.nn.logsumexp(jnp.log(jnp.array([0.8, 0.2])) - 0.5 * jnp.sum((x - means) ** 2, -1))

    init = 3.0 * np.random.default_rng(0).standard_normal((40, 2))
    out = run_flowmc(pair, init)
    print(out["samples"].shape, f"{out['wall_s']:.1f} s", (out["samples"][..., 0] > 0).mean())
