"""Short text and HTML views of results and settings, for notebooks (numpy only, both backends).

Every object that shows itself here does it one way: a list of ``(name,
value)`` rows of short strings, rendered by :func:`text` as
``Name(name=value, ...)`` packed into lines of at most 100 characters, and by
:func:`html_table` as a two-column HTML table (Jupyter calls ``_repr_html_``).
Arrays are never printed whole: :func:`format_value` shows their shape.

Example:
    >>> from ebmppl._repr import html_table, plus_minus, text
    >>> rows = [("log_z", plus_minus(1.23456, 0.0123)), ("ess", "950.3 of 1000 draws")]
    >>> print(text("LogPartition", rows))
    LogPartition(log_z=1.235 ± 0.012, ess=950.3 of 1000 draws)
    >>> html_table("LogPartition", rows)[:44]
    '<table><caption style="text-align:left"><b>L'
"""

from __future__ import annotations

import dataclasses
import html
import math

import numpy as np

__all__ = ["format_value", "html_table", "kernel_rows", "options_rows", "plus_minus", "text", "train_result_rows"]

_WIDTH = 100
_MAX_ITEMS = 6  # a longer tuple or list shows its first and last items and its length

# what a None option stands for, by option name
_NONE_MEANS = {"schedule": "default", "trajectory_length": "adapted"}


def format_value(value) -> str:
    """A value in a few characters: numbers to 4 significant digits, arrays by their shape.

    An option object of ebmppl (a ``WarmupSchedule``) shows the fields that
    differ from their defaults; another object shows its name or type.

    Example:
        >>> import numpy as np
        >>> [format_value(v) for v in (0.123456, 3, "mala", None, np.zeros((2, 3)), tuple(range(10)))]
        ['0.1235', '3', "'mala'", 'None', 'array(2, 3)', '(0, 1, 2, …, 8, 9) [10 items]']
        >>> from ebmppl.schedule import WarmupSchedule
        >>> format_value(WarmupSchedule(fit_iterations=(9,), window=10, fit_steps=50))
        'WarmupSchedule(fit_iterations=(9,), window=10, fit_steps=50)'
    """
    if value is None or isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        shown = f"{float(value):.4g}"
        return shown if any(c in shown for c in ".ein") else shown + ".0"  # 10.0 stays a float
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (tuple, list)):
        items = [format_value(v) for v in value]
        if len(items) > _MAX_ITEMS:
            items = items[:3] + ["…"] + items[-2:]
        body = ", ".join(items) + ("," if isinstance(value, tuple) and len(value) == 1 else "")
        shown = f"({body})" if isinstance(value, tuple) else f"[{body}]"
        return shown + (f" [{len(value)} items]" if len(value) > _MAX_ITEMS else "")
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return "array(" + ", ".join(str(int(n)) for n in value.shape) + ")"
    if dataclasses.is_dataclass(value) and type(value).__module__.startswith("ebmppl."):  # (a flow may be one too)
        changed = [field.name for field in dataclasses.fields(value)
                   if field.default is dataclasses.MISSING or getattr(value, field.name) != field.default]
        return f"{type(value).__name__}(" + ", ".join(f"{name}={format_value(getattr(value, name))}"
                                                     for name in changed) + ")"
    if callable(value) and hasattr(value, "__name__"):
        return value.__name__
    return f"<{type(value).__name__}>"


def plus_minus(value: float, error: float) -> str:
    """``value ± error``, the error to two significant digits and the value to the same decimals.

    Example:
        >>> plus_minus(-12.3456, 0.0789), plus_minus(1.5, float("inf"))
        ('-12.346 ± 0.079', '1.5 ± inf')
    """
    value, error = float(value), float(error)
    if not math.isfinite(error) or error <= 0 or not math.isfinite(value):
        return f"{value:.6g} ± {error:.2g}"
    decimals = max(0, 1 - math.floor(math.log10(error)))
    return f"{value:.{decimals}f} ± {error:.{decimals}f}"


def text(name: str, rows: list[tuple[str, str]]) -> str:
    """``name(key=value, ...)``, continued on further lines (aligned after the parenthesis) past 100 characters.

    Example:
        >>> print(text("Options", [(f"option_{i}", str(i)) for i in range(12)]))
        Options(option_0=0, option_1=1, option_2=2, option_3=3, option_4=4, option_5=5, option_6=6,
                option_7=7, option_8=8, option_9=9, option_10=10, option_11=11)
    """
    parts = [f"{key}={value}" for key, value in rows]
    indent = " " * (len(name) + 1)
    lines, line = [], name + "("
    for i, part in enumerate(parts):
        ending = "," if i < len(parts) - 1 else ""
        if line.strip() and not line.endswith("(") and len(line) + 1 + len(part) + len(ending) > _WIDTH:
            lines.append(line)
            line = indent + part + ending
        else:
            line += ("" if line.endswith("(") else " ") + part + ending
    return "\n".join(lines + [line + ")"])


def html_table(name: str, rows: list[tuple[str, str]]) -> str:
    """A two-column HTML table captioned ``name``, one row per ``(key, value)`` (escaped).

    Example:
        >>> print(html_table("Kernel", [("step_size", "0.1")]))
        <table><caption style="text-align:left"><b>Kernel</b></caption><tbody><tr><th style="text-align:left">step_size</th><td style="text-align:left">0.1</td></tr></tbody></table>
    """
    cells = "".join(
        f'<tr><th style="text-align:left">{html.escape(key)}</th>'
        f'<td style="text-align:left">{html.escape(value)}</td></tr>'
        for key, value in rows
    )
    return f'<table><caption style="text-align:left"><b>{html.escape(name)}</b></caption><tbody>{cells}</tbody></table>'


def options_rows(options) -> list[tuple[str, str]]:
    """One row per field of a frozen option object (``None`` shown as what it stands for).

    Example:
        >>> from ebmppl.options import NeuTraOptions
        >>> options_rows(NeuTraOptions())[:3]
        [('fit', "'reverse'"), ('step_size', '0.1'), ('trajectory_length', 'adapted')]
    """
    rows = []
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        rows.append((field.name, _NONE_MEANS[field.name] if value is None and field.name in _NONE_MEANS
                     else format_value(value)))
    return rows


def kernel_rows(model, potential_fn, flow, options, **extra) -> list[tuple[str, str]]:
    """The rows of a kernel's or trainer's view: its target, its flow, ``extra`` rows, then its options.

    Args:
        model: the model, or ``None``.
        potential_fn: the potential function, or ``None`` (shown only without a model).
        flow: the flow argument: ``None`` (the default flow), a factory or a flow.
        options: the frozen option object.
        **extra: more rows, e.g. ``num_walkers``, shown before the options when not ``None``.

    Example:
        >>> from ebmppl.options import FlowMCMCOptions
        >>> def model(): ...
        >>> kernel_rows(model, None, None, FlowMCMCOptions(), num_walkers=8)[:4]
        [('model', 'model'), ('flow', 'default'), ('num_walkers', '8'), ('num_particles', '16')]
    """
    target = ("model", format_value(model)) if model is not None else ("potential_fn", format_value(potential_fn))
    rows = [target, ("flow", "default" if flow is None else format_value(flow))]
    rows += [(name, format_value(value)) for name, value in extra.items() if value is not None]
    return rows + options_rows(options)


def train_result_rows(result, num_params: int) -> list[tuple[str, str]]:
    """The rows of a ``TrainResult``'s view: method, steps, parameter count, the history's last values.

    Args:
        result: a ``TrainResult`` of either backend (``state`` may be ``None``).
        num_params: how many numbers its ``params`` hold.

    Example:
        >>> from types import SimpleNamespace
        >>> result = SimpleNamespace(method="flow", state=None, history={"loss": [0.5, 0.25]})
        >>> train_result_rows(result, 290)
        [('method', "'flow'"), ('steps', '2'), ('params', '290'), ('loss', '0.25')]
    """
    history = result.history
    done = len(np.asarray(history["loss"])) if "loss" in history else 0
    steps = done if result.state is None else int(result.state.step)
    rows = [("method", format_value(result.method))] if result.method is not None else []
    rows += [("steps", f"{steps} ({done} in this run)" if steps != done else str(steps)),
             ("params", f"{num_params:,}")]
    for name, values in history.items():
        values = np.asarray(values)
        if len(values) and values.ndim == 1:
            rows.append((name, format_value(float(values[-1]))))
        elif len(values) and values.ndim == 2:
            rows.append((name, format_value([round(float(v), 3) for v in values[-1]])))
    return rows
