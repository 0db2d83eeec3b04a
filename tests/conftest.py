"""Test-wide settings: one torch thread per test worker (pytest-xdist runs two at
once on two cores; more threads than cores slows torch down many times)."""

import torch

torch.set_num_threads(1)
