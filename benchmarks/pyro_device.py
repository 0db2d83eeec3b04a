"""The Pyro FlowMCMC on the CPU and on a CUDA GPU, side by side, in one run.

Target (b) of ``flow_mcmc.py``: 10-D, unit modes at (±6, ±6, 0, ...), weights
0.4/0.3/0.2/0.1; ``--walkers`` walkers (default 40, and a larger batch where
a GPU pays off), 500 warm-up iterations and 500 draws. Prints wall seconds,
min bulk ESS, ESS/s, max weight error and max R-hat per device.

    python benchmarks/pyro_device.py --walkers 40 400 --devices cpu cuda
"""

from __future__ import annotations

import argparse
import time

import arviz as az
import numpy as np
import pyro
import torch
from pyro.infer import MCMC

from ebmppl.datasets import four_mode_mixture
from ebmppl.pyro import FlowMCMC


def run(device: str, walkers: int, seed: int = 0) -> dict:
    target = four_mode_mixture(dim=10)
    torch.set_default_device(device)
    try:
        pyro.set_rng_seed(seed)
        init = 3.0 * torch.randn(walkers, 10)
        kernel = FlowMCMC(potential_fn=lambda p: -target.log_prob(p["x"], torch))
        mcmc = MCMC(kernel, num_samples=500, warmup_steps=500, initial_params={"x": init},
                    disable_progbar=True)
        start = time.perf_counter()
        mcmc.run()
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        x = mcmc.get_samples(group_by_chain=True)["x"].cpu().numpy()  # (walkers, draws, D)
    finally:
        torch.set_default_device("cpu")
    data = az.convert_to_dataset({"x": x})
    ess = float(az.ess(data)["x"].min())
    return {"wall": wall, "ess": ess, "ess_s": ess / wall, "rhat": float(az.rhat(data)["x"].max()),
            "error": float(np.abs(target.mode_weights(x) - target.weights).max()),
            "device": str(mcmc.kernel.state.position.device)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walkers", type=int, nargs="+", default=[40])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    args = parser.parse_args()
    devices = [d for d in args.devices if d != "cuda" or torch.cuda.is_available()]
    print(f"{'device':8} {'walkers':>7} {'wall s':>7} {'min ESS':>8} {'ESS/s':>8} {'R-hat':>6} {'max w err':>9}")
    for walkers in args.walkers:
        for device in devices:
            r = run(device, walkers)
            print(f"{r['device']:8} {walkers:7d} {r['wall']:7.1f} {r['ess']:8.0f} {r['ess_s']:8.1f} "
                  f"{r['rhat']:6.3f} {r['error']:9.4f}", flush=True)


if __name__ == "__main__":
    main()
