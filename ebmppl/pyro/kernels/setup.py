"""What the Pyro kernels share when they start: walkers, the flat target, the flow.

Example:
    >>> import torch, pyro, pyro.distributions as dist
    >>> from ebmppl.pyro.kernels.setup import flat_target
    >>> def model():
    ...     pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    >>> target, layout, position, _ = flat_target("FlowMCMC", model, None, (), {}, 3, None)
    >>> position.shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from pyro.infer.autoguide.initialization import init_to_uniform
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from ebmppl.pyro.flows import as_flow_module, check_flow
from ebmppl.pyro.kernels.target import Layout, model_target, potential_fn_target
from ebmppl.schedule import WarmupSchedule

__all__ = ["WalkerKernel", "build_flow", "check_initial_energy", "flat_target", "resolve_num_walkers"]


class WalkerKernel(MCMCKernel):
    """What ebmppl's Pyro kernels share: walkers moved together inside one Pyro chain.

    Subclasses set ``_num_walkers``, ``_schedule``, ``_state`` and ``_runs``
    (per-draw statistics, one dict of lists per Pyro chain run).
    """

    @property
    def initial_params(self) -> dict[str, torch.Tensor]:
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, torch.Tensor]) -> None:
        self._user_initial_params = params
        self._initial_params = params

    @property
    def num_walkers(self) -> int | None:
        """Walkers moved together (known once ``setup`` has run, or when given)."""
        return self._num_walkers

    @property
    def schedule(self) -> WarmupSchedule | None:
        """The warm-up schedule in use (known once ``setup`` has seen ``warmup_steps``)."""
        return self._schedule

    @property
    def state(self):
        """The current core state (walkers, flow, adaptation)."""
        return self._state

    @property
    def sample_stats(self) -> list[dict[str, torch.Tensor]]:
        """Per-draw statistics of each run's samples (one dict per Pyro chain run in this process).

        Each value has shape ``(num_walkers, num_samples)``; the keys are the
        kernel's (see its docstring).
        """
        return [
            {name: torch.stack(values, dim=1) if values else torch.zeros(0) for name, values in run.items()}
            for run in self._runs
        ]

    def cleanup(self) -> None:
        """Nothing to release: the state stays readable after the run."""


def resolve_num_walkers(name: str, requested: int | None, params, default: int) -> int:
    """The number of walkers: ``requested``, else the leading size of ``params``, else ``default``."""
    if params is None:
        return default if requested is None else requested
    sizes = {v.shape[0] if torch.as_tensor(v).dim() else None for v in params.values()}
    if len(sizes) != 1 or None in sizes:
        raise ValueError("initial_params need the same leading (walker) axis on every site")
    (size,) = sizes
    requested = size if requested is None else requested
    if size != requested or size < 2:
        raise ValueError(
            f"initial_params have {size} walkers (leading axis) but num_walkers is "
            f"{requested}; {name} needs at least 2"
        )
    return size


def flat_target(name, model, potential_fn, args, kwargs, num_walkers, user_params,
                init_strategy: Callable = init_to_uniform):
    """The batched target, its layout, the flat initial positions ``(C, D)`` and the sites' transforms."""
    if model is not None:
        target, layout, params, transforms = model_target(
            model, args, kwargs, num_walkers=num_walkers, init_strategy=init_strategy,
            initial_params=user_params, name=name,
        )
    else:
        if user_params is None:
            raise ValueError(f"{name} with `potential_fn` needs `initial_params` (in MCMC)")
        params = user_params
        layout = Layout.of(params)
        target = potential_fn_target(potential_fn, layout, name=name)
        transforms = {}
    position = layout.flatten({k: torch.as_tensor(v) for k, v in params.items()})
    return target, layout, position.to(torch.get_default_dtype()).detach(), transforms


def build_flow(flow: Any, default: Callable, dim: int, device: torch.device):
    """The initial flow, the factory for fresh restarts (or ``None``), and whether it is ready at once.

    Args:
        flow: ``None`` (use ``default``), a factory ``dim -> flow`` or a flow.
        default: the factory used for ``None``.
        dim: the latent dimension.
        device: where the flow lives.
    """
    if flow is None:
        factory = default
    elif isinstance(flow, (torch.nn.Module, torch.distributions.TransformedDistribution)):
        # a copy: the kernel freezes (and refits) its flow, and must not change the caller's
        module = copy.deepcopy(as_flow_module(flow)).to(device, torch.get_default_dtype())
        check_flow(module, dim)
        return module, None, True
    elif callable(flow):
        factory = flow
    else:
        raise TypeError(f"flow must be None, a factory dim -> flow, or a flow; got {flow!r}")

    def build(d: int):
        return as_flow_module(factory(d)).to(device, torch.get_default_dtype())

    module = build(dim)
    check_flow(module, dim)
    return module, build, False


def check_initial_energy(name: str, logdensity: torch.Tensor) -> None:
    """Refuse initial points where the energy is NaN or infinite, naming the walkers."""
    finite = torch.isfinite(logdensity)
    if not finite.any():
        raise ValueError(
            f"{name}: the energy (potential) is NaN or infinite at every initial point; "
            "check the model or potential_fn"
        )
    if not finite.all():
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"{name}: the energy is NaN or infinite at the initial point of walkers {bad}")
