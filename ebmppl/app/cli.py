"""The ``ebmppl`` command line: train an energy-based model on your data, then sample it.

    ebmppl train --data points.csv --out runs/mine          # NumPyro, method "flow"
    ebmppl train --out runs/mine --resume                   # after Ctrl-C
    ebmppl sample --run runs/mine --num 10000 --out draws.npy

``train`` writes the run folder: ``config.json``, the data (``train.npy``,
``test.npy``), the checkpoint, ``metrics.json`` (loss history, acceptance,
``log Z`` with its standard error, train/test log-likelihood, mode weights
for data with known modes) and the report's figures. Bad input gets a
one-line message and exit status 2; an interrupted run exits with 130 and
resumes with ``--resume``.

Example:
    >>> from ebmppl.app.cli import main
    >>> main(["train", "--data", "no_such_file.csv"])
    2
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np

from ebmppl import __version__
from ebmppl.app.config import DEFAULTS, RunError, new_config, read_config, write_json
from ebmppl.app.data import BUILTIN_DATA, DEFAULT_DATA, RunData, load_run_data, prepare_data, save_run_data
from ebmppl.app.loop import Interrupted, deferred_interrupt
from ebmppl.app.report import RunResult, write_report
from ebmppl.options import METHODS

__all__ = ["main", "main_exit"]

_BACKENDS = ("numpyro", "pyro")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ebmppl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ebmppl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    _add_sample(commands)
    return parser


def _add_train(commands) -> None:
    train = commands.add_parser(
        "train", help="train an EBM and its flow on a data set; write a run folder with a report",
        description="Train an energy-based model by maximum likelihood with flow-assisted negatives "
                    "(Grenioux et al. 2023) and write the run folder: checkpoint, config.json, "
                    "metrics.json and PNG figures.",
    )
    train.add_argument("--data", help=f"a .npy or .csv file (one point per row) or a built-in set: "
                                      f"{', '.join(BUILTIN_DATA)} (default {DEFAULT_DATA})")
    train.add_argument("--backend", choices=_BACKENDS, help="default numpyro")
    train.add_argument("--method", choices=METHODS, help="flow (default), ula, short-run or neutra (NT-EBM: a flow backbone)")
    train.add_argument("--steps", type=int, help=f"training updates (default {DEFAULTS['steps']})")
    train.add_argument("--out", default="runs/train", help="run folder (default runs/train)")
    train.add_argument("--seed", type=int, help="random seed (default 0)")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)


def _add_sample(commands) -> None:
    sample = commands.add_parser(
        "sample", help="draw from a trained run with its flow and MCMC (FlowMCMC)",
        description="Draw from a trained model: FlowMCMC with the run's frozen flow as proposal.",
    )
    sample.add_argument("--run", required=True, help="a run folder written by `ebmppl train`")
    sample.add_argument("--num", type=int, default=10_000, help="draws (default 10000)")
    sample.add_argument("--out", required=True, help="a .npy file for the draws, shape (num, D)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    sample.set_defaults(func=_sample)


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0, 2 for bad input (a one-line message), 130 when
        interrupted.
    """
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except RunError as err:
        print(f"ebmppl: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before training began (or while sampling)
        print("ebmppl: interrupted", file=sys.stderr)
        return 130


def main_exit() -> None:
    """The console script: ``sys.exit(main())``."""
    sys.exit(main())


def _backend(name: str):
    """The backend's part of the app (imports torch or jax)."""
    return importlib.import_module(f"ebmppl.app.{name}_run")


def _train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.steps is not None and args.steps < 1:
        raise RunError(f"--steps must be at least 1, got {args.steps}")
    config, data = _resumed_run(args, out) if args.resume else _new_run(args, out)
    start = time.perf_counter()
    try:
        with deferred_interrupt():  # Ctrl-C while the backend loads or compiles stops before the first step
            result = _backend(config["backend"]).train(out, config, data, resume=args.resume,
                                                       progress=not args.quiet)
    except Interrupted as stop:
        print(f"ebmppl: interrupted after {stop.steps_done} of {config['steps']} steps; the checkpoint in "
              f"{str(out)!r} is saved: continue with `ebmppl train --out {out} --resume`", file=sys.stderr)
        return 130
    wall = time.perf_counter() - start
    metrics = write_report(out, data, result, wall)
    write_json(out / "config.json", {**config, "finished": True})
    _print_trained(out, config, data, result, metrics, wall)
    return 0


def _resumed_run(args: argparse.Namespace, out: Path) -> tuple[dict, RunData]:
    """The configuration and data of the run to resume in ``out``, checked against the flags given."""
    config = read_config(out)
    given = {"backend": args.backend, "method": args.method, "steps": args.steps, "seed": args.seed,
             "data": args.data}
    for name, value in given.items():
        if value is not None and value != config[name]:
            raise RunError(f"--resume continues the run as it was configured: it has --{name} "
                           f"{config[name]}, not {value}")
    if config.get("finished"):
        raise RunError(f"the run in {str(out)!r} has finished ({config['steps']} steps): nothing to resume")
    return config, load_run_data(out, config)


def _new_run(args: argparse.Namespace, out: Path) -> tuple[dict, RunData]:
    """A new run in ``out``: its data prepared and saved, its ``config.json`` written."""
    if (out / "config.json").exists():
        raise RunError(f"{str(out)!r} already holds a run: continue it with --resume, or choose another --out")
    seed = 0 if args.seed is None else args.seed
    spec = DEFAULT_DATA if args.data is None else args.data
    data = prepare_data(spec, seed)
    config = new_config(spec, data, backend=args.backend or "numpyro", method=args.method or "flow", seed=seed,
                        steps=args.steps or DEFAULTS["steps"])
    out.mkdir(parents=True, exist_ok=True)
    save_run_data(out, data)
    write_json(out / "config.json", config)
    return config, data


def _print_trained(out: Path, config: dict, data: RunData, result: RunResult, metrics: dict, wall: float) -> None:
    print(f"ebmppl: trained {config['method']} ({config['backend']}) on {config['data']} in {wall:.0f} s; "
          f"report in {out}/")
    print(f"  log Z = {metrics['log_z']:.4f} ± {result.log_partition.stderr:.4f} (ESS {metrics['log_z_ess']:.0f}); "
          f"log-likelihood train {metrics['train_log_likelihood']:.4f}, test {metrics['test_log_likelihood']:.4f}")
    if data.target is not None:
        model = ", ".join(f"{w:.3f}" for w in metrics["mode_weights"])
        true = ", ".join(f"{w:.3f}" for w in metrics["true_mode_weights"])
        print(f"  mode weights: model {model}; true {true}")


def _sample(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".npy":
        raise RunError(f"--out must name a .npy file, got {str(out)!r}")
    if args.num < 1:
        raise RunError(f"--num must be at least 1, got {args.num}")
    config = read_config(args.run)
    if not config.get("finished"):
        raise RunError(f"the run in {args.run!r} has not finished training: resume it first")
    result = _backend(config["backend"]).sample_run(args.run, args.num, seed=args.seed, progress=not args.quiet)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, result.draws)
    print(f"ebmppl: {len(result.draws)} draws in {out}; acceptance {result.accept_prob:.2f} "
          f"(flow moves {result.global_accept_prob:.2f}), min bulk ESS {result.min_ess:.0f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    main_exit()
