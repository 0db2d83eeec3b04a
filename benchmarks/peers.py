"""Runners for the benchmark-only peer samplers (not dependencies of ebmppl).

Every runner takes a target as ``log_density`` (JAX, one point ``(D,) ->
scalar``, unnormalized), ``prior`` (the broad reference distribution that
also gives every sampler's starting points: ``{"kind": "uniform", "low",
"high"}``, a box with the same bounds per coordinate, or ``{"kind":
"normal", "loc", "scale"}``, iid per coordinate), ``dim``, ``num_draws`` and
``seed``, and returns a dict with ``samples`` (numpy ``(N, D)``, equally
weighted), ``wall_s`` (compilation included), ``compile_s`` (None where it
cannot be separated), ``log_z`` (None where the sampler gives none),
``num_evals`` (target evaluations; a value-and-gradient call counts as one
evaluation and is also counted in ``num_grad_evals``) and extras.

The SMC-type samplers see the target as prior x likelihood with
``log L(x) = log_density(x) - log prior(x)`` (``-inf`` outside a uniform
box), so their log-evidence is ``log Z`` of ``log_density``.

Settings:

- ``run_flowmc_mala``: ``flowmc_runner.run_flowmc`` (flowMC 0.6.x
  ``RQSpline_MALA_Bundle``), chains started from ``prior``.
- ``run_flowmc_pt``: flowMC 0.6.x ``RQSpline_MALA_PT_Bundle`` with its
  defaults (5 temperatures, max temperature 5, adapted during training,
  ``n_tempered_steps`` = the 50 local steps, ``logprior`` zero, so the
  tempered densities are ``log_density / T``) and the schedule of
  ``flowmc_runner.py``: loops of 50 MALA and 50 flow steps, 20 training loops
  of 5 epochs, then production loops; chains started from ``prior``.
- ``run_pocomc``: pocoMC 1.2.x ``Sampler`` with its defaults
  (``n_effective=512``, ``n_active=256``, ``nsf6`` flow, t-preconditioned
  Crank-Nicolson moves, ``n_total=4096``, ``n_evidence=4096``: log Z from
  importance sampling with the final flow), a ``pocomc.Prior`` of
  scipy.stats ``uniform`` / ``norm`` per coordinate and the vectorized
  likelihood (jitted, vmapped ``log_density``, float32 inside JAX), 1 torch thread.
- ``run_blackjax_smc``: BlackJAX 1.7.x ``adaptive_tempered_smc`` (target ESS
  0.5, systematic resampling) with an HMC inner kernel (as the BlackJAX SMC
  examples): 10 HMC moves of 10 leapfrog steps per tempering stage, the
  diagonal inverse mass matrix set from the weighted particle variances
  before every stage (``inverse_mass_matrix_from_particles``, arXiv
  1808.07730 s. 3.1) and the step size from the previous stage's acceptance
  (``update_scale_from_acceptance_rate``, target 0.65); log Z is the sum of
  ``SMCInfo.log_likelihood_increment``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

__all__ = [
    "sample_prior",
    "prior_logpdf",
    "log_likelihood",
    "run_flowmc_mala",
    "run_flowmc_pt",
    "run_pocomc",
    "run_blackjax_smc",
]

# flowMC's loop schedule, as in flowmc_runner.py.
_N_LOCAL = _N_GLOBAL = 50
_N_TRAINING_LOOPS = 20
_N_EPOCHS = 5


# --------------------------------------------------------------------------- prior / likelihood


def sample_prior(prior: dict, dim: int, n: int, seed: int) -> np.ndarray:
    """``n`` iid draws ``(n, dim)`` (float64) from ``prior``, from numpy's ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    if prior["kind"] == "uniform":
        return rng.uniform(prior["low"], prior["high"], size=(n, dim))
    if prior["kind"] == "normal":
        return prior["loc"] + prior["scale"] * rng.standard_normal((n, dim))
    raise ValueError(f"unknown prior kind {prior['kind']!r}")


def prior_logpdf(prior: dict, dim: int):
    """JAX log density ``(D,) -> scalar`` of ``prior`` (normalized; ``-inf`` outside a uniform box)."""
    if prior["kind"] == "uniform":
        low, high = float(prior["low"]), float(prior["high"])
        const = -dim * math.log(high - low)

        def logp(x):
            inside = jnp.all((x >= low) & (x <= high))
            return jnp.where(inside, const, -jnp.inf)

        return logp
    if prior["kind"] == "normal":
        loc, scale = float(prior["loc"]), float(prior["scale"])
        const = -dim * (0.5 * math.log(2 * math.pi) + math.log(scale))

        def logp(x):
            return const - 0.5 * jnp.sum(((x - loc) / scale) ** 2)

        return logp
    raise ValueError(f"unknown prior kind {prior['kind']!r}")


def log_likelihood(log_density, prior: dict, dim: int):
    """``log L = log_density - log prior``, JAX ``(D,) -> scalar``; ``-inf`` outside a uniform box.

    The gradient is finite inside the box (the ``-inf`` branch is selected
    with ``jnp.where`` on the value, not subtracted).
    """
    logp = prior_logpdf(prior, dim)
    if prior["kind"] == "uniform":
        low, high = float(prior["low"]), float(prior["high"])
        const = -dim * math.log(high - low)

        def logl(x):
            inside = jnp.all((x >= low) & (x <= high))
            return jnp.where(inside, log_density(x) - const, -jnp.inf)

        return logl
    return lambda x: log_density(x) - logp(x)


def _systematic_resample(samples: np.ndarray, weights: np.ndarray, n: int, rng) -> np.ndarray:
    """``n`` equally weighted draws from weighted ``samples`` by systematic resampling (order shuffled)."""
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    positions = (rng.uniform() + np.arange(n)) / n
    idx = np.searchsorted(np.cumsum(w), positions, side="right")
    idx = np.minimum(idx, len(w) - 1)
    return np.asarray(samples)[rng.permutation(idx)]


def _draws_from_chains(chains: np.ndarray, num_draws: int) -> np.ndarray:
    """``num_draws`` rows from ``(n_chains, n_steps, D)``: evenly thinned steps, every chain used."""
    n_chains, n_steps, dim = chains.shape
    per_chain = min(n_steps, -(-num_draws // n_chains))
    steps = np.linspace(0, n_steps - 1, per_chain).round().astype(int)
    return np.transpose(chains[:, steps], (1, 0, 2)).reshape(-1, dim)[:num_draws]


def _key(seed: int):
    return jax.random.key(seed) if hasattr(jax.random, "key") else jax.random.PRNGKey(seed)


# --------------------------------------------------------------------------- flowMC


def _finite_mean(buffer) -> float:
    """Mean of a flowMC acceptance buffer over its written entries.

    flowMC's buffers start at ``-inf`` and each acceptance buffer is written
    only in its own kernel's half of every loop (local: steps 0-49, global:
    50-99), so a plain mean is ``-inf``.
    """
    data = np.asarray(buffer)
    return float(np.mean(data[np.isfinite(data)]))


def _flowmc_evals(n_chains, n_loops, n_temperatures=0, n_tempered_steps=_N_LOCAL):
    """Target evaluations of a flowMC run, counted from flowMC 0.6.4's code.

    Per chain and loop: the MALA stepper evaluates the start point once and
    calls ``value_and_grad`` twice per step (current point and proposal); the
    flow stepper evaluates the start point once and each of its proposals
    once; with PT, every temperature takes ``n_tempered_steps`` MALA steps
    (1 + 2 per step) and the exchange evaluates every temperature once.
    Returns ``(num_evals, num_grad_evals)``.
    """
    grad = (2 * _N_LOCAL + n_temperatures * 2 * n_tempered_steps) * n_loops * n_chains
    value = (1 + 1 + _N_GLOBAL + 2 * n_temperatures) * n_loops * n_chains
    return grad + value, grad


def run_flowmc_mala(log_density, prior: dict, dim: int, num_draws: int, seed: int = 0,
                    *, n_chains: int = 40) -> dict:
    """flowMC's RQ-spline + MALA bundle via ``flowmc_runner.run_flowmc``, chains started from ``prior``.

    Production steps per chain: the least multiple of 100 that gives
    ``n_chains * steps >= num_draws``; ``samples`` are ``num_draws`` of them
    (steps evenly thinned, every chain used). ``compile_s`` is None (flowMC
    compiles inside its strategies); ``log_z`` is None. ``num_evals`` counts a
    MALA ``value_and_grad`` as one evaluation (see ``_flowmc_evals``).
    ``global_accept`` / ``local_accept`` come from ``run_flowmc`` (means of
    the written entries of flowMC's acceptance buffers).
    """
    from flowmc_runner import run_flowmc

    steps = 100 * max(1, -(-num_draws // (100 * n_chains)))
    init = sample_prior(prior, dim, n_chains, seed)
    out = run_flowmc(log_density, init, num_production_steps=steps, seed=seed)
    chains = np.asarray(out.pop("samples"))
    wall = out.pop("wall_s")
    return _flowmc_result(chains, num_draws, wall, n_chains, steps, 0, out)


def run_flowmc_pt(log_density, prior: dict, dim: int, num_draws: int, seed: int = 0,
                  *, n_chains: int = 40, n_temperatures: int = 5, max_temperature: float = 5.0,
                  temper_likelihood: bool = False) -> dict:
    """flowMC's RQ-spline + MALA + parallel-tempering bundle, chains started from ``prior``.

    ``RQSpline_MALA_PT_Bundle`` with its defaults and the loop schedule of
    ``flowmc_runner.py``. By default (the bundle's ``logprior`` of zero) the
    tempered chains sample ``log_density / T`` -- with heavy tails (e.g.
    Student-t modes) ``p^(1/T)`` may be improper and the hot chains drift
    away. ``temper_likelihood=True`` instead tempers only the likelihood,
    ``log prior + (log_density - log prior) / T``, by replacing the bundle's
    ``TemperedPDF`` (at T = 1 both equal ``log_density``, which the
    untempered MALA / flow steppers always sample).

    Production steps per chain: the least multiple of 100 with
    ``n_chains * steps >= num_draws``; ``samples`` are ``num_draws`` of the
    T = 1 draws (evenly thinned, every chain used). ``compile_s`` and
    ``log_z`` are None. Extras: acceptances, final temperatures.
    """
    import tempfile

    from flowMC.resource.logPDF import LogPDF, TemperedPDF
    from flowMC.resource_strategy_bundle.RQSpline_MALA_PT import RQSpline_MALA_PT_Bundle
    from flowMC.Sampler import Sampler

    steps = 100 * max(1, -(-num_draws // (100 * n_chains)))
    init = sample_prior(prior, dim, n_chains, seed)
    start = time.perf_counter()
    key = _key(seed)
    bundle = RQSpline_MALA_PT_Bundle(
        rng_key=key,
        n_chains=n_chains,
        n_dims=dim,
        logpdf=lambda x, data: log_density(x),
        n_local_steps=_N_LOCAL,
        n_global_steps=_N_GLOBAL,
        n_training_loops=_N_TRAINING_LOOPS,
        n_production_loops=steps // 100,
        n_epochs=_N_EPOCHS,
        n_temperatures=n_temperatures,
        max_temperature=max_temperature,
        n_tempered_steps=_N_LOCAL,  # = the bundle's default (-1 -> n_local_steps), without its warning
    )
    if temper_likelihood:
        logl, logp = log_likelihood(log_density, prior, dim), prior_logpdf(prior, dim)
        bundle.resources["tempered_logpdf"] = TemperedPDF(
            LogPDF(lambda x, data: logl(x), n_dims=dim), lambda x, data: logp(x), n_dims=dim,
            n_temps=n_temperatures)
    with tempfile.TemporaryDirectory() as outdir:
        sampler = Sampler(n_dim=dim, n_chains=n_chains, rng_key=key,
                          resource_strategy_bundles=bundle, outdir=outdir, checkpoint_interval=0.0)
        sampler.sample(jnp.asarray(init, jnp.float32), {})
    resources = sampler.resources
    chains = np.asarray(resources["positions_production"].data)
    wall = time.perf_counter() - start
    return _flowmc_result(chains, num_draws, wall, n_chains, steps, n_temperatures, {
        "global_accept": _finite_mean(resources["global_accs_production"].data),
        "local_accept": _finite_mean(resources["local_accs_production"].data),
        "temperatures": np.asarray(resources["temperatures"].data).tolist(),
    })


def _flowmc_result(chains, num_draws, wall, n_chains, steps, n_temperatures, extras) -> dict:
    """A flowMC runner's dict: ``num_draws`` thinned draws, the chains, the counts (no compile, no log Z)."""
    num_evals, num_grad = _flowmc_evals(n_chains, _N_TRAINING_LOOPS + steps // 100, n_temperatures)
    return {
        "samples": _draws_from_chains(chains, num_draws),
        "chains": chains,  # (n_chains, steps, D): for R-hat and ESS
        "wall_s": wall,
        "compile_s": None,
        "log_z": None,
        "num_evals": num_evals,
        "num_grad_evals": num_grad,
        "n_chains": n_chains,
        "production_steps_per_chain": steps,
        **extras,
    }


# --------------------------------------------------------------------------- pocoMC


def run_pocomc(log_density, prior: dict, dim: int, num_draws: int, seed: int = 0,
               *, n_total: int = 4096, n_evidence: int = 4096, torch_threads: int = 1,
               **sampler_kwargs) -> dict:
    """pocoMC (preconditioned SMC) with its default settings.

    ``pocomc.Sampler(Prior([...]), logL, vectorize=True, random_state=seed)``
    with ``n_effective=512``, ``n_active=256`` (defaults), then
    ``run(n_total, n_evidence)``. The likelihood is the jitted, vmapped
    ``log L`` (float32 in JAX, returned as float64 numpy; ``-inf`` outside a
    uniform box). ``samples``: ``num_draws`` systematic resamples of
    ``posterior()``'s importance-weighted particles (pocoMC trims the weights
    to ESS 0.99 first; their count is ``num_weighted``). ``log_z``:
    ``evidence()`` (importance sampling with the final flow when
    ``n_evidence > 0``, else the SMC estimate), ``log_z_err`` its error.
    ``num_evals``: ``sampler.calls`` (likelihood calls, evidence included;
    no gradients). ``compile_s``: the time of one warm call of the jitted
    likelihood on a batch of ``n_active`` (later batch sizes compile again).
    ``torch_threads`` defaults to 1: on a shared 2-core machine 2 torch
    threads made single flow trainings take up to 65 s instead of ~1 s
    (OpenMP contention; same result). ``sampler_kwargs`` go to
    ``pocomc.Sampler`` (e.g. ``n_effective``, ``train_config``).
    """
    import pocomc
    import torch
    from scipy import stats

    torch.set_num_threads(torch_threads)
    start = time.perf_counter()
    if prior["kind"] == "uniform":
        dist = stats.uniform(loc=prior["low"], scale=prior["high"] - prior["low"])
    elif prior["kind"] == "normal":
        dist = stats.norm(loc=prior["loc"], scale=prior["scale"])
    else:
        raise ValueError(f"unknown prior kind {prior['kind']!r}")
    poco_prior = pocomc.Prior([dist] * dim)
    batched = jax.jit(jax.vmap(log_likelihood(log_density, prior, dim)))

    def loglike(x):
        return np.asarray(batched(jnp.asarray(x)), dtype=np.float64)

    t0 = time.perf_counter()
    loglike(sample_prior(prior, dim, 256, seed))
    compile_s = time.perf_counter() - t0
    sampler = pocomc.Sampler(poco_prior, loglike, n_dim=dim, vectorize=True,
                             pytorch_threads=torch_threads, random_state=seed, **sampler_kwargs)
    sampler.run(n_total=n_total, n_evidence=n_evidence, progress=False)
    samples, weights, _logl, _logp = sampler.posterior()
    log_z, log_z_err = sampler.evidence()
    draws = _systematic_resample(samples, weights, num_draws, np.random.default_rng(seed))
    wall = time.perf_counter() - start
    return {
        "samples": draws,
        "wall_s": wall,
        "compile_s": compile_s,
        "log_z": float(log_z),
        "log_z_err": None if log_z_err is None else float(log_z_err),
        "num_evals": int(sampler.calls),
        "num_grad_evals": 0,
        "num_weighted": int(len(samples)),
        "ess_weights": float(1.0 / np.sum((weights / weights.sum()) ** 2)),
        "num_iterations": int(sampler.t),
    }


# --------------------------------------------------------------------------- BlackJAX


def run_blackjax_smc(log_density, prior: dict, dim: int, num_draws: int, seed: int = 0,
                     *, num_particles: int = 2000, target_ess: float = 0.5, num_mcmc_steps: int = 10,
                     num_integration_steps: int = 10, max_stages: int = 1000) -> dict:
    """BlackJAX adaptive tempered SMC with an adapted HMC inner kernel.

    Particles start from ``prior`` (``sample_prior(..., seed)``); a Python loop
    over one AOT-compiled SMC step (``adaptive_tempered_smc`` with
    ``hmc.build_kernel()`` and systematic resampling) runs until the tempering
    parameter reaches 1 (or ``max_stages``). Before every stage the inverse
    mass matrix is the weighted particle variance and the step size (initially
    ``0.5 * dim**-0.25``) is scaled by ``exp(acceptance - 0.65)``.
    ``samples``: ``num_draws`` systematic resamples of the final weighted
    particles. ``log_z``: sum of ``log_likelihood_increment``. ``compile_s``:
    time of ``jax.jit(step).lower(...).compile()``. ``num_evals`` per stage
    and particle: 1 (ESS solve) + 1 (HMC init, value and gradient) +
    ``num_mcmc_steps * num_integration_steps`` (leapfrog, value and gradient)
    + 1 (new weights).
    """
    from functools import partial

    import blackjax
    from blackjax.smc import extend_params, resampling
    from blackjax.smc.tuning.from_kernel_info import update_scale_from_acceptance_rate

    start = time.perf_counter()
    logp = prior_logpdf(prior, dim)
    logl = log_likelihood(log_density, prior, dim)
    hmc_step = partial(blackjax.hmc.build_kernel(), num_integration_steps=num_integration_steps)

    def step(key, state, step_size, inverse_mass_matrix):
        smc = blackjax.adaptive_tempered_smc(
            logp, logl, hmc_step, blackjax.hmc.init,
            extend_params({"step_size": step_size, "inverse_mass_matrix": inverse_mass_matrix}),
            resampling.systematic, target_ess, num_mcmc_steps=num_mcmc_steps)
        state, info = smc.step(key, state)
        acceptance = jnp.mean(info.update_info.acceptance_rate)
        return state, info.log_likelihood_increment, acceptance

    particles = jnp.asarray(sample_prior(prior, dim, num_particles, seed), jnp.float32)
    state = blackjax.adaptive_tempered_smc(
        logp, logl, hmc_step, blackjax.hmc.init, {}, resampling.systematic, target_ess).init(particles)
    step_size = jnp.asarray(0.5 * dim ** -0.25, jnp.float32)
    inv_mass = jnp.var(particles, axis=0)
    t0 = time.perf_counter()
    compiled = jax.jit(step).lower(_key(seed), state, step_size, inv_mass).compile()
    compile_s = time.perf_counter() - t0

    key = _key(seed + 1)
    log_z, stages, acceptances = 0.0, 0, []
    while float(state.tempering_param) < 1.0 and stages < max_stages:
        key, sub = jax.random.split(key)
        state, increment, acceptance = compiled(sub, state, step_size, inv_mass)
        log_z += float(increment)
        acceptances.append(float(acceptance))
        stages += 1
        w = state.weights
        mean = jnp.sum(w[:, None] * state.particles, axis=0)
        inv_mass = jnp.maximum(jnp.sum(w[:, None] * (state.particles - mean) ** 2, axis=0), 1e-8)
        step_size = update_scale_from_acceptance_rate(step_size[None], acceptance[None], 0.65)[0]

    draws = _systematic_resample(np.asarray(state.particles), np.asarray(state.weights), num_draws,
                                 np.random.default_rng(seed))
    wall = time.perf_counter() - start
    grad_per = 1 + num_mcmc_steps * num_integration_steps
    return {
        "samples": draws,
        "wall_s": wall,
        "compile_s": compile_s,
        "log_z": log_z,
        "num_evals": stages * num_particles * (grad_per + 2),
        "num_grad_evals": stages * num_particles * grad_per,
        "num_stages": stages,
        "final_tempering_param": float(state.tempering_param),
        "mean_acceptance": float(np.mean(acceptances)) if acceptances else None,
        "last_acceptance": acceptances[-1] if acceptances else None,
        "final_step_size": float(step_size),
        "num_particles": num_particles,
    }


# --------------------------------------------------------------------------- checks


RUNNERS = {
    "flowmc_mala": run_flowmc_mala,
    "flowmc_pt": run_flowmc_pt,
    "pocomc": run_pocomc,
    "blackjax_smc": run_blackjax_smc,
}


def _check_targets():
    """The two small checks: (name, log_density, prior, dim, true log Z)."""
    means = jnp.array([[5.0, 0.0], [-5.0, 0.0]])

    def normal(x):
        return -0.5 * jnp.sum(x ** 2)

    def pair(x):
        return jax.nn.logsumexp(jnp.log(jnp.array([0.8, 0.2])) - 0.5 * jnp.sum((x - means) ** 2, -1)) \
            - jnp.log(2 * jnp.pi)

    return [
        ("normal2d", normal, {"kind": "normal", "loc": 0.0, "scale": 3.0}, 2, math.log(2 * math.pi)),
        ("pair2d", pair, {"kind": "uniform", "low": -10.0, "high": 10.0}, 2, 0.0),
    ]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", nargs="*", default=list(RUNNERS))
    parser.add_argument("--num-draws", type=int, default=4000)
    args = parser.parse_args()
    for name in args.runners:
        for target, fn, prior, dim, true_log_z in _check_targets():
            out = RUNNERS[name](fn, prior, dim, args.num_draws, seed=0)
            s = out["samples"]
            log_z = "None" if out["log_z"] is None else f"{out['log_z']:.3f}"
            comp = "None" if out["compile_s"] is None else f"{out['compile_s']:.1f}"
            print(f"{name:13s} {target:9s} wall {out['wall_s']:6.1f} s  compile {comp:>4s} s  "
                  f"log_z {log_z:>7s} (true {true_log_z:.3f})  P(x0>0) {np.mean(s[:, 0] > 0):.3f}  "
                  f"mean {np.round(s.mean(0), 2)}  var {np.round(s.var(0), 2)}  N {len(s)}  "
                  f"evals {out['num_evals']:.3g}", flush=True)
