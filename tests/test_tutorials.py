"""Every tutorial runs end to end in smoke mode (``EBMPPL_SMOKE=1``): a cell that raises fails its test."""

import importlib.util
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
_spec = importlib.util.spec_from_file_location("tutorials_run", TUTORIALS / "run.py")
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)


def test_there_are_tutorials_with_a_smoke_switch():
    paths = run.notebooks(TUTORIALS)
    assert paths, "no tutorials in tutorials/"
    for path in paths:
        assert "EBMPPL_SMOKE" in path.read_text(), f"{path.name} has no EBMPPL_SMOKE line"


@pytest.mark.parametrize("path", run.notebooks(TUTORIALS), ids=lambda p: p.stem)
def test_tutorial_runs_in_smoke_mode(path, tmp_path):
    notebook = run.execute(path, smoke=True)
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
