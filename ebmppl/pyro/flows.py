"""Normalizing flows used as global proposals (our spline coupling flow, zuko flows, Pyro transforms).

A proposal is a flow acting on *whitened* coordinates ``u`` composed with an
affine whitening map ``x = loc + matrix @ u`` fitted to the chains (see
:class:`Whitening`). A flow is a module whose call returns a torch
distribution with ``sample``/``rsample`` and ``log_prob`` (a zuko flow); a
Pyro ``TransformedDistribution`` of ``TransformModule`` s is wrapped into one
by :func:`as_flow_module`.

Example:
    >>> import torch
    >>> from ebmppl.pyro.flows import default_flow, identity_whitening, proposal_log_prob
    >>> flow = default_flow(3)
    >>> proposal_log_prob(flow, identity_whitening(3), torch.zeros(5, 3)).shape
    torch.Size([5])
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution, Transform, TransformedDistribution

from ebmppl.options import FitStopping
from ebmppl.pca_order import interleaved_slots

__all__ = [
    "fit_flow_reverse",
    "Whitening",
    "as_flow_module",
    "check_flow",
    "base_log_prob",
    "base_maps",
    "default_flow",
    "fit_diagonal_whitening",
    "fit_flow",
    "fit_whitening",
    "identity_whitening",
    "neutra_flow",
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
        log_det: ``log|det matrix|``, a scalar tensor.
    """

    loc: torch.Tensor
    matrix: torch.Tensor
    inverse: torch.Tensor
    log_det: torch.Tensor


def identity_whitening(dim: int, dtype: torch.dtype = torch.float32, device=None) -> Whitening:
    """The whitening that leaves coordinates unchanged."""
    eye = torch.eye(dim, dtype=dtype, device=device)
    zeros = torch.zeros(dim, dtype=dtype, device=device)
    return Whitening(zeros, eye, eye, torch.zeros((), dtype=dtype, device=device))


def _interleaved_order(dim: int) -> torch.Tensor:
    """Slots of the principal components: the coupling layers split ``[0, ceil(D/2))`` from the rest."""
    return torch.tensor(interleaved_slots(dim, first_size=math.ceil(dim / 2)))


def fit_whitening(points: torch.Tensor, jitter: float = 1e-6) -> Whitening:
    """PCA whitening of ``points`` (shape ``(n, D)``), components interleaved.

    Args:
        points: the chain states to standardise.
        jitter: added to the covariance's eigenvalues, relative to their mean.

    Returns:
        The :class:`Whitening` whose whitened points have mean 0, covariance I.
    """
    points = points.detach()
    dim = points.shape[-1]
    loc = points.mean(0)
    centred = points - loc
    cov = (centred.T @ centred / max(points.shape[0] - 1, 1)).double()
    eigvals, eigvecs = torch.linalg.eigh(cov)
    eigvals = eigvals.clamp(min=0.0) + jitter * (eigvals.mean() + 1e-12)
    order = torch.argsort(-eigvals)
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    slots = _interleaved_order(dim).to(cov.device)
    scale = eigvals.sqrt()
    matrix = torch.zeros(dim, dim, dtype=cov.dtype, device=cov.device)
    matrix[:, slots] = eigvecs * scale
    inverse = torch.zeros(dim, dim, dtype=cov.dtype, device=cov.device)
    inverse[slots, :] = (eigvecs / scale).T
    dtype = points.dtype
    return Whitening(loc, matrix.to(dtype), inverse.to(dtype), scale.log().sum().to(dtype))


def default_flow(
    dim: int,
    *,
    num_layers: int = 4,
    nn_width: int = 32,
    nn_depth: int = 1,
    knots: int = 8,
    interval: float = 5.0,
) -> nn.Module:
    """A rational-quadratic spline coupling flow with a standard normal base.

    A :class:`~ebmppl.pyro.coupling.SplineCouplingFlow`: in each layer the
    first ``ceil(D/2)`` coordinates condition monotonic splines of the rest,
    and the groups swap between layers. Both directions take one network
    evaluation per layer, with the log-determinant from the same pass, and
    are exact, so the flow serves as an independent proposal. The splines are
    the identity outside ``[-interval, interval]``, so the tails stay Gaussian
    and unbounded; a fresh flow is the identity map. The hidden weights come
    from torch's global generator (seed it with ``pyro.set_rng_seed``).

    Args:
        dim: dimension of the flow (at least 1).
        num_layers: number of coupling layers (the groups swap between layers).
        nn_width: width of each conditioner's hidden layers.
        nn_depth: number of hidden layers of each conditioner.
        knots: number of spline bins.
        interval: half-width of the splines' domain (whitened units).

    Returns:
        A module: ``flow()`` is a distribution of event shape ``(dim,)``.
    """
    if dim < 1:
        raise ValueError(f"default_flow needs dim >= 1, got {dim}")
    from ebmppl.pyro.coupling import SplineCouplingFlow

    return SplineCouplingFlow(dim, num_layers=num_layers, nn_width=nn_width, nn_depth=nn_depth, knots=knots,
                              bound=interval)


def neutra_flow(dim: int, *, num_layers: int = 4, nn_width: int = 32, nn_depth: int = 1) -> nn.Module:
    """An inverse autoregressive affine flow with a standard normal base: NeuTraHMC's default transport.

    An :class:`~ebmppl.pyro.autoregressive.AffineAutoregressiveFlow`: layer
    ``k`` maps ``z`` to ``x_i = z_i exp(s_i(z_<i)) + t_i(z_<i)`` with a masked
    ReLU network, the order reversing between layers. Funnel-like scales
    ``exp(v / 2)`` and banana-like shifts are in its family; the
    latent-to-data direction is one network pass per layer. A fresh flow is
    the identity map. The hidden weights come from torch's global generator.

    Args:
        dim: dimension of the flow (at least 1).
        num_layers: number of autoregressive layers.
        nn_width: width of each network's hidden layers.
        nn_depth: number of hidden layers of each network.

    Returns:
        A module: ``flow()`` is a distribution of event shape ``(dim,)``.

    Example:
        >>> import torch
        >>> from ebmppl.pyro.flows import neutra_flow
        >>> flow = neutra_flow(3)
        >>> torch.allclose(flow.from_base(torch.ones(3))[0], torch.ones(3))  # identity at init
        True
    """
    from ebmppl.pyro.autoregressive import AffineAutoregressiveFlow

    return AffineAutoregressiveFlow(dim, num_layers=num_layers, nn_width=nn_width, nn_depth=nn_depth)


def fit_diagonal_whitening(points: torch.Tensor, jitter: float = 1e-6, robust: bool = False) -> Whitening:
    """Standardisation of ``points`` (shape ``(n, D)``): mean 0 and unit variance per coordinate.

    Unlike :func:`fit_whitening` it does not rotate, so the coordinates keep
    the model's order, which an autoregressive flow follows. With ``robust``
    the location is the median and the scale the MAD (times 1.4826, the
    standard deviation for a normal; the standard deviation where the MAD is
    zero), which a minority of far-out points does not move.

    Example:
        >>> import torch
        >>> w = fit_diagonal_whitening(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
        >>> w.loc.tolist(), torch.diag(w.matrix).round(decimals=3).tolist()
        ([1.0, 20.0], [1.0, 10.0])
        >>> w = fit_diagonal_whitening(torch.tensor([[0.0], [1.0], [2.0], [3.0], [1000.0]]), robust=True)
        >>> float(w.loc[0]), round(float(w.matrix[0, 0]), 3)
        (2.0, 1.483)
    """
    points = points.detach()
    if robust:
        loc = points.median(0).values
        mad = 1.4826 * (points - loc).abs().median(0).values
        var = torch.where(mad > 0, mad, points.std(0, unbiased=False)) ** 2
    else:
        loc = points.mean(0)
        var = points.var(0, unbiased=False)
    scale = (var + jitter * (var.mean() + 1e-12)).sqrt()
    return Whitening(loc, torch.diag(scale), torch.diag(1.0 / scale), scale.log().sum())


def base_maps(flow: nn.Module):
    """The two maps of a flow between its base (latent) space and data.

    Returns:
        ``(forward, inverse)``: ``forward(z) = (x, log|det dx/dz|)``,
        differentiable in ``z`` and the flow's parameters, and
        ``inverse(x) = z``. For ebmppl's flows, zuko flows and Pyro
        ``TransformedDistribution`` s.

    Example:
        >>> import torch
        >>> forward, inverse = base_maps(neutra_flow(2))
        >>> x, log_det = forward(torch.ones(3, 2))  # a fresh flow is the identity
        >>> bool((x == 1).all() and (log_det == 0).all() and (inverse(x) == 1).all())
        True
    """
    if hasattr(flow, "from_base") and hasattr(flow, "to_base"):
        def forward(z):
            x, log_det = flow.from_base(z)
            return x, -log_det

        return forward, lambda x: flow.to_base(x)[0]
    distribution = flow()
    if isinstance(distribution, TransformedDistribution):  # transforms map base to data
        def forward(z):
            transform = torch.distributions.ComposeTransform(flow().transforms)
            x = transform(z)
            return x, transform.log_abs_det_jacobian(z, x)

        def inverse(x):
            return torch.distributions.ComposeTransform(flow().transforms).inv(x)

        return forward, inverse
    if hasattr(distribution, "transform"):  # zuko: transform maps data to base
        def forward(z):
            return flow().transform.inv.call_and_ladj(z)

        return forward, lambda x: flow().transform(x)
    raise ValueError(f"flow returned a {type(distribution).__name__}, not a transformed distribution")


def base_log_prob(flow: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The log density ``log ρ(z)`` of the flow's base (latent) distribution.

    Example:
        >>> import torch
        >>> base_log_prob(neutra_flow(2), torch.zeros(1, 2))  # log N(0; 0, I) in 2-D
        tensor([-1.8379])
    """
    distribution = flow()
    if hasattr(distribution, "_base_log_prob"):  # ebmppl's flows: a standard normal
        return distribution._base_log_prob(z)
    base = getattr(distribution, "base_dist", None) or getattr(distribution, "base", None)
    if base is None:
        raise ValueError(f"flow returned a {type(distribution).__name__}, which has no base distribution")
    return base.log_prob(z)


class _TransformedFlow(nn.Module):
    """A Pyro/torch ``TransformedDistribution`` as a module returning it.

    Trainable parameters are those of its ``TransformModule`` s; the caches of
    its transforms are cleared on every call, since a cached inverse is stale
    once an optimizer step has changed the parameters.
    """

    def __init__(self, distribution: TransformedDistribution):
        super().__init__()
        self.distribution = distribution
        self.transforms = nn.ModuleList([t for t in distribution.transforms if isinstance(t, nn.Module)])

    def forward(self) -> Distribution:
        for transform in self.distribution.transforms:
            _clear_cache(transform)
        return self.distribution


def _clear_cache(transform: Transform) -> None:
    if hasattr(transform, "_cached_x_y"):
        transform._cached_x_y = None, None
    for part in getattr(transform, "parts", ()):
        _clear_cache(part)


def as_flow_module(flow) -> nn.Module:
    """The module form of a flow: a zuko flow as is, a ``TransformedDistribution`` wrapped."""
    if isinstance(flow, TransformedDistribution):
        return _TransformedFlow(flow)
    if isinstance(flow, nn.Module):
        return flow
    raise TypeError(
        "flow must be a zuko flow (a module whose call returns a distribution) or a "
        f"torch/Pyro TransformedDistribution, got {type(flow).__name__}"
    )


def _whiten(whitening: Whitening, x: torch.Tensor) -> torch.Tensor:
    return (x - whitening.loc) @ whitening.inverse.T


def proposal_log_prob(flow: nn.Module, whitening: Whitening, x: torch.Tensor) -> torch.Tensor:
    """Log density of the whitened flow at ``x`` (shape ``(..., D)``)."""
    return flow().log_prob(_whiten(whitening, x)) - whitening.log_det


def proposal_sample_and_log_prob(
    flow: nn.Module, whitening: Whitening, sample_shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws of the whitened flow, shape ``sample_shape + (D,)``, with their log density."""
    distribution = flow()
    if hasattr(distribution, "rsample_and_log_prob"):
        u, log_q = distribution.rsample_and_log_prob(torch.Size(sample_shape))
    else:
        u = distribution.sample(torch.Size(sample_shape))
        log_q = distribution.log_prob(u)
    return whitening.loc + u @ whitening.matrix.T, log_q - whitening.log_det


def fit_flow(
    candidates: list[nn.Module],
    data: torch.Tensor,
    *,
    num_steps: int,
    batch_size: int,
    learning_rate: float,
) -> tuple[nn.Module, torch.Tensor]:
    """Fit several flow initialisations by forward KL and keep the best.

    Each candidate is trained in place with Adam on minibatches of ``data``,
    minimising ``-mean log q(x)``; the one with the lowest loss on all of
    ``data`` is returned. Steps with a non-finite loss or gradient are skipped.

    Args:
        candidates: flows (modules) to train.
        data: whitened points, shape ``(n, D)``.
        num_steps: Adam steps per candidate.
        batch_size: minibatch size.
        learning_rate: Adam learning rate.

    Returns:
        ``(flow, losses)``: the best candidate and every candidate's final
        loss on ``data`` (shape ``(K,)``).
    """
    data = data.detach()
    losses = []
    for flow in candidates:
        parameters = [p for p in flow.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=learning_rate)
        for _ in range(num_steps):
            batch = data[torch.randint(0, data.shape[0], (batch_size,), device=data.device)]
            loss = -flow().log_prob(batch).mean()
            optimizer.zero_grad()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(parameters, 10.0)
            if torch.isfinite(loss) and torch.isfinite(norm):
                optimizer.step()
        with torch.no_grad():
            loss = -flow().log_prob(data).mean()
        losses.append(loss if torch.isfinite(loss) else torch.full_like(loss, math.inf))
    losses = torch.stack(losses)
    for flow in candidates:
        flow.requires_grad_(False)
    return candidates[int(torch.argmin(losses))], losses


def fresh_copy(flow: nn.Module) -> nn.Module:
    """A trainable deep copy of ``flow`` (its parameters require gradients)."""
    return copy.deepcopy(flow).requires_grad_(True)


def check_flow(flow: nn.Module, dim: int, atol: float = 1e-3) -> None:
    """Refuse a flow that cannot serve as an independent proposal.

    A proposal needs ``sample`` and ``log_prob`` and an exact, finite inverse:
    the round trip ``forward(inverse(x))`` must give ``x`` back, and no part
    may be inverted numerically (zuko's neural/polynomial monotonic
    transforms, continuous flows) or not at all (Pyro's block and neural
    autoregressive transforms).

    Raises:
        TypeError: not a flow module.
        ValueError: wrong event shape, conditional, no exact inverse, or a
            round trip that does not return its input.
    """
    if not isinstance(flow, nn.Module):
        raise TypeError(f"flow must be a module (e.g. a zuko flow), got {type(flow).__name__}")
    numerical = _numerically_inverted_parts(flow)
    if numerical:
        raise ValueError(
            f"flow contains {', '.join(numerical)}, which has no exact inverse (it is inverted "
            "numerically or not at all): it cannot serve as an independent proposal. Use an "
            "exactly invertible flow (e.g. default_flow)."
        )
    try:
        distribution = flow()
    except TypeError as err:
        raise ValueError(f"flow must be unconditional: calling it with no context failed ({err})") from err
    if tuple(distribution.event_shape) != (dim,) or tuple(distribution.batch_shape) != ():
        raise ValueError(
            f"flow must have event_shape ({dim},) to match the latent space, got "
            f"batch_shape {tuple(distribution.batch_shape)} and event_shape "
            f"{tuple(distribution.event_shape)}"
        )
    with torch.no_grad():
        try:
            x = distribution.sample((16,))
            error = _round_trip_error(distribution, x.clone())
        except (NotImplementedError, KeyError) as err:
            raise ValueError(
                f"flow {type(flow).__name__} has no exact inverse: it cannot evaluate its own "
                "proposals' density. Use an exactly invertible flow (e.g. default_flow)."
            ) from err
    if not error <= atol * (1.0 + float(x.abs().max())):
        raise ValueError(f"flow is not exactly invertible: forward(inverse(x)) differs from x by {error:.3g}")


def _round_trip_error(distribution: Distribution, x: torch.Tensor) -> float:
    if isinstance(distribution, TransformedDistribution):
        transform = torch.distributions.ComposeTransform(distribution.transforms)
        x_back = transform(transform.inv(x).clone())
    elif hasattr(distribution, "transform"):  # zuko: transform maps data to the base
        x_back = distribution.transform.inv(distribution.transform(x).clone())
    else:
        raise ValueError(
            f"flow returned a {type(distribution).__name__}, not a transformed distribution: "
            "its inverse cannot be checked"
        )
    return float((x_back - x).abs().max())


def _numerically_inverted_parts(flow: nn.Module) -> list[str]:
    from pyro.distributions.transforms import BlockAutoregressive, NeuralAutoregressive
    from zuko.flows.continuous import FFJTransform
    from zuko.flows.neural import MNN, UMNN
    from zuko.transforms import MonotonicTransform

    found = set()
    for module in flow.modules():
        if isinstance(module, (BlockAutoregressive, NeuralAutoregressive, FFJTransform, MNN, UMNN)):
            found.add(type(module).__name__)
        univariate = getattr(module, "univariate", None)
        if isinstance(univariate, functools.partial):
            univariate = univariate.func
        if isinstance(univariate, type) and issubclass(univariate, MonotonicTransform):
            found.add(univariate.__name__)
    return sorted(found)


def fit_flow_reverse(
    candidates: list[nn.Module],
    whitening: Whitening,
    logdensity: Callable,
    *,
    num_steps: int,
    batch_size: int,
    learning_rate: float,
) -> tuple[nn.Module, torch.Tensor]:
    """Fit several transports by reverse KL to the target and keep the best.

    Each candidate is trained in place to minimise
    ``E_{z ~ N(0, I)}[log ρ(z) - log π(T(z)) - log|det J_T(z)|]`` (the KL from
    the transport's push-forward to the target, minus ``log Z``) with Adam on
    fresh standard-normal batches; draws where the target is not finite are
    left out of the mean, and steps with a non-finite loss or gradient are
    skipped. A fit stops when its loss stops improving (see
    :class:`~ebmppl.options.FitStopping`): ``num_steps`` is a cap. The
    candidate with the lowest loss on a common batch of ``4 * batch_size``
    draws is returned.

    Returns:
        ``(flow, losses)`` as :func:`~ebmppl.pyro.flows.fit_flow`.
    """
    reference = whitening.loc
    z_eval = torch.randn(4 * batch_size, reference.shape[0], dtype=reference.dtype, device=reference.device)
    losses = []
    for flow in candidates:
        parameters = [p for p in flow.parameters() if p.requires_grad]
        _minimise(parameters, lambda z: _reverse_kl(logdensity, flow, whitening, z), reference,
                  num_steps=num_steps, batch_size=batch_size, learning_rate=learning_rate)
        with torch.no_grad():
            loss = _reverse_kl(logdensity, flow, whitening, z_eval)
        losses.append(loss if torch.isfinite(loss) else torch.full_like(loss, math.inf))
    losses = torch.stack(losses)
    for flow in candidates:
        flow.requires_grad_(False)
    return candidates[int(torch.argmin(losses))], losses


def _reverse_kl(logdensity: Callable, flow: nn.Module, whitening: Whitening, z: torch.Tensor) -> torch.Tensor:
    """``mean_z [log ρ(z) - log π(T(z)) - log|det J_T(z)|]`` over the draws where the target is finite."""
    from ebmppl.pyro.moves.transport import Transport, latent_logdensity  # it imports this module

    fn = latent_logdensity(logdensity, Transport(flow, whitening))
    value, _, _ = fn(z)
    finite = torch.isfinite(value)
    if not finite.all():
        # draws where the target is not finite are left out (else one NaN point would skip the
        # step), and the rest evaluated again, so that no NaN reaches the gradient
        if not finite.any():
            return value.sum()
        z = z[finite]
        value, _, _ = fn(z)
    return (-0.5 * (z**2).sum(-1) - value).mean() - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def _minimise(parameters: list, loss_fn: Callable, reference: torch.Tensor, *, num_steps: int, batch_size: int,
              learning_rate: float) -> None:
    """Adam on ``loss_fn(z)``, ``z`` fresh standard-normal batches, until the loss stops improving.

    Steps with a non-finite loss or gradient are skipped. The loss is averaged
    over chunks of :class:`~ebmppl.options.FitStopping` steps; after
    ``STOP.patience`` chunks without improvement the rate drops to ``STOP.decay``
    of itself, after as many more the training stops; ``num_steps`` caps it.
    """
    dim = reference.shape[-1]
    chunk = min(STOP.chunk, num_steps)
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    stage, stalled, best = 0, 0, math.inf
    for _ in range(max(1, num_steps // chunk)):
        chunk_losses = []
        for _ in range(chunk):
            z = torch.randn(batch_size, dim, dtype=reference.dtype, device=reference.device)
            with torch.enable_grad():
                loss = loss_fn(z)
                optimizer.zero_grad()
                loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(parameters, 10.0)
            if torch.isfinite(loss) and torch.isfinite(norm):
                optimizer.step()
            chunk_losses.append(loss.detach())
        mean, stderr = _mean_and_stderr(torch.stack(chunk_losses))
        improved = mean < best - max(stderr, STOP.tolerance)
        stalled = 0 if improved else stalled + 1
        best = mean if improved else best
        if stalled >= STOP.patience:  # a plateau: first a lower rate, then stop
            stage, stalled = stage + 1, 0
            if stage == 2:
                return
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * STOP.decay


def _mean_and_stderr(losses: torch.Tensor) -> tuple[float, float]:
    """The mean of a chunk's finite minibatch losses and its standard error (``inf`` if none is finite)."""
    finite = losses[torch.isfinite(losses)]
    if finite.numel() == 0:
        return math.inf, math.inf
    if finite.numel() == 1:
        return float(finite[0]), math.inf
    return float(finite.mean()), float(finite.std() / math.sqrt(finite.numel()))
