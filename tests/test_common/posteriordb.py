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
