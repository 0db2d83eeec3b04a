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
    >>> from ebmppl.cli import main
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
from ebmppl.runs import (
    BUILTIN_DATA,
    DEFAULT_DATA,
    DEFAULTS,
    RUN_FORMAT,
    Interrupted,
    RunError,
    deferred_interrupt,
    finite_or_none,
    load_run_data,
    prepare_data,
    read_config,
    write_json,
    write_report,
)

__all__ = ["main", "main_exit"]

from ebmppl.options import METHODS  # noqa: E402
BACKENDS = ("numpyro", "pyro")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ebmppl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ebmppl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train an EBM and its flow on a data set; write a run folder with a report",
        description="Train an energy-based model by maximum likelihood with flow-assisted negatives "
                    "(Grenioux et al. 2023) and write the run folder: checkpoint, config.json, "
                    "metrics.json and PNG figures.",
    )
    train.add_argument("--data", help=f"a .npy or .csv file (one point per row) or a built-in set: "
                                      f"{', '.join(BUILTIN_DATA)} (default {DEFAULT_DATA})")
    train.add_argument("--backend", choices=BACKENDS, help="default numpyro")
    train.add_argument("--method", choices=METHODS, help="flow (default), ula, short-run or neutra (NT-EBM: a flow backbone)")
    train.add_argument("--steps", type=int, help=f"training updates (default {DEFAULTS['steps']})")
    train.add_argument("--out", default="runs/train", help="run folder (default runs/train)")
    train.add_argument("--seed", type=int, help="random seed (default 0)")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 2 for bad input, 130 when interrupted)."""
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
    return importlib.import_module(f"ebmppl.{name}.runs")


def _train(args) -> int:
    out = Path(args.out)
    if args.steps is not None and args.steps < 1:
        raise RunError(f"--steps must be at least 1, got {args.steps}")
    if args.resume:
        config = read_config(out)
        given = {"backend": args.backend, "method": args.method, "steps": args.steps, "seed": args.seed,
                 "data": args.data}
        for name, value in given.items():
            if value is not None and value != config[name]:
                raise RunError(f"--resume continues the run as it was configured: it has --{name} "
                               f"{config[name]}, not {value}")
        if config.get("finished"):
            raise RunError(f"the run in {str(out)!r} has finished ({config['steps']} steps): nothing to resume")
        data = load_run_data(out, config)
    else:
        if (out / "config.json").exists():
            raise RunError(f"{str(out)!r} already holds a run: continue it with --resume, or choose another --out")
        seed = 0 if args.seed is None else args.seed
        spec = DEFAULT_DATA if args.data is None else args.data
        data = prepare_data(spec, seed)
        config = dict(
            format=RUN_FORMAT, version=__version__, backend=args.backend or "numpyro",
            method=args.method or "flow", data=spec, data_name=spec if spec in BUILTIN_DATA else None,
            seed=seed, dim=int(data.train.shape[1]), loc=data.loc.tolist(), scale=data.scale.tolist(),
            **{**DEFAULTS, "steps": args.steps or DEFAULTS["steps"]}, finished=False,
        )
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "train.npy", data.train)
        np.save(out / "test.npy", data.test)
        write_json(out / "config.json", config)

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

    history = result["history"]
    log_density = result["log_density"]
    metrics = dict(
        steps=int(len(history["loss"])),
        wall_seconds=round(wall, 1),
        log_z=result["log_z"], log_z_stderr=finite_or_none(result["log_z_stderr"]), log_z_ess=result["log_z_ess"],
        train_log_likelihood=finite_or_none(float(np.mean(log_density(data.train)))),
        test_log_likelihood=finite_or_none(float(np.mean(log_density(data.test)))),
        final_global_accept_prob=float(np.mean(history["global_accept_prob"][-100:])),
        final_local_accept_prob=float(np.mean(history["local_accept_prob"][-100:])),
        loss=np.asarray(history["loss"], float).tolist(),
        global_accept_prob=np.asarray(history["global_accept_prob"], float).tolist(),
        local_accept_prob=np.asarray(history["local_accept_prob"], float).tolist(),
    )
    if data.target is not None:
        metrics["true_mode_weights"] = data.target.weights.tolist()
        metrics["mode_weights"] = result["mode_weights"]
        metrics["negatives_mode_weights"] = data.target.mode_weights(result["samples"]).tolist()
        metrics["mode_weights_over_training"] = np.asarray(history["mode_weights"], float).tolist()
    metrics["figures"] = write_report(out, data, result["samples"], history, log_density)
    write_json(out / "metrics.json", metrics)
    write_json(out / "config.json", {**config, "finished": True})

    print(f"ebmppl: trained {config['method']} ({config['backend']}) on {config['data']} in {wall:.0f} s; "
          f"report in {out}/")
    print(f"  log Z = {metrics['log_z']:.4f} ± {result['log_z_stderr']:.4f} (ESS {metrics['log_z_ess']:.0f}); "
          f"log-likelihood train {metrics['train_log_likelihood']:.4f}, test {metrics['test_log_likelihood']:.4f}")
    if data.target is not None:
        model = ", ".join(f"{w:.3f}" for w in metrics["mode_weights"])
        true = ", ".join(f"{w:.3f}" for w in metrics["true_mode_weights"])
        print(f"  mode weights: model {model}; true {true}")
    return 0


def _sample(args) -> int:
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
    np.save(out, result["draws"])
    print(f"ebmppl: {len(result['draws'])} draws in {out}; acceptance {result['accept_prob']:.2f} "
          f"(flow moves {result['global_accept_prob']:.2f}), min bulk ESS {result['min_ess']:.0f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    main_exit()
