"""Eleven posteriordb posteriors as NumPyro and Pyro models, with their reference checks.

The posteriors are those of ``shared/posteriordb/*.json`` (one file each, from
stan-dev/posteriordb, BSD-3; see the README there): each has the Stan code,
its data and reference summaries (mean, sd, 5/50/95% quantiles) of every
parameter. Every Stan model here is translated by hand, with the same
transformed data, the same priors (a parameter without a prior is flat on its
support, as in Stan) and the same likelihood, so that the log density matches
Stan's up to a constant on the constrained support; sample sites are named as
the Stan parameters.

    model, kwargs = numpyro_model("kidiq-kidscore_momiq")
    mcmc = MCMC(NUTS(model), num_warmup=500, num_samples=1000)
    mcmc.run(jax.random.PRNGKey(0), **kwargs)
    check("kidiq-kidscore_momiq", stan_draws("kidiq-kidscore_momiq", mcmc.get_samples()))["passed"]  # True

Modelling choices: Stan's flat priors are ``ImproperUniform`` (NumPyro) and
:class:`FlatPrior` (Pyro); ``<lower=0>`` with a cauchy / normal / student_t
prior is ``HalfCauchy`` / ``HalfNormal`` / ``FoldedDistribution(StudentT)``
(twice the density on the positive half-line); a simplex without a prior is
``Dirichlet(1, ..., 1)``; hmm_example's ``positive_ordered`` mu is flat on
its support plus a factor of its normal priors. Both frameworks normalise the
same way, so their log densities agree in unconstrained space (Jacobians
included) up to rounding.

API: :data:`DATA_DIR`, :data:`NAMES`, :data:`INFO`, :func:`load`,
:func:`numpyro_model`, :func:`pyro_model`, :func:`stan_draws`, :func:`check`,
and :class:`FlatPrior` (Pyro's ``ImproperUniform`` that can be initialised).

Pyro models are batch-safe: they may run under an outermost
``pyro.plate("_ebmppl_walkers", C, dim=-nesting - 1)`` (as
``ebmppl.pyro.kernels.target.model_target`` evaluates them), where every
latent site carries leading walker dims aligned with the model's plates: a
scalar site is ``(C, 1)`` in a model with a data plate at ``dim=-1`` and
``(C,)`` in one without, a vector site ``(C, 1, K)`` or ``(C, K)``.

Validate with NumPyro NUTS (prints max z, worst sd ratio and wall time):

    python benchmarks/posteriordb_models.py                  # all eleven
    python benchmarks/posteriordb_models.py arma-arma11 --dense
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import torch
from numpyro.distributions import constraints as nconstraints
from numpyro.infer import MCMC, NUTS
from pyro.distributions import constraints as pconstraints
from torch.distributions import biject_to

__all__ = [
    "DATA_DIR",
    "INFO",
    "NAMES",
    "FlatPrior",
    "check",
    "load",
    "numpyro_model",
    "pyro_model",
    "stan_draws",
]

#: the posteriordb files: the copy in ``benchmarks/posteriordb/`` (BSD-3, from
#: stan-dev/posteriordb; each file's ``licence`` field), or ``$EBMPPL_POSTERIORDB``
DATA_DIR = Path(os.environ.get("EBMPPL_POSTERIORDB", Path(__file__).resolve().parent / "posteriordb"))

NAMES = (
    "arma-arma11",
    "diamonds-diamonds",
    "earnings-logearn_interaction_z",
    "gp_pois_regr-gp_regr",
    "hmm_example-hmm_example",
    "kidiq-kidscore_momiq",
    "kidiq_with_mom_work-kidscore_interaction_z",
    "kilpisjarvi_mod-kilpisjarvi",
    "mesquite-logmesquite_logvas",
    "nes2000-nes",
    "sblri-blr",
)

#: Cost hints: ``dim``, the latent dimension in unconstrained space (a
#: K-simplex counts K - 1); ``n``, the number of observations.
INFO = {
    "arma-arma11": {"dim": 4, "n": 200},
    "diamonds-diamonds": {"dim": 26, "n": 5000},
    "earnings-logearn_interaction_z": {"dim": 5, "n": 1192},
    "gp_pois_regr-gp_regr": {"dim": 3, "n": 11},
    "hmm_example-hmm_example": {"dim": 4, "n": 100},
    "kidiq-kidscore_momiq": {"dim": 3, "n": 434},
    "kidiq_with_mom_work-kidscore_interaction_z": {"dim": 5, "n": 434},
    "kilpisjarvi_mod-kilpisjarvi": {"dim": 3, "n": 62},
    "mesquite-logmesquite_logvas": {"dim": 8, "n": 46},
    "nes2000-nes": {"dim": 10, "n": 476},
    "sblri-blr": {"dim": 6, "n": 100},
}


# ----------------------------------------------------------------------------
# Files


def _path(name: str) -> Path:
    if name not in NAMES:
        raise KeyError(f"unknown posterior {name!r}; expected one of {NAMES}")
    return DATA_DIR / f"{name}.json"


def load(name: str) -> dict:
    """The posterior's JSON: ``stan_code``, ``data``, ``reference`` and more.

    Raises:
        KeyError: ``name`` is not one of :data:`NAMES`.
        FileNotFoundError: the file (or :data:`DATA_DIR`) is missing.
    """
    path = _path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"posteriordb file {path} not found: expected {DATA_DIR} to hold one JSON file per "
            f"posterior ({name}.json, ...) with 'stan_code', 'data' and 'reference'; set "
            "EBMPPL_POSTERIORDB to the folder that has them"
        )
    with path.open() as handle:
        return json.load(handle)


@functools.lru_cache(maxsize=None)
def _cached(name: str) -> dict:
    return load(name)


def _reference(name: str) -> dict:
    return _cached(name)["reference"]


# ----------------------------------------------------------------------------
# Transformed data (numpy, float64): each Stan ``transformed data`` block


def _column(data: dict, key: str) -> np.ndarray:
    return np.asarray(data[key], dtype=np.float64)


def _standardise(x: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``(x - mean(x)) / (scale * sd(x))`` with Stan's ``sd`` (divisor N - 1)."""
    return (x - x.mean()) / (scale * x.std(ddof=1))


def _design(*columns: np.ndarray) -> np.ndarray:
    """``[1, columns...]``: an intercept column, then the predictors."""
    return np.stack([np.ones_like(columns[0]), *columns], axis=-1)


def _arma_data(data):
    return {"y": _column(data, "y")}


def _diamonds_data(data):
    x = _column(data, "X")
    means = x[:, 1:].mean(axis=0)
    return {"Xc": x[:, 1:] - means, "Y": _column(data, "Y")}


def _earnings_data(data):
    z_height = _standardise(_column(data, "height"))
    male = _column(data, "male")
    return {"X": _design(z_height, male, z_height * male), "y": np.log(_column(data, "earn"))}


def _gp_data(data):
    return {"x": _column(data, "x"), "y": _column(data, "y")}


def _hmm_data(data):
    if data["K"] != 2:  # the Stan code puts priors on mu[1] and mu[2] only
        raise ValueError(f"hmm_example has two states, got K = {data['K']}")
    return {"y": _column(data, "y")}


def _kidiq_data(data):
    return {"X": _design(_column(data, "mom_iq")), "y": _column(data, "kid_score")}


def _kidiq_interaction_data(data):
    z_hs = _standardise(_column(data, "mom_hs"), 2.0)
    z_iq = _standardise(_column(data, "mom_iq"), 2.0)
    return {"X": _design(z_hs, z_iq, z_hs * z_iq), "y": _column(data, "kid_score")}


def _kilpisjarvi_data(data):
    priors = ("pmualpha", "psalpha", "pmubeta", "psbeta")
    return {"x": _column(data, "x"), "y": _column(data, "y"), **{k: float(data[k]) for k in priors}}


def _mesquite_data(data):
    diam1, diam2 = _column(data, "diam1"), _column(data, "diam2")
    canopy = _column(data, "canopy_height")
    columns = (
        np.log(diam1 * diam2 * canopy),  # log_canopy_volume
        np.log(diam1 * diam2),  # log_canopy_area
        np.log(diam1 / diam2),  # log_canopy_shape
        np.log(_column(data, "total_height")),
        np.log(_column(data, "density")),
        _column(data, "group"),
    )
    return {"X": _design(*columns), "y": np.log(_column(data, "weight"))}


def _nes_data(data):
    age = np.asarray(data["age_discrete"])
    columns = (
        _column(data, "real_ideo"),
        _column(data, "race_adj"),
        (age == 2).astype(np.float64),  # age30_44
        (age == 3).astype(np.float64),  # age45_64
        (age == 4).astype(np.float64),  # age65up
        _column(data, "educ1"),
        _column(data, "gender"),
        _column(data, "income"),
    )
    return {"X": _design(*columns), "y": _column(data, "partyid7")}


def _sblri_data(data):
    return {"X": _column(data, "X"), "y": _column(data, "y")}


_TRANSFORMED_DATA = {
    "arma-arma11": _arma_data,
    "diamonds-diamonds": _diamonds_data,
    "earnings-logearn_interaction_z": _earnings_data,
    "gp_pois_regr-gp_regr": _gp_data,
    "hmm_example-hmm_example": _hmm_data,
    "kidiq-kidscore_momiq": _kidiq_data,
    "kidiq_with_mom_work-kidscore_interaction_z": _kidiq_interaction_data,
    "kilpisjarvi_mod-kilpisjarvi": _kilpisjarvi_data,
    "mesquite-logmesquite_logvas": _mesquite_data,
    "nes2000-nes": _nes_data,
    "sblri-blr": _sblri_data,
}


def _model_data(name: str) -> dict:
    """The model's inputs (the Stan transformed data), numpy float64 or floats."""
    return _TRANSFORMED_DATA[name](_cached(name)["data"])


# Linear regressions ``y ~ normal(X * beta, sigma)``: the priors of beta and sigma.
# ("flat",): no prior (flat on the support); ("normal", s): normal(0, s);
# ("half_cauchy", s) / ("half_normal", s): cauchy(0, s) / normal(0, s) on <lower=0>.
_FLAT = ("flat",)
_REGRESSIONS = {
    "earnings-logearn_interaction_z": (_FLAT, _FLAT),
    "kidiq-kidscore_momiq": (_FLAT, ("half_cauchy", 2.5)),
    "kidiq_with_mom_work-kidscore_interaction_z": (_FLAT, _FLAT),
    "mesquite-logmesquite_logvas": (_FLAT, _FLAT),
    "nes2000-nes": (_FLAT, _FLAT),
    "sblri-blr": (("normal", 10.0), ("half_normal", 10.0)),
}


# ----------------------------------------------------------------------------
# NumPyro models


def _numpyro_prior(spec: tuple, support: str, event_shape: tuple = ()):
    """The NumPyro distribution of a prior spec (see ``_REGRESSIONS``)."""
    kind = spec[0]
    if kind == "flat":
        return ndist.ImproperUniform(getattr(nconstraints, support), (), event_shape)
    base = {
        "normal": lambda s: ndist.Normal(0.0, s),
        "half_cauchy": ndist.HalfCauchy,
        "half_normal": ndist.HalfNormal,
    }[kind](spec[1])
    return base.expand(event_shape).to_event(len(event_shape)) if event_shape else base


def _numpyro_regression(beta_prior: tuple, sigma_prior: tuple) -> Callable:
    def model(X, y):
        """``y ~ normal(X * beta, sigma)``."""
        beta = numpyro.sample("beta", _numpyro_prior(beta_prior, "real", (X.shape[1],)))
        sigma = numpyro.sample("sigma", _numpyro_prior(sigma_prior, "positive"))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", ndist.Normal(X @ beta, sigma), obs=y)

    return model


def _numpyro_arma(y):
    """ARMA(1, 1); the errors by ``lax.scan`` (``err[0] = 0``, ``y[0] = mu``)."""
    mu = numpyro.sample("mu", ndist.Normal(0.0, 10.0))
    phi = numpyro.sample("phi", ndist.Normal(0.0, 2.0))
    theta = numpyro.sample("theta", ndist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", ndist.HalfCauchy(2.5))

    def step(carry, y_t):
        y_prev, err_prev = carry
        nu = mu + phi * y_prev + theta * err_prev
        return (y_t, y_t - nu), nu

    _, nu = jax.lax.scan(step, (mu, jnp.zeros_like(mu)), y)
    with numpyro.plate("time", y.shape[0]):
        # err ~ normal(0, sigma); unchecked: an explosive |theta| > 1 can make nu
        # non-finite and the log density with it, a point samplers reject (as Stan does)
        numpyro.sample("y", ndist.Normal(nu, sigma, validate_args=False), obs=y)


def _numpyro_diamonds(Xc, Y):
    """brms linear model on centred predictors; half-student_t(3, 0, 10) on sigma."""
    b = numpyro.sample("b", ndist.Normal(0.0, 1.0).expand([Xc.shape[1]]).to_event(1))
    intercept = numpyro.sample("Intercept", ndist.StudentT(3.0, 8.0, 10.0))
    sigma = numpyro.sample("sigma", ndist.FoldedDistribution(ndist.StudentT(3.0, 0.0, 10.0)))
    with numpyro.plate("data", Y.shape[0]):
        numpyro.sample("Y", ndist.Normal(intercept + Xc @ b, sigma), obs=Y)


def _numpyro_gp(x, y):
    """GP regression, exponentiated quadratic kernel, ``sigma`` (not sigma²) on the diagonal."""
    rho = numpyro.sample("rho", ndist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", ndist.HalfNormal(2.0))
    sigma = numpyro.sample("sigma", ndist.HalfNormal(1.0))
    sq_dist = (x[:, None] - x[None, :]) ** 2
    cov = alpha**2 * jnp.exp(-0.5 * sq_dist / rho**2) + sigma * jnp.eye(x.shape[0])
    numpyro.sample(
        "y", ndist.MultivariateNormal(jnp.zeros_like(y), scale_tril=jnp.linalg.cholesky(cov)), obs=y
    )


def _numpyro_hmm(y):
    """Two-state Gaussian HMM, states marginalised by the forward algorithm (``lax.scan``)."""
    theta1 = numpyro.sample("theta1", ndist.Dirichlet(jnp.ones(2)))  # uniform on the simplex
    theta2 = numpyro.sample("theta2", ndist.Dirichlet(jnp.ones(2)))
    mu = numpyro.sample("mu", ndist.ImproperUniform(nconstraints.positive_ordered_vector, (), (2,)))
    numpyro.factor("mu_prior", ndist.Normal(3.0, 1.0).log_prob(mu[0]) + ndist.Normal(10.0, 1.0).log_prob(mu[1]))
    log_theta = jnp.log(jnp.stack([theta1, theta2]))  # [j, k]: log p(state k | state j)
    log_emit = ndist.Normal(mu, 1.0).log_prob(y[:, None])  # (N, K)

    def step(gamma, log_emit_t):
        return jax.nn.logsumexp(gamma[:, None] + log_theta, axis=0) + log_emit_t, None

    gamma, _ = jax.lax.scan(step, log_emit[0], log_emit[1:])
    numpyro.factor("y", jax.nn.logsumexp(gamma))


def _numpyro_kilpisjarvi(x, y, pmualpha, psalpha, pmubeta, psbeta):
    """Linear trend with normal priors on alpha and beta, flat on sigma."""
    alpha = numpyro.sample("alpha", ndist.Normal(pmualpha, psalpha))
    beta = numpyro.sample("beta", ndist.Normal(pmubeta, psbeta))
    sigma = numpyro.sample("sigma", ndist.ImproperUniform(nconstraints.positive, (), ()))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", ndist.Normal(alpha + beta * x, sigma), obs=y)


_NUMPYRO = {
    "arma-arma11": lambda: _numpyro_arma,
    "diamonds-diamonds": lambda: _numpyro_diamonds,
    "gp_pois_regr-gp_regr": lambda: _numpyro_gp,
    "hmm_example-hmm_example": lambda: _numpyro_hmm,
    "kilpisjarvi_mod-kilpisjarvi": lambda: _numpyro_kilpisjarvi,
    **{name: functools.partial(_numpyro_regression, *priors) for name, priors in _REGRESSIONS.items()},
}


def numpyro_model(name: str) -> tuple[Callable, dict]:
    """``(model, kwargs)``: ``MCMC(NUTS(model)).run(key, **kwargs)`` samples the posterior.

    The data are ``jnp`` arrays (float32 unless ``jax_enable_x64`` is on).
    """
    kwargs = {key: jnp.asarray(value) for key, value in _model_data(name).items()}
    return _NUMPYRO[name](), kwargs


# ----------------------------------------------------------------------------
# Pyro models


class FlatPrior(pdist.ImproperUniform):
    """Pyro's ``ImproperUniform`` (log density 0 on ``support``) that can be sampled.

    Pyro's ``ImproperUniform.sample`` raises ``NotImplementedError``, and
    Pyro's ``init_to_uniform`` (the default of NUTS, ``initialize_model`` and
    ``ebmppl``'s kernels) calls ``site["fn"].sample()`` to find the site's
    shape, so a model with an ``ImproperUniform`` latent cannot be
    initialised. Here ``sample`` draws ``u ~ Uniform(-2, 2)`` in unconstrained
    space and returns ``biject_to(support)(u)``: a starting point, not a draw
    of the (improper) prior. ``log_prob`` is Pyro's: 0 on the support.

    Example:
        >>> FlatPrior(pconstraints.positive, (), (3,)).sample().shape
        torch.Size([3])
    """

    def sample(self, sample_shape=torch.Size()):
        transform = biject_to(self.support)
        shape = transform.inverse_shape(torch.Size(sample_shape) + self.shape())
        with torch.no_grad():
            return transform(torch.rand(shape) * 4.0 - 2.0)


def _flat(support: str, event_shape: tuple = ()) -> FlatPrior:
    return FlatPrior(getattr(pconstraints, support), (), event_shape)


def _pyro_prior(spec: tuple, support: str, event_shape: tuple = ()):
    """The Pyro distribution of a prior spec (see ``_REGRESSIONS``)."""
    kind = spec[0]
    if kind == "flat":
        return _flat(support, event_shape)
    base = {
        "normal": lambda s: pdist.Normal(0.0, s),
        "half_cauchy": pdist.HalfCauchy,
        "half_normal": pdist.HalfNormal,
    }[kind](spec[1])
    return base.expand(event_shape).to_event(len(event_shape)) if event_shape else base


def _linear(X, beta):
    """``X @ beta`` for a ``beta`` with batch dims aligned to the plates.

    Unbatched ``beta`` is ``(K,)``; under a walker plate it is ``(*C, 1, K)``,
    its last batch dim the data plate's, and the result is ``(*C, N)``.
    """
    out = beta @ X.T
    return out if beta.dim() == 1 else out.squeeze(-2)


def _pyro_regression(beta_prior: tuple, sigma_prior: tuple) -> Callable:
    def model(X, y):
        """``y ~ normal(X * beta, sigma)``."""
        beta = pyro.sample("beta", _pyro_prior(beta_prior, "real", (X.shape[1],)))
        sigma = pyro.sample("sigma", _pyro_prior(sigma_prior, "positive"))
        with pyro.plate("data", y.shape[0], dim=-1):
            pyro.sample("y", pdist.Normal(_linear(X, beta), sigma), obs=y)

    return model


def _pyro_arma(y):
    """ARMA(1, 1), the errors by a loop over time (``err[0] = 0``, ``y[0] = mu``).

    Time slices ``y[t:t+1]`` keep a length-1 data axis, so each step has the
    parameters' batch shape (``(*C, 1)`` under walkers) and the steps join
    along the data plate's dim.
    """
    mu = pyro.sample("mu", pdist.Normal(0.0, 10.0))
    phi = pyro.sample("phi", pdist.Normal(0.0, 2.0))
    theta = pyro.sample("theta", pdist.Normal(0.0, 2.0))
    sigma = pyro.sample("sigma", pdist.HalfCauchy(2.5))
    y_prev, err, nus = mu, y.new_zeros(1), []
    for t in range(y.shape[0]):
        nu = mu + phi * y_prev + theta * err
        y_prev = y[t : t + 1]
        err = y_prev - nu
        nus.append(nu)
    with pyro.plate("time", y.shape[0], dim=-1):
        # err ~ normal(0, sigma), unchecked as in the NumPyro model
        pyro.sample("y", pdist.Normal(torch.cat(nus, dim=-1), sigma, validate_args=False), obs=y)


def _pyro_diamonds(Xc, Y):
    """brms linear model on centred predictors; half-student_t(3, 0, 10) on sigma."""
    b = pyro.sample("b", pdist.Normal(0.0, 1.0).expand([Xc.shape[1]]).to_event(1))
    intercept = pyro.sample("Intercept", pdist.StudentT(3.0, 8.0, 10.0))
    sigma = pyro.sample("sigma", pdist.FoldedDistribution(pdist.StudentT(3.0, 0.0, 10.0)))
    with pyro.plate("data", Y.shape[0], dim=-1):
        pyro.sample("Y", pdist.Normal(intercept + _linear(Xc, b), sigma), obs=Y)


def _pyro_gp(x, y):
    """GP regression, exponentiated quadratic kernel, ``sigma`` (not sigma²) on the diagonal."""
    rho = pyro.sample("rho", pdist.Gamma(25.0, 4.0))[..., None, None]  # (*C, 1, 1)
    alpha = pyro.sample("alpha", pdist.HalfNormal(2.0))[..., None, None]
    sigma = pyro.sample("sigma", pdist.HalfNormal(1.0))[..., None, None]
    sq_dist = (x[:, None] - x[None, :]) ** 2
    cov = alpha**2 * torch.exp(-0.5 * sq_dist / rho**2) + sigma * torch.eye(x.shape[0], dtype=x.dtype)
    pyro.sample(
        "y", pdist.MultivariateNormal(torch.zeros_like(y), scale_tril=torch.linalg.cholesky(cov)), obs=y
    )


def _pyro_hmm(y):
    """Two-state Gaussian HMM, states marginalised by the forward algorithm (a loop over time)."""
    ones = y.new_ones(2)
    theta1 = pyro.sample("theta1", pdist.Dirichlet(ones))  # uniform on the simplex
    theta2 = pyro.sample("theta2", pdist.Dirichlet(ones))
    mu = pyro.sample("mu", _flat("positive_ordered_vector", (2,)))
    pyro.factor(
        "mu_prior", pdist.Normal(3.0, 1.0).log_prob(mu[..., 0]) + pdist.Normal(10.0, 1.0).log_prob(mu[..., 1])
    )
    log_theta = torch.stack([theta1, theta2], dim=-2).log()  # [..., j, k]: log p(state k | state j)
    log_emit = pdist.Normal(mu.unsqueeze(-2), 1.0).log_prob(y.unsqueeze(-1))  # (*C, N, K)
    gamma = log_emit[..., 0, :]
    for t in range(1, y.shape[0]):
        gamma = torch.logsumexp(gamma.unsqueeze(-1) + log_theta, dim=-2) + log_emit[..., t, :]
    pyro.factor("y", torch.logsumexp(gamma, dim=-1))


def _pyro_kilpisjarvi(x, y, pmualpha, psalpha, pmubeta, psbeta):
    """Linear trend with normal priors on alpha and beta, flat on sigma."""
    alpha = pyro.sample("alpha", pdist.Normal(pmualpha, psalpha))
    beta = pyro.sample("beta", pdist.Normal(pmubeta, psbeta))
    sigma = pyro.sample("sigma", _flat("positive"))
    with pyro.plate("data", y.shape[0], dim=-1):
        pyro.sample("y", pdist.Normal(alpha + beta * x, sigma), obs=y)


_PYRO = {
    "arma-arma11": lambda: _pyro_arma,
    "diamonds-diamonds": lambda: _pyro_diamonds,
    "gp_pois_regr-gp_regr": lambda: _pyro_gp,
    "hmm_example-hmm_example": lambda: _pyro_hmm,
    "kilpisjarvi_mod-kilpisjarvi": lambda: _pyro_kilpisjarvi,
    **{name: functools.partial(_pyro_regression, *priors) for name, priors in _REGRESSIONS.items()},
}


def pyro_model(name: str) -> tuple[Callable, dict]:
    """``(model, kwargs)`` for Pyro; the data are tensors of ``torch.get_default_dtype()``.

    Scalar data (kilpisjarvi's prior parameters) stay Python floats.
    """
    dtype = torch.get_default_dtype()
    kwargs = {
        key: value if isinstance(value, float) else torch.as_tensor(value, dtype=dtype)
        for key, value in _model_data(name).items()
    }
    return _PYRO[name](), kwargs


# ----------------------------------------------------------------------------
# Draws and checks


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu()
    return np.asarray(value)


def stan_draws(name: str, samples: dict, batch_ndim: int = 1) -> dict[str, np.ndarray]:
    """The reference parameters' draws, by Stan name (``beta[1]``, ...), one 1-D array each.

    Args:
        name: the posterior.
        samples: ``{site: array}`` of constrained values (NumPyro or Pyro
            ``get_samples()``; jax, torch or numpy); extra sites are ignored.
        batch_ndim: leading axes that index draws (e.g. 2 for
            ``(draws, walkers, ...)``); they are flattened. Singleton axes
            after them (Pyro's plate padding) are dropped.

    Raises:
        KeyError: a reference parameter is not among the samples.
    """
    draws = {}
    for site, value in samples.items():
        array = _to_numpy(value)
        if array.ndim < batch_ndim:
            continue
        count = math.prod(array.shape[:batch_ndim])
        event = tuple(size for size in array.shape[batch_ndim:] if size != 1)
        flat = array.reshape(count, -1)
        if not event:
            draws[site] = flat[:, 0]
            continue
        for column, index in enumerate(np.ndindex(event)):
            draws[f"{site}[{','.join(str(i + 1) for i in index)}]"] = flat[:, column]
    reference = _reference(name)
    missing = [param for param in reference if param not in draws]
    if missing:
        raise KeyError(f"{name}: no draws of {missing} among the sample sites {sorted(samples)}")
    return {param: draws[param] for param in reference}


def check(name: str, draws: dict, mean_tol: float = 0.25, sd_tol: float = 0.20) -> dict:
    """Compare draws with the reference (posteriordb's stat_comp_benchmarks check).

    Args:
        draws: ``{stan name: 1-D draws}`` (see :func:`stan_draws`).
        mean_tol: bound on ``z = |mean - ref mean| / ref sd``.
        sd_tol: bound on ``|sd / ref sd - 1|``.

    Returns:
        ``{"params": {param: {"z", "sd_ratio", "mean", "sd"}}, "passed",
        "max_z", "worst_sd" (max |sd ratio - 1|), "worst"}``; ``worst`` is the
        parameter furthest past (or nearest to) its bounds, relative to them.
    """
    params, badness = {}, {}
    for param, ref in _reference(name).items():
        x = np.asarray(draws[param], dtype=np.float64).ravel()
        mean, sd = float(x.mean()), float(x.std(ddof=1))
        z, ratio = abs(mean - ref["mean"]) / ref["sd"], sd / ref["sd"]
        params[param] = {"z": z, "sd_ratio": ratio, "mean": mean, "sd": sd}
        badness[param] = max(z / mean_tol, abs(ratio - 1.0) / sd_tol)
    finite = all(math.isfinite(badness[p]) for p in badness)
    return {
        "params": params,
        "passed": finite and all(
            row["z"] < mean_tol and abs(row["sd_ratio"] - 1.0) < sd_tol for row in params.values()
        ),
        "max_z": max(row["z"] for row in params.values()),
        "worst_sd": max(abs(row["sd_ratio"] - 1.0) for row in params.values()),
        "worst": max(badness, key=lambda p: badness[p] if math.isfinite(badness[p]) else math.inf),
    }


# ----------------------------------------------------------------------------
# Validation with NumPyro NUTS


def run_nuts(name: str, *, chains: int = 4, warmup: int = 500, samples: int = 1000, seed: int = 0,
             dense_mass: bool = False, chain_method: str = "vectorized") -> dict:
    """NumPyro NUTS on one posterior; :func:`check`'s result plus ``seconds`` and ``divergences``."""


    model, kwargs = numpyro_model(name)
    mcmc = MCMC(NUTS(model, dense_mass=dense_mass), num_warmup=warmup, num_samples=samples,
                num_chains=chains, chain_method=chain_method, progress_bar=False)
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), **kwargs, extra_fields=("diverging",))
    jax.block_until_ready(mcmc.get_samples())
    seconds = time.perf_counter() - start
    result = check(name, stan_draws(name, mcmc.get_samples()))
    result["seconds"] = seconds
    result["divergences"] = int(mcmc.get_extra_fields()["diverging"].sum())
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=list(NAMES))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dense", action="store_true", help="dense mass matrix")
    parser.add_argument("--x64", action="store_true", help="jax_enable_x64")
    args = parser.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    print(f"{'posterior':45s} {'max z':>6s} {'worst sd':>8s} {'worst':>12s} {'div':>4s} {'s':>7s}  ok")
    for name in args.names:
        r = run_nuts(name, chains=args.chains, warmup=args.warmup, samples=args.samples,
                     seed=args.seed, dense_mass=args.dense)
        print(f"{name:45s} {r['max_z']:6.3f} {r['worst_sd']:8.3f} {r['worst']:>12s} "
              f"{r['divergences']:4d} {r['seconds']:7.1f}  {r['passed']}", flush=True)


if __name__ == "__main__":
    main()
