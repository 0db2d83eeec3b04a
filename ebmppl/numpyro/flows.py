"""Normalizing flows used as global proposals, built from flowjax pieces.

A proposal is a flow acting on *whitened* coordinates ``u`` composed with an
affine whitening map ``x = loc + matrix @ u`` fitted to the chains (see
:class:`Whitening`). Everything here is a pure function of explicit arrays, so
it can run inside ``jit`` and ``lax.cond``; flows themselves are built eagerly
(building a flowjax flow under ``jit`` leaks tracers).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ebmppl.numpyro.flows import default_flow, identity_whitening, proposal_log_prob
    >>> flow = default_flow(jax.random.key(0), 3)
    >>> proposal_log_prob(flow, identity_whitening(3), jnp.zeros((5, 3))).shape
    (5,)
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import paramax
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
from flowjax.distributions import AbstractDistribution, StandardNormal, Transformed

from ebmppl.options import FitStopping
from ebmppl.pca_order import interleaved_slots
from ebmppl.numpyro.moves.transport import Transport, latent_logdensity

__all__ = [
    "fit_flow_reverse",
    "Whitening",
    "check_flow",
    "default_flow",
    "neutra_flow",
    "fit_diagonal_whitening",
    "fit_flow",
    "fit_whitening",
    "identity_whitening",
    "partition_flow",
    "proposal_log_prob",
    "proposal_sample_and_log_prob",
]

#: when a reverse-KL fit stops (see :class:`~ebmppl.options.FitStopping`)
STOP = FitStopping()


class Whitening(NamedTuple):
    """Affine map ``x = loc + matrix @ u`` between data and whitened coordinates.

    Attributes:
        loc: shape ``(D,)``, the mean of the fitted points.
        matrix: shape ``(D, D)``, maps whitened ``u`` to centred ``x``.
        inverse: shape ``(D, D)``, the inverse of ``matrix``.
        log_det: ``log|det matrix|``, a scalar.
    """

    loc: jax.Array
    matrix: jax.Array
    inverse: jax.Array
    log_det: jax.Array


def identity_whitening(dim: int, dtype=jnp.float32) -> Whitening:
    """The whitening that leaves coordinates unchanged."""
    eye = jnp.eye(dim, dtype=dtype)
    return Whitening(jnp.zeros(dim, dtype), eye, eye, jnp.zeros((), dtype))


def _interleaved_order(dim: int) -> jax.Array:
    """Slots of the principal components: flowjax's couplings split ``[0, dim//2)`` from the rest."""
    return jnp.asarray(interleaved_slots(dim, first_size=dim // 2))


def fit_whitening(points: jax.Array, jitter: float = 1e-6) -> Whitening:
    """PCA whitening of ``points`` (shape ``(n, D)``), components interleaved.

    Args:
        points: the chain states to standardise.
        jitter: added to the covariance's eigenvalues, relative to their mean.

    Returns:
        The :class:`Whitening` whose whitened points have mean 0, covariance I.
    """
    dim = points.shape[-1]
    loc = points.mean(0)
    cov = jnp.atleast_2d(jnp.cov(points, rowvar=False))
    eigvals, eigvecs = jnp.linalg.eigh(cov)
    eigvals = jnp.clip(eigvals, 0.0) + jitter * (jnp.mean(eigvals) + 1e-12)
    order = jnp.argsort(-eigvals)
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    # Column k of `matrix` is the slot of component k.
    slots = _interleaved_order(dim)
    scale = jnp.sqrt(eigvals)
    matrix = jnp.zeros((dim, dim)).at[:, slots].set(eigvecs * scale)
    inverse = jnp.zeros((dim, dim)).at[slots, :].set((eigvecs / scale).T)
    return Whitening(loc, matrix, inverse, jnp.sum(jnp.log(scale)))


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


def neutra_flow(
    key: jax.Array,
    dim: int,
    *,
    num_layers: int = 4,
    nn_width: int = 32,
    nn_depth: int = 1,
) -> Transformed:
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


def fit_diagonal_whitening(points: jax.Array, jitter: float = 1e-6, robust: bool = False) -> Whitening:
    """Standardisation of ``points`` (shape ``(n, D)``): mean 0 and unit variance per coordinate.

    Unlike :func:`fit_whitening` it does not rotate, so the coordinates keep
    the model's order, which an autoregressive flow follows. With ``robust``
    the location is the median and the scale the MAD (times 1.4826, the
    standard deviation for a normal; the standard deviation where the MAD is
    zero), which a minority of far-out points does not move.

    Example:
        >>> import jax.numpy as jnp
        >>> from ebmppl.numpyro.flows import fit_diagonal_whitening
        >>> w = fit_diagonal_whitening(jnp.array([[0.0, 10.0], [2.0, 30.0]]))
        >>> w.loc.tolist(), jnp.diag(w.matrix).round(3).tolist()
        ([1.0, 20.0], [1.0, 10.0])
        >>> far_out = jnp.array([[0.0], [1.0], [2.0], [3.0], [1000.0]])
        >>> w = fit_diagonal_whitening(far_out, robust=True)
        >>> float(w.loc[0]), round(float(w.matrix[0, 0]), 3)
        (2.0, 1.483)
    """
    if robust:
        loc = jnp.median(points, 0)
        mad = 1.4826 * jnp.median(jnp.abs(points - loc), 0)
        var = jnp.where(mad > 0, mad, points.std(0)) ** 2
    else:
        loc = points.mean(0)
        var = points.var(0)
    scale = jnp.sqrt(var + jitter * (jnp.mean(var) + 1e-12))
    return Whitening(loc, jnp.diag(scale), jnp.diag(1.0 / scale), jnp.sum(jnp.log(scale)))


def partition_flow(flow: AbstractDistribution):
    """Split a flow into (trainable arrays, static rest), as flowjax trains it."""
    return eqx.partition(
        flow,
        eqx.is_inexact_array,
        is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable),
    )


def proposal_log_prob(flow: AbstractDistribution, whitening: Whitening, x: jax.Array) -> jax.Array:
    """Log density of the whitened flow at ``x`` (shape ``(..., D)``)."""
    u = (x - whitening.loc) @ whitening.inverse.T
    return flow.log_prob(u) - whitening.log_det


def proposal_sample_and_log_prob(
    flow: AbstractDistribution, whitening: Whitening, key: jax.Array, sample_shape: tuple[int, ...]
) -> tuple[jax.Array, jax.Array]:
    """Draws of the whitened flow, shape ``sample_shape + (D,)``, with their log density."""
    u, log_q = flow.sample_and_log_prob(key, sample_shape)
    return whitening.loc + u @ whitening.matrix.T, log_q - whitening.log_det


def fit_flow(
    key: jax.Array,
    candidates,
    static,
    data: jax.Array,
    *,
    num_steps: int,
    batch_size: int,
    learning_rate: float,
):
    """Fit several flow initialisations by forward KL and keep the best.

    Each candidate (a leading axis on every leaf of ``candidates``) is trained
    with Adam on minibatches of ``data``, minimising ``-mean log q(x)``; the one
    with the lowest loss on all of ``data`` is returned. Non-finite gradients
    skip the update.

    Args:
        key: JAX key for the minibatches.
        candidates: stacked trainable parameters, shape ``(K, ...)`` per leaf.
        static: the static part of the flow (from :func:`partition_flow`).
        data: whitened points, shape ``(n, D)``.
        num_steps: Adam steps per candidate.
        batch_size: minibatch size.
        learning_rate: Adam learning rate.

    Returns:
        ``(params, losses)``: the best candidate's parameters and every
        candidate's final loss on ``data`` (shape ``(K,)``).
    """
    optimizer = optax.chain(
        optax.clip_by_global_norm(10.0),
        optax.apply_if_finite(optax.adam(learning_rate), max_consecutive_errors=1_000_000),
    )

    def loss_fn(params, batch):
        flow = eqx.combine(params, static)
        return -jnp.mean(flow.log_prob(batch))

    def train_one(params, train_key):
        def step(carry, step_key):
            params, opt_state = carry
            idx = jax.random.randint(step_key, (batch_size,), 0, data.shape[0])
            grads = jax.grad(loss_fn)(params, data[idx])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(
            step, (params, optimizer.init(params)), jax.random.split(train_key, num_steps)
        )
        loss = loss_fn(params, data)
        return params, jnp.where(jnp.isfinite(loss), loss, jnp.inf)

    num_candidates = jax.tree.leaves(candidates)[0].shape[0]
    trained, losses = jax.vmap(train_one)(candidates, jax.random.split(key, num_candidates))
    best = jnp.argmin(losses)
    return jax.tree.map(lambda leaf: leaf[best], trained), losses


def check_flow(flow, dim: int, key: jax.Array | None = None, atol: float = 1e-3) -> None:
    """Refuse a flow that cannot serve as an independent proposal.

    A proposal needs ``sample_and_log_prob`` and an exact, finite inverse:
    the round trip ``forward(inverse(x))`` must give ``x`` back.

    Raises:
        TypeError: not a flowjax distribution.
        ValueError: wrong shape, conditional, no exact inverse, or a round trip
            that does not return its input.
    """
    if not isinstance(flow, AbstractDistribution):
        raise TypeError(f"flow must be a flowjax distribution, got {type(flow).__name__}")
    if flow.shape != (dim,) or flow.cond_shape is not None:
        raise ValueError(
            f"flow must be unconditional with shape ({dim},) to match the latent space, "
            f"got shape {flow.shape} and cond_shape {flow.cond_shape}"
        )
    numerical = _numerically_inverted_parts(flow)
    if numerical:
        raise ValueError(
            f"flow contains {', '.join(numerical)}, which has no exact inverse (it is inverted "
            "numerically, and block autoregressive flows have bounded tails): it cannot serve "
            "as an independent proposal. Use an exactly invertible flow (e.g. default_flow)."
        )
    key = jax.random.key(0) if key is None else key
    flow = paramax.unwrap(flow)
    bijection = getattr(flow, "bijection", None)
    if bijection is None:
        raise ValueError("flow must be a transformed distribution (base + bijection) to be inverted")
    try:
        x, x_back = _round_trip(flow, key)  # compiled once: op-by-op it costs seconds per flow
    except NotImplementedError as err:
        raise ValueError(
            f"flow {type(bijection).__name__} has no exact inverse: it cannot evaluate its own "
            "proposals' density. Use an exactly invertible flow (e.g. default_flow)."
        ) from err
    error = float(jnp.max(jnp.abs(x_back - x)))
    if not error <= atol * (1.0 + float(jnp.max(jnp.abs(x)))):
        raise ValueError(
            f"flow is not exactly invertible: forward(inverse(x)) differs from x by {error:.3g}"
        )


@eqx.filter_jit
def _round_trip(flow, key):
    """16 draws ``x`` of ``flow`` and ``forward(inverse(x))``."""
    x, _ = flow.sample_and_log_prob(key, (16,))
    z = jax.vmap(flow.bijection.inverse)(x)
    return x, jax.vmap(flow.bijection.transform)(z)


def _numerically_inverted_parts(flow) -> list[str]:
    from flowjax.bijections import BlockAutoregressiveNetwork
    from flowjax.bijections.utils import NumericalInverse

    kinds = (NumericalInverse, BlockAutoregressiveNetwork)
    found = jax.tree.leaves(flow, is_leaf=lambda node: isinstance(node, kinds))
    return sorted({type(node).__name__ for node in found if isinstance(node, kinds)})


def fit_flow_reverse(
    key: jax.Array,
    candidates,
    static,
    whitening: Whitening,
    logdensity: Callable,
    *,
    num_steps: int,
    batch_size: int,
    learning_rate: float,
):
    """Fit several transports by reverse KL to the target and keep the best.

    Minimises ``E_{z ~ N(0, I)}[log ρ(z) - log π(T(z)) - log|det J_T(z)|]``
    (the KL from the transport's push-forward to the target, minus ``log Z``) with Adam on
    fresh standard-normal batches; draws where the target is not finite are
    left out of the mean, and non-finite gradients skip the update. A fit
    stops when its loss stops improving (see :class:`~ebmppl.options.FitStopping`):
    ``num_steps`` is a cap. The candidates are trained one after the other and
    the one with the lowest loss on a common batch of ``4 * batch_size``
    draws is returned.

    Returns:
        ``(params, losses)`` as :func:`~ebmppl.numpyro.flows.fit_flow`.
    """
    dim = whitening.loc.shape[0]

    def loss_fn(params, z):
        return _reverse_kl(logdensity, Transport(params, whitening), static, z)

    def train_one(args):
        params, train_key = args
        return _minimise(train_key, loss_fn, params, dim, num_steps=num_steps, batch_size=batch_size,
                         learning_rate=learning_rate)

    eval_key, train_key = jax.random.split(key)
    num_candidates = jax.tree.leaves(candidates)[0].shape[0]
    trained = jax.lax.map(train_one, (candidates, jax.random.split(train_key, num_candidates)))
    z_eval = jax.random.normal(eval_key, (4 * batch_size, dim))
    losses = jax.vmap(loss_fn, in_axes=(0, None))(trained, z_eval)
    losses = jnp.where(jnp.isfinite(losses), losses, jnp.inf)
    best = jnp.argmin(losses)
    return jax.tree.map(lambda leaf: leaf[best], trained), losses


def _reverse_kl(logdensity: Callable, transport: Transport, flow_static, z: jax.Array) -> jax.Array:
    """``mean_z [log ρ(z) - log π(T(z)) - log|det J_T(z)|]`` over the draws where the target is finite."""
    fn = jax.vmap(latent_logdensity(logdensity, transport, flow_static))
    # draws where the target is not finite are left out (else one NaN point would skip the step):
    # they are found first and replaced by z = 0, so that no NaN reaches the gradient
    finite = jax.lax.stop_gradient(jnp.isfinite(fn(z)[0]))
    safe = jnp.where(finite[:, None], z, 0.0)
    # log ρ(z) - latent log density: its mean is KL - log Z, and ρ's share cancels the noise of |z|²
    gap = -0.5 * jnp.sum(safe**2, -1) - fn(safe)[0]
    mean = jnp.sum(jnp.where(finite, gap, 0.0)) / jnp.maximum(jnp.sum(finite), 1)
    return jnp.where(jnp.any(finite), mean, jnp.nan) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def _minimise(key, loss_fn: Callable, params, dim: int, *, num_steps: int, batch_size: int,
              learning_rate: float):
    """Adam on ``loss_fn(params, z)``, ``z`` fresh standard-normal batches, until the loss stops improving.

    Non-finite gradients skip the update. The loss is averaged over chunks of
    :class:`~ebmppl.options.FitStopping` steps; after ``STOP.patience`` chunks
    without improvement the rate drops to ``STOP.decay`` of itself, after as
    many more the training stops; ``num_steps`` caps it.
    """
    optimizer = optax.chain(
        optax.clip_by_global_norm(10.0),
        optax.apply_if_finite(optax.adam(learning_rate), max_consecutive_errors=1_000_000),
    )
    chunk = min(STOP.chunk, num_steps)
    num_chunks = max(1, num_steps // chunk)

    def train_chunk(params, opt_state, scale, chunk_key):
        def one_step(carry, step_key):
            params, opt_state = carry
            z = jax.random.normal(step_key, (batch_size, dim))
            loss, grads = jax.value_and_grad(loss_fn)(params, z)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            updates = jax.tree.map(lambda u: scale * u, updates)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(
            one_step, (params, opt_state), jax.random.split(chunk_key, chunk)
        )
        return params, opt_state, losses

    def keep_going(carry):
        _, _, stage, _, _, n, _ = carry
        return (stage < 2) & (n < num_chunks)

    def body(carry):
        params, opt_state, stage, stalled, best, n, key = carry
        key, chunk_key = jax.random.split(key)
        scale = jnp.where(stage == 0, 1.0, STOP.decay)
        params, opt_state, losses = train_chunk(params, opt_state, scale, chunk_key)
        mean, stderr = _mean_and_stderr(losses)
        improved = mean < best - jnp.maximum(stderr, STOP.tolerance)
        stalled = jnp.where(improved, 0, stalled + 1)
        stage = jnp.where(stalled >= STOP.patience, stage + 1, stage)
        stalled = jnp.where(stalled >= STOP.patience, 0, stalled)
        best = jnp.where(improved, mean, best)
        return params, opt_state, stage, stalled, best, n + 1, key

    zero = jnp.asarray(0)
    init = (params, optimizer.init(params), zero, zero, jnp.asarray(jnp.inf), zero, key)
    return jax.lax.while_loop(keep_going, body, init)[0]


def _mean_and_stderr(losses: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The mean of a chunk's finite minibatch losses and its standard error (``inf`` if none is finite)."""
    finite = jnp.isfinite(losses)
    count = jnp.sum(finite)
    mean = jnp.sum(jnp.where(finite, losses, 0.0)) / jnp.maximum(count, 1)
    var = jnp.sum(jnp.where(finite, (losses - mean) ** 2, 0.0)) / jnp.maximum(count - 1, 1)
    stderr = jnp.sqrt(var / jnp.maximum(count, 1))
    return jnp.where(count > 0, mean, jnp.inf), jnp.where(count > 1, stderr, jnp.inf)
