"""Backend-neutral helpers of the two backends (plain Python and numpy, no torch or jax).

Example:
    >>> from ebmppl._shared import check_flow_mcmc_options, interleaved_slots
    >>> check_flow_mcmc_options(model=object(), potential_fn=None, local_kernel="hmc",
    ...                         num_leapfrog=None, num_particles=8, num_local_steps=3,
    ...                         step_size=0.1, target_accept_prob=0.65)
    8
    >>> interleaved_slots(5, first_size=3)
    [0, 3, 1, 4, 2]
    >>> round(log_partition_from_log_weights([0.0] * 100).log_z, 6)  # equal weights: Z = 1
    0.0
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np

#: Adam steps between two looks at a reverse-KL fit's loss (both backends' ``fit_flow_reverse``).
#: A fit runs at its full learning rate while the mean minibatch loss of its chunks
#: improves on the best so far by more than the chunk's standard error and more than
#: ``FIT_TOLERANCE`` nats (a smaller gain in KL does not change the sampler); after
#: ``FIT_PATIENCE`` chunks in a row that do not, the rate drops to ``FIT_DECAY`` of
#: itself (to average out the minibatch noise), and after ``FIT_PATIENCE`` more such
#: chunks the fit stops. ``fit_steps`` caps it.
FIT_CHUNK = 50
FIT_PATIENCE = 3
FIT_DECAY = 0.1
FIT_TOLERANCE = 0.01

#: R-hat between walkers over the last warm-up window above which both backends' kernels
#: warn at the end of warm-up that the walkers have not mixed (:func:`warn_if_not_mixed`).
MIXING_RHAT = 1.1

__all__ = ["FIT_CHUNK", "FIT_DECAY", "FIT_PATIENCE", "FIT_TOLERANCE", "LogPartition", "MIXING_RHAT", "check_flow_mcmc_options", "check_neutra_options", "method_defaults", "interleaved_slots", "log_partition_from_log_weights", "walker_rhat",
           "warn_if_not_mixed"]


def check_flow_mcmc_options(
    *,
    model,
    potential_fn,
    local_kernel: str,
    num_leapfrog: int | None,
    num_particles: int,
    num_local_steps: int,
    step_size: float,
    target_accept_prob: float,
) -> int:
    """Check FlowMCMC's constructor arguments; return the number of leapfrog steps.

    Raises:
        ValueError: naming the argument that is out of range.
    """
    _check_kernel_target("FlowMCMC", model, potential_fn, target_accept_prob)
    if local_kernel not in ("mala", "hmc"):
        raise ValueError(f"local_kernel must be 'mala' or 'hmc', got {local_kernel!r}")
    if num_leapfrog is None:
        num_leapfrog = 1 if local_kernel == "mala" else 8
    if local_kernel == "mala" and num_leapfrog != 1:
        raise ValueError("MALA makes one leapfrog step: use local_kernel='hmc' for more")
    if num_particles < 2 or num_local_steps < 0 or num_leapfrog < 1 or step_size <= 0:
        raise ValueError(
            "need num_particles >= 2, num_local_steps >= 0, num_leapfrog >= 1, step_size > 0; "
            f"got {num_particles}, {num_local_steps}, {num_leapfrog}, {step_size}"
        )
    return num_leapfrog


def check_neutra_options(
    *,
    model,
    potential_fn,
    fit: str,
    step_size: float,
    trajectory_length: float | None,
    max_leapfrog: int,
    target_accept_prob: float,
) -> None:
    """Check NeuTraHMC's constructor arguments.

    Raises:
        ValueError: naming the argument that is out of range.
    """
    _check_kernel_target("NeuTraHMC", model, potential_fn, target_accept_prob)
    if fit not in ("forward", "reverse"):
        raise ValueError(f"fit must be 'forward' or 'reverse' (KL), got {fit!r}")
    if not step_size > 0 or int(max_leapfrog) < 1:
        raise ValueError(f"need step_size > 0 and max_leapfrog >= 1, got {step_size}, {max_leapfrog}")
    if trajectory_length is not None and not trajectory_length > 0:
        raise ValueError(f"trajectory_length must be positive or None (adapted), got {trajectory_length}")


def _check_kernel_target(name: str, model, potential_fn, target_accept_prob: float) -> None:
    """What every kernel checks: one target, and an acceptance to aim at in (0, 1)."""
    if (model is None) == (potential_fn is None):
        raise ValueError(f"{name} needs exactly one of `model` and `potential_fn`")
    if not 0.0 < target_accept_prob < 1.0:
        raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob}")


def method_defaults(method: str, num_local_steps: int | None, target_accept_prob: float | None,
                    step_size: float | None):
    """EBMTrainer's local steps, acceptance target and initial step size for ``method`` where not given.

    ``"neutra"`` (NT-EBM) runs 128 MALA steps in the flow's latent space, where
    the model is close to a standard normal, aiming at 0.75 as in the paper's
    baseline, from a step of 0.5; the other methods 25 steps per round in
    data space aiming at 0.65, from a step of 0.05.
    """
    neutra = method == "neutra"
    num_local_steps = (128 if neutra else 25) if num_local_steps is None else num_local_steps
    target_accept_prob = (0.75 if neutra else 0.65) if target_accept_prob is None else target_accept_prob
    step_size = (0.5 if neutra else 0.05) if step_size is None else step_size
    return num_local_steps, target_accept_prob, step_size


def interleaved_slots(dim: int, first_size: int) -> list[int]:
    """Slots for principal components sorted by decreasing variance.

    Coupling layers split coordinates into a first group ``[0, first_size)``
    and the rest; putting components 1, 3, 5... in the first group and 2, 4,
    6... in the second makes the two largest directions condition each other
    in every layer, whatever the dimension.
    """
    first, second = list(range(first_size)), list(range(first_size, dim))
    slots = []
    for k in range(dim):
        source = first if (k % 2 == 0 and first) or not second else second
        slots.append(source.pop(0))
    return slots


class LogPartition(NamedTuple):
    """An importance-sampling estimate of ``log Z``.

    Attributes:
        log_z: the estimate ``log mean(w)``, ``w = exp(-E(x)) base(x) / q(x)`` at flow draws ``x``.
        stderr: its standard error (delta method, ``std(w) / (mean(w) sqrt(n))``).
        ess: effective sample size of the weights, ``(Σw)² / Σw²``.
        num_samples: flow draws used.
    """

    log_z: float
    stderr: float
    ess: float
    num_samples: int


def log_partition_from_log_weights(log_weights, min_ess_fraction: float = 0.01) -> LogPartition:
    """``log Z`` from log importance weights (numpy, float64), warning when the ESS is too low.

    Raises:
        ValueError: a weight is NaN or ``+inf`` (the energy is NaN or ``-inf``
            at some draws), or every weight is zero.
    """
    log_w = np.asarray(log_weights, dtype=np.float64).ravel()
    n = log_w.size
    bad = np.isnan(log_w) | (log_w == np.inf)
    if bad.any():
        raise ValueError(
            f"log_partition: the energy is NaN or -inf at {int(bad.sum())} of {n} flow draws "
            "(their importance weights are NaN or infinite)"
        )
    top = log_w.max()
    if top == -np.inf:
        raise ValueError(f"log_partition: all {n} importance weights are zero (the energy is +inf at every draw)")
    w = np.exp(log_w - top)
    mean = w.mean()
    stderr = float(w.std(ddof=1) / (mean * math.sqrt(n))) if n > 1 else math.inf
    ess = float(w.sum() ** 2 / (w**2).sum())
    if ess < max(10.0, min_ess_fraction * n):
        warnings.warn(
            f"log_partition: the importance weights' effective sample size is {ess:.1f} of {n} draws; "
            "the flow is far from the model and the estimate and its standard error are not to be trusted"
        )
    return LogPartition(float(top + math.log(mean)), stderr, ess, n)


def walker_rhat(window) -> tuple[float, int]:
    """Split R-hat between walkers over a window of positions ``(iterations, walkers, D)`` in order.

    Each walker's window is cut in two halves, and the halves are the chains
    of Gelman and Rubin's R-hat: it is large when the walkers sit in different
    places and when they still drift together. Returns the largest over the
    coordinates and the flat coordinate where it is; a coordinate that no
    walker moved gives 1.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> mixed = rng.normal(size=(100, 8, 2))
        >>> round(walker_rhat(mixed)[0], 1)
        1.0
        >>> walker_rhat(mixed + np.arange(8)[None, :, None])[0] > 2  # each walker in its own place
        True
        >>> walker_rhat(mixed + np.linspace(0, 4, 100)[:, None, None])[0] > 1.2  # all drifting together
        True
    """
    w = np.asarray(window, dtype=np.float64)
    half = w.shape[0] // 2
    w = np.concatenate([w[:half], w[half:2 * half]], axis=1)
    n = w.shape[0]
    within = w.var(0, ddof=1).mean(0)
    between = n * w.mean(0).var(0, ddof=1)
    pooled = (n - 1) / n * within + between / n
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = np.where(within > 0, np.sqrt(pooled / within), np.where(between > 0, np.inf, 1.0))
    rhat = np.where(np.isnan(rhat), np.inf, rhat)
    k = int(np.argmax(rhat))
    return float(rhat[k]), k


def warn_if_not_mixed(kernel: str, window, num_warmup: int, setting: str, site_of=None) -> float | None:
    """Warn when the walkers have not mixed by the end of warm-up; return the R-hat.

    ``window`` is the kernels' ring buffer of the warm-up's last positions,
    ``(W, walkers, D)``: iteration ``i`` is at row ``i % W``, and only the last
    ``min(W, num_warmup)`` iterations were written. Their split R-hat
    (:func:`walker_rhat`) above :data:`MIXING_RHAT` means the walkers still
    sit in different places or still drift: the draws would not represent
    the target. The warning names the host's setting for a longer warm-up
    (``num_warmup`` in NumPyro, ``warmup_steps`` in Pyro) and, with
    ``site_of(k)``, the site of the worst coordinate. Windows of fewer than 10
    iterations or one walker are not checked (``None``).

    Example:
        >>> import warnings
        >>> import numpy as np
        >>> stuck = np.random.default_rng(0).normal(size=(100, 8, 2)) + np.arange(8)[None, :, None]
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     rhat = warn_if_not_mixed("FlowMCMC", stuck, 500, "num_warmup")
        >>> "num_warmup=1000" in str(caught[0].message)
        True
    """
    w = np.asarray(window, dtype=np.float64)
    rows = min(w.shape[0], int(num_warmup))
    if rows < 10 or w.ndim != 3 or w.shape[1] < 2:
        return None
    size = w.shape[0]
    rhat, k = walker_rhat(w[[(int(num_warmup) - rows + j) % size for j in range(rows)]])
    if rhat > MIXING_RHAT:
        where = f"coordinate {k} of the flattened unconstrained sites"
        if site_of is not None:
            where += f", in site {site_of(k)!r}"
        warnings.warn(
            f"{kernel}: the walkers have not mixed by the end of warm-up: split R-hat between walkers over "
            f"the last {rows} warm-up iterations is {rhat:.2f} ({where}), so the draws may not represent "
            f"the target. Run a longer warm-up ({setting}={2 * int(num_warmup)} or more) and check R-hat "
            "of the draws.",
            stacklevel=2,
        )
    return rhat
