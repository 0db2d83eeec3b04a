"""The default flows, built from flowjax pieces: a spline coupling flow and an inverse autoregressive flow.

:func:`default_flow` is the independent proposal of ``FlowMCMC`` and the
trainer; :func:`neutra_flow` the transport of ``NeuTraHMC``. Both start as the
identity map. Flows are built eagerly (building a flowjax flow under ``jit``
leaks tracers). It mirrors :mod:`ebmppl.pyro.flows.architectures`.

Example:
    >>> import jax
    >>> from ebmppl.numpyro.flows.architectures import default_flow
    >>> default_flow(jax.random.key(0), 3).shape
    (3,)
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from flowjax.bijections import (
    AbstractBijection,
    Chain,
    Coupling,
    Flip,
    MaskedAutoregressive,
    RationalQuadraticSpline,
    Scan,
    Vmap,
)
from flowjax.distributions import StandardNormal, Transformed

__all__ = ["LOG_SCALE_LIMIT", "SoftAffine", "default_flow", "neutra_flow"]


def default_flow(
    key: jax.Array,
    dim: int,
    *,
    num_layers: int = 4,
    nn_width: int = 32,
    nn_depth: int = 1,
    knots: int = 8,
    interval: float = 5.0,
) -> Transformed:
    """A rational-quadratic spline coupling flow with a standard normal base.

    The splines are the identity outside ``[-interval, interval]``, so the
    tails stay Gaussian and unbounded; both directions are exact and equally
    fast, so the flow serves as an independent proposal. The conditioners'
    last layers start at zero: a fresh flow is the identity map.

    Args:
        key: JAX key for the initial weights.
        dim: dimension of the flow (at least 1).
        num_layers: number of coupling layers (halves swap between layers).
        nn_width: width of each conditioner's hidden layers.
        nn_depth: number of hidden layers of each conditioner.
        knots: number of spline bins.
        interval: half-width of the spline's domain (whitened units).

    Returns:
        A flowjax ``Transformed`` distribution of shape ``(dim,)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> flow = default_flow(jax.random.key(0), 3)
        >>> bool(jnp.allclose(flow.bijection.transform(jnp.ones(3)), 1.0))  # identity at init
        True
    """
    if dim < 1:
        raise ValueError(f"default_flow needs dim >= 1, got {dim}")
    spline = RationalQuadraticSpline(knots=knots, interval=interval)
    if dim == 1:
        # One unconditional spline: a coupling layer needs two coordinates.
        bijection = Vmap(spline, axis_size=1)
        return Transformed(StandardNormal((1,)), bijection)

    def make_layer(layer_key):
        coupling = Coupling(
            layer_key,
            transformer=spline,
            untransformed_dim=dim // 2,
            dim=dim,
            nn_width=nn_width,
            nn_depth=nn_depth,
        )
        # zero last layer: the conditioner gives the spline's initial (identity) parameters
        last = lambda c: (c.conditioner.layers[-1].weight, c.conditioner.layers[-1].bias)  # noqa: E731
        coupling = eqx.tree_at(last, coupling, replace_fn=jnp.zeros_like)
        return Chain([coupling, Flip((dim,))]).merge_chains()

    layers = eqx.filter_vmap(make_layer)(jax.random.split(key, num_layers))
    return Transformed(StandardNormal((dim,)), Scan(layers))


LOG_SCALE_LIMIT = 5.0  # |log scale| of one affine layer stays below this (soft bound)


class SoftAffine(AbstractBijection):
    """Scalar ``y = x * exp(s) + loc`` with ``s = L tanh(log_scale / L)``; zero parameters are the identity.

    The transformer of :func:`neutra_flow`'s layers: an exponential scale
    (the funnel's scale is ``exp(v / 2)``) softly bounded by
    ``L = LOG_SCALE_LIMIT`` so that one layer cannot overflow.

    Example:
        >>> import jax.numpy as jnp
        >>> layer = SoftAffine(loc=jnp.array(1.0), log_scale=jnp.log(2.0))
        >>> y, log_det = layer.transform_and_log_det(jnp.array(3.0))
        >>> round(float(y), 2), round(float(log_det), 2)  # the scale is slightly below 2: a soft bound
        (6.97, 0.69)
    """

    shape: tuple[int, ...] = ()
    cond_shape: None = None
    loc: jax.Array = eqx.field(default_factory=lambda: jnp.zeros(()))
    log_scale: jax.Array = eqx.field(default_factory=lambda: jnp.zeros(()))

    def _s(self):
        return LOG_SCALE_LIMIT * jnp.tanh(self.log_scale / LOG_SCALE_LIMIT)

    def transform_and_log_det(self, x, condition=None):
        s = self._s()
        return x * jnp.exp(s) + self.loc, jnp.sum(s)

    def inverse_and_log_det(self, y, condition=None):
        s = self._s()
        return (y - self.loc) * jnp.exp(-s), -jnp.sum(s)


def neutra_flow(key: jax.Array, dim: int, *, num_layers: int = 4, nn_width: int = 32, nn_depth: int = 1) -> Transformed:
    """An inverse autoregressive affine flow with a standard normal base: NeuTraHMC's default transport.

    Layer ``k`` maps ``z`` to ``x_i = z_i exp(s_i(z_<i)) + t_i(z_<i)``, with
    ``(s, t)`` a masked ReLU network; the order of the coordinates reverses
    between layers. Scales that grow exponentially with an earlier coordinate
    (Neal's funnel: ``x = exp(v / 2) z``) and shifts polynomial in it (the
    banana) are in its family, and ReLU networks extrapolate linearly into
    the tails the chains visit rarely. The latent-to-data direction, which HMC
    evaluates at every leapfrog step, is one network pass per layer; the
    inverse (density of data points) takes ``dim`` passes. The networks' last
    layers start at zero: a fresh flow is the identity map.

    Args:
        key: JAX key for the initial weights.
        dim: dimension of the flow (at least 1).
        num_layers: number of autoregressive layers.
        nn_width: width of each network's hidden layers.
        nn_depth: number of hidden layers of each network.

    Returns:
        A flowjax ``Transformed`` distribution of shape ``(dim,)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from ebmppl.numpyro.flows import neutra_flow
        >>> flow = neutra_flow(jax.random.key(0), 3)
        >>> bool(jnp.allclose(flow.bijection.transform(jnp.ones(3)), 1.0))  # identity at init
        True
    """
    if dim < 1:
        raise ValueError(f"neutra_flow needs dim >= 1, got {dim}")

    def make_layer(layer_key):
        layer = MaskedAutoregressive(
            layer_key, transformer=SoftAffine(), dim=dim, nn_width=nn_width, nn_depth=nn_depth
        )
        # the last layer's weight is masked: zero the array inside its Parameterize wrapper
        last = lambda m: (  # noqa: E731
            m.masked_autoregressive_mlp.layers[-1].weight.args[1],
            m.masked_autoregressive_mlp.layers[-1].bias,
        )
        layer = eqx.tree_at(last, layer, replace_fn=jnp.zeros_like)
        return Chain([layer, Flip((dim,))]).merge_chains()

    layers = eqx.filter_vmap(make_layer)(jax.random.split(key, num_layers))
    return Transformed(StandardNormal((dim,)), Scan(layers))
