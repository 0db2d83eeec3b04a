"""Exact identities of the flows used as proposals (checked in float64), and the package's imports."""

import subprocess
import sys

import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
import zuko

from ebmppl.pyro.flows import (
    as_flow_module,
    check_flow,
    default_flow,
    fit_whitening,
    identity_whitening,
    proposal_log_prob,
    proposal_sample_and_log_prob,
)


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def perturbed(flow):
    """A fresh flow is the identity map: move every parameter off zero first."""
    with torch.no_grad():
        for param in flow.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return flow


def test_fresh_default_flow_is_the_identity_and_perturbed_is_not():
    x = torch.randn(16, 3)
    transform = default_flow(3)().transform
    torch.testing.assert_close(transform(x), x, atol=1e-12, rtol=0)
    assert (perturbed(default_flow(3))().transform(x) - x).abs().max() > 0.1


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_inverse_of_forward_is_identity(dim):
    torch.manual_seed(1)
    transform = perturbed(default_flow(dim))().transform
    x = 2.0 * torch.randn(64, dim)
    torch.testing.assert_close(transform.inv(transform(x)), x, atol=1e-9, rtol=0)


@pytest.mark.parametrize("dim", [1, 3, 6])
def test_log_det_matches_autodiff(dim):
    torch.manual_seed(3)
    transform = perturbed(default_flow(dim))().transform
    x = 1.5 * torch.randn(8, dim)
    _, log_det = transform.call_and_ladj(x)
    jacobians = torch.stack([torch.autograd.functional.jacobian(transform, xi) for xi in x])
    torch.testing.assert_close(log_det, torch.linalg.slogdet(jacobians).logabsdet, atol=1e-9, rtol=0)


def test_whitened_proposal_density_is_change_of_variables():
    torch.manual_seed(5)
    mixing = torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.3, 3.0]])
    points = torch.randn(500, 3) @ mixing + 4.0
    whitening = fit_whitening(points)
    whitened = (points - whitening.loc) @ whitening.inverse.T
    torch.testing.assert_close(torch.cov(whitened.T), torch.eye(3), atol=1e-4, rtol=0)  # jitter 1e-6 x mean eigenvalue
    flow = perturbed(default_flow(3))
    with torch.no_grad():
        x, log_q = proposal_sample_and_log_prob(flow, whitening, (10,))
        torch.testing.assert_close(proposal_log_prob(flow, whitening, x), log_q, atol=1e-8, rtol=0)
        # log q(x) = log q_u(u) - log|det dx/du| with x = loc + matrix @ u
        u0 = whitening.inverse @ (x[0] - whitening.loc)
        expected = flow().log_prob(u0) - torch.linalg.slogdet(whitening.matrix).logabsdet
    torch.testing.assert_close(log_q[0], expected, atol=1e-8, rtol=0)


def test_interleaving_splits_the_two_largest_directions():
    # variances 100, 50, 1, 1: the two largest components land in different halves
    torch.manual_seed(8)
    points = torch.randn(4000, 4) * torch.tensor([10.0, 1.0, 7.0, 1.0])
    slot_of = fit_whitening(points).matrix.abs().argmax(1)  # slot holding each coordinate
    assert (int(slot_of[0]) < 2) != (int(slot_of[2]) < 2)


@pytest.mark.parametrize("make", [
    lambda: zuko.flows.NAF(features=2),
    lambda: zuko.flows.BPF(features=2),
    lambda: dist.TransformedDistribution(dist.Normal(torch.zeros(2), 1.0).to_event(1),
                                         [T.block_autoregressive(2)]),
], ids=["zuko-NAF", "zuko-BPF", "pyro-BNAF"])
def test_flow_without_exact_inverse_is_refused(make):
    with pytest.raises(ValueError, match="no exact inverse"):
        check_flow(as_flow_module(make()), 2)


def test_pyro_spline_coupling_flow_is_accepted_and_its_cache_is_cleared():
    base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
    flow = as_flow_module(dist.TransformedDistribution(base, [T.spline_coupling(2)]))
    check_flow(flow, 2)
    x = flow().sample((4,))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5)  # what an optimizer step does
    spline = flow.transforms[0]
    assert spline._cached_x_y[1] is x
    flow()  # the stale (x, y) pair is forgotten
    assert spline._cached_x_y[1] is None


def test_flow_of_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"event_shape \(3,\)"):
        check_flow(default_flow(2), 3)


def test_identity_whitening_takes_a_dtype():
    whitening = identity_whitening(2, torch.float32)
    assert all(part.dtype == torch.float32 for part in whitening)
    assert identity_whitening(2, torch.float64).log_det.dtype == torch.float64


@pytest.mark.parametrize("first, second", [
    ("ebmppl.pyro.moves", "ebmppl.pyro.flows"),
    ("ebmppl.pyro.flows", "ebmppl.pyro.moves"),
    ("ebmppl.pyro", "ebmppl.pyro.flows"),
])
def test_flows_and_moves_import_in_either_order(first, second):
    # flows.fit uses moves.transport, which uses flows.protocol: no order may meet a half-imported module
    subprocess.run([sys.executable, "-c", f"import {first}, {second}"], check=True, capture_output=True)
