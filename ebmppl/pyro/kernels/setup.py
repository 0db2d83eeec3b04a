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

from ebmppl._repr import html_table, kernel_rows, text
from ebmppl.mixing import warn_if_not_mixed
from ebmppl.options import check_target
from ebmppl.pyro.flows import as_flow_module, check_flow
from ebmppl.pyro.kernels.target import Layout, model_target, potential_fn_target
from ebmppl.schedule import WarmupSchedule

__all__ = ["WalkerKernel", "WalkersAsChains", "build_flow", "check_initial_energy", "flat_target", "reporting_transforms",
           "resolve_num_walkers"]


class WalkerKernel(MCMCKernel):
    """What ebmppl's Pyro kernels share: walkers moved together inside one Pyro chain.

    Subclasses set ``_options`` (a frozen option object), ``_num_walkers``,
    ``_schedule``, ``_state``, ``_info``, ``_num_nonfinite``, ``_num_fits``,
    ``_adapt`` and ``_runs`` (per-draw statistics, one dict of lists per Pyro
    chain run). A kernel prints its target, flow, walkers and options, and
    shows them as a table in a notebook.
    """

    def __init__(self, name: str, model, potential_fn, num_walkers: int | None, flow, init_strategy: Callable):
        check_target(name, model, potential_fn)
        if num_walkers is not None and num_walkers < 2:
            raise ValueError(f"{name} needs num_walkers >= 2, got {num_walkers}")
        self._name = name
        self.model = model
        self.potential_fn = potential_fn
        self.transforms = None
        self._user_num_walkers = num_walkers  # as given; `_num_walkers` is the run's
        self._num_walkers = num_walkers
        self._flow = flow
        self._schedule = None  # the schedule of the last run, resolved against its warm-up
        self._init_strategy = init_strategy
        self._initial_params = None
        self._user_initial_params = None
        self._state = None
        self._adapt = None
        self._runs: list[dict[str, list]] = []

    def _walkers(self, args, kwargs) -> tuple:
        """The run's walkers: ``(target, layout, position)``, with ``num_walkers`` and ``transforms`` set."""
        user_params = self._user_initial_params
        self._num_walkers = resolve_num_walkers(self._name, self._user_num_walkers, user_params, default=40)
        target, layout, position, self.transforms = flat_target(
            self._name, self.model, self.potential_fn, args, kwargs, self._num_walkers, user_params,
            self._init_strategy,
        )
        self._initial_params = layout.unflatten(position)
        self._num_nonfinite = torch.zeros(position.shape[0], dtype=torch.int64, device=position.device)
        self._num_fits = 0
        return target, layout, position

    def _count(self, info, adapt, num_warmup: int):
        """After an iteration: the non-finite count, and the warm-up's state, dropped (and the
        mixing checked) when warm-up ends."""
        self._num_nonfinite = self._num_nonfinite + info.num_nonfinite
        if adapt is not None and adapt.i == num_warmup:
            window = adapt.window.detach().cpu().numpy()
            warn_if_not_mixed(self._name, window, num_warmup, "warmup_steps", self._layout.site_of)
            self._num_fits, adapt = adapt.num_fits, None
        return adapt

    # --- how it shows in a notebook: its target, flow, walkers and options -------------------
    def _rows(self) -> list[tuple[str, str]]:
        return kernel_rows(self.model, self.potential_fn, self._flow, self._options, num_walkers=self._num_walkers)

    def __repr__(self) -> str:
        return text(self._name, self._rows())

    def _repr_html_(self) -> str:
        return html_table(self._name, self._rows())

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
        """The current core state (walkers, step size, flow); the warm-up's own state is dropped when it ends."""
        return self._state

    @property
    def adaptation(self):
        """The warm-up's state (window, dual averaging, fits) while warm-up lasts; ``None`` after it."""
        return self._adapt

    @property
    def info(self):
        """What the last iteration reported (the core's ``CoreInfo``)."""
        return self._info

    @property
    def num_nonfinite(self) -> torch.Tensor:
        """Shape ``(num_walkers,)``: proposals rejected because the energy was NaN or infinite there, this run."""
        return self._num_nonfinite

    @property
    def num_fits(self) -> int:
        """Flow fits made during the last run's warm-up."""
        return self._num_fits

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

    def _flow_of(self, state) -> tuple[Any, Any, bool]:
        """``(flow, whitening, ready)`` of the flow a state carries."""
        raise NotImplementedError

    def _frozen_proposal(self) -> tuple[Any, Any, Callable]:
        """The flow of the last run as a proposal, and the log density of the run's model.

        Returns:
            ``(flow, whitening, logdensity)``: the flow module on whitened
            coordinates, the :class:`~ebmppl.pyro.flows.Whitening` to data
            coordinates, and the batched flat unconstrained log density
            ``(n, D) -> (n,)`` (Jacobians of constrained sites included).

        Raises:
            ValueError: no run in this process yet, or a flow that was never fitted.
        """
        if self._state is None:
            raise ValueError(
                f"{self._name} has no finished run in this process: call mcmc.run(...) first "
                "(with num_chains=1: the walkers are the chains)"
            )
        flow, whitening, ready = self._flow_of(self._state)
        if not ready:
            raise ValueError(
                f"{self._name}'s flow was never fitted (no warm-up, or a schedule without fits): "
                "it is no proposal for the evidence"
            )
        return flow, whitening, self._target.logdensity


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
    """The batched target, its layout, the flat initial positions ``(C, D)`` and the reporting transforms.

    The positions keep the model's floating dtype (a float64 model is sampled
    in float64); integer initial values become the default dtype.
    """
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
    if not position.is_floating_point():
        position = position.to(torch.get_default_dtype())
    return target, layout, position.detach(), reporting_transforms(layout, transforms)


class WalkersAsChains:
    """How Pyro's ``MCMC`` reports one site of a walker kernel: constrained, walkers as chains.

    ``MCMC`` stacks the kernel's draws as ``(chains, draws, walkers, *shape)``
    in the unconstrained space and maps them with ``transforms[site].inv``.
    This ``inv`` constrains them (the site's own transform) and moves the
    walker axis in front of the draws, merging it with Pyro's chain axis:
    ``(chains * walkers, draws, *site_shape)``. ``mcmc.summary()``,
    ``mcmc.diagnostics()``, ``az.from_pyro`` and ``Predictive`` then see one
    chain per walker, as they would with ``num_chains`` Pyro chains. A value
    with no draw axis (one draw of all walkers, ``(walkers, *shape)``) is only
    constrained.

    Example:
        >>> import torch
        >>> from ebmppl.pyro.kernels.setup import WalkersAsChains
        >>> report = WalkersAsChains(torch.distributions.ExpTransform().inv, site_ndim=1)
        >>> report.inv(torch.zeros(1, 5, 3, 2)).shape  # (chains, draws, walkers, 2) -> (walkers, draws, 2)
        torch.Size([3, 5, 2])
    """

    def __init__(self, transform, site_ndim: int):
        self.transform = transform  # constrained -> unconstrained, as Pyro's initialize_model gives it
        self.site_ndim = site_ndim  # dims of one walker's unconstrained value

    @property
    def inv(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return self._report

    def __call__(self, value: torch.Tensor) -> torch.Tensor:
        return self.transform(value)

    def _report(self, u: torch.Tensor) -> torch.Tensor:
        value = self.transform.inv(u)
        lead = u.dim() - self.site_ndim - 1  # dims before the walker axis
        if lead != 2:
            return value
        value = value.movedim(2, 1)  # (chains, walkers, draws, ...)
        return value.reshape((-1,) + value.shape[2:])


def reporting_transforms(layout: Layout, transforms: dict) -> dict[str, WalkersAsChains]:
    """The ``transforms`` a walker kernel shows ``MCMC``: every site, walkers as chains."""
    identity = torch.distributions.transforms.identity_transform
    return {
        name: WalkersAsChains(transforms.get(name, identity), len(shape))
        for name, shape in zip(layout.names, layout.shapes)
    }


def build_flow(flow: Any, default: Callable, dim: int, device: torch.device, dtype: torch.dtype | None = None):
    """The initial flow, the factory for fresh restarts (or ``None``), and whether it is ready at once.

    Args:
        flow: ``None`` (use ``default``), a factory ``dim -> flow`` or a flow.
        default: the factory used for ``None``.
        dim: the latent dimension.
        device: where the flow lives.
        dtype: its floating dtype (the walkers'); ``None`` for torch's default.
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if flow is None:
        factory = default
    elif isinstance(flow, (torch.nn.Module, torch.distributions.TransformedDistribution)):
        # a copy: the kernel freezes (and refits) its flow, and must not change the caller's
        module = copy.deepcopy(as_flow_module(flow)).to(device, dtype)
        check_flow(module, dim)
        return module, None, True
    elif callable(flow):
        factory = flow
    else:
        raise TypeError(f"flow must be None, a factory dim -> flow, or a flow; got {flow!r}")

    def build(d: int):
        return as_flow_module(factory(d)).to(device, dtype)

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
