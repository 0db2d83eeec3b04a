"""``Potential``: an unnormalized density ``exp(-energy(x)) * base(x)`` as a NumPyro site.

Sign convention, said once: an *energy* is a negative unnormalized log
density; ``Potential.log_prob(x) = -energy(x) (+ base.log_prob(x))``.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from numpyro.distributions import Distribution, constraints

from ebmppl.numpyro.flows.protocol import join_flow_leaves, split_flow_leaves
from ebmppl.numpyro.keys import typed_key

__all__ = ["FlowBase", "Potential"]


class FlowBase(Distribution):
    """A flowjax flow seen as a NumPyro distribution: the backbone of a ``Potential``.

    ``Potential(energy, base=flow)`` wraps a flowjax distribution in this
    class; ``flow`` gives the flow itself, whose latent space
    :class:`~ebmppl.numpyro.NeuTraHMC` samples in. The flow's arrays are the
    pytree's data and the rest of it auxiliary
    (:func:`~ebmppl.numpyro.flows.split_flow_leaves`), so a potential with a
    flow base passes through ``jax.jit`` and ``jax.tree.map``.

    Args:
        flow: an unconditional flowjax distribution.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from ebmppl.numpyro import Potential
        >>> from ebmppl.numpyro.flows import neutra_flow
        >>> flow = neutra_flow(jax.random.key(0), 2)
        >>> potential = Potential(lambda x: jnp.sum(x**2, -1), event_shape=(2,), base=flow)
        >>> type(potential.base).__name__, potential.backbone is flow
        ('FlowBase', True)
        >>> jax.jit(lambda p, x: p.log_prob(x))(potential, jnp.zeros(2)) == potential.log_prob(jnp.zeros(2))
        Array(True, dtype=bool)
    """

    arg_constraints = {}
    support = constraints.real_vector
    pytree_data_fields = ("_flow_arrays",)
    pytree_aux_fields = ("_flow_rest",)

    def __init__(self, flow, *, validate_args: bool | None = None):
        if flow.cond_shape is not None:
            raise ValueError(f"a Potential's base flow must be unconditional, got cond_shape {flow.cond_shape}")
        self._flow = flow  # the flow given; a copy made by a tree operation rebuilds its own
        self._flow_arrays, self._flow_rest = split_flow_leaves(flow)
        super().__init__((), tuple(flow.shape), validate_args=validate_args)

    @property
    def flow(self):
        """The flowjax flow (the one given, or after a tree operation the one its arrays make)."""
        given = self.__dict__.get("_flow")
        return join_flow_leaves(self._flow_arrays, self._flow_rest) if given is None else given

    def log_prob(self, value):
        return self.flow.log_prob(value)

    def sample(self, key, sample_shape=()):
        return self.flow.sample(typed_key(key), tuple(sample_shape))


class Potential(Distribution):
    """An energy-based (unnormalized) distribution: ``p(x) ∝ exp(-energy(x)) · base(x)``.

    At a latent site it is a prior or target known up to a constant, to be
    sampled with :class:`~ebmppl.numpyro.FlowMCMC` or NumPyro's NUTS; at an
    observed site (in a plate over data) it is a model to train. ``log_prob``
    is unnormalized, and ``sample`` is not available (draw with MCMC).

    Args:
        energy: maps values of shape ``(..., *event_shape)`` to energies of
            shape ``(...)``; the output shape is checked.
        event_shape: shape of one value.
        base: optional distribution tilted by the energy: a NumPyro
            distribution (its ``event_shape`` must equal ``event_shape``; it
            gives the batch shape) or a flowjax flow of shape ``event_shape``,
            the *flow backbone* ``p(x) ∝ exp(-energy(x)) q(x)`` that
            :class:`~ebmppl.numpyro.NeuTraHMC` samples in its latent space.
        support: the support (default: real, or ``base.support``).

    Example:
        >>> import jax, jax.numpy as jnp, numpyro
        >>> from numpyro.infer import MCMC, NUTS
        >>> from ebmppl.numpyro import Potential
        >>> energy = lambda x: 0.5 * jnp.sum(x**2, -1)
        >>> Potential(energy, event_shape=(2,)).log_prob(jnp.ones((3, 2)))
        Array([-1., -1., -1.], dtype=float32)
        >>> def model():
        ...     numpyro.sample("x", Potential(energy, event_shape=(2,)))
        >>> mcmc = MCMC(NUTS(model), num_warmup=50, num_samples=50, progress_bar=False)
        >>> mcmc.run(jax.random.key(0))
        >>> mcmc.get_samples()["x"].shape
        (50, 2)
    """

    arg_constraints = {}
    support: constraints.Constraint = constraints.dependent
    pytree_data_fields = ("base", "support")
    pytree_aux_fields = ("energy",)

    def __init__(
        self,
        energy: Callable,
        *,
        event_shape: tuple[int, ...],
        base: Distribution | None = None,
        support: constraints.Constraint | None = None,
        validate_args: bool | None = None,
    ):
        if not callable(energy):
            raise TypeError(f"energy must be callable, got {type(energy).__name__}")
        event_shape = tuple(event_shape)
        batch_shape: tuple[int, ...] = ()
        if base is not None and _is_flowjax(base):
            base = FlowBase(base)
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
        self.support = constraints.independent(support, len(event_shape) - support.event_dim)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @property
    def backbone(self):
        """The flow of a flow-backbone potential (``base`` a flowjax flow), else ``None``."""
        return self.base.flow if isinstance(self.base, FlowBase) else None

    def log_prob(self, value):
        shape = jnp.shape(value)
        event_dim = len(self.event_shape)
        if shape[len(shape) - event_dim :] != self.event_shape:
            raise ValueError(
                f"Potential got a value of shape {shape}, whose trailing dimensions do not "
                f"match event_shape {self.event_shape}"
            )
        batch = shape[: len(shape) - event_dim]
        energy = self.energy(value)
        if jnp.shape(energy) != batch:
            raise ValueError(
                f"energy returned shape {jnp.shape(energy)} for a value of shape {shape}; "
                f"expected the batch shape {batch} (one energy per value of event_shape "
                f"{self.event_shape})"
            )
        log_prob = -energy
        if self.base is not None:
            log_prob = log_prob + self.base.log_prob(value)
        return jnp.broadcast_to(log_prob, jnp.broadcast_shapes(jnp.shape(log_prob), self.batch_shape))

    def sample(self, key, sample_shape=()):
        raise NotImplementedError(
            "Potential is unnormalized and cannot be sampled directly: draw from it with "
            "FlowMCMC or NUTS (as a latent site)"
        )


def _is_flowjax(obj) -> bool:
    try:
        from flowjax.distributions import AbstractDistribution
    except ImportError:  # pragma: no cover - flowjax is a dependency of the backend
        return False
    return isinstance(obj, AbstractDistribution)
