"""The field's standard targets, side by side with the samplers users would pick instead.

Targets (``benchmarks/targets.py``, each with exact draws and a known
``log Z``): GMM-40, Many-Well-32, the 10-D funnel, the 50-D mixture of 10
Student-t modes (Beyond ELBOs' ``StudentTMixtureModel``) and ebmppl's 10-D
4-mode mixture. Every sampler of a seed starts from the same draws of the
target's broad ``prior`` (uniform over the GMM-40 box, uniform over
[-15, 15]⁵⁰ for MoS-50, ``N(0, 2²)`` for Many-Well, ``N(0, 3²)`` otherwise).

Samplers, with their defaults: ebmppl ``FlowMCMC`` (NumPyro, 40 chains) and
``Pyro FlowMCMC`` (40 walkers), ``NeuTraHMC`` (NumPyro, 8 chains), NumPyro
``NUTS`` (8 vectorized chains), each 1000 warm-up + 1000 kept iterations a
chain; ``log Z`` of ours by ``log_evidence`` (100,000 draws of the frozen
flow). Peers (``benchmarks/peers.py``, the ``bench`` extra): flowMC 0.6.4's
MALA and parallel-tempering bundles (40 chains, 1000 production steps),
pocoMC 1.2.6 and BlackJAX 1.7 adaptive tempered SMC (their own particle
counts; both give ``log Z``).

Metrics per run: wall seconds (compilation included; ``--compile`` runs each
sampler twice on the first seed and reports the difference as compilation),
``log Z`` seconds apart, EMC (entropy of the mode labels / ln K), the max
mode-weight error beside the i.i.d. floor (the mean of the same metric over
20 sets of exact draws of the same size), ``|Δ log Z|``, the unbiased MMD²
between 2,000 draws and 2,000 exact draws beside the same for two exact sets
(Gaussian kernels of bandwidth the median distance of exact draws, and a
quarter and a sixteenth of it), KS p-value of v and the neck mass
``P(v < -6)`` (funnel), the deep-side occupancy of every well and its worst z-score in
MCSE units (Many-Well), min bulk ESS over coordinates (MCMC; an SMC run's
ESS is its number of particles), ESS/s and target evaluations.

    python benchmarks/standard_targets.py                         # all targets and samplers, seed 0
    python benchmarks/standard_targets.py --seeds 0 1 2 3 4 --samplers FlowMCMC
    python benchmarks/standard_targets.py --targets gmm40 --samplers FlowMCMC pocoMC --compile
    python benchmarks/standard_targets.py --quick                 # smoke run, tiny budget
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))

from targets import TARGETS, WELL_DEEP, FUNNEL_NECK, Target, torch_log_density  # noqa: E402

CHAINS, NUTS_CHAINS, WARMUP, SAMPLES = 40, 8, 1000, 1000
EVIDENCE_DRAWS = 100_000
MMD_POINTS = 2000


# --- our samplers and NUTS -------------------------------------------------------------------

def _numpyro_kernel(name: str, target: Target):
    from numpyro.infer import NUTS

    from ebmppl.numpyro import FlowMCMC, NeuTraHMC

    potential = lambda x: -target.log_density(x)  # noqa: E731
    return {"FlowMCMC": FlowMCMC, "NeuTraHMC": NeuTraHMC, "NUTS": NUTS}[name](potential_fn=potential)


def _flow_mcmc_evals_per_iteration() -> int:
    """Target evaluations of one default FlowMCMC iteration and chain: the i-SIR candidates other
    than the current state, and one value-and-gradient per leapfrog step of the local moves."""
    from ebmppl.options import FlowMCMCOptions

    options = FlowMCMCOptions().validate()
    return options.num_particles - 1 + options.num_local_steps * options.num_leapfrog


def run_numpyro(name: str, target: Target, init: np.ndarray, seed: int, warmup: int, samples: int) -> dict:
    from numpyro.infer import MCMC

    from ebmppl.numpyro import log_evidence

    chains = init.shape[0]
    mcmc = MCMC(_numpyro_kernel(name, target), num_warmup=warmup, num_samples=samples, num_chains=chains,
                chain_method="vectorized", progress_bar=False)
    extra = ("num_steps",) if name in ("NUTS", "NeuTraHMC") else ("global_accept_prob",)
    start = time.perf_counter()
    mcmc.run(jax.random.key(seed), init_params=jnp.asarray(init, jnp.float32), extra_fields=extra)
    draws = np.asarray(mcmc.get_samples(group_by_chain=True), np.float64)
    wall = time.perf_counter() - start
    out = {"chains": draws, "wall_s": wall, "log_z": None, "log_z_s": None}
    fields = mcmc.get_extra_fields(group_by_chain=True)
    if name == "FlowMCMC":
        out["num_evals"] = chains * (warmup + samples) * _flow_mcmc_evals_per_iteration()
        out["global_accept"] = float(np.mean(fields["global_accept_prob"]))
    else:  # leapfrog steps of the kept draws, scaled to warm-up too (NeuTraHMC's fits not counted)
        out["num_evals"] = int(np.sum(fields["num_steps"]) * (warmup + samples) / samples)
    if name != "NUTS":
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimate = log_evidence(jax.random.key(seed + 1000), mcmc, EVIDENCE_DRAWS)
        out.update(log_z=estimate.log_z, log_z_stderr=estimate.stderr, log_z_ess=estimate.ess,
                   log_z_s=time.perf_counter() - start)
        out["num_evals"] += EVIDENCE_DRAWS
    return out


def run_pyro_flow(target: Target, init: np.ndarray, seed: int, warmup: int, samples: int) -> dict:
    import pyro
    import torch
    from pyro.infer import MCMC

    from ebmppl.pyro import FlowMCMC, log_evidence

    torch.set_num_threads(1)  # two torch threads on two cores shared with JAX ran 2-3x slower
    log_density = torch_log_density(target)
    kernel = FlowMCMC(potential_fn=lambda params: -log_density(params["x"]), num_walkers=init.shape[0])
    pyro.set_rng_seed(seed)
    mcmc = MCMC(kernel, warmup_steps=warmup, num_samples=samples, disable_progbar=True,
                initial_params={"x": torch.as_tensor(init, dtype=torch.float32)})
    start = time.perf_counter()
    mcmc.run()
    draws = mcmc.get_samples(group_by_chain=True)["x"].double().numpy()
    wall = time.perf_counter() - start
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimate = log_evidence(mcmc, EVIDENCE_DRAWS)
    per_iteration = _flow_mcmc_evals_per_iteration()
    return {"chains": draws, "wall_s": wall, "log_z": estimate.log_z, "log_z_stderr": estimate.stderr,
            "log_z_ess": estimate.ess, "log_z_s": time.perf_counter() - start,
            "num_evals": init.shape[0] * (warmup + samples) * per_iteration + EVIDENCE_DRAWS,
            "global_accept": float(kernel.sample_stats[-1]["global_accept_prob"].mean())}


def run_peer(name: str, target: Target, seed: int, quick: bool) -> dict:
    import peers

    runner = {"flowMC": peers.run_flowmc_mala, "flowMC-PT": peers.run_flowmc_pt,
              "pocoMC": peers.run_pocomc, "BlackJAX SMC": peers.run_blackjax_smc}[name]
    num_draws = (4000 if quick else CHAINS * SAMPLES) if name.startswith("flowMC") else (1000 if quick else 4096)
    out = runner(target.log_density, target.prior, target.dim, num_draws, seed)
    return out


SAMPLERS = ("FlowMCMC", "Pyro FlowMCMC", "NeuTraHMC", "NUTS", "flowMC", "flowMC-PT", "pocoMC", "BlackJAX SMC")


def run(name: str, target: Target, seed: int, quick: bool) -> dict:
    from peers import sample_prior

    init = sample_prior(target.prior, target.dim, CHAINS, seed)  # the same points for every sampler of a seed
    warmup, samples = (200, 200) if quick else (WARMUP, SAMPLES)
    if name in ("FlowMCMC", "NeuTraHMC", "NUTS"):
        chains = CHAINS if name == "FlowMCMC" else NUTS_CHAINS
        return run_numpyro(name, target, init[:chains], seed, warmup, samples)
    if name == "Pyro FlowMCMC":
        return run_pyro_flow(target, init, seed, warmup, samples)
    return run_peer(name, target, seed, quick)


# --- metrics ---------------------------------------------------------------------------------

def _emc(labels: np.ndarray, k: int) -> float:
    w = np.bincount(labels, minlength=k) / labels.size
    w = w[w > 0]
    return float(max(-(w * np.log(w)).sum(), 0.0) / math.log(k))


def _max_weight_error(labels: np.ndarray, weights: np.ndarray) -> float:
    return float(np.abs(np.bincount(labels, minlength=weights.size) / labels.size - weights).max())


def iid_floor(target: Target, n: int, seed: int, reps: int = 20) -> float:
    """The mean max mode-weight error of ``n`` exact draws (``reps`` sets)."""
    rng = np.random.default_rng(10_000 + seed)
    return float(np.mean([_max_weight_error(target.modes(target.sample(rng, n)), target.weights)
                          for _ in range(reps)]))


def mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """The unbiased estimate of the squared MMD (negative values are noise around 0), with the sum of
    three Gaussian kernels of bandwidths ``bandwidth * (1, 1/4, 1/16)``: the spread between modes and
    within them."""
    def gram(a, b):
        sq = np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None], 0)
        return sum(np.exp(-sq / (2 * (bandwidth * f) ** 2)) for f in (1.0, 0.25, 0.0625))

    kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
    n, m = len(x), len(y)
    value = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
             - 2 * kxy.mean())
    return float(value)


def _mcse_of_mean(indicator: np.ndarray) -> float:
    """MCSE of the mean of a chain-shaped ``(C, N)`` array, or of iid values ``(N,)``."""
    if indicator.ndim == 2:
        return float(az.mcse(az.convert_to_dataset({"v": indicator.astype(float)}))["v"])
    return float(indicator.std() / math.sqrt(indicator.size))


def _z(estimate: float, truth: float, mcse: float) -> float:
    """``(estimate - truth) / mcse``; a chain set that never moved (MCSE 0) is infinitely far off."""
    if mcse > 0:
        return (estimate - truth) / mcse
    return 0.0 if estimate == truth else math.copysign(math.inf, estimate - truth)


def score(target: Target, key: str, out: dict, seed: int) -> dict:
    chains = out.get("chains")
    flat = chains.reshape(-1, target.dim) if chains is not None else np.asarray(out["samples"], np.float64)
    n = len(flat)
    row = {"n": n, "wall_s": out["wall_s"], "compile_s": out.get("compile_s"), "num_evals": out.get("num_evals")}
    if chains is not None:
        ess = az.ess(az.convert_to_dataset({"x": chains}), method="bulk")["x"].values
        row["ess"] = float(np.nanmin(ess))
        row["rhat"] = float(np.nanmax(az.rhat(az.convert_to_dataset({"x": chains}))["x"].values))
    else:
        row["ess"] = float(n)
    row["ess_per_s"] = row["ess"] / out["wall_s"]
    if out.get("log_z") is not None:
        row["log_z"] = out["log_z"]
        row["abs_dlogz"] = abs(out["log_z"] - target.log_z)
        row["log_z_stderr"] = out.get("log_z_stderr")
        row["log_z_s"] = out.get("log_z_s")
        row["log_z_ess"] = out.get("log_z_ess")
    for extra in ("global_accept",):
        if extra in out:
            row[extra] = out[extra]
    rng = np.random.default_rng(seed)
    exact = target.sample(rng, MMD_POINTS)
    exact2 = target.sample(rng, MMD_POINTS)
    bandwidth = float(np.median(np.sqrt(((exact[:500, None] - exact[None, :500]) ** 2).sum(-1))))
    pick = flat[rng.choice(n, MMD_POINTS, replace=False)] if n >= MMD_POINTS else flat
    row["mmd2"] = mmd2(pick, exact, bandwidth)
    row["mmd2_floor"] = mmd2(exact2, exact, bandwidth)
    if target.modes is not None:
        labels = target.modes(flat)
        k = target.weights.size
        row["modes_found"] = int(np.unique(labels).size)
        row["emc"] = _emc(labels, k)
        row["emc_exact"] = _emc(target.modes(target.sample(rng, n)), k)
        row["max_weight_err"] = _max_weight_error(labels, target.weights)
        row["floor"] = iid_floor(target, n, seed)
    if key == "funnel10":
        v = flat[:, 0]
        thin = v[np.linspace(0, n - 1, min(n, 1000)).astype(int)] if chains is None else \
            chains[:, np.linspace(0, chains.shape[1] - 1, max(1, 1000 // chains.shape[0])).astype(int), 0].ravel()
        row["ks_p"] = float(stats.kstest(thin, stats.norm(0, 3).cdf).pvalue)
        neck = (chains[..., 0] < -6) if chains is not None else (v < -6)
        row["neck"] = float(neck.mean())
        row["neck_z"] = _z(row["neck"], FUNNEL_NECK, _mcse_of_mean(neck))
    if key == "manywell32":
        deep = (chains[..., 0::2] > 0) if chains is not None else (flat[:, 0::2] > 0)
        occupancy = deep.reshape(-1, 16).mean(0)
        mcse = np.array([_mcse_of_mean(deep[..., j]) for j in range(16)])
        row["occupancy_min"], row["occupancy_max"] = float(occupancy.min()), float(occupancy.max())
        row["occupancy_max_z"] = float(max(abs(_z(o, WELL_DEEP, m)) for o, m in zip(occupancy, mcse)))
    return row


# --- the table -------------------------------------------------------------------------------

def _fmt(row: dict, key: str) -> str:
    parts = [f"{row['wall_s']:6.1f}s"]
    if row.get("compile_s") is not None:
        parts.append(f"(compile {row['compile_s']:.1f}s)")
    parts.append(f"ESS {row['ess']:7.0f}  ESS/s {row['ess_per_s']:7.1f}")
    if "rhat" in row:
        parts.append(f"R-hat {row['rhat']:.3f}")
    if "emc" in row:
        parts.append(f"modes {row['modes_found']}  EMC {row['emc']:.3f} (exact {row['emc_exact']:.3f})  "
                     f"max w err {row['max_weight_err']:.4f} (floor {row['floor']:.4f}, "
                     f"{row['max_weight_err'] / row['floor']:.2f}x)")
    if "abs_dlogz" in row:
        parts.append(f"|dlogZ| {row['abs_dlogz']:.4f} (se {row['log_z_stderr'] or 0:.4f}, "
                     f"{row['log_z_s'] or 0:.1f}s)" if row.get("log_z_stderr") is not None
                     else f"|dlogZ| {row['abs_dlogz']:.4f}")
    parts.append(f"MMD² {row['mmd2']:.1e} (exact {row['mmd2_floor']:.1e})")
    if "ks_p" in row:
        parts.append(f"KS p(v) {row['ks_p']:.3f}  neck {row['neck']:.4f} (z {row['neck_z']:+.1f})")
    if "occupancy_min" in row:
        parts.append(f"wells {row['occupancy_min']:.3f}..{row['occupancy_max']:.3f} "
                     f"(max |z| {row['occupancy_max_z']:.1f})")
    if "global_accept" in row:
        parts.append(f"global acc. {row['global_accept']:.3f}")
    if row.get("num_evals"):
        parts.append(f"evals {row['num_evals']:.2e}")
    return "  ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--compile", action="store_true", help="run each sampler twice on the first seed")
    parser.add_argument("--quick", action="store_true", help="tiny budget (a smoke run)")
    parser.add_argument("--json", type=Path, help="append every row to this JSON-lines file")
    parser.add_argument("--figure", type=Path, help="draw each target's exact draws beside each sampler's "
                        "(first seed) into this PNG")
    parser.add_argument("--draws", type=Path, default=Path("standard_targets_draws"),
                        help="folder where 3,000 draws of each first-seed run are kept for the figure "
                        "(a figure shows every run found there, from this call or an earlier one)")
    args = parser.parse_args()
    rows: dict[tuple[str, str], list[dict]] = {}
    for key in args.targets:
        target = TARGETS[key]
        print(f"== {target.name} (dim {target.dim}, log Z {target.log_z:.5f})", flush=True)
        for seed in args.seeds:
            for name in args.samplers:
                try:
                    out = run(name, target, seed, args.quick)
                    if args.compile and seed == args.seeds[0]:
                        again = run(name, target, seed, args.quick)
                        out["compile_s"] = max(out["wall_s"] - again["wall_s"], 0.0)
                    row = score(target, key, out, seed)
                except Exception as err:  # a peer that cannot run is reported, not fatal
                    print(f"  seed {seed} {name:14s} FAILED: {type(err).__name__}: {err}"[:400], flush=True)
                    continue
                print(f"  seed {seed} {name:14s} {_fmt(row, key)}", flush=True)
                rows.setdefault((key, name), []).append(row)
                if seed == args.seeds[0]:
                    draws = out["chains"].reshape(-1, target.dim) if out.get("chains") is not None else out["samples"]
                    args.draws.mkdir(exist_ok=True)
                    pick = np.random.default_rng(0).choice(len(draws), min(3000, len(draws)), replace=False)
                    np.save(args.draws / f"{key}__{name.replace(' ', '_')}.npy", np.asarray(draws)[pick])
                if args.json:
                    with args.json.open("a") as fh:
                        fh.write(json.dumps({"target": key, "seed": seed, "sampler": name, **row}) + "\n")
    if args.figure:
        kept = {tuple(path.stem.replace("_", " ").split("  ")): np.load(path) for path in args.draws.glob("*__*.npy")}
        figure(kept, list(TARGETS), list(SAMPLERS), args.figure)
    print("== the issue's bars (defaults; every seed run here)")
    for (key, name), found in rows.items():
        if (key, name) in BARS:
            checks = [(what, all(test(row) for row in found)) for what, test in BARS[key, name]]
            ratios = [row["max_weight_err"] / row["floor"] for row in found if "floor" in row]
            mean_ratio = f", mean weight error / floor {np.mean(ratios):.2f}x" if ratios else ""
            if (key, name) in WEIGHT_BARS:
                bar = WEIGHT_BARS[key, name]
                checks.append((f"mean weight error <= {bar}x floor", np.mean(ratios) <= bar))
                mean_ratio += f" ({sum(r <= bar for r in ratios)} of {len(ratios)} seeds <= {bar}x)"
            print(f"  {TARGETS[key].name:13s} {name:10s} {len(found)} seeds{mean_ratio}: "
                  + "; ".join(f"{what} {'yes' if ok else 'NO'}" for what, ok in checks))


#: the bars of the issue for our default kernel of each target: (what, test of one seed's row)
BARS = {
    ("gmm40", "FlowMCMC"): [
        ("EMC >= 0.99", lambda r: r["emc"] >= 0.99),
        ("|dlogZ| <= 0.01", lambda r: r["abs_dlogz"] <= 0.01),
        ("under 20 s", lambda r: r["wall_s"] + (r.get("log_z_s") or 0) < 20),
    ],
    ("manywell32", "FlowMCMC"): [
        ("|dlogZ| <= 0.03", lambda r: r["abs_dlogz"] <= 0.03),
        ("every well within 3 MCSE", lambda r: r["occupancy_max_z"] <= 3),
    ],
    ("mos50", "FlowMCMC"): [
        ("every mode found", lambda r: r["modes_found"] == 10),
    ],
    ("funnel10", "NeuTraHMC"): [
        ("KS p(v) > 0.05", lambda r: r["ks_p"] > 0.05),
        ("neck within 3 MCSE", lambda r: abs(r["neck_z"]) <= 3),
        ("|dlogZ| <= 0.01", lambda r: r["abs_dlogz"] <= 0.01),
    ],
    ("mixture10", "FlowMCMC"): [
    ],
}


#: the issue's mode-weight bars, read on the mean over seeds of error / floor. One seed's ratio
#: scatters about 1 even for exact draws: 40,000 exact draws of GMM-40 exceed 1.2x the floor on
#: 13% of seeds (so 5 seeds of a perfect sampler all pass half the time), of the 10-D mixture
#: exceed 1.5x on 6% (a numpy check of 400 multinomial sets each, in benchmarks/results.md)
WEIGHT_BARS = {("gmm40", "FlowMCMC"): 1.2, ("mos50", "FlowMCMC"): 1.5, ("mixture10", "FlowMCMC"): 1.5}


#: the two coordinates drawn for each target
PANEL = {"gmm40": (0, 1, "x₀", "x₁"), "manywell32": (0, 1, "x₀ (well 1)", "x₁ (well 1)"),
         "funnel10": (0, 1, "v", "x₁"), "mos50": (0, 1, "x₀", "x₁"), "mixture10": (0, 1, "x₀", "x₁")}


def figure(kept: dict, target_keys: list[str], samplers: list[str], path: Path, points: int = 3000) -> None:
    """One row a target: exact draws, then each sampler's draws (first seed), same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target_keys = [k for k in target_keys if any((k, s) in kept for s in samplers)]
    columns = ["exact"] + [s for s in samplers if any((k, s) in kept for k in target_keys)]
    fig, axes = plt.subplots(len(target_keys), len(columns), figsize=(2.4 * len(columns), 2.4 * len(target_keys)),
                             squeeze=False)
    rng = np.random.default_rng(0)
    for i, key in enumerate(target_keys):
        target = TARGETS[key]
        a, b, label_a, label_b = PANEL[key]
        exact = target.sample(rng, points)
        low, high = np.percentile(exact[:, [a, b]], [0.5, 99.5], axis=0)
        pad = 0.1 * (high - low)
        for j, name in enumerate(columns):
            ax = axes[i, j]
            draws = exact if name == "exact" else kept.get((key, name))
            if draws is not None:
                pick = draws[rng.choice(len(draws), min(points, len(draws)), replace=False)]
                ax.scatter(pick[:, a], pick[:, b], s=1, alpha=0.3, color="k" if name == "exact" else "C0")
            else:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlim(low[0] - pad[0], high[0] + pad[0])
            ax.set_ylim(low[1] - pad[1], high[1] + pad[1])
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{target.name}\n{label_b}", fontsize=8)
            if i == len(target_keys) - 1:
                ax.set_xlabel(label_a, fontsize=8)
    fig.suptitle(f"{points} draws each (first seed): exact, then each sampler", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
