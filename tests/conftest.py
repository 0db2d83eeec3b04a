"""Test-wide settings.

- One torch thread per test worker (pytest-xdist runs two at once on two
  cores; more threads than cores slows torch down many times).
- JAX's compilation caches are emptied after each test module. Every
  executable XLA compiles on the CPU keeps three memory mappings of its own
  while a cache holds it, and a worker that runs half the suite gathered
  over 54,000 of them: past the kernel's limit (``vm.max_map_count``,
  65,530 here) the next compilation fails ("Failed to materialize
  symbols") or aborts the worker. Emptied per module, a worker stays near
  5,000.
- JAX's persistent compilation cache, in ``.jax-cache/`` at the top of the
  checkout (gitignored; a fresh clone starts without it), for every
  compilation however short: a module's compilations after the caches are
  emptied, the command line's and the tutorials' processes (which inherit
  the environment) and the doctests that repeat a test's programs read
  them back instead of compiling again. The executables are the same, so
  are the draws.
"""

import gc
import os
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

_JAX_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(Path(__file__).resolve().parents[1] / ".jax-cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
for _name, _value in _JAX_CACHE.items():
    os.environ.setdefault(_name, _value)  # read by JAX at import, here and in subprocesses
if "jax" in sys.modules:  # imported before this file: the environment came too late for it
    _config = sys.modules["jax"].config
    _config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    _config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    _config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_executables():
    yield
    if "jax" in sys.modules:  # a module that never imported JAX compiled nothing
        sys.modules["jax"].clear_caches()
        gc.collect()
