"""Backend-neutral pieces: import hygiene, the examples of README and the guide, datasets, diagnostics."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ebmppl.datasets import GaussianMixture, four_mode_mixture
from ebmppl.diagnostics import mode_weight_zscores

ROOT = Path(__file__).resolve().parents[2]


def test_importing_ebmppl_loads_neither_torch_nor_jax():
    code = "import sys, ebmppl, ebmppl.datasets, ebmppl.diagnostics; print(sorted({'torch', 'jax'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _python_block(page: str, marker: str) -> str:
    """The one ```python block of ``page`` (a path from the repository's root) that contains ``marker``."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S) if marker in b]
    assert len(blocks) == 1, f"{page}: {len(blocks)} python blocks contain {marker!r}"
    return blocks[0]


def _run(tmp_path, code: str) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one thread per test worker
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True, timeout=600, env=env,
                   cwd=tmp_path)


@pytest.mark.parametrize("page, marker, check", [
    ("README.md", "from ebmppl.numpyro import FlowMCMC",
     "assert abs(float((x[:, 0] > 0).mean()) - 0.7) < 0.05"),
    ("README.md", "from ebmppl.pyro import FlowMCMC",
     "assert abs(float((x[..., 0] > 0).float().mean()) - 0.7) < 0.05\n"
     "assert data['posterior']['x'].shape == (40, 500, 2)"),
    ("docs/guide/training.md", "EBMTrainer(model",
     "assert result.history['loss'].shape == (1000,)\n"
     "import pathlib; assert pathlib.Path('runs/ebm.npz').is_file()"),
], ids=["numpyro", "pyro", "ebm-trainer"])
def test_quickstart_and_guide_examples_run(tmp_path, page, marker, check):
    """README's two quickstarts and the guide's EBMTrainer example run as they are written."""
    _run(tmp_path, _python_block(page, marker) + "\n" + check + "\n")


def test_readme_has_exactly_the_two_quickstarts():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 2 and "ebmppl.numpyro" in blocks[0] and "ebmppl.pyro" in blocks[1]


def test_guide_neural_transport_examples_run(tmp_path):
    funnel = _python_block("docs/guide/neutra.md", "NeuTraHMC(funnel)")
    backbone = _python_block("docs/guide/neutra.md", "base=flow")
    check = (
        "import numpy as np\n"
        "x = np.asarray(mcmc.get_samples()['x'])\n"
        "assert x.shape == (2400, 2) and np.isfinite(x).all()\n"
        "assert abs(x.std() - float(np.sqrt(np.mean(x**2)))) < 0.2  # centred: the target is symmetric\n"
    )
    _run(tmp_path, funnel.replace("mcmc.run(jax.random.key(0))", "mcmc.run(jax.random.key(0))\n"
                                  "v = mcmc.get_samples()['v']\nassert abs(float(v.std()) - 3) < 0.3")
         + "\n" + backbone + "\n" + check)


def test_mixture_log_prob_is_normalised():
    mixture = GaussianMixture(np.array([[-1.0], [2.0]]), np.array([0.5, 1.0]), np.array([0.3, 0.7]))
    grid = np.linspace(-10, 12, 20001)[:, None]
    assert abs(np.trapezoid(np.exp(mixture.log_prob(grid)), grid[:, 0]) - 1.0) < 1e-6


def test_mode_weights_of_exact_draws_and_bad_mixtures():
    target = four_mode_mixture(dim=3)
    x = target.sample(40 * 500, np.random.default_rng(0)).reshape(40, 500, 3)
    assert np.all(np.abs(mode_weight_zscores(target.assign(x), target.weights)) < 4)
    # control: the wrong weights are detected
    assert np.any(np.abs(mode_weight_zscores(target.assign(x), [0.25] * 4)) > 4)
    with pytest.raises(ValueError, match="weights summing to one"):
        GaussianMixture(np.zeros((2, 1)), np.ones(2), np.array([0.5, 0.6]))


def _module_surface(path):
    """``(__all__ or None, the public names a module defines at top level)``."""
    import ast

    tree = ast.parse(path.read_text())
    declared, defined = None, set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if "__all__" in names:
            declared = set(ast.literal_eval(node.value))
        defined.update(names)
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        if isinstance(node, (ast.Import, ast.ImportFrom)) and path.name == "__init__.py":
            defined.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and path.name == "__init__.py":
            defined.update(c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)
                           and c.value.isidentifier())
    return declared, {name for name in defined if not name.startswith("_") or name.startswith("__")} - {"__all__"}


def test_every_module_lists_exactly_what_it_offers(tmp_path):
    """``__all__`` in every module of the package: each listed name is defined there, and every public
    top-level name of a module (not a package's re-exports) is listed. Control: a module with an extra
    public function is seen to have one."""
    problems = []
    for path in sorted((ROOT / "ebmppl").rglob("*.py")):
        if path.name == "__main__.py":
            continue
        declared, public = _module_surface(path)
        if declared is None:
            problems.append(f"{path}: no __all__")
            continue
        if declared - public:
            problems.append(f"{path}: __all__ names undefined {sorted(declared - public)}")
        if path.name != "__init__.py" and public - declared:
            problems.append(f"{path}: public but not in __all__ {sorted(public - declared)}")
    assert not problems, "\n".join(problems)
    control = tmp_path / "control.py"
    control.write_text('__all__ = ["listed"]\n\ndef listed(): ...\n\ndef extra(): ...\n')
    declared, public = _module_surface(control)
    assert public - declared == {"extra"}


def test_no_private_name_crosses_a_module_boundary():
    """No ``from ebmppl... import _name`` anywhere: library, tests, benchmarks (dunders such as
    ``__version__`` are public)."""
    import re

    pattern = re.compile(r"^\s*(?:>>> )?from ebmppl[\w.]* import \(?([^)\n]*)")
    offenders = []
    for folder in ("ebmppl", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line_no, line in enumerate(path.read_text().splitlines(), 1):
                match = pattern.search(line)
                names = [n.strip().split(" as ")[0] for n in match.group(1).split(",")] if match else []
                if any(n.startswith("_") and not n.startswith("__") for n in names):
                    offenders.append(f"{path}:{line_no}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
