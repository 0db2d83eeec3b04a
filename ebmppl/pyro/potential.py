"""``Potential``: an unnormalized density ``exp(-energy(x)) * base(x)`` as a Pyro site.

Sign convention, said once: an *energy* is a negative unnormalized log
density; ``Potential.log_prob(x) = -energy(x) (+ base.log_prob(x))``.
"""

from __future__ import annotations

from typing import Callable

import torch
from pyro.distributions import TorchDistribution, constraints
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.poutine.block_messenger import BlockMessenger
from pyro.poutine.runtime import _PYRO_STACK
from torch.distributions import transform_to

__all__ = ["Potential"]


class Potential(TorchDistribution):
    """An energy-based (unnormalized) distribution: ``p(x) ∝ exp(-energy(x)) · base(x)``.

    At a latent site it is a prior or target known up to a constant, to be
    sampled with :class:`~ebmppl.pyro.FlowMCMC` or Pyro's NUTS; at an observed
    site (in a plate over data) it is a model to train. ``log_prob`` is
    unnormalized, and ``sample`` is not available (draw with MCMC).

    Pyro reads a latent site's shape from one ``sample()`` call: in its
    initialisation strategies (``init_to_uniform``, ``init_to_feasible``...,
    run under an ``InitMessenger``) and when it guesses the plate nesting
    (under a ``poutine.block``, as everything inside ``MCMC.run``).
    There ``sample`` returns the point of the support that maps to 0 in
    unconstrained space, so NUTS and FlowMCMC initialise as usual with their
    defaults; anywhere else it raises.

    Args:
        energy: maps values of shape ``(..., *event_shape)`` to energies of
            shape ``(...)``; the output shape is checked.
        event_shape: shape of one value.
        base: optional distribution tilted by the energy: a Pyro
            distribution (its ``event_shape`` must equal ``event_shape``; it
            gives the batch shape) or a flow module (``flow()`` a distribution
            of event shape ``event_shape``, e.g. :func:`~ebmppl.pyro.flows.neutra_flow`
            or a zuko flow), the *flow backbone* ``p(x) ∝ exp(-energy(x)) q(x)``
            that :class:`~ebmppl.pyro.NeuTraHMC` samples in its latent space.
        support: the support (default: real, or ``base.support``).

    Example:
        >>> import torch, pyro
        >>> from pyro.infer import MCMC, NUTS
        >>> from ebmppl.pyro import Potential
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> Potential(energy, event_shape=(2,)).log_prob(torch.ones(3, 2))
        tensor([-1., -1., -1.])
        >>> def model():
        ...     pyro.sample("x", Potential(energy, event_shape=(2,)))
        >>> pyro.set_rng_seed(0)
        >>> mcmc = MCMC(NUTS(model), warmup_steps=50, num_samples=50, disable_progbar=True)
        >>> mcmc.run()
        >>> mcmc.get_samples()["x"].shape
        torch.Size([50, 2])
    """

    arg_constraints = {}

    def __init__(
        self,
        energy: Callable,
        *,
        event_shape: tuple[int, ...],
        base: TorchDistribution | None = None,
        support: constraints.Constraint | None = None,
        validate_args: bool | None = None,
    ):
        if not callable(energy):
            raise TypeError(f"energy must be callable, got {type(energy).__name__}")
        event_shape = tuple(event_shape)
        batch_shape: tuple[int, ...] = ()
        self.backbone = None
        if isinstance(base, torch.nn.Module):
            self.backbone, base = base, base()
        if base is not None:
            if tuple(base.event_shape) != event_shape:
                raise ValueError(
                    f"base has event_shape {tuple(base.event_shape)} but the Potential has "
                    f"event_shape {event_shape}"
                )
            batch_shape = tuple(base.batch_shape)
            support = base.support if support is None else support
        support = constraints.real if support is None else support
        self.energy = energy
        self.base = base
        self._support = constraints.independent(support, len(event_shape) - support.event_dim)
        super().__init__(torch.Size(batch_shape), torch.Size(event_shape), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False)
    def support(self):
        return self._support

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Potential, _instance)
        # The base keeps its own batch shape: log_prob broadcasts to the expanded one.
        new.energy, new._support, new.base = self.energy, self._support, self.base
        new.backbone = self.backbone
        super(Potential, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = tuple(value.shape)
        event_dim = len(self.event_shape)
        if shape[len(shape) - event_dim :] != tuple(self.event_shape):
            raise ValueError(
                f"Potential got a value of shape {shape}, whose trailing dimensions do not "
                f"match event_shape {tuple(self.event_shape)}"
            )
        batch = shape[: len(shape) - event_dim]
        energy = self.energy(value)
        if tuple(energy.shape) != batch:
            raise ValueError(
                f"energy returned shape {tuple(energy.shape)} for a value of shape {shape}; "
                f"expected the batch shape {batch} (one energy per value of event_shape "
                f"{tuple(self.event_shape)})"
            )
        log_prob = -energy
        if self.base is not None:
            base = self.base if self.backbone is None else self.backbone()  # the flow's current parameters
            # a non-finite value (a diverged proposal) gets a NaN density, not the base's validation error
            finite = torch.isfinite(value).reshape(batch + (-1,)).all(-1)
            inside = transform_to(base.support)(torch.zeros_like(value))  # a point of the support
            safe = torch.where(finite.reshape(batch + (1,) * event_dim), value, inside)
            log_prob = log_prob + torch.where(finite, base.log_prob(safe), torch.full_like(log_prob, torch.nan))
        return log_prob.expand(torch.broadcast_shapes(log_prob.shape, self.batch_shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if not _pyro_is_probing_shapes():
            raise NotImplementedError(
                "Potential is unnormalized and cannot be sampled directly: draw from it with "
                "FlowMCMC or NUTS (as a latent site)"
            )
        # Pyro only reads the shape of this value (see the class docstring).
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        transform = transform_to(self.support)
        return transform(torch.zeros(transform.inverse_shape(shape)))


def _pyro_is_probing_shapes() -> bool:
    """Whether Pyro is initialising or tracing a model for its structure only."""
    return any(
        isinstance(handler, (InitMessenger, BlockMessenger))
        for handler in _PYRO_STACK
    )
