"""Pyro tests: one torch thread per test worker (pytest-xdist runs two at once)."""

import torch

torch.set_num_threads(1)
