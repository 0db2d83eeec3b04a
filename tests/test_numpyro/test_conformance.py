"""Host conformance (NumPyro): FlowMCMC and NeuTraHMC behave as NumPyro's own kernels do under ``MCMC``.

Every test runs both kernels (vectorized chains) on small models with known posteriors
and checks moments against the closed form, ``|error| < 4 MCSE`` (ArviZ). Covered:

- keys: ``MCMC.run`` with ``jax.random.PRNGKey`` and ``jax.random.key`` (the same start for the same seed);
  ``EBMTrainer.run`` and ``log_partition`` likewise;
- the ``MCMC`` life cycle: ``warmup()`` then ``run()``, then continuing from ``last_state`` through
  ``post_warmup_state``; one kernel object reused by two ``MCMC`` objects with different warm-ups;
- what ``MCMC`` reports: ``get_samples(group_by_chain=True)`` shapes, ``get_extra_fields()`` (default
  fields, shapes, ``potential_energy`` equal to the model's), ``print_summary()`` (one row per
  coordinate), ``az.from_numpyro`` (with its log likelihood) and ``ebmppl.diagnostics.to_arviz``;
- ``numpyro.infer.Predictive`` on the posterior draws (shapes and predictive moments);
- init strategies: ``init_to_median``, ``init_to_value``, ``init_to_sample``;
- model features: ``numpyro.deterministic``, ``numpyro.factor``, ``handlers.mask`` on observations,
  ``numpyro.plate`` observations, ``handlers.condition``, ``handlers.substitute`` (of a ``param``)
  and ``handlers.reparam`` (``LocScaleReparam``) around the model;
- ``jax_enable_x64``: float64 draws (the Pyro mirror runs a float64 model).

NumPyro only: the key styles, ``EBMTrainer`` and ``log_partition`` (Pyro takes no keys; its mirror
checks ``pyro.set_rng_seed``), ``warmup()`` and the continuation (Pyro's ``MCMC`` has neither).
Pyro only: ``poutine.scale``, plates with explicit ``dim=``, models written without walkers in mind
(NumPyro evaluates each chain apart) and ``mcmc.diagnostics()``.

Mirrored by ``tests/test_pyro/test_conformance.py`` (same names where the idea is the same).
"""

import contextlib
import io

import arviz as az
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro import handlers
from numpyro.contrib.module import eqx_module
from numpyro.infer import MCMC, Predictive
from numpyro.infer.initialization import init_to_median, init_to_sample, init_to_value
from numpyro.infer.reparam import LocScaleReparam
from numpyro.infer.util import potential_energy

from ebmppl.diagnostics import to_arviz
from ebmppl.numpyro import EBMTrainer, FlowMCMC, NeuTraHMC, Potential, WarmupSchedule, log_partition

KERNELS = {"flow_mcmc": FlowMCMC, "neutra": NeuTraHMC}
NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES = 8, 200, 200
Z_BOUND = 4.0
# Tests of how a model reaches the kernel (handlers, sites, init strategies) need no flow: without
# fits the kernels are MALA and HMC, and the file keeps to its time budget. The life-cycle tests
# and the shared run keep the default schedules.
NO_FITS = WarmupSchedule(fit_iterations=(), window=1)

# --- known posteriors ---------------------------------------------------------------------------

# Bayesian linear regression: w ~ N(0, 10² I), y ~ N(X w, 1); Gaussian posterior N(W_MEAN, W_COV).
_rng = np.random.default_rng(0)
X = np.stack([np.ones(20), _rng.normal(size=20)], axis=1)
Y = X @ np.array([1.0, -0.5]) + _rng.normal(size=20)
W_COV = np.linalg.inv(X.T @ X + np.eye(2) / 100.0)
W_MEAN = W_COV @ X.T @ Y
X_NEW = np.array([[1.0, -1.0], [1.0, 0.0], [1.0, 2.0]])

# Normal-normal: mu ~ N(0, 10²), y_i ~ N(mu, sigma²), i = 1..20.
Y_NORMAL = _rng.normal(1.0, 1.0, size=20)


def normal_posterior(y, sigma=1.0, prior_sd=10.0):
    """Mean and sd of mu given y_i ~ N(mu, sigma²) and mu ~ N(0, prior_sd²)."""
    precision = 1.0 / prior_sd**2 + len(y) / sigma**2
    return float(np.sum(y) / sigma**2 / precision), float(precision**-0.5)


def regression(x, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    numpyro.deterministic("w_sum", w.sum(-1))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)


# --- helpers ------------------------------------------------------------------------------------


def run(kernel, seed=0, *args, num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES, num_chains=NUM_CHAINS,
        key_fn=jax.random.key, **kwargs):
    """Run ``kernel`` under NumPyro's MCMC (vectorized chains); returns the MCMC object."""
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(key_fn(seed), *args, **kwargs)
    return mcmc


def moment_zscores(values, mean, sd):
    """(mean - truth) / MCSE and (sd - truth) / MCSE(sd) of draws of shape (chains, draws)."""
    values = np.asarray(values, np.float64)
    return (
        float((values.mean() - mean) / az.mcse(values, method="mean")),
        float((values.std() - sd) / az.mcse(values, method="sd")),
    )


def assert_moments(values, mean, sd):
    """Draws of shape (chains, draws, *coords) have the given mean and sd at every coordinate."""
    values = np.asarray(values)
    mean, sd = np.broadcast_to(mean, values.shape[2:]), np.broadcast_to(sd, values.shape[2:])
    z = {index: moment_zscores(values[(...,) + index], mean[index], sd[index]) for index in np.ndindex(mean.shape)}
    assert all(abs(v) < Z_BOUND for pair in z.values() for v in pair), z


def assert_regression_posterior(mcmc):
    w = np.asarray(mcmc.get_samples(group_by_chain=True)["w"])
    assert_moments(w, W_MEAN, np.sqrt(np.diag(W_COV)))


@pytest.fixture(scope="module", params=sorted(KERNELS))
def kernel_name(request):
    return request.param


@pytest.fixture(scope="module")
def regression_run(kernel_name):
    """One default run of each kernel on the regression, shared by the reporting tests (not mutated)."""
    return run(KERNELS[kernel_name](regression), 0, X, Y, key_fn=jax.random.PRNGKey)


# --- 1. keys and the MCMC life cycle ---------------------------------------------------------


def test_run_accepts_either_key_style(kernel_name, regression_run):
    """The shared run was started with ``PRNGKey(0)`` (the other runs use ``key``) and is correct. The two
    styles hold the same bits: the kernel starts from the same state, with the same key, with either."""
    assert_regression_posterior(regression_run)
    states = [
        KERNELS[kernel_name](regression).init(jax.random.split(key_fn(0), NUM_CHAINS), NUM_WARMUP, model_args=(X, Y))
        for key_fn in (jax.random.PRNGKey, jax.random.key)
    ]
    for raw, typed in zip(jax.tree.leaves(states[0].core), jax.tree.leaves(states[1].core)):
        np.testing.assert_array_equal(raw, typed)
    np.testing.assert_array_equal(states[0].rng_key, jax.random.key_data(states[1].rng_key))


def test_warmup_then_run_then_continue(kernel_name):
    """``warmup()`` then ``run()``; then ``post_warmup_state = last_state`` continues the frozen kernel:
    new draws, no refit, still correct."""
    mcmc = MCMC(KERNELS[kernel_name](regression), num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES,
                num_chains=NUM_CHAINS, chain_method="vectorized", progress_bar=False)
    mcmc.warmup(jax.random.PRNGKey(1), X, Y)
    assert mcmc.post_warmup_state is not None
    num_fits = int(mcmc.post_warmup_state.adapt.num_fits)
    assert num_fits == len(mcmc.sampler.schedule.fit_iterations) > 0
    mcmc.run(jax.random.key(2), X, Y)
    first = np.asarray(mcmc.get_samples(group_by_chain=True)["w"])
    assert first.shape == (NUM_CHAINS, NUM_SAMPLES, 2)
    assert_regression_posterior(mcmc)

    mcmc.post_warmup_state = mcmc.last_state
    mcmc.run(mcmc.post_warmup_state.rng_key, X, Y)
    second = np.asarray(mcmc.get_samples(group_by_chain=True)["w"])
    assert second.shape == (NUM_CHAINS, NUM_SAMPLES, 2)
    assert not np.allclose(second, first)  # not a replay of the first draws
    assert int(mcmc.last_state.adapt.num_fits) == num_fits  # no warm-up, no refit
    assert_regression_posterior(mcmc)


def test_kernel_reused_with_another_warmup_length(kernel_name):
    """One kernel object in two MCMC objects: each run resolves its own default schedule."""
    kernel = KERNELS[kernel_name](regression)
    run(kernel, 4, X, Y, num_warmup=60, num_samples=20)
    schedule_60 = kernel.schedule
    mcmc = run(kernel, 5, X, Y, num_warmup=20, num_samples=300)
    assert kernel.schedule != schedule_60
    assert all(i < 20 for i in kernel.schedule.fit_iterations)
    assert_regression_posterior(mcmc)


# --- 2. what MCMC reports ----------------------------------------------------------------------


def test_samples_grouped_by_chain(regression_run):
    grouped, flat = regression_run.get_samples(group_by_chain=True), regression_run.get_samples()
    assert grouped["w"].shape == (NUM_CHAINS, NUM_SAMPLES, 2)
    assert grouped["w_sum"].shape == (NUM_CHAINS, NUM_SAMPLES)
    assert flat["w"].shape == (NUM_CHAINS * NUM_SAMPLES, 2)
    np.testing.assert_array_equal(flat["w"], np.asarray(grouped["w"]).reshape(-1, 2))
    assert set(grouped) == {"w", "w_sum"}  # observed sites are not samples


def test_deterministic_sites_reported(regression_run):
    samples = regression_run.get_samples(group_by_chain=True)
    np.testing.assert_allclose(samples["w_sum"], np.asarray(samples["w"]).sum(-1), rtol=1e-6, atol=1e-6)
    ones = np.ones(2)
    assert_moments(samples["w_sum"], ones @ W_MEAN, np.sqrt(ones @ W_COV @ ones))


def test_per_draw_statistics(kernel_name, regression_run):
    """``get_extra_fields()``: the kernel's default fields, per draw; the potential energy is the model's
    at the draws."""
    expected = {"flow_mcmc": {"accept_prob", "potential_energy", "global_accept_prob", "local_accept_prob"},
                "neutra": {"accept_prob", "potential_energy", "diverging", "step_size", "num_steps"}}[kernel_name]
    flat, grouped = regression_run.get_extra_fields(), regression_run.get_extra_fields(group_by_chain=True)
    assert set(flat) == expected
    for name in expected:
        assert flat[name].shape == (NUM_CHAINS * NUM_SAMPLES,), name
        assert grouped[name].shape == (NUM_CHAINS, NUM_SAMPLES), name
    accept = np.asarray(flat["accept_prob"])
    assert accept.min() >= 0 and accept.max() <= 1 and accept.mean() > 0.3
    w = regression_run.get_samples()["w"]
    energies = jax.vmap(lambda wi: potential_energy(regression, (X, Y), {}, {"w": wi}))(w[::97])
    np.testing.assert_allclose(flat["potential_energy"][::97], energies, rtol=1e-4)


def test_summary_one_row_per_coordinate(regression_run):
    """``print_summary()``: a row per coordinate of each site, none per chain."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        regression_run.print_summary(exclude_deterministic=False)
    rows = [line.split()[0] for line in out.getvalue().splitlines() if line.strip()]
    assert rows.count("w[0]") == 1 and rows.count("w[1]") == 1 and rows.count("w_sum") == 1, out.getvalue()
    assert "w[2]" not in rows and not any(row.startswith("w[0,") for row in rows), out.getvalue()


@pytest.mark.parametrize("convert", [az.from_numpyro, to_arviz], ids=["az.from_numpyro", "to_arviz"])
def test_arviz_posterior(regression_run, convert):
    data = convert(regression_run)
    posterior = data["posterior"]
    assert posterior["w"].shape == (NUM_CHAINS, NUM_SAMPLES, 2)
    assert posterior["w_sum"].shape == (NUM_CHAINS, NUM_SAMPLES)
    np.testing.assert_array_equal(np.asarray(posterior["w"]), regression_run.get_samples(group_by_chain=True)["w"])
    assert data["sample_stats"]["lp"].shape == (NUM_CHAINS, NUM_SAMPLES)
    assert float(az.rhat(np.asarray(posterior["w"])[..., 0])) < 1.05


def test_arviz_log_likelihood(regression_run):
    """``az.from_numpyro`` finds the log likelihood of each observation, per chain and draw.

    Asked for explicitly: ArviZ 1.x leaves the group out by default (``rcParams["data.log_likelihood"]``).
    """
    log_like = np.asarray(az.from_numpyro(regression_run, log_likelihood=True)["log_likelihood"]["y"])
    assert log_like.shape == (NUM_CHAINS, NUM_SAMPLES, len(Y))
    w = np.asarray(regression_run.get_samples(group_by_chain=True)["w"])
    expected = dist.Normal(w @ X.T, 1.0).log_prob(Y)
    np.testing.assert_allclose(log_like, expected, rtol=1e-4, atol=1e-4)


def test_predictive(regression_run):
    """Posterior predictive at new inputs: y_new ~ N(X_new m, X_new S X_newᵀ + 1)."""
    samples = regression_run.get_samples()
    predictions = Predictive(regression, posterior_samples=samples)(jax.random.key(7), X_NEW)
    assert predictions["y"].shape == (NUM_CHAINS * NUM_SAMPLES, len(X_NEW))
    assert predictions["w_sum"].shape == (NUM_CHAINS * NUM_SAMPLES,)
    y = np.asarray(predictions["y"]).reshape(NUM_CHAINS, NUM_SAMPLES, len(X_NEW))
    assert_moments(y, X_NEW @ W_MEAN, np.sqrt(np.diag(X_NEW @ W_COV @ X_NEW.T) + 1.0))


# --- 3. init strategies --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["median", "value", "sample"])
def test_init_strategy(kernel_name, strategy):
    """The strategy places the chains (the kernel's first state); from a far start the run still converges."""
    start = np.array([5.0, -5.0])
    init_strategy = {"median": init_to_median(num_samples=1000), "value": init_to_value(values={"w": start}),
                     "sample": init_to_sample}[strategy]
    kernel = KERNELS[kernel_name](regression, init_strategy=init_strategy, schedule=NO_FITS)
    state = kernel.init(jax.random.split(jax.random.key(8), NUM_CHAINS), NUM_WARMUP, model_args=(X, Y))
    z = np.asarray(state.z["w"])
    if strategy == "median":  # prior median 0; the median of 1000 prior draws is within 0.4 sd of it
        assert np.abs(z).max() < 2.0, z
    elif strategy == "value":
        np.testing.assert_allclose(z, np.broadcast_to(start, z.shape))
        assert_regression_posterior(run(kernel, 9, X, Y))  # from a start 10 posterior sds away
    else:  # prior draws: N(0, 10²), far more spread than init_to_uniform's (-2, 2)
        assert z.std(0).min() > 2.0 and not np.allclose(z[0], z[1]), z


# --- 4. model features and handlers ------------------------------------------------------------


def normal_model(y, sigma=1.0):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", len(y)):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def assert_normal_posterior(mcmc, y, sigma=1.0):
    mean, sd = normal_posterior(y, sigma)
    assert_moments(mcmc.get_samples(group_by_chain=True)["mu"], mean, sd)


def test_factor(kernel_name):
    """The likelihood as a ``numpyro.factor``: the same posterior as the observed sites."""
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        numpyro.factor("likelihood", dist.Normal(mu, 1.0).log_prob(y).sum())

    mcmc = run(KERNELS[kernel_name](model, schedule=NO_FITS), 10, Y_NORMAL)
    assert set(mcmc.get_samples()) == {"mu"}
    assert_normal_posterior(mcmc, Y_NORMAL)


def test_jit_model_args_each_run_samples_its_own_data(kernel_name):
    """``MCMC(..., jit_model_args=True)`` compiles ``sample`` once and passes each run's data as traced
    arguments: the second run must sample the second data set's posterior, not the first's (before,
    the log density was fixed at ``init``: the second run failed this check, its mean 5.4 (FlowMCMC) and 5.8
    (NeuTraHMC) MCSE off)."""
    mcmc = MCMC(KERNELS[kernel_name](normal_model, schedule=NO_FITS), num_warmup=NUM_WARMUP,
                num_samples=NUM_SAMPLES, num_chains=NUM_CHAINS, chain_method="vectorized",
                progress_bar=False, jit_model_args=True)
    for seed, y in enumerate([Y_NORMAL, Y_NORMAL - 3.0]):
        mcmc.run(jax.random.key(seed), y)
        assert_normal_posterior(mcmc, y)


def test_masked_observations(kernel_name):
    """Masked-out observations (placed absurdly far away) do not count."""
    y = np.concatenate([Y_NORMAL, np.full(5, 100.0)])
    mask = np.arange(len(y)) < len(Y_NORMAL)

    def model(y, mask):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("data", len(y)), handlers.mask(mask=mask):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    mcmc = run(KERNELS[kernel_name](model, schedule=NO_FITS), 11, y, mask)
    assert_normal_posterior(mcmc, Y_NORMAL)


def test_condition(kernel_name):
    """``handlers.condition`` fixes the noise scale: the normal-normal posterior, no ``sigma`` draws."""
    def model(y):
        sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        normal_model(y, sigma)

    mcmc = run(KERNELS[kernel_name](handlers.condition(model, data={"sigma": 0.5}), schedule=NO_FITS), 12, Y_NORMAL)
    assert set(mcmc.get_samples()) == {"mu"}
    assert_normal_posterior(mcmc, Y_NORMAL, sigma=0.5)


def test_substitute(kernel_name):
    """``handlers.substitute`` of a ``numpyro.param`` noise scale (3 in the model, 0.5 substituted)."""
    def model(y):
        normal_model(y, numpyro.param("sigma", 3.0))

    mcmc = run(KERNELS[kernel_name](handlers.substitute(model, data={"sigma": 0.5}), schedule=NO_FITS), 13,
               Y_NORMAL)
    assert_normal_posterior(mcmc, Y_NORMAL, sigma=0.5)


# hierarchical normal: mu ~ N(0, 5²), theta_j ~ N(mu, TAU²), y_j ~ N(theta_j, S_j²)
TAU, S_J, Y_J = 2.0, np.array([1.0, 2.0, 0.5]), np.array([2.0, -1.0, 0.5])


def hierarchical(s, y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    with numpyro.plate("groups", len(y)):
        theta = numpyro.sample("theta", dist.Normal(mu, TAU))
        numpyro.sample("y", dist.Normal(theta, s), obs=y)


def hierarchical_posterior():
    """Mean and sd of (mu, theta_1..J), by conditioning the joint Gaussian on y."""
    j = len(Y_J)
    cov = np.full((j + 1, j + 1), 25.0)  # Cov(mu, mu) = Cov(mu, theta_j) = Cov(theta_i, theta_j) = 5², i != j
    cov[1:, 1:] += TAU**2 * np.eye(j)
    cross = cov[:, 1:]  # Cov((mu, theta), y) = Cov((mu, theta), theta)
    cov_y = cov[1:, 1:] + np.diag(S_J**2)
    mean = cross @ np.linalg.solve(cov_y, Y_J)
    post_cov = cov - cross @ np.linalg.solve(cov_y, cross.T)
    return mean, np.sqrt(np.diag(post_cov))


def test_reparam(kernel_name):
    """``LocScaleReparam`` (non-centred theta): theta reported as a deterministic site, correct moments."""
    model = handlers.reparam(hierarchical, config={"theta": LocScaleReparam(centered=0)})
    mcmc = run(KERNELS[kernel_name](model, schedule=NO_FITS), 14, S_J, Y_J)
    samples = mcmc.get_samples(group_by_chain=True)
    assert {"mu", "theta", "theta_decentered"} <= set(samples)
    assert samples["theta"].shape == (NUM_CHAINS, NUM_SAMPLES, len(Y_J))
    mean, sd = hierarchical_posterior()
    assert_moments(samples["mu"], mean[0], sd[0])
    assert_moments(samples["theta"], mean[1:], sd[1:])


def test_float64(kernel_name):
    """Under ``jax.enable_x64`` the draws, the extra fields and the walkers are float64.

    (``jax.experimental.enable_x64`` is gone from JAX 0.10; ``jax.enable_x64`` replaces it.) The data
    are copied: JAX 0.10 reuses the float32 device buffer of a numpy array seen before the switch and
    then fails with "RuntimeProgramInputMismatch", NumPyro's NUTS as well.
    """
    with jax.enable_x64(True):
        mcmc = run(KERNELS[kernel_name](regression), 15, X.copy(), Y.copy())
        samples = mcmc.get_samples(group_by_chain=True)
        assert samples["w"].dtype == jnp.float64 and samples["w_sum"].dtype == jnp.float64
        assert mcmc.get_extra_fields()["potential_energy"].dtype == jnp.float64
        assert mcmc.last_state.core.position.dtype == jnp.float64
        assert_regression_posterior(mcmc)


# --- 5. EBMTrainer and log_partition take either key style -------------------------------------


def test_ebm_trainer_accepts_either_key_style():
    net = eqx.nn.MLP(2, "scalar", 8, 1, key=jax.random.key(0))
    base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)

    def model(x):
        energy = eqx_module("energy", net)
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", Potential(jax.vmap(energy), event_shape=(2,), base=base), obs=x)

    data = jax.random.normal(jax.random.key(1), (128, 2))
    # the key enters at init (the flow draws the pool) and is split alike by every method: "ula" compiles fastest
    results = [
        EBMTrainer(model, optim=optax.adam(1e-3), method="ula", batch_size=16, pool_size=32,
                   num_local_steps=2).run(key_fn(2), 3, data, progress_bar=False)
        for key_fn in (jax.random.PRNGKey, jax.random.key)
    ]
    assert results[0].history["loss"].shape == (3,) and np.isfinite(results[0].history["loss"]).all()
    np.testing.assert_allclose(results[0].history["loss"], results[1].history["loss"], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(results[0].params), jax.tree.leaves(results[1].params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_log_partition_accepts_either_key_style():
    gaussian = Potential(lambda x: 0.5 * jnp.sum(x**2, -1), event_shape=(2,))  # Z = 2π
    proposal = dist.Normal(0.0, 1.2).expand([2]).to_event(1)
    typed, raw = (log_partition(key_fn(3), gaussian, proposal, 20_000)
                  for key_fn in (jax.random.key, jax.random.PRNGKey))
    assert abs(typed.log_z - np.log(2 * np.pi)) < 4 * typed.stderr
    assert typed.log_z == pytest.approx(raw.log_z, rel=1e-6) and typed.ess == pytest.approx(raw.ess, rel=1e-6)
