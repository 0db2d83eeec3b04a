"""The log density of a batch of walkers, from a Pyro model or a ``potential_fn``.

Pyro has no vectorized chains, so :class:`~ebmppl.pyro.FlowMCMC` moves a
batch of walkers inside one Pyro chain. A model is evaluated for all walkers
at once under an outermost ``pyro.plate`` over walkers (the way Pyro
vectorizes ELBO particles); a ``potential_fn`` of one walker's parameters is
vectorized with ``torch.func.vmap``. Either way the result is a
:class:`~ebmppl.pyro.kernels.core.Target` on flat positions ``(C, D)``.

Example:
    >>> import torch, pyro, pyro.distributions as dist
    >>> from ebmppl.pyro.kernels.target import model_target
    >>> def model():
    ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
    >>> target, layout, _, _ = model_target(model, (), {}, num_walkers=3)
    >>> target.logdensity(torch.zeros(3, 1))  # log N(0; 0, 1), log|d exp/du| = 0 at u = 0
    tensor([-0.9189, -0.9189, -0.9189])
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer.autoguide.initialization import init_to_uniform
from pyro.infer.mcmc.util import initialize_model

from ebmppl.pyro.kernels.core import Target
from ebmppl.pyro.moves.hmc import with_grad

__all__ = ["Layout", "model_target", "potential_fn_target"]

_WALKERS = "_ebmppl_walkers"


class Layout(NamedTuple):
    """How a dict of unconstrained sites maps to flat positions ``(C, D)``.

    Attributes:
        names: site names, sorted (Pyro's order for samples).
        shapes: each site's unconstrained shape for one walker.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, params: dict[str, torch.Tensor]) -> "Layout":
        """The layout of ``params``, each with a leading walker axis."""
        names = tuple(sorted(params))
        return cls(names, tuple(params[name].shape[1:] for name in names))

    @property
    def dim(self) -> int:
        return sum(shape.numel() for shape in self.shapes)

    def flatten(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{name: (C, *shape)}`` to ``(C, D)``."""
        return torch.cat([params[name].reshape(params[name].shape[0], -1) for name in self.names], dim=1)

    def site_of(self, k: int) -> str:
        """The site holding flat coordinate ``k``."""
        for name, shape in zip(self.names, self.shapes):
            if k < shape.numel():
                return name
            k -= shape.numel()
        raise IndexError(f"coordinate {k} is beyond the layout's {self.dim}")

    def unflatten(self, position: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(C, D)`` to ``{name: (C, *shape)}``."""
        sizes = [shape.numel() for shape in self.shapes]
        parts = torch.split(position, sizes, dim=1)
        return {
            name: part.reshape((position.shape[0],) + shape)
            for name, part, shape in zip(self.names, parts, self.shapes)
        }


def _no_grad(logdensity: Callable) -> Callable:
    def evaluate(position: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return logdensity(position)

    return evaluate


def potential_fn_target(potential_fn: Callable, layout: Layout, name: str = "FlowMCMC") -> Target:
    """The target of a ``potential_fn`` of one walker's unconstrained parameters (a dict)."""
    batched = torch.func.vmap(potential_fn)

    def logdensity(position: torch.Tensor) -> torch.Tensor:
        try:
            energy = batched(layout.unflatten(position))
        except RuntimeError as err:
            raise ValueError(
                f"{name} evaluates potential_fn on all walkers at once with torch.func.vmap; "
                f"it failed ({err}). Write potential_fn with torch operations only (no .item(), "
                "no Python branching on tensor values, no in-place updates of its inputs)."
            ) from err
        if energy.shape != position.shape[:1]:
            raise ValueError(
                f"the potential must return a scalar per walker, got shape {tuple(energy.shape[1:])}"
            )
        return -energy

    return Target(_no_grad(logdensity), with_grad(logdensity), logdensity)


def model_target(
    model: Callable,
    model_args: tuple,
    model_kwargs: dict,
    *,
    num_walkers: int,
    init_strategy: Callable = init_to_uniform,
    initial_params: dict | None = None,
    name: str = "FlowMCMC",
) -> tuple[Target, Layout, dict, dict]:
    """The batched target of a Pyro model's latent sites, in unconstrained space.

    Args:
        model: a Pyro model with continuous latent sites.
        model_args, model_kwargs: its arguments.
        num_walkers: ``C``, the number of walkers.
        init_strategy: Pyro init strategy for the walkers' starting points.
        initial_params: unconstrained starting points ``{name: (C, *shape)}``;
            drawn with ``init_strategy`` when ``None``.
        name: the kernel named in error messages.

    Returns:
        ``(target, layout, initial_params, transforms)``: ``transforms`` maps
        each latent site to its transform into unconstrained space.

    Raises:
        ValueError: discrete latent sites, or no valid starting point.
    """
    found, transforms, trace = _initialise(model, model_args, model_kwargs, num_walkers, init_strategy,
                                           initial_params, name)
    layout = Layout.of(found)
    logdensity = _ModelLogDensity(model, model_args, model_kwargs, layout, transforms, trace, name)
    return Target(_no_grad(logdensity), with_grad(logdensity), logdensity), layout, found, transforms


def _initialise(model, model_args, model_kwargs, num_walkers, init_strategy, initial_params, name):
    """The walkers' unconstrained starting points, the sites' transforms and a trace of the model."""
    try:
        found, _, transforms, trace = initialize_model(
            model,
            model_args,
            model_kwargs,
            num_chains=num_walkers,
            init_strategy=init_strategy,
            initial_params=initial_params,
        )
    except (ValueError, RuntimeError) as err:
        if "valid initial" not in str(err) and "initial params" not in str(err):
            raise
        raise ValueError(
            f"{name} could not initialise: the model's log density (energy) is not finite "
            f"at any initial point tried ({err})"
        ) from err
    discrete = [
        name
        for name, site in trace.iter_stochastic_nodes()
        if getattr(site["fn"], "has_enumerate_support", False)
    ]
    if discrete:
        raise ValueError(f"{name} needs continuous latent sites; {discrete} are discrete")
    if num_walkers == 1:
        found = {name: value[None] for name, value in found.items()}
    return found, transforms, trace


class _ModelLogDensity:
    """The log density of a model's latent sites at flat unconstrained walkers ``(C, D) -> (C,)``.

    The model runs once for all walkers, inside an outermost walker plate;
    walkers where it raises alone get ``-inf`` (a rejection).
    """

    def __init__(self, model, model_args, model_kwargs, layout: Layout, transforms, trace, name: str):
        self.model, self.model_args, self.model_kwargs = model, model_args, model_kwargs
        self.layout, self.transforms, self.name = layout, transforms, name
        self.value_shapes = {site: trace.nodes[site]["value"].shape for site in layout.names}
        self.batch_dims = {site: len(trace.nodes[site]["fn"].batch_shape) for site in layout.names}
        self.nesting = _max_batch_dims(trace)

    def __call__(self, position: torch.Tensor) -> torch.Tensor:
        try:
            return self.batched(position)
        except (RuntimeError, ValueError, IndexError) as err:
            if position.shape[0] == 1:
                raise
            return self.walker_by_walker(position, err)

    def walker_by_walker(self, position: torch.Tensor, err: Exception) -> torch.Tensor:
        """Which walkers make the model fail? Some (a Cholesky factor that does not exist, a parameter
        out of its support at a proposal): their log density is -inf, a rejection. None: the model
        does not broadcast over the walkers. All: the model fails anyway."""
        values, failed = [], 0
        for i in range(position.shape[0]):
            try:
                values.append(self.batched(position[i:i + 1]))
            except (RuntimeError, ValueError, IndexError):
                values.append(position.new_full((1,), -math.inf))
                failed += 1
        if failed == 0:
            raise ValueError(_not_batched(self.name, self.nesting, err)) from err
        numerical = isinstance(err, torch.linalg.LinAlgError)  # a matrix that has no factor there
        if failed == position.shape[0] and not numerical:  # at every point alone too: most likely shapes
            raise ValueError(
                _not_batched(self.name, self.nesting, err) + " (it also failed for each walker alone)"
            ) from err
        return torch.cat(values)

    def constrained(self, position: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """The sites' constrained values, with walker dims left of the model's, and ``log|det J|``."""
        num = position.shape[0]
        values, log_det = {}, position.new_zeros(num)
        for site, u in self.layout.unflatten(position).items():
            to_constrained = self.transforms[site].inv
            value = to_constrained(u)
            log_det = log_det + to_constrained.log_abs_det_jacobian(u, value).reshape(num, -1).sum(1)
            extra = self.nesting - self.batch_dims[site]
            values[site] = value.reshape((num,) + (1,) * extra + self.value_shapes[site])
        return values, log_det

    def batched(self, position: torch.Tensor) -> torch.Tensor:
        """The model run once for all walkers in the walker plate."""
        num, nesting = position.shape[0], self.nesting
        values, log_joint = self.constrained(position)
        with pyro.plate(_WALKERS, num, dim=-nesting - 1):
            conditioned = poutine.condition(self.model, values)
            trace = poutine.trace(conditioned).get_trace(*self.model_args, **self.model_kwargs)
        for site_name, site in trace.nodes.items():
            if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
                continue
            log_prob = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])
            if not torch.is_tensor(log_prob):
                log_prob = torch.as_tensor(log_prob, dtype=position.dtype)
            if log_prob.dim() > nesting + 1 and num > 1:  # dims left of the walkers': walkers mixed
                raise ValueError(_not_batched(
                    self.name, nesting, f"site {site_name!r} has log_prob shape {tuple(log_prob.shape)}, "
                    f"more dims than the walker plate (dim={-nesting - 1}) and the model's plates"
                ))
            log_prob = log_prob.reshape((1,) * (nesting + 1 - log_prob.dim()) + log_prob.shape)
            log_joint = log_joint + log_prob.reshape(log_prob.shape[0], -1).sum(1)
        return log_joint


def _not_batched(name: str, nesting: int, reason) -> str:
    return (
        f"{name} evaluates the model for all walkers at once, inside an outermost "
        f"pyro.plate('{_WALKERS}', num_walkers, dim={-nesting - 1}): every latent value gets leading "
        f"walker dims, and the model must broadcast over them (as with Pyro's "
        f"vectorize_particles=True). It did not: {reason}. A latent site of shape S arrives with shape "
        f"(num_walkers, {', '.join(['1'] * nesting) + ', ' if nesting else ''}*S), one 1 per plate dim "
        "of the model: index from the right (w[..., 0], not w[0]) and broadcast against the plates "
        "(for a vector w and data x of shape (N, K) in a plate of size N at dim=-1, (x * w).sum(-1) "
        "has shape (num_walkers, N); x @ w does not broadcast), and declare the model's plates with "
        "explicit dim= (or pass potential_fn, which is vectorized over walkers with torch.func.vmap)"
    )


def _max_batch_dims(trace) -> int:
    """Dims the model uses left of the event dims: plates and site batch shapes."""
    nesting = 0
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        for frame in site["cond_indep_stack"]:
            if frame.vectorized and frame.dim is not None:
                nesting = max(nesting, -frame.dim)
        nesting = max(nesting, len(getattr(site["fn"], "batch_shape", ())))
    return nesting
