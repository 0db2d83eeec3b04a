"""``benchmarks/posteriordb_models.py`` for the tests, and which posteriors run in ``make test``."""

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "posteriordb_models.py"
if "posteriordb_models" not in sys.modules:
    _SPEC = importlib.util.spec_from_file_location("posteriordb_models", _PATH)
    _MODULE = importlib.util.module_from_spec(_SPEC)
    sys.modules["posteriordb_models"] = _MODULE
    _SPEC.loader.exec_module(_MODULE)
pdb = sys.modules["posteriordb_models"]

NAMES = pdb.NAMES
#: the fast subset of ``make test``: an ill-conditioned regression (mom_iq is not centred)
FAST = ("kidiq-kidscore_momiq",)

#: (posterior, kernel) pairs whose default warm-up is too short, with the warm-up that passes:
#: their runs with the defaults must fail *and* warn at the end of warm-up (naming the setting),
#: and pass without a warning with this warm-up (measured: ``benchmarks/results.md``)
NEEDS_LONGER_WARMUP = {("diamonds-diamonds", "FlowMCMC"): 1500}

#: the end-of-warm-up check's warning (``ebmppl.mixing.warn_if_not_mixed``)
NOT_MIXED = "have not mixed by the end of warm-up"


def cases(kernels):
    """(name, kernel) parameters, slow unless in ``FAST``, leaving out ``NEEDS_LONGER_WARMUP``."""
    import pytest

    return [pytest.param(n, k, marks=() if n in FAST else pytest.mark.slow, id=f"{n}-{k.__name__}")
            for n in NAMES for k in kernels if (n, k.__name__) not in NEEDS_LONGER_WARMUP]


def outcome(name, by_walker, caught):
    """A run's check result, its end-of-warm-up warnings, and the draws' largest R-hat.

    ``by_walker``: the samples grouped by walker (NumPyro chains or Pyro walkers), ``(8, draws, ...)``;
    ``caught``: the warnings recorded during the run.
    """
    import arviz as az
    import numpy as np

    messages = [str(w.message) for w in caught if NOT_MIXED in str(w.message)]
    draws = pdb.stan_draws(name, by_walker, batch_ndim=2)
    rhat = max(float(az.rhat(np.asarray(v).reshape(8, -1))) for v in draws.values())
    flat = {p: np.asarray(v).ravel() for p, v in draws.items()}
    return pdb.check(name, flat), messages, rhat


def failures(result):
    """Each parameter's z and sd ratio, for an assertion's message."""
    return {p: (round(r["z"], 3), round(r["sd_ratio"], 3)) for p, r in result["params"].items()}
