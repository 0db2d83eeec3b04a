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
"""

import gc
import sys

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_executables():
    yield
    if "jax" in sys.modules:  # a module that never imported JAX compiled nothing
        sys.modules["jax"].clear_caches()
        gc.collect()
