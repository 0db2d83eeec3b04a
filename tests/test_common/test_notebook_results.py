"""Notebook-friendly results: summary(), the training plots, and the reprs of backend-neutral objects."""

import pickle

import arviz as az
import numpy as np
import pytest
from matplotlib.figure import Figure

from ebmppl import diagnostics
from ebmppl.diagnostics import mode_weight_mcse, plot_mode_weights, plot_training, summary
from ebmppl.partition import LogPartition
from ebmppl.schedule import WarmupSchedule

CENTRES = np.array([[-5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
WEIGHTS = np.array([0.2, 0.3, 0.5])


def labelled_draws(seed=0, chains=8, draws=500):
    """Draws near known centres with known labels: each draw's nearest centre is its label."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(WEIGHTS), size=(chains, draws), p=WEIGHTS)
    return labels, CENTRES[labels] + 0.3 * rng.normal(size=(chains, draws, 2))


def arviz_data(posterior, sample_stats=None):
    """ArviZ data on either ArviZ line (``az.from_dict`` changed its signature in 1.0)."""
    if int(az.__version__.split(".")[0]) >= 1:
        return az.from_dict({"posterior": posterior, **({"sample_stats": sample_stats} if sample_stats else {})})
    return az.from_dict(posterior=posterior, sample_stats=sample_stats)


# --- summary ---------------------------------------------------------------------------------------
def test_mode_weights_of_labelled_draws_match_within_mcse():
    labels, x = labelled_draws()
    table = summary({"posterior": {"x": x}}, mode_centres=CENTRES)
    rows = table.loc[[f"mode_weight[{k}]" for k in range(3)]]
    weights, mcse = mode_weight_mcse(labels)
    np.testing.assert_allclose(rows["mean"], weights)  # every draw goes to its own centre
    np.testing.assert_allclose(rows["mcse_mean"], mcse, rtol=1e-6)  # the MCSE of mode_weight_mcse
    assert np.all(np.abs(rows["mean"] - WEIGHTS) / rows["mcse_mean"] < 4)
    # control: equal weights are far outside the MCSE
    assert np.any(np.abs(rows["mean"] - 1 / 3) / rows["mcse_mean"] > 4)
    np.testing.assert_allclose(rows["sd"], np.sqrt(weights * (1 - weights)), rtol=1e-2)


def test_one_row_per_site_coordinate_and_acceptance_columns():
    _, x = labelled_draws(chains=4, draws=100)
    stats = {"global_acceptance_rate": np.full((4, 100), 0.25), "local_accept_prob": np.full((4, 100), 0.75)}
    scale = np.random.default_rng(1).lognormal(size=(4, 100))
    table = summary({"posterior": {"x": x, "scale": scale}, "sample_stats": stats})
    assert sorted(table.index) == ["scale", "x[0]", "x[1]"]  # not one row per chain
    assert (table["global_accept_prob"] == 0.25).all() and (table["local_accept_prob"] == 0.75).all()
    for column in ("mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"):
        assert column in table.columns
    np.testing.assert_allclose(table.loc["x[0]", "mean"], x[..., 0].mean())
    no_stats = summary(arviz_data({"x": x}))  # ArviZ data; a kernel without acceptance statistics
    assert no_stats["global_accept_prob"].isna().all() and no_stats["local_accept_prob"].isna().all()


def test_summary_options_and_refusals():
    labels, x = labelled_draws(chains=4, draws=100)
    data = {"posterior": {"x": x, "y": x[..., 0]}}
    table = summary(data, CENTRES, site="x", var_names=["y"], round_to=2, kind="stats")
    assert table.index.tolist() == ["y", "mode_weight[0]", "mode_weight[1]", "mode_weight[2]"]
    assert "ess_bulk" not in table.columns and table.loc["mode_weight[2]", "mean"] == round((labels == 2).mean(), 2)
    never = summary({"posterior": {"x": x}}, np.vstack([CENTRES, [[50.0, 50.0]]]))  # a mode no draw visits
    assert never.loc["mode_weight[3]", "mean"] == 0.0
    with pytest.raises(ValueError, match="site="):
        summary(data, CENTRES)
    with pytest.raises(ValueError, match=r"shape \(K, 2\)"):
        summary(data, CENTRES[:, :1], site="x")
    with pytest.raises(TypeError, match="MCMC"):
        summary(np.zeros((4, 10)))


def test_summary_of_mcmc_runs_of_both_backends():
    import jax
    import numpyro
    import numpyro.distributions as ndist
    import pyro
    import pyro.distributions as pdist
    from numpyro.infer import MCMC as NumPyroMCMC
    from numpyro.infer import NUTS
    from pyro.infer import MCMC as PyroMCMC

    from ebmppl.pyro import FlowMCMC

    pyro.set_rng_seed(0)
    walkers = PyroMCMC(FlowMCMC(lambda: pyro.sample("x", pdist.Normal(0.0, 1.0).expand([2]).to_event(1)),
                                num_walkers=4), warmup_steps=40, num_samples=30, disable_progbar=True)
    walkers.run()
    table = summary(walkers, mode_centres=[[-1.0, 0.0], [1.0, 0.0]])
    assert table.index.tolist() == ["x[0]", "x[1]", "mode_weight[0]", "mode_weight[1]"]  # walkers are chains
    assert table["global_accept_prob"].between(0, 1).all() and table["local_accept_prob"].between(0, 1).all()
    assert np.isclose(table.loc["mode_weight[0]", "mean"] + table.loc["mode_weight[1]", "mean"], 1.0)

    nuts = NumPyroMCMC(NUTS(lambda: numpyro.sample("x", ndist.Normal(0.0, 1.0))), num_warmup=50, num_samples=50,
                       num_chains=2, chain_method="sequential", progress_bar=False)
    nuts.run(jax.random.key(0))
    table = summary(nuts)
    assert table.index.tolist() == ["x"] and table["global_accept_prob"].isna().all()


# --- plots -----------------------------------------------------------------------------------------
HISTORY = {
    "loss": np.linspace(1.0, 0.1, 200),
    "energy_data": np.linspace(-1.0, -2.0, 200),
    "energy_negatives": np.linspace(-0.5, -2.0, 200),
    "global_accept_prob": np.full(200, 0.4),
    "local_accept_prob": np.full(200, 0.6),
    "mode_weights": np.tile(WEIGHTS, (200, 1)),
}


def test_plot_training_draws_energies_and_acceptance():
    fig = plot_training({name: list(values) for name, values in HISTORY.items()})  # lists, as the CLI's history
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    energy, accept = fig.axes
    assert [line.get_label() for line in energy.lines] == ["E(data)", "E(negatives)"]
    assert [line.get_label() for line in accept.lines] == ["global (i-SIR)", "local (MALA)"]
    np.testing.assert_allclose(accept.lines[0].get_ydata(), 0.4)
    assert len(energy.lines[0].get_xdata()) == 200
    only_loss = plot_training({"loss": HISTORY["loss"]})
    assert [line.get_label() for line in only_loss.axes[0].lines] == ["loss"] and not only_loss.axes[1].lines
    with pytest.raises(ValueError, match="none of"):
        plot_training({"other": [1.0]})


def test_plot_mode_weights_draws_one_line_per_mode_and_the_true_weights():
    fig = plot_mode_weights(HISTORY, true_weights=WEIGHTS)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    lines = fig.axes[0].lines
    assert len(lines) == 6  # 3 smoothed weights, 3 dashed true weights
    for k in range(3):
        np.testing.assert_allclose(lines[2 * k].get_ydata(), WEIGHTS[k])
        assert lines[2 * k + 1].get_linestyle() == "--" and lines[2 * k + 1].get_color() == lines[2 * k].get_color()
    assert len(plot_mode_weights(HISTORY).axes[0].lines) == 3
    with pytest.raises(ValueError, match="mode_weights"):
        plot_mode_weights({"loss": HISTORY["loss"]})
    with pytest.raises(ValueError, match="true_weights"):
        plot_mode_weights(HISTORY, true_weights=[0.5, 0.5])


def test_the_cli_report_saves_the_diagnostics_figures(tmp_path, monkeypatch):
    from ebmppl.app import report

    drawn = []  # one implementation: the report draws with ebmppl.diagnostics
    monkeypatch.setattr(diagnostics, "plot_training", lambda history: drawn.append("training") or Figure())
    assert report.plot_training(tmp_path, HISTORY) == "training.png" and drawn == ["training"]
    assert (tmp_path / "training.png").read_bytes()[:4] == b"\x89PNG"


# --- reprs -----------------------------------------------------------------------------------------
def test_log_partition_shows_log_z_stderr_and_ess_and_stays_a_tuple():
    estimate = LogPartition(log_z=-3.21987, stderr=0.01234, ess=812.49, num_samples=1000)
    text = repr(estimate)
    assert "-3.220 ± 0.012" in text and "812.5 of 1000" in text and len(text.splitlines()) == 1
    page = estimate._repr_html_()
    assert page.startswith("<table>") and page.endswith("</table>") and "-3.220 ± 0.012" in page
    log_z, stderr, ess, num_samples = estimate
    assert (log_z, num_samples) == (-3.21987, 1000) and estimate._fields == ("log_z", "stderr", "ess", "num_samples")
    assert pickle.loads(pickle.dumps(estimate)) == estimate
    assert "± inf" in repr(LogPartition(0.5, float("inf"), 1.0, 1))


def test_warmup_schedule_repr_is_short_and_a_table_in_a_notebook():
    schedule = WarmupSchedule.default(500)
    text = repr(schedule)
    assert "fit_iterations=(99, 199, 299, 399)" in text and "window=100" in text and "fit_steps=150" in text
    assert len(text.splitlines()) <= 2 and all(len(line) <= 100 for line in text.splitlines())
    assert eval(text) == schedule  # noqa: S307 - the repr is the constructor call
    long = repr(WarmupSchedule(fit_iterations=tuple(range(9, 10_000, 10)), window=10))
    assert "[1000 items]" in long and len(long) < 250
    page = schedule._repr_html_()
    assert page.startswith("<table>") and page.count("<tr>") == 6 and "399" in page


def test_html_tables_escape_their_values():
    from ebmppl._repr import html_table, text

    page = html_table("X<1>", [("a", "<b>&")])
    assert "<b>&" not in page and "&lt;b&gt;&amp;" in page and "X&lt;1&gt;" in page
    wrapped = text("Name", [(f"option_{i}", "x" * 10) for i in range(20)])
    assert all(len(line) <= 100 for line in wrapped.splitlines()) and wrapped.endswith(")")
    assert all(line.startswith("     ") for line in wrapped.splitlines()[1:])  # aligned after "Name("
