"""The synthetic data sets of the papers and the data loaders (numpy only)."""

import warnings

import numpy as np
import pytest

from ebmppl.datasets import eight_gaussians, four_mode_mixture, line_of_four, load_points, rings, two_modes

GRID = np.linspace(-6.0, 6.0, 1200)  # an even count: the origin (a ring singularity) is not on it
CELL = (GRID[1] - GRID[0]) ** 2
POINTS = np.stack(np.meshgrid(GRID, GRID), axis=-1)


@pytest.mark.parametrize("make", [two_modes, line_of_four, eight_gaussians, rings])
def test_two_dimensional_sets_are_normalised(make):
    assert abs(np.exp(make().log_prob(POINTS)).sum() * CELL - 1.0) < 1e-3


@pytest.mark.parametrize("make, weights", [
    (two_modes, [1 / 3, 2 / 3]), (line_of_four, [0.1, 0.2, 0.3, 0.4]),
    (eight_gaussians, [1 / 8] * 8), (rings, [1 / 4] * 4),
    (lambda: four_mode_mixture(dim=16, weights=(0.25,) * 4), [1 / 4] * 4),
])
def test_draws_land_in_the_modes_with_their_weights(make, weights):
    data = make()
    x = data.sample(40_000, np.random.default_rng(0))
    observed = data.mode_weights(x)
    # binomial standard error of a weight from 40k independent draws, 4 sigma
    assert np.all(np.abs(observed - weights) < 4 * np.sqrt(np.multiply(weights, 1 - np.asarray(weights)) / 40_000))
    assert len(data.centres) == len(weights)


def test_rings_density_is_the_radial_mixture_over_the_circumference():
    x = np.array([[2.0, 0.0], [0.0, 2.0], [3.0 / np.sqrt(2), 3.0 / np.sqrt(2)]])
    r = np.linalg.norm(x, axis=-1)
    radial = sum(0.25 * np.exp(-0.5 * ((r - c) / 0.15) ** 2) / (0.15 * np.sqrt(2 * np.pi)) for c in (1, 2, 3, 4))
    np.testing.assert_allclose(rings().log_prob(x), np.log(radial / (2 * np.pi * r)), rtol=1e-12)


def test_log_prob_in_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(7, 2)) * 2
    for data in (eight_gaussians(), rings()):
        np.testing.assert_allclose(data.log_prob(torch.tensor(x), torch).numpy(), data.log_prob(x), rtol=1e-10)


def test_loaders_read_npy_and_csv(tmp_path):
    x = np.random.default_rng(2).normal(size=(5, 3))
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", header="a,b,c", comments="")
    np.savetxt(tmp_path / "plain.csv", x, delimiter=",")
    for name in ("x.npy", "x.csv", "plain.csv"):
        np.testing.assert_allclose(load_points(tmp_path / name, dim=3), x, rtol=1e-12)


def test_loaders_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_points(tmp_path / "missing.npy")
    x = np.ones((6, 2))
    x[[1, 4], 0] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(ValueError, match=r"2 rows with NaN or infinite values \(rows 1, 4\)"):
        load_points(tmp_path / "nan.npy")
    np.save(tmp_path / "three.npy", np.ones((4, 3)))
    with pytest.raises(ValueError, match="dimension 3, expected 2"):
        load_points(tmp_path / "three.npy", dim=2)
    (tmp_path / "truncated.npy").write_bytes(np.lib.format.MAGIC_PREFIX + b"\x01")
    with pytest.raises(ValueError, match="could not be read"):
        load_points(tmp_path / "truncated.npy")
    (tmp_path / "nan.csv").write_text("a,b\n1,2\n3,nan\n5,6\n")
    with pytest.raises(ValueError, match=r"1 row with NaN or infinite values \(line 3\)"):  # the file's line
        load_points(tmp_path / "nan.csv")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("a,b\n")
    for name in ("empty.csv", "header.csv"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # one clear error, no warning of numpy's before it
            with pytest.raises(ValueError, match="holds no points"):
                load_points(tmp_path / name)
    (tmp_path / "words.csv").write_text("a,b\n1,x\n")
    with pytest.raises(ValueError, match="not a numeric CSV"):
        load_points(tmp_path / "words.csv")
    (tmp_path / "x.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match="expected a .npy or .csv"):
        load_points(tmp_path / "x.txt")
