"""log_partition (Pyro): importance sampling recovers known normalising constants."""

import math
import warnings

import pyro.distributions as dist
import pytest
import torch

from ebmppl.datasets import GaussianMixture
from ebmppl.pyro import Potential, log_partition
from ebmppl.pyro.flows import default_flow

MIXTURE = GaussianMixture(means=[[-2.0, 0.0], [2.0, 1.0]], scales=[0.7, 1.0], weights=[0.3, 0.7])
LOG_C = math.log(7.0)  # energy = -log mixture - log 7, so Z = 7


def test_gaussian_energy():
    # E(x) = |x - m|² / (2 s²) in 3-D: Z = (2π s²)^(3/2)
    torch.manual_seed(1)
    m, s = torch.tensor([0.5, -0.3, 0.2]), 0.8
    potential = Potential(lambda x: ((x - m) ** 2).sum(-1) / (2 * s**2), event_shape=(3,))
    estimate = log_partition(potential, default_flow(3), 40_000)  # a fresh flow is N(0, I)
    truth = 1.5 * math.log(2 * math.pi * s**2)
    assert abs(estimate.log_z - truth) < 3 * estimate.stderr, (estimate, truth)
    assert 0 < estimate.stderr < 0.02 and 5_000 < estimate.ess < 40_000


def test_mixture_with_a_base_tilt():
    # p(x) ∝ exp(-E(x)) base(x) with E = -log mixture - log 7 + log base: Z = 7
    torch.manual_seed(2)
    base = dist.Normal(0.0, 3.0).expand([2]).to_event(1)

    def energy(x):
        return -MIXTURE.log_prob(x, torch) - LOG_C + base.log_prob(x)

    potential = Potential(energy, event_shape=(2,), base=base)
    proposal = dist.Normal(torch.tensor([0.0, 0.5]), torch.tensor([2.5, 1.5])).to_event(1)
    estimate = log_partition(potential, proposal, 50_000)
    assert abs(estimate.log_z - LOG_C) < 3 * estimate.stderr, estimate
    # a control: a wrong constant is detected at this precision
    assert abs(estimate.log_z - (LOG_C + 0.05)) > 3 * estimate.stderr


def test_poor_proposal_warns_and_nan_energy_is_named():
    torch.manual_seed(3)
    narrow = dist.Normal(5.0, 0.1).expand([2]).to_event(1)  # nowhere near the mass
    potential = Potential(lambda x: -MIXTURE.log_prob(x, torch), event_shape=(2,))
    with pytest.warns(UserWarning, match="effective sample size"):
        log_partition(potential, narrow, 2_000)
    with pytest.raises(ValueError, match="NaN"):
        log_partition(Potential(lambda x: x.sum(-1) * torch.nan, event_shape=(2,)),
                      dist.Normal(0.0, 1.0).expand([2]).to_event(1), 100)
    with pytest.raises(ValueError, match="event_shape"):
        log_partition(potential, dist.Normal(0.0, 1.0).expand([3]).to_event(1), 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good proposal does not warn
        log_partition(potential, dist.Normal(0.0, 3.0).expand([2]).to_event(1), 5_000)
