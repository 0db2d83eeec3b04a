"""The ``ebmppl`` command line, run as a user would (subprocesses), at tiny budgets."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ENV = dict(os.environ, OMP_NUM_THREADS="1", XLA_FLAGS="--xla_cpu_multi_thread_eigen=false")


def ebmppl(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "ebmppl", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=cwd)


@pytest.mark.parametrize("backend, method", [("numpyro", "flow"), ("pyro", "flow"),
                                             pytest.param("numpyro", "neutra", marks=pytest.mark.slow)])  # ~1.5 min
def test_train_then_sample(tmp_path, backend, method):
    run = tmp_path / "run"
    out = ebmppl("train", "--backend", backend, "--method", method, "--steps", 30, "--out", run, "--quiet")
    assert out.returncode == 0, out.stderr
    assert "mode weights: model" in out.stdout and "log Z" in out.stdout
    for name in ("config.json", "metrics.json", "train.npy", "test.npy", "samples.png", "density.png",
                 "training.png", "mode_weights.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 30 and len(metrics["loss"]) == 30
    assert np.isfinite([metrics["log_z"], metrics["log_z_stderr"], metrics["test_log_likelihood"]]).all()
    assert len(metrics["mode_weights"]) == 4 and abs(sum(metrics["mode_weights"]) - 1) < 1e-6
    assert np.shape(metrics["mode_weights_over_training"]) == (30, 4)

    draws_file = tmp_path / "draws.npy"
    out = ebmppl("sample", "--run", run, "--num", 300, "--out", draws_file, "--quiet")
    assert out.returncode == 0, out.stderr
    draws = np.load(draws_file)
    assert draws.shape == (300, 2) and np.isfinite(draws).all()
    assert "acceptance" in out.stdout and "ESS" in out.stdout


def test_train_on_a_csv_file_in_three_dimensions(tmp_path):
    points = np.random.default_rng(0).normal(size=(600, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, -2.0]
    np.savetxt(tmp_path / "points.csv", points, delimiter=",", header="a,b,c", comments="")
    run = tmp_path / "run"
    out = ebmppl("train", "--data", tmp_path / "points.csv", "--backend", "pyro", "--steps", 20, "--out", run,
                 "--quiet")
    assert out.returncode == 0, out.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["dim"] == 3 and config["data_name"] is None and config["finished"]
    np.testing.assert_allclose(config["scale"], [1.0, 10.0, 0.1], rtol=0.1)  # standardised per coordinate
    metrics = json.loads((run / "metrics.json").read_text())
    assert "mode_weights" not in metrics and np.isfinite(metrics["test_log_likelihood"])
    assert (run / "samples.png").is_file() and not (run / "density.png").exists()  # density only in 2-D
    assert np.load(run / "train.npy").shape == (540, 3) and np.load(run / "test.npy").shape == (60, 3)


def test_interrupted_training_resumes(tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "ebmppl", "train", "--backend", "pyro", "--steps", "40",
                                "--out", str(run), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=ENV)
    deadline = time.time() + 120
    while not (run / "config.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert not (run / "metrics.json").exists()
    out = ebmppl("train", "--out", run, "--resume", "--quiet")
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "metrics.json").read_text())["steps"] == 40
    again = ebmppl("train", "--out", run, "--resume")
    assert again.returncode == 2 and "finished" in again.stderr


def bad_inputs(tmp):
    (tmp / "nan.csv").write_text("x,y\n1,2\nnan,3\n")
    (tmp / "points.txt").write_text("1 2\n")
    (tmp / "garbage.npy").write_bytes(b"not an array")
    (tmp / "empty").mkdir()
    (tmp / "foreign").mkdir()
    (tmp / "foreign" / "config.json").write_text('{"weights": 1}')
    (tmp / "old").mkdir()
    (tmp / "old" / "config.json").write_text(json.dumps({"format": "ebmppl-run-v1", "finished": True,
                                                          "steps": 5, "backend": "numpyro"}))
    return {
        "missing file": (["train", "--data", tmp / "missing.csv", "--out", tmp / "r1"], "does not exist"),
        "wrong format": (["train", "--data", tmp / "points.txt", "--out", tmp / "r2"], "expected a .npy or .csv"),
        "bad npy": (["train", "--data", tmp / "garbage.npy", "--out", tmp / "r3"], "could not be read"),
        "nan rows": (["train", "--data", tmp / "nan.csv", "--out", tmp / "r4"], "NaN"),
        "unknown name": (["train", "--data", "moons", "--out", tmp / "r5"], "unknown data"),
        "no run in dir": (["sample", "--run", tmp / "empty", "--out", tmp / "d.npy"], "holds no ebmppl run"),
        "no such dir": (["sample", "--run", tmp / "nowhere", "--out", tmp / "d.npy"], "does not exist"),
        "resume foreign": (["train", "--out", tmp / "foreign", "--resume"], "holds no ebmppl run"),
        "resume empty": (["train", "--out", tmp / "empty", "--resume"], "holds no ebmppl run"),
        "resume finished": (["train", "--out", tmp / "old", "--resume"], "finished"),
        "run exists": (["train", "--out", tmp / "old"], "already holds a run"),
        "sample to non-npy": (["sample", "--run", tmp / "old", "--out", tmp / "d.txt"], ".npy"),
    }


def test_bad_input_gets_one_line_and_nonzero_exit(tmp_path):
    for case, (args, message) in bad_inputs(tmp_path).items():
        out = ebmppl(*args, timeout=120)
        assert out.returncode == 2, (case, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ebmppl: error:") and message in lines[0], (case, lines)


def test_help_of_each_subcommand():
    for args in ([], ["train"], ["sample"]):
        out = ebmppl(*args, "--help")
        assert out.returncode == 0 and "usage: ebmppl" in out.stdout
    assert "--resume" in ebmppl("train", "--help").stdout
