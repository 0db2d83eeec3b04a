"""Exact identities of the flows used as proposals (checked in float64), and the package's imports."""

import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flowjax.distributions import StandardNormal
from flowjax.flows import block_neural_autoregressive_flow

from ebmppl.numpyro.flows import (
    check_flow,
    default_flow,
    fit_whitening,
    identity_whitening,
    partition_flow,
    proposal_log_prob,
    proposal_sample_and_log_prob,
)


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def perturbed(flow, key):
    """A fresh flow is the identity map: move every trainable array off its initial value."""
    params, static = partition_flow(flow)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [leaf + 0.1 * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    return eqx.combine(jax.tree.unflatten(treedef, leaves), static)


def test_fresh_default_flow_is_the_identity_and_perturbed_is_not():
    z = jax.random.normal(jax.random.key(0), (16, 3))
    flow = default_flow(jax.random.key(1), 3)
    np.testing.assert_allclose(jax.vmap(flow.bijection.transform)(z), z, atol=1e-12)
    moved = jax.vmap(perturbed(flow, jax.random.key(2)).bijection.transform)(z)
    assert float(jnp.abs(moved - z).max()) > 0.1


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_inverse_of_forward_is_identity(dim):
    flow = perturbed(default_flow(jax.random.key(1), dim), jax.random.key(11))
    z = 2.0 * jax.random.normal(jax.random.key(2), (64, dim))
    x = jax.vmap(flow.bijection.transform)(z)
    np.testing.assert_allclose(jax.vmap(flow.bijection.inverse)(x), z, atol=1e-9)


@pytest.mark.parametrize("dim", [1, 3, 6])
def test_log_det_matches_autodiff(dim):
    flow = perturbed(default_flow(jax.random.key(3), dim), jax.random.key(13))
    z = 1.5 * jax.random.normal(jax.random.key(4), (8, dim))
    _, log_det = jax.vmap(flow.bijection.transform_and_log_det)(z)
    _, expected = jnp.linalg.slogdet(jax.vmap(jax.jacfwd(flow.bijection.transform))(z))
    np.testing.assert_allclose(log_det, expected, atol=1e-9)


def test_whitened_proposal_density_is_change_of_variables():
    points = jax.random.normal(jax.random.key(5), (500, 3)) @ jnp.array(
        [[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.3, 3.0]]) + 4.0
    whitening = fit_whitening(points)
    whitened = (points - whitening.loc) @ whitening.inverse.T
    np.testing.assert_allclose(jnp.cov(whitened, rowvar=False), jnp.eye(3), atol=1e-3)
    flow = perturbed(default_flow(jax.random.key(6), 3), jax.random.key(16))
    x, log_q = proposal_sample_and_log_prob(flow, whitening, jax.random.key(7), (10,))
    np.testing.assert_allclose(proposal_log_prob(flow, whitening, x), log_q, atol=1e-3)
    # log q(x) = log q_u(u) - log|det dx/du| with x = loc + matrix @ u
    _, log_det = jnp.linalg.slogdet(jax.jacfwd(lambda u: whitening.loc + whitening.matrix @ u)(x[0]))
    u0 = whitening.inverse @ (x[0] - whitening.loc)
    np.testing.assert_allclose(log_q[0], flow.log_prob(u0) - log_det, atol=1e-3)


def test_interleaving_splits_the_two_largest_directions():
    # variances 100, 50, 1, 1: the two largest components land in different halves
    points = jax.random.normal(jax.random.key(8), (4000, 4)) * jnp.array([10.0, 1.0, 7.0, 1.0])
    matrix = fit_whitening(points).matrix
    slot_of = jnp.argmax(jnp.abs(matrix), axis=1)  # slot holding each original coordinate
    assert (int(slot_of[0]) < 2) != (int(slot_of[2]) < 2)


def test_flow_without_inverse_is_refused():
    bnaf = block_neural_autoregressive_flow(jax.random.key(0), base_dist=StandardNormal((2,)))
    with pytest.raises(ValueError, match="no exact inverse"):
        check_flow(bnaf, 2)


def test_flow_of_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        check_flow(default_flow(jax.random.key(0), 2), 3)


def test_identity_whitening_takes_a_dtype():
    whitening = identity_whitening(2)  # float32 by default, float64 enabled or not
    assert all(part.dtype == jnp.float32 for part in whitening)
    assert identity_whitening(2, jnp.float64).log_det.dtype == jnp.float64


@pytest.mark.parametrize("first, second", [
    ("ebmppl.numpyro.moves", "ebmppl.numpyro.flows"),
    ("ebmppl.numpyro.flows", "ebmppl.numpyro.moves"),
    ("ebmppl.numpyro", "ebmppl.numpyro.flows"),
])
def test_flows_and_moves_import_in_either_order(first, second):
    # flows.fit uses moves.transport (on the Pyro side also the reverse): no order may meet a half-imported module
    subprocess.run([sys.executable, "-c", f"import {first}, {second}"], check=True, capture_output=True)
