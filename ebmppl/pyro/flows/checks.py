"""Refusing flows that cannot serve as independent proposals: wrong shape, conditional, or no exact inverse.

It mirrors :mod:`ebmppl.numpyro.flows.checks`.

Example:
    >>> from ebmppl.pyro.flows import check_flow, default_flow
    >>> check_flow(default_flow(2), 2)  # accepted: returns None
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.distributions import Distribution, TransformedDistribution

__all__ = ["check_flow"]


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

    Example:
        >>> from ebmppl.pyro.flows import default_flow
        >>> check_flow(default_flow(2), 3)
        Traceback (most recent call last):
        ...
        ValueError: flow must have event_shape (3,) to match the latent space, got batch_shape () and event_shape (2,)
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
