"""The warm-up schedule of flow-assisted MCMC, as plain data (shared by both backends).

Example:
    >>> from ebmppl.schedule import WarmupSchedule
    >>> WarmupSchedule.default(500).fit_iterations
    (99, 199, 299, 399)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ebmppl._repr import format_value, html_table, text

__all__ = ["WarmupSchedule"]


@dataclass(frozen=True)
class WarmupSchedule:
    """When and how the flow is fitted to the chains during warm-up.

    During warm-up every iteration runs the local moves (and, once the flow has
    been fitted, the global moves) and adapts the local step size; after the
    iterations listed in ``fit_iterations`` the flow is refitted on the states
    of all walkers over the last ``window`` iterations. After warm-up nothing
    changes any more, so the production draws come from one fixed Markov
    kernel.

    Each fit trains, side by side, the current flow (warm start) and
    ``fresh_restarts`` freshly initialised flows, and keeps the one with the
    lowest loss: a fit stuck in a poor optimum is replaced by a fresh one
    instead of being carried on.

    Attributes:
        fit_iterations: warm-up iterations (0-based) after which the flow is fitted.
        window: how many recent iterations of states make up the training set.
        fit_steps: Adam steps per fit.
        batch_size: minibatch size of the fit.
        learning_rate: Adam learning rate.
        fresh_restarts: fresh initialisations trained beside the warm start.

    It prints as its fields (a long ``fit_iterations`` shortened to its ends
    and length) and shows as a table in a notebook.

    Example:
        >>> from ebmppl.schedule import WarmupSchedule
        >>> WarmupSchedule.default(500)
        WarmupSchedule(fit_iterations=(99, 199, 299, 399), window=100, fit_steps=150, batch_size=256,
                       learning_rate=0.003, fresh_restarts=1)
        >>> WarmupSchedule(fit_iterations=tuple(range(9, 1000, 10)), window=10)._rows()[0]
        ('fit_iterations', '(9, 19, 29, …, 989, 999) [100 items]')
    """

    fit_iterations: tuple[int, ...]
    window: int
    fit_steps: int = 150
    batch_size: int = 256
    learning_rate: float = 3e-3
    fresh_restarts: int = 1

    @classmethod
    def default(cls, num_warmup: int, num_fits: int = 4, max_window: int = 250) -> "WarmupSchedule":
        """Fits evenly spaced over the first 80% of warm-up, each on the states since the last.

        Args:
            num_warmup: the number of warm-up iterations of the run.
            num_fits: how many times the flow is fitted.
            max_window: cap on the window, in iterations.
        """
        if num_warmup < 5 * num_fits:
            return cls(fit_iterations=(), window=1)
        spacing = num_warmup // (num_fits + 1)
        fits = tuple(spacing * (k + 1) - 1 for k in range(num_fits))
        return cls(fit_iterations=fits, window=min(spacing, max_window))

    @classmethod
    def neutra(cls, num_warmup: int) -> "WarmupSchedule":
        """NeuTraHMC's default: a fitting budget that follows the warm-up length.

        One fit per 100 warm-up iterations, at most four, evenly spaced as in
        :meth:`default`, each warm-started from the last (no fresh restarts:
        a reverse-KL fit draws its own training points and does not get stuck
        on the chains' early states); each fit stops when its loss stops
        improving, within a cap of ``4 * num_warmup`` Adam steps (at least
        200, at most 2000): the cap binds only on hard targets (posteriordb's
        diamonds and kilpisjarvi, where fits of ``2 * num_warmup`` steps ended
        still improving and the draws failed their check).

        Example:
            >>> from ebmppl.schedule import WarmupSchedule
            >>> WarmupSchedule.neutra(1000).fit_iterations, WarmupSchedule.neutra(1000).fit_steps
            ((199, 399, 599, 799), 2000)
            >>> WarmupSchedule.neutra(200).fit_iterations, WarmupSchedule.neutra(200).fit_steps
            ((65, 131), 800)
        """
        num_fits = min(4, max(1, num_warmup // 100))
        steps = min(2000, max(200, 4 * num_warmup))
        return cls.default(num_warmup, num_fits=num_fits).replace(fit_steps=steps, fresh_restarts=0)

    def _rows(self) -> list[tuple[str, str]]:
        return [(field.name, format_value(getattr(self, field.name))) for field in dataclasses.fields(self)]

    def __repr__(self) -> str:
        return text("WarmupSchedule", self._rows())

    def _repr_html_(self) -> str:
        return html_table("WarmupSchedule", self._rows())

    def replace(self, **changes) -> "WarmupSchedule":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def validate(self, num_warmup: int) -> None:
        """Raise ValueError when the schedule does not fit a warm-up of ``num_warmup``."""
        fits = self.fit_iterations
        if list(fits) != sorted(set(fits)):
            raise ValueError(f"fit_iterations must be increasing and distinct, got {fits}")
        if fits and not (self.window - 1 <= fits[0] and fits[-1] < num_warmup):
            raise ValueError(
                f"fit_iterations {fits} must lie in [window - 1, num_warmup) = "
                f"[{self.window - 1}, {num_warmup}): the first fit needs a full window"
            )
        if self.window < 1 or self.fit_steps < 1 or self.batch_size < 1 or self.fresh_restarts < 0:
            raise ValueError(f"invalid schedule {self}")
