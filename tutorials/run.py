"""Execute the tutorials, in place (full budget) or as a smoke test.

``python tutorials/run.py`` re-executes every notebook of this folder at full
budget and stores the outputs in it (``make tutorials``); ``--smoke`` runs them
with ``EBMPPL_SMOKE=1`` and leaves the files as they are; names select
notebooks. Each notebook runs in a fresh kernel, from this folder; a cell that
raises stops it and the command exits with 1. The wall time of each is printed.

Example:
    >>> from pathlib import Path
    >>> all(p.suffix == ".ipynb" for p in notebooks(Path(__file__).parent))
    True
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def notebooks(folder: Path = HERE) -> list[Path]:
    """The tutorials of ``folder``, in the order of their number prefix."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def execute(path: Path, smoke: bool, timeout: int = 1200):
    """Run ``path`` in a fresh kernel; return the executed notebook.

    ``smoke`` sets ``EBMPPL_SMOKE=1`` in the kernel's environment. A cell that
    raises raises ``nbclient.exceptions.CellExecutionError`` here, with the
    cell and its traceback.
    """
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    env = dict(os.environ, EBMPPL_SMOKE="1" if smoke else "0", MPLBACKEND="module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    old = dict(os.environ)
    os.environ.update(env)  # the kernel inherits the environment of this process
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all of tutorials/)")
    parser.add_argument("--smoke", action="store_true", help="EBMPPL_SMOKE=1, outputs not stored")
    args = parser.parse_args(argv)
    import nbformat

    paths = [Path(name).resolve() for name in args.names] or notebooks()
    for path in paths:
        start = time.perf_counter()
        notebook = execute(path, args.smoke)
        wall = time.perf_counter() - start
        if not args.smoke:
            nbformat.write(notebook, path)
        print(f"{path.name}: {wall:.0f} s{' (smoke)' if args.smoke else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
