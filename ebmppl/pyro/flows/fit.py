"""Fitting flows: to chain states by forward KL (FlowMCMC, the trainer), to the target by reverse KL (NeuTraHMC).

Both fits train several candidates in place and keep the one of lowest final
loss, with one optimizer recipe: Adam after clipping the gradients to global
norm 10, a step whose loss or gradient is not finite skipped. The reverse fit
also lowers its rate, then stops, on a plateau (see
:class:`~ebmppl.options.FitStopping`). It mirrors :mod:`ebmppl.numpyro.flows.fit`.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn

from ebmppl.options import FitStopping
from ebmppl.pyro.flows.whitening import Whitening
# a module import: moves.transport imports flows.protocol, so its names are looked up when a fit runs
from ebmppl.pyro.moves import transport

__all__ = ["fit_flow", "fit_flow_reverse", "fresh_copy", "restart_candidates"]

_STOP = FitStopping()  # when a reverse-KL fit stops
_MAX_GRAD_NORM = 10.0  # gradients are clipped to this global norm before Adam


def _adam(flow: nn.Module, learning_rate: float) -> tuple[list[nn.Parameter], torch.optim.Adam]:
    """The optimizer of both fits: Adam on the flow's trainable parameters (stepped by :func:`_descend`)."""
    parameters = [p for p in flow.parameters() if p.requires_grad]
    return parameters, torch.optim.Adam(parameters, lr=learning_rate)


def _descend(optimizer: torch.optim.Optimizer, parameters: list, loss_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """One step on ``loss_fn()``, gradients clipped, skipped if the loss or gradient is not finite; the loss."""
    with torch.enable_grad():
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(parameters, _MAX_GRAD_NORM)
    if torch.isfinite(loss) and torch.isfinite(norm):
        optimizer.step()
    return loss.detach()


def _best(candidates: list[nn.Module], losses: list[torch.Tensor]) -> tuple[nn.Module, torch.Tensor]:
    """The candidate of lowest final loss, and every candidate's loss (``inf`` where not finite); all frozen."""
    losses = torch.stack([loss if torch.isfinite(loss) else torch.full_like(loss, math.inf) for loss in losses])
    for flow in candidates:
        flow.requires_grad_(False)
    return candidates[int(torch.argmin(losses))], losses


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

    Example:
        >>> import torch
        >>> from ebmppl.pyro.flows import default_flow
        >>> data = torch.randn(64, 2)
        >>> flow, losses = fit_flow([default_flow(2)], data, num_steps=5, batch_size=16, learning_rate=1e-3)
        >>> losses.shape
        torch.Size([1])
    """
    data = data.detach()
    losses = []
    for flow in candidates:
        parameters, optimizer = _adam(flow, learning_rate)
        for _ in range(num_steps):
            _descend(optimizer, parameters, lambda: _forward_kl(flow, data, batch_size))
        with torch.no_grad():
            losses.append(-flow().log_prob(data).mean())
    return _best(candidates, losses)


def _forward_kl(flow: nn.Module, data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``-mean log q(x)`` over a minibatch of ``data`` drawn with replacement."""
    batch = data[torch.randint(0, data.shape[0], (batch_size,), device=data.device)]
    return -flow().log_prob(batch).mean()


def fresh_copy(flow: nn.Module) -> nn.Module:
    """A trainable deep copy of ``flow`` (its parameters require gradients).

    Example:
        >>> from ebmppl.pyro.flows import default_flow
        >>> frozen = default_flow(2).requires_grad_(False)
        >>> all(p.requires_grad for p in fresh_copy(frozen).parameters())
        True
    """
    return copy.deepcopy(flow).requires_grad_(True)


def restart_candidates(flow: nn.Module, flow_factory: Callable[[int], nn.Module] | None, restarts: int,
                       like: torch.Tensor) -> list[nn.Module]:
    """The candidates of a scheduled refit: a trainable copy of ``flow`` first, then ``restarts`` fresh flows.

    Args:
        flow: the current flow (left as it is).
        flow_factory: ``dim -> flow`` for the fresh restarts, or ``None`` (no restarts).
        restarts: how many fresh flows.
        like: points of the fit, ``(..., D)``: the fresh flows take their dimension, device and dtype.

    Example:
        >>> import torch
        >>> from ebmppl.pyro.flows import default_flow
        >>> len(restart_candidates(default_flow(2), default_flow, 3, torch.zeros(5, 2)))
        4
    """
    candidates = [fresh_copy(flow)]
    if flow_factory is not None:
        candidates += [flow_factory(like.shape[-1]).to(like.device, like.dtype) for _ in range(restarts)]
    return candidates


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
        ``(flow, losses)`` as :func:`fit_flow`.

    Example:
        >>> from ebmppl.pyro.flows import identity_whitening, neutra_flow
        >>> logdensity = lambda x: -0.5 * ((x - 1.0) ** 2).sum(-1)
        >>> flow, losses = fit_flow_reverse([neutra_flow(2)], identity_whitening(2), logdensity, num_steps=10,
        ...                                 batch_size=8, learning_rate=1e-2)
        >>> losses.shape
        torch.Size([1])
    """
    reference = whitening.loc
    z_eval = torch.randn(4 * batch_size, reference.shape[0], dtype=reference.dtype, device=reference.device)
    losses = []
    for flow in candidates:
        _minimise(flow, lambda z: _reverse_kl(logdensity, flow, whitening, z), reference,
                  num_steps=num_steps, batch_size=batch_size, learning_rate=learning_rate)
        with torch.no_grad():
            losses.append(_reverse_kl(logdensity, flow, whitening, z_eval))
    return _best(candidates, losses)


def _reverse_kl(logdensity: Callable, flow: nn.Module, whitening: Whitening, z: torch.Tensor) -> torch.Tensor:
    """``mean_z [log ρ(z) - log π(T(z)) - log|det J_T(z)|]`` over the draws where the target is finite."""
    fn = transport.latent_logdensity(logdensity, transport.Transport(flow, whitening))
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


def _minimise(flow: nn.Module, loss_fn: Callable, reference: torch.Tensor, *, num_steps: int, batch_size: int,
              learning_rate: float) -> None:
    """Adam on ``loss_fn(z)``, ``z`` fresh standard-normal batches, until the loss stops improving.

    Steps with a non-finite loss or gradient are skipped. The loss is averaged
    over chunks of :class:`~ebmppl.options.FitStopping` steps; after
    ``patience`` chunks without improvement the rate drops to ``decay`` of
    itself, after as many more the training stops; ``num_steps`` caps it.
    """
    dim = reference.shape[-1]
    chunk = min(_STOP.chunk, num_steps)
    parameters, optimizer = _adam(flow, learning_rate)
    stage, stalled, best = 0, 0, math.inf
    for _ in range(max(1, num_steps // chunk)):
        chunk_losses = []
        for _ in range(chunk):
            z = torch.randn(batch_size, dim, dtype=reference.dtype, device=reference.device)
            chunk_losses.append(_descend(optimizer, parameters, lambda: loss_fn(z)))
        mean, stderr = _mean_and_stderr(torch.stack(chunk_losses))
        improved = mean < best - max(stderr, _STOP.tolerance)
        stalled = 0 if improved else stalled + 1
        best = mean if improved else best
        if stalled >= _STOP.patience:  # a plateau: first a lower rate, then stop
            stage, stalled = stage + 1, 0
            if stage == 2:
                return
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * _STOP.decay


def _mean_and_stderr(losses: torch.Tensor) -> tuple[float, float]:
    """The mean of a chunk's finite minibatch losses and its standard error (``inf`` if none is finite)."""
    finite = losses[torch.isfinite(losses)]
    if finite.numel() == 0:
        return math.inf, math.inf
    if finite.numel() == 1:
        return float(finite[0]), math.inf
    return float(finite.mean()), float(finite.std() / math.sqrt(finite.numel()))
