"""Frozen option objects of the kernels and the trainer (plain Python, both backends).

Each wrapper (``FlowMCMC``, ``NeuTraHMC``, ``EBMTrainer`` in either backend)
turns its keyword arguments into one of these objects at construction,
checked by ``validate()``, and never writes into it: what a run resolves
against its warm-up length (the schedule) is computed per run by
``schedule_for(num_warmup)``, so a kernel can be reused with another warm-up.

Example:
    >>> from ebmppl.options import FlowMCMCOptions
    >>> options = FlowMCMCOptions(local_kernel="hmc").validate()
    >>> options.num_leapfrog, options.schedule_for(500).fit_iterations
    (8, (99, 199, 299, 399))
    >>> FlowMCMCOptions(num_particles=1).validate()
    Traceback (most recent call last):
    ...
    ValueError: need num_particles >= 2, num_local_steps >= 0, num_leapfrog >= 1, step_size > 0; got 1, 3, 1, 0.1
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ebmppl.schedule import WarmupSchedule

__all__ = ["FitStopping", "FlowMCMCOptions", "METHODS", "NeuTraOptions", "TrainerOptions", "check_target"]

#: The ways ``EBMTrainer`` draws its negatives (see the backends' ``training.negatives``).
METHODS = ("flow", "ula", "short-run", "neutra")


def check_target(kernel: str, model, potential_fn) -> None:
    """A kernel samples exactly one of a ``model`` and a ``potential_fn``.

    Raises:
        ValueError: both or neither were given.

    Example:
        >>> check_target("FlowMCMC", None, None)
        Traceback (most recent call last):
        ...
        ValueError: FlowMCMC needs exactly one of `model` and `potential_fn`
    """
    if (model is None) == (potential_fn is None):
        raise ValueError(f"{kernel} needs exactly one of `model` and `potential_fn`")


def _check_accept_and_choice(target_accept_prob: float, name: str, value: str, choices: tuple[str, str]) -> None:
    """Raise ``ValueError`` for an acceptance outside (0, 1) or ``value`` not among ``choices``."""
    if not 0.0 < target_accept_prob < 1.0:
        raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob}")
    if value not in choices:
        raise ValueError(f"{name} must be {choices[0]!r} or {choices[1]!r}, got {value!r}")


@dataclass(frozen=True)
class FlowMCMCOptions:
    """``FlowMCMC``'s settings (both backends); the constructor's arguments of the same names.

    Attributes:
        num_particles: i-SIR candidates per walker, the current state included.
        num_local_steps: local moves per iteration.
        local_kernel: ``"mala"`` or ``"hmc"``.
        num_leapfrog: leapfrog steps per local move; ``None`` for 1 (MALA) or 8 (HMC).
        step_size: initial local step size.
        target_accept_prob: local acceptance that step-size adaptation aims at.
        schedule: the warm-up schedule, or ``None`` for ``WarmupSchedule.default(num_warmup)``.
        defensive: share of the global candidates drawn from a Gaussian twice as wide as the
            chains' spread (the proposal is that mixture), in ``[0, 1)``.
    """

    num_particles: int = 16
    num_local_steps: int = 3
    local_kernel: str = "mala"
    num_leapfrog: int | None = None
    step_size: float = 0.1
    target_accept_prob: float = 0.65
    schedule: WarmupSchedule | None = None
    defensive: float = 0.1

    def validate(self) -> "FlowMCMCOptions":
        """A checked copy with ``num_leapfrog`` resolved.

        Raises:
            ValueError: naming the argument that is out of range.
        """
        _check_accept_and_choice(self.target_accept_prob, "local_kernel", self.local_kernel, ("mala", "hmc"))
        num_leapfrog = self.num_leapfrog
        if num_leapfrog is None:
            num_leapfrog = 1 if self.local_kernel == "mala" else 8
        if self.local_kernel == "mala" and num_leapfrog != 1:
            raise ValueError("MALA makes one leapfrog step: use local_kernel='hmc' for more")
        if self.num_particles < 2 or self.num_local_steps < 0 or num_leapfrog < 1 or not self.step_size > 0:
            raise ValueError(
                "need num_particles >= 2, num_local_steps >= 0, num_leapfrog >= 1, step_size > 0; "
                f"got {self.num_particles}, {self.num_local_steps}, {num_leapfrog}, {self.step_size}"
            )
        if not 0.0 <= self.defensive < 1.0:
            raise ValueError(f"defensive must be in [0, 1), got {self.defensive}")
        return dataclasses.replace(self, num_leapfrog=int(num_leapfrog), step_size=float(self.step_size),
                                   target_accept_prob=float(self.target_accept_prob),
                                   defensive=float(self.defensive))

    def schedule_for(self, num_warmup: int) -> WarmupSchedule:
        """The schedule of a run with ``num_warmup`` warm-up iterations, checked against it."""
        schedule = WarmupSchedule.default(num_warmup) if self.schedule is None else self.schedule
        schedule.validate(num_warmup)
        return schedule


@dataclass(frozen=True)
class NeuTraOptions:
    """``NeuTraHMC``'s settings (both backends); the constructor's arguments of the same names.

    Attributes:
        fit: ``"reverse"`` (KL to the target) or ``"forward"`` (KL from the chains' states).
        step_size: initial leapfrog step size.
        trajectory_length: HMC trajectory length in the latent space; ``None`` adapts it.
        max_leapfrog: cap on the leapfrog steps of one trajectory.
        target_accept_prob: acceptance that step-size adaptation aims at.
        schedule: the warm-up schedule, or ``None`` for ``WarmupSchedule.neutra(num_warmup)``.

    Example:
        >>> from ebmppl.options import NeuTraOptions
        >>> NeuTraOptions().validate().schedule_for(1000).fit_steps
        2000
    """

    fit: str = "reverse"
    step_size: float = 0.1
    trajectory_length: float | None = None
    max_leapfrog: int = 256
    target_accept_prob: float = 0.8
    schedule: WarmupSchedule | None = None

    def validate(self) -> "NeuTraOptions":
        """A checked copy (numbers as floats and ints).

        Raises:
            ValueError: naming the argument that is out of range.
        """
        _check_accept_and_choice(self.target_accept_prob, "fit", self.fit, ("forward", "reverse"))
        if not self.step_size > 0 or int(self.max_leapfrog) < 1:
            raise ValueError(f"need step_size > 0 and max_leapfrog >= 1, got {self.step_size}, {self.max_leapfrog}")
        length = self.trajectory_length
        if length is not None and not length > 0:
            raise ValueError(f"trajectory_length must be positive or None (adapted), got {length}")
        return dataclasses.replace(
            self, step_size=float(self.step_size), max_leapfrog=int(self.max_leapfrog),
            trajectory_length=None if length is None else float(length),
            target_accept_prob=float(self.target_accept_prob),
        )

    def schedule_for(self, num_warmup: int, backbone: bool = False) -> WarmupSchedule:
        """The schedule of a run with ``num_warmup`` warm-up iterations, checked against it.

        Args:
            num_warmup: warm-up iterations of the run.
            backbone: the target is a flow-backbone ``Potential`` sampled in its
                own flow's latent space: no fits unless ``schedule`` asks for them.
        """
        schedule = self.schedule
        if schedule is None:
            schedule = WarmupSchedule(fit_iterations=(), window=1) if backbone else WarmupSchedule.neutra(num_warmup)
        schedule.validate(num_warmup)
        return schedule


@dataclass(frozen=True)
class TrainerOptions:
    """``EBMTrainer``'s settings (both backends); the constructor's arguments of the same names.

    ``num_local_steps``, ``step_size`` and ``target_accept_prob`` left at
    ``None`` follow the method: ``"neutra"`` (NT-EBM) runs 128 MALA steps in
    the flow's latent space, where the model is close to a standard normal,
    aiming at 0.75 as in the paper's baseline, from a step of 0.5; the other
    methods 25 steps per round in data space aiming at 0.65, from a step of 0.05.

    Example:
        >>> from ebmppl.options import TrainerOptions
        >>> options = TrainerOptions(method="neutra").validate()
        >>> options.num_local_steps, options.target_accept_prob, options.step_size
        (128, 0.75, 0.5)
    """

    method: str = "flow"
    batch_size: int = 256
    pool_size: int = 8192
    num_rounds: int = 4
    num_local_steps: int | None = None
    num_particles: int = 64
    step_size: float | None = None
    target_accept_prob: float | None = None
    energy_penalty: float = 0.0
    max_grad_norm: float = 10.0
    max_failures: int = 10
    ema_decay: float | None = None
    flow_fit_steps: int = 2000
    flow_learning_rate: float = 3e-3

    def validate(self) -> "TrainerOptions":
        """A checked copy with the method's defaults filled in.

        Raises:
            ValueError: naming the argument that is out of range.
        """
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.batch_size < 1 or self.pool_size < self.batch_size:
            raise ValueError(f"need 1 <= batch_size <= pool_size, got {self.batch_size}, {self.pool_size}")
        neutra = self.method == "neutra"
        pick = lambda value, latent, data: (latent if neutra else data) if value is None else value  # noqa: E731
        return dataclasses.replace(
            self,
            num_local_steps=int(pick(self.num_local_steps, 128, 25)),
            target_accept_prob=float(pick(self.target_accept_prob, 0.75, 0.65)),
            step_size=float(pick(self.step_size, 0.5, 0.05)),
            energy_penalty=float(self.energy_penalty),
            max_grad_norm=float(self.max_grad_norm),
            flow_fit_steps=int(self.flow_fit_steps),
            flow_learning_rate=float(self.flow_learning_rate),
        )


@dataclass(frozen=True)
class FitStopping:
    """When a reverse-KL fit of a flow stops (both backends' ``fit_flow_reverse``).

    A fit runs at its full learning rate while the mean minibatch loss of its
    chunks of ``chunk`` Adam steps improves on the best so far by more than
    the chunk's standard error and more than ``tolerance`` nats (a smaller
    gain in KL does not change the sampler); after ``patience`` chunks in a
    row that do not, the rate drops to ``decay`` of itself (to average out
    the minibatch noise), and after ``patience`` more such chunks the fit
    stops. The fit's ``num_steps`` caps it.

    Example:
        >>> from ebmppl.options import FitStopping
        >>> FitStopping().chunk
        50
    """

    chunk: int = 50
    patience: int = 3
    decay: float = 0.1
    tolerance: float = 0.01
