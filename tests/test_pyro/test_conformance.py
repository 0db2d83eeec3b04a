"""Host conformance (Pyro): FlowMCMC and NeuTraHMC behave as Pyro's own kernels do under ``MCMC``.

The walkers of one Pyro chain are reported as Pyro's chains: ``get_samples(group_by_chain=True)``
has shape ``(walkers, draws, *site_shape)`` and ``get_samples()`` ``(walkers * draws, *site_shape)``.
Every test runs both kernels on small models with known posteriors and checks moments against the
closed form, ``|error| < 4 MCSE`` (ArviZ). Covered:

- seeds: ``MCMC.run`` after ``pyro.set_rng_seed``: the same seed gives the same draws, another
  seed others (the mirror of NumPyro's key styles);
- one kernel object reused by two ``MCMC`` objects with different ``warmup_steps``;
- what ``MCMC`` reports: ``get_samples`` shapes, the kernel's per-draw ``sample_stats`` (the
  potential energy equal to the model's), ``mcmc.summary()`` (one row per coordinate, none per
  walker), ``mcmc.diagnostics()`` (r_hat and n_eff per site, per coordinate), and
  ``ebmppl.diagnostics.to_arviz`` (``az.from_pyro`` reads Pyro's chain count, 1, so it cannot give
  the walkers their chains: the kernels' docstrings say so);
- ``pyro.infer.Predictive`` on the posterior draws (shapes and predictive moments);
- init strategies: ``init_to_median``, ``init_to_value``, ``init_to_sample``;
- model features: ``pyro.deterministic`` (left out of the samples, as NUTS does; ``Predictive``
  reports it), ``pyro.factor``, ``poutine.mask``, ``poutine.scale`` (Pyro only: scale 2 equals the
  data twice), plates with explicit ``dim=`` (Pyro only), ``poutine.condition``,
  ``poutine.substitute`` (of a ``param``) and ``poutine.reparam`` (``LocScaleReparam``);
- models written without walkers in mind (Pyro only: NumPyro evaluates each chain apart): a Python
  loop over observations samples correctly; a model that does not broadcast over the walkers
  either samples correctly or is refused with a message that says what to change;
- float64 models (default dtype float64): float64 draws (NumPyro's mirror is ``jax_enable_x64``).

Not mirrored: NumPyro's ``warmup()`` then ``run()`` and continuation from ``last_state`` (Pyro's
``MCMC`` has neither), ``EBMTrainer`` and ``log_partition`` keys (Pyro takes no keys).

NeuTraHMC's default fitting budget (up to 400 Adam steps of the reverse KL at each of two fits)
costs tens of seconds per run in torch: its runs here fit for 100 steps, except where the default
schedule is what is under test (kernel reuse). FlowMCMC weighs eight i-SIR candidates here, not
the default sixteen. Tests of how a model reaches the kernel (handlers, sites, init strategies)
need no flow and run without fits.
"""

import contextlib
import io
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, Predictive
from pyro.infer.autoguide.initialization import init_to_median, init_to_sample, init_to_value
from pyro.infer.reparam import LocScaleReparam

from ebmppl.diagnostics import to_arviz
from ebmppl.pyro import FlowMCMC, NeuTraHMC, WarmupSchedule

KERNELS = {"flow_mcmc": FlowMCMC, "neutra": NeuTraHMC}
NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES = 8, 200, 200
Z_BOUND = 4.0
NO_FITS = WarmupSchedule(fit_iterations=(), window=1)
# Shorter fits than the defaults (150 / 1000 Adam steps): these tests check how the kernels meet Pyro's
# MCMC; the defaults' statistics are the business of test_flow_mcmc_stats.py and test_neutra.py.
SCHEDULES = {"flow_mcmc": WarmupSchedule.default(NUM_WARMUP).replace(fit_steps=50),
             "neutra": NeuTraHMC.default_schedule(NUM_WARMUP).replace(fit_steps=100)}
# Likewise eight i-SIR candidates, not the default sixteen (Pyro's cost grows with them; the constraint
# tests, the doctests and the tutorials run the default).
OPTIONS = {"flow_mcmc": {"num_particles": 8}, "neutra": {}}

# --- known posteriors ---------------------------------------------------------------------------

# Bayesian linear regression: w ~ N(0, 10² I), y ~ N(X w, 1); Gaussian posterior N(W_MEAN, W_COV).
_rng = np.random.default_rng(0)
X_NP = np.stack([np.ones(20), _rng.normal(size=20)], axis=1)
Y_NP = X_NP @ np.array([1.0, -0.5]) + _rng.normal(size=20)
W_COV = np.linalg.inv(X_NP.T @ X_NP + np.eye(2) / 100.0)
W_MEAN = W_COV @ X_NP.T @ Y_NP
X_NEW_NP = np.array([[1.0, -1.0], [1.0, 0.0], [1.0, 2.0]])
X, Y, X_NEW = (torch.tensor(a, dtype=torch.float32) for a in (X_NP, Y_NP, X_NEW_NP))

# Normal-normal: mu ~ N(0, 10²), y_i ~ N(mu, sigma²), i = 1..20.
Y_NORMAL_NP = _rng.normal(1.0, 1.0, size=20)
Y_NORMAL = torch.tensor(Y_NORMAL_NP, dtype=torch.float32)


def normal_posterior(y, sigma=1.0, prior_sd=10.0):
    """Mean and sd of mu given y_i ~ N(mu, sigma²) and mu ~ N(0, prior_sd²)."""
    precision = 1.0 / prior_sd**2 + len(y) / sigma**2
    return float(np.sum(y) / sigma**2 / precision), float(precision**-0.5)


def regression(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    pyro.deterministic("w_sum", w.sum(-1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * w).sum(-1), 1.0), obs=y)  # broadcasts over leading batch dims


# --- helpers ------------------------------------------------------------------------------------


def run(kernel, seed=0, *args, num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES):
    """Run ``kernel`` under Pyro's MCMC after ``pyro.set_rng_seed(seed)``; returns the MCMC object."""
    pyro.set_rng_seed(seed)
    mcmc = MCMC(kernel, warmup_steps=num_warmup, num_samples=num_samples, disable_progbar=True)
    mcmc.run(*args)
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


def grouped(mcmc, site):
    """Draws of ``site`` as numpy, shape (walkers, draws, ...)."""
    return mcmc.get_samples(group_by_chain=True)[site].numpy()


def assert_regression_posterior(mcmc):
    assert_moments(grouped(mcmc, "w"), W_MEAN, np.sqrt(np.diag(W_COV)))


def kernel_for(kernel_name, model, schedule="default", **kwargs):
    """The kernel with 8 walkers; ``schedule="default"`` picks the file's schedule for that kernel."""
    schedule = SCHEDULES[kernel_name] if schedule == "default" else schedule
    options = {**OPTIONS[kernel_name], **kwargs}
    return KERNELS[kernel_name](model, num_walkers=NUM_CHAINS, schedule=schedule, **options)


@pytest.fixture(scope="module", params=sorted(KERNELS))
def kernel_name(request):
    return request.param


@pytest.fixture(scope="module")
def regression_run(kernel_name):
    """One run of each kernel on the regression, shared by the reporting tests (not mutated)."""
    return run(kernel_for(kernel_name, regression), 0, X, Y)


# --- 1. seeds and kernel reuse -----------------------------------------------------------------


def test_set_rng_seed_reproduces_draws(kernel_name, regression_run):
    """``pyro.set_rng_seed``: the same seed gives the same draws, another seed other (correct) draws."""
    again = run(kernel_for(kernel_name, regression), 0, X, Y)
    np.testing.assert_array_equal(grouped(again, "w"), grouped(regression_run, "w"))
    other = run(kernel_for(kernel_name, regression), 1, X, Y)
    assert not np.allclose(grouped(other, "w"), grouped(regression_run, "w"))
    assert_regression_posterior(other)


def test_kernel_reused_with_another_warmup_length(kernel_name):
    """One kernel object in two MCMC objects: each run resolves its own default schedule."""
    kernel = KERNELS[kernel_name](regression, num_walkers=NUM_CHAINS, **OPTIONS[kernel_name])
    run(kernel, 4, X, Y, num_warmup=60, num_samples=20)
    schedule_60 = kernel.schedule
    mcmc = run(kernel, 5, X, Y, num_warmup=20, num_samples=300)
    assert kernel.schedule != schedule_60
    assert all(i < 20 for i in kernel.schedule.fit_iterations)
    assert grouped(mcmc, "w").shape == (NUM_CHAINS, 300, 2)
    assert_regression_posterior(mcmc)


# --- 2. what MCMC reports ----------------------------------------------------------------------


def test_samples_grouped_by_chain(regression_run):
    by_chain, flat = regression_run.get_samples(group_by_chain=True), regression_run.get_samples()
    assert by_chain["w"].shape == (NUM_CHAINS, NUM_SAMPLES, 2)
    assert flat["w"].shape == (NUM_CHAINS * NUM_SAMPLES, 2)
    np.testing.assert_array_equal(flat["w"].numpy(), by_chain["w"].numpy().reshape(-1, 2))
    assert regression_run.num_chains == 1  # one Pyro chain, its walkers reported as chains
    assert_regression_posterior(regression_run)


def test_deterministic_sites_reported(regression_run):
    """As with NUTS, ``get_samples`` holds the latent sites only; ``Predictive`` reports ``w_sum``."""
    samples = regression_run.get_samples()
    assert set(samples) == {"w"}
    w_sum = Predictive(regression, posterior_samples=samples, return_sites=["w_sum"])(X)["w_sum"]
    # Pyro's Predictive pads a site to the model's plate nesting: (draws, 1)
    np.testing.assert_allclose(w_sum.reshape(-1).numpy(), samples["w"].sum(-1).numpy(), rtol=1e-6, atol=1e-6)
    ones = np.ones(2)
    assert_moments(w_sum.reshape(NUM_CHAINS, NUM_SAMPLES).numpy(), ones @ W_MEAN, np.sqrt(ones @ W_COV @ ones))


def test_per_draw_statistics(kernel_name, regression_run):
    """``kernel.sample_stats``, per walker and draw; the potential energy is the model's at the draws."""
    expected = {"flow_mcmc": {"accept_prob", "potential_energy", "global_accept_prob", "local_accept_prob"},
                "neutra": {"accept_prob", "potential_energy", "diverging", "step_size", "num_steps"}}[kernel_name]
    stats = regression_run.kernel.sample_stats[-1]
    assert set(stats) == expected
    for name in expected:
        assert stats[name].shape == (NUM_CHAINS, NUM_SAMPLES), name
    accept = stats["accept_prob"].numpy()
    assert accept.min() >= 0 and accept.max() <= 1 and accept.mean() > 0.3
    w = regression_run.get_samples(group_by_chain=True)["w"].double()
    x, y = X.double(), Y.double()
    log_joint = (dist.Normal(0.0, 10.0).log_prob(w).sum(-1)
                 + dist.Normal((x * w.unsqueeze(-2)).sum(-1), 1.0).log_prob(y).sum(-1))
    np.testing.assert_allclose(stats["potential_energy"].numpy(), -log_joint.numpy(), rtol=1e-4)


def test_summary_one_row_per_coordinate(regression_run):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        regression_run.summary()
    rows = [line.split()[0] for line in out.getvalue().splitlines() if line.strip()]
    assert rows.count("w[0]") == 1 and rows.count("w[1]") == 1, out.getvalue()
    assert "w[2]" not in rows and not any(row.startswith("w[0,") for row in rows), out.getvalue()


def test_diagnostics(regression_run):
    """``r_hat`` and ``n_eff`` per site, one per coordinate, from the walkers as chains."""
    diagnostics = regression_run.diagnostics()
    assert set(diagnostics["w"]) == {"r_hat", "n_eff"}
    r_hat, n_eff = diagnostics["w"]["r_hat"], diagnostics["w"]["n_eff"]
    assert r_hat.shape == (2,) and n_eff.shape == (2,)
    assert float(r_hat.max()) < 1.05 and float(n_eff.min()) > 100, diagnostics["w"]
    # Pyro's r_hat is the split R-hat of the walkers as chains, as ArviZ computes it
    ref = az.rhat(az.convert_to_dataset({"w": grouped(regression_run, "w")}), method="split")["w"].values
    np.testing.assert_allclose(r_hat.numpy(), ref, rtol=1e-3)


@pytest.mark.parametrize("convert", [to_arviz], ids=["to_arviz"])
def test_arviz_posterior(regression_run, convert):
    """One ArviZ chain per walker in every group."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ArviZ warns, and leaves a group out, when it cannot build it
        data = convert(regression_run)
    posterior = data["posterior"]
    assert posterior["w"].shape == (NUM_CHAINS, NUM_SAMPLES, 2)
    np.testing.assert_array_equal(np.asarray(posterior["w"]), grouped(regression_run, "w"))
    assert float(az.rhat(np.asarray(posterior["w"])[..., 0])) < 1.05
    stats = data["sample_stats"]
    assert all(stats[name].shape == (NUM_CHAINS, NUM_SAMPLES) for name in stats.data_vars), stats
    if convert is to_arviz:
        assert stats["lp"].shape == (NUM_CHAINS, NUM_SAMPLES)


def test_predictive(regression_run):
    """Posterior predictive at new inputs: y_new ~ N(X_new m, X_new S X_newᵀ + 1)."""
    samples = regression_run.get_samples()
    predictions = Predictive(regression, posterior_samples=samples)(X_NEW)
    assert predictions["y"].shape == (NUM_CHAINS * NUM_SAMPLES, len(X_NEW))
    y = predictions["y"].numpy().reshape(NUM_CHAINS, NUM_SAMPLES, len(X_NEW))
    assert_moments(y, X_NEW_NP @ W_MEAN, np.sqrt(np.diag(X_NEW_NP @ W_COV @ X_NEW_NP.T) + 1.0))


# --- 3. init strategies --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["median", "value", "sample"])
def test_init_strategy(kernel_name, strategy):
    """The strategy places the walkers (the kernel's first state); from a far start the run still converges."""
    start = torch.tensor([5.0, -5.0])
    init_strategy = {"median": init_to_median(num_samples=1000), "value": init_to_value(values={"w": start}),
                     "sample": init_to_sample}[strategy]
    kernel = kernel_for(kernel_name, regression, schedule=NO_FITS, init_strategy=init_strategy)
    pyro.set_rng_seed(8)
    kernel.setup(NUM_WARMUP, X, Y)
    z = kernel.initial_params["w"].numpy()
    assert z.shape == (NUM_CHAINS, 2)
    if strategy == "median":  # prior median 0; the median of 1000 prior draws is within 0.4 sd of it
        assert np.abs(z).max() < 2.0, z
    elif strategy == "value":
        np.testing.assert_allclose(z, np.broadcast_to(start.numpy(), z.shape))
        assert_regression_posterior(run(kernel, 9, X, Y))  # from a start 10 posterior sds away
    else:  # prior draws: N(0, 10²), far more spread than init_to_uniform's (-2, 2)
        assert z.std(0).min() > 2.0 and not np.allclose(z[0], z[1]), z


# --- 4. model features and handlers ------------------------------------------------------------


def assert_normal_posterior(mcmc, y, sigma=1.0):
    mean, sd = normal_posterior(y, sigma)
    assert_moments(grouped(mcmc, "mu"), mean, sd)


def test_factor(kernel_name):
    """The likelihood as a ``pyro.factor``: the same posterior as the observed sites."""
    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        pyro.factor("likelihood", dist.Normal(mu.unsqueeze(-1), 1.0).log_prob(y).sum(-1))

    mcmc = run(kernel_for(kernel_name, model, schedule=NO_FITS), 10, Y_NORMAL)
    assert set(mcmc.get_samples()) == {"mu"}
    assert_normal_posterior(mcmc, Y_NORMAL_NP)


def test_masked_observations(kernel_name):
    """Masked-out observations (placed absurdly far away) do not count."""
    y = torch.cat([Y_NORMAL, torch.full((5,), 100.0)])
    mask = torch.arange(len(y)) < len(Y_NORMAL)

    def model(y, mask):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(y), dim=-1), poutine.mask(mask=mask):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    mcmc = run(kernel_for(kernel_name, model, schedule=NO_FITS), 11, y, mask)
    assert_normal_posterior(mcmc, Y_NORMAL_NP)


def test_scaled_observations(kernel_name):
    """``poutine.scale(scale=2)`` on the likelihood gives the posterior of the data twice over."""
    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(y), dim=-1), poutine.scale(scale=2.0):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    mcmc = run(kernel_for(kernel_name, model, schedule=NO_FITS), 12, Y_NORMAL)
    assert_normal_posterior(mcmc, np.concatenate([Y_NORMAL_NP, Y_NORMAL_NP]))


def test_plates_with_explicit_dims(kernel_name):
    """Nested plates at dim=-2 (groups) and dim=-1 (observations): each group's own posterior."""
    y = torch.stack([Y_NORMAL[:10], Y_NORMAL[10:] - 3.0])  # (groups, observations)

    def model(y):
        with pyro.plate("groups", 2, dim=-2):
            mu = pyro.sample("mu", dist.Normal(0.0, 10.0))  # (2, 1)
            with pyro.plate("obs", 10, dim=-1):
                pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    mcmc = run(kernel_for(kernel_name, model, schedule=NO_FITS), 13, y)
    mu = grouped(mcmc, "mu")
    assert mu.shape == (NUM_CHAINS, NUM_SAMPLES, 2, 1)
    for group in range(2):
        mean, sd = normal_posterior(y[group].numpy())
        assert_moments(mu[:, :, group, 0], mean, sd)


def test_condition(kernel_name):
    """``poutine.condition`` fixes the noise scale: the normal-normal posterior, no ``sigma`` draws."""
    def model(y):
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, sigma), obs=y)

    mcmc = run(kernel_for(kernel_name, poutine.condition(model, data={"sigma": torch.tensor(0.5)}),
                          schedule=NO_FITS), 14, Y_NORMAL)
    assert set(mcmc.get_samples()) == {"mu"}
    assert_normal_posterior(mcmc, Y_NORMAL_NP, sigma=0.5)


def test_substitute(kernel_name):
    """``poutine.substitute`` of a ``pyro.param`` noise scale (3 in the model, 0.5 substituted)."""
    def model(y):
        sigma = pyro.param("sigma", torch.tensor(3.0))
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, sigma), obs=y)

    pyro.clear_param_store()
    try:
        mcmc = run(kernel_for(kernel_name, poutine.substitute(model, data={"sigma": torch.tensor(0.5)}),
                              schedule=NO_FITS), 15, Y_NORMAL)
    finally:
        pyro.clear_param_store()
    assert_normal_posterior(mcmc, Y_NORMAL_NP, sigma=0.5)


# hierarchical normal: mu ~ N(0, 5²), theta_j ~ N(mu, TAU²), y_j ~ N(theta_j, S_J²)
TAU, S_J_NP, Y_J_NP = 2.0, np.array([1.0, 2.0, 0.5]), np.array([2.0, -1.0, 0.5])


def hierarchical(s, y):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    with pyro.plate("groups", len(y), dim=-1):
        theta = pyro.sample("theta", dist.Normal(mu, TAU))
        pyro.sample("y", dist.Normal(theta, s), obs=y)


def hierarchical_posterior():
    """Mean and sd of (mu, theta_1..J), by conditioning the joint Gaussian on y."""
    j = len(Y_J_NP)
    cov = np.full((j + 1, j + 1), 25.0)  # Cov(mu, mu) = Cov(mu, theta_j) = Cov(theta_i, theta_j) = 5², i != j
    cov[1:, 1:] += TAU**2 * np.eye(j)
    cross = cov[:, 1:]  # Cov((mu, theta), y) = Cov((mu, theta), theta)
    cov_y = cov[1:, 1:] + np.diag(S_J_NP**2)
    mean = cross @ np.linalg.solve(cov_y, Y_J_NP)
    post_cov = cov - cross @ np.linalg.solve(cov_y, cross.T)
    return mean, np.sqrt(np.diag(post_cov))


def test_reparam(kernel_name):
    """``LocScaleReparam`` (non-centred theta): ``theta_decentered`` sampled, theta from Predictive, correct moments."""
    s, y = torch.tensor(S_J_NP, dtype=torch.float32), torch.tensor(Y_J_NP, dtype=torch.float32)
    model = poutine.reparam(hierarchical, config={"theta": LocScaleReparam(centered=0.0)})
    mcmc = run(kernel_for(kernel_name, model, schedule=NO_FITS), 16, s, y)
    samples = mcmc.get_samples()
    assert set(samples) == {"mu", "theta_decentered"}
    theta = Predictive(model, posterior_samples=samples, return_sites=["theta"])(s, y)["theta"]
    theta = theta.reshape(NUM_CHAINS, NUM_SAMPLES, len(Y_J_NP)).numpy()
    mean, sd = hierarchical_posterior()
    assert_moments(grouped(mcmc, "mu"), mean[0], sd[0])
    assert_moments(theta, mean[1:], sd[1:])


# --- 5. models written without walkers in mind --------------------------------------------------


def loop_scalar(y):
    """The loop of a tutorial: a scalar latent, one site per observation."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    for i in range(len(y)):
        pyro.sample(f"y_{i}", dist.Normal(mu, 1.0), obs=y[i])


def loop_indexing(x, y):
    """A vector latent indexed by position (``w[0]``), as if it had no batch dims."""
    w = pyro.sample("w", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    for i in range(len(y)):
        pyro.sample(f"y_{i}", dist.Normal(x[i, 0] * w[0] + x[i, 1] * w[1], 1.0), obs=y[i])


def matmul(x, y):
    """``x @ w``: right for one ``w`` of shape (2,), a shape error for a batch of them."""
    w = pyro.sample("w", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)


def extra_batch_dim(x, y):
    """``w.unsqueeze(-2)``: right for one ``w`` (NUTS samples it), but a batch of ``w`` of shape
    (walkers, 1, 2) broadcasts the likelihood to (walkers, walkers, N)."""
    w = pyro.sample("w", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal((x * w.unsqueeze(-2)).sum(-1), 1.0), obs=y)


@pytest.mark.parametrize("model", [loop_scalar, loop_indexing, matmul, extra_batch_dim],
                         ids=lambda m: m.__name__)
def test_model_not_written_for_walkers(kernel_name, model):
    """Each model is right for one draw (as NUTS runs it). Under the walkers it must either sample the
    right posterior or be refused with a message that says the model is evaluated for all walkers at
    once and must broadcast over them."""
    args = (Y_NORMAL,) if model is loop_scalar else (X, Y)
    try:
        mcmc = run(kernel_for(kernel_name, model, schedule=NO_FITS), 17, *args)
    except (ValueError, RuntimeError) as err:
        message = str(err).lower()
        assert "walkers" in message and "broadcast" in message, err
        return
    if model is loop_scalar:
        assert_normal_posterior(mcmc, Y_NORMAL_NP)
    else:
        assert_regression_posterior(mcmc)


# --- 6. float64 ----------------------------------------------------------------------------------


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def test_float64(kernel_name, float64):
    """A float64 model: float64 draws and statistics, correct moments."""
    x, y = torch.tensor(X_NP), torch.tensor(Y_NP)
    mcmc = run(kernel_for(kernel_name, regression), 18, x, y)
    assert mcmc.get_samples()["w"].dtype == torch.float64
    assert mcmc.kernel.sample_stats[-1]["potential_energy"].dtype == torch.float64
    assert mcmc.kernel.state.position.dtype == torch.float64
    assert_regression_posterior(mcmc)
