"""The Sphinx site (``docs/``, ``make docs``): it builds offline with warnings as errors, and its key pages are there.

The build is slow (about half a minute); the checks of its parts are not.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ebmppl.app.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PUBLIC_MODULES = ("ebmppl.numpyro", "ebmppl.pyro", "ebmppl.diagnostics", "ebmppl.datasets")

pytest.importorskip("sphinx")  # the docs extra
_spec = importlib.util.spec_from_file_location("ebmppl_docs", DOCS / "_ext" / "ebmppl_docs.py")
ebmppl_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ebmppl_docs)


def _text(html: str) -> str:
    """The text of an HTML page, tags removed (highlighting splits code into spans)."""
    return re.sub(r"<[^>]+>", "", html)


@pytest.mark.slow
def test_site_builds_offline_with_warnings_as_errors(tmp_path):
    out = tmp_path / "html"
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
                            str(DOCS), str(out)], capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0, build.stderr[-8000:]

    index = (out / "index.html").read_text()
    assert "Quickstart (NumPyro)" in index and "Quickstart (Pyro)" in index and "make demo" in _text(index)
    assert 'class="highlight-python' in index  # the quickstarts, highlighted

    api = (out / "api" / "numpyro.html").read_text()
    flow_mcmc = api[api.index('id="ebmppl.numpyro.FlowMCMC"'):api.index('id="ebmppl.numpyro.FlowMCMCState"')]
    assert "num_particles" in flow_mcmc and "i-SIR candidates per chain" in flow_mcmc  # a parameter, described
    assert "local_kernel" in flow_mcmc and "Example" in flow_mcmc

    guide = (out / "guide" / "flow_mcmc.html").read_text()
    assert "The end-of-warm-up check" in guide
    assert (out / "guide" / "samplers.html").is_file() and (out / "architecture.html").is_file()
    assert 'id="cmdoption-ebmppl-train-data"' in (out / "api" / "cli.html").read_text()
    for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
        assert (out / "tutorials" / f"{notebook.stem}.html").is_file(), notebook.name

    # every public name of the four modules is documented (the shared classes under their own module)
    ids = set()
    for page in (out / "api").glob("*.html"):
        ids.update(re.findall(r'id="(ebmppl\.[\w.]+)"', page.read_text()))
    missing = []
    for module_name in PUBLIC_MODULES:
        module = __import__(module_name, fromlist=["__all__"])
        for name in module.__all__:
            obj = getattr(module, name)
            if not {f"{module_name}.{name}", f"{obj.__module__}.{obj.__qualname__}"} & ids:
                missing.append(f"{module_name}.{name}")
    assert not missing, missing

    # offline: no script or stylesheet from another site
    for page in out.rglob("*.html"):
        remote = re.findall(r'<(?:script|link)[^>]*(?:src|href)="(?:https?:)?//[^"]*"', page.read_text())
        assert not remote, (page, remote)


@pytest.mark.parametrize("command", ["train", "sample"])
def test_command_reference_documents_every_option(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    options = set(re.findall(r"(--[a-z][a-z-]*)", capsys.readouterr().out)) - {"--help"}
    page = (DOCS / "api" / "cli.rst").read_text()
    section = page[page.index(f".. program:: ebmppl {command}"):]
    section = section[:section.index(".. program::", 1)] if ".. program::" in section[1:] else section
    documented = set(re.findall(r"^\.\. option:: (--[a-z][a-z-]*)", section, re.M))
    assert options and documented == options


def test_tutorials_are_mirrored_into_the_docs(tmp_path):
    source, target = tmp_path / "tutorials", tmp_path / "docs" / "tutorials"
    (source / "img").mkdir(parents=True)
    (source / "01_a.ipynb").write_text("{}")
    (source / "img" / "a.png").write_bytes(b"png")
    (source / "run.py").write_text("")
    assert ebmppl_docs.copy_tutorials(source, target) == ["01_a.ipynb"]
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "01_a.ipynb", "img/a.png"]
    (source / "01_a.ipynb").unlink()
    (source / "img" / "a.png").unlink()
    assert ebmppl_docs.copy_tutorials(source, target) == []
    assert not any(target.rglob("*"))  # a deleted tutorial does not linger
