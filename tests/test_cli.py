"""The command line: `demo`, `fit`, kill-and-resume, `apply`, and one-line errors."""

import os
import signal
import subprocess
import sys
import time

import jax.tree_util as jtu
import numpy as np
import pytest

import arhmm_eqx as ae
from arhmm_eqx.workflow._cli import main


FIGURES = ("traces", "states", "usages", "durations", "transitions")
TABLES = ("results.npz", "states.csv", "usages.csv", "durations.csv", "transitions.csv", "model.npz", "run.json")


def _one_line_error(capsys, *fragments, alone=True):
    """The error is one line starting `arhmm-eqx` with no traceback; `alone`: nothing else on stderr."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("arhmm-eqx")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert not alone or err == errors[0] + "\n", err
    for fragment in fragments:
        assert fragment in errors[0], err


def _is_png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_demo_writes_results_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--frames", "300", "--sequences", "2", "--iters", "8", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "States in use" in printed and "frame accuracy after Hungarian matching" in printed
    for name in FIGURES:
        assert _is_png(out / f"{name}.png"), name
    for name in TABLES + ("demo_recordings.npz", "standardizer.npz"):
        assert (out / name).is_file(), name
    recordings = ae.workflow.load_recordings(out / "demo_recordings.npz")
    assert sorted(len(r) for r in recordings.values()) == [225, 300]
    assert sum(np.isnan(r).any(axis=1).sum() for r in recordings.values()) == 15  # the gap in the second one
    with np.load(out / "results.npz") as f:
        for name, rec in recordings.items():
            assert f[f"states/{name}"].shape == (len(rec),)
    names = [p.name for p in ae.workflow._checkpoint.list_checkpoints(out / "checkpoints")]
    assert names == [f"ckpt_{i:06d}.json" for i in (0, 2, 4, 6, 8)]
    # a second demo into the same folder starts afresh: checkpoints of the earlier demo are removed
    for suffix in (".eqx", ".json"):
        (out / f"checkpoints/ckpt_000100{suffix}").write_bytes((out / f"checkpoints/ckpt_000008{suffix}").read_bytes())
    assert main(args) == 0
    assert [p.name for p in ae.workflow._checkpoint.list_checkpoints(out / "checkpoints")] == names


def test_errors_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["fit", str(tmp_path / "missing.npz"), "--out", out]) == 1
    _one_line_error(capsys, "missing.npz", "does not exist")
    (tmp_path / "data.csv").write_text("1,2\n")
    assert main(["fit", str(tmp_path / "data.csv"), "--out", out]) == 1
    _one_line_error(capsys, "expected a .npz, .h5 or .hdf5 file")
    np.savez(tmp_path / "mixed.npz", a=np.zeros((50, 2)), b=np.zeros((50, 3)))
    assert main(["fit", str(tmp_path / "mixed.npz"), "--out", out]) == 1
    _one_line_error(capsys, "same number of dimensions D")
    for bad in (["--iters", "0"], ["--kappa", "-1"], ["--num-states", "many"]):
        with pytest.raises(SystemExit) as exit_:
            main(["fit", str(tmp_path / "mixed.npz"), "--out", out, *bad])
        assert exit_.value.code == 2
        _one_line_error(capsys, bad[0])
    assert main(["resume", out]) == 1
    _one_line_error(capsys, "no run.json")
    assert main(["apply", out, str(tmp_path / "mixed.npz"), "--out", out]) == 1
    _one_line_error(capsys, "no run.json")
    assert not os.path.exists(out)


def test_error_exit_code_in_a_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "arhmm_eqx", "fit", str(tmp_path / "none.h5"), "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "none.h5" in proc.stderr and "Traceback" not in proc.stderr


def _recordings(path, dims=2):
    rng = np.random.default_rng(0)
    recs = {}
    for i, T in enumerate((400, 350, 300)):
        steps = rng.normal(size=(T, dims)) * np.where(np.arange(T)[:, None] // 50 % 2, 0.1, 1.0)
        recs[f"rec{i}"] = np.cumsum(steps, axis=0) * 0.1
    recs["rec1"][100:110] = np.nan
    np.savez(path, **recs)
    return recs


def _assert_same(a, b):
    for u, v in zip(jtu.tree_leaves(a), jtu.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.slow  # three fits, one in a separate process that compiles on its own
def test_kill_and_resume_gives_the_uninterrupted_chain(tmp_path, capsys):
    data = tmp_path / "recs.npz"
    recs = _recordings(data)
    iters = 1500
    args = ["fit", str(data), "--num-states", "4", "--nlags", "1", "--kappa", "100", "--iters", str(iters),
            "--save-every", "50", "--seed", "3", "--no-progress"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(args + ["--out", str(whole)]) == 0

    proc = subprocess.Popen([sys.executable, "-m", "arhmm_eqx", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not (killed / "checkpoints" / "ckpt_000050.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the fit ended before its first checkpoint"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    last = ae.workflow.latest_checkpoint(killed / "checkpoints")
    assert last is not None and 50 <= ae.workflow.load_checkpoint(last)[1]["iteration"] < iters  # killed mid-run
    assert not (killed / "model.npz").exists()

    # the newest checkpoint is damaged (say the disk filled up): resume warns and starts from the one before
    newest = ae.workflow.latest_checkpoint(killed / "checkpoints").with_suffix(".eqx")
    newest.write_bytes(newest.read_bytes()[:-100])
    with pytest.warns(RuntimeWarning, match=f"skipping {newest.stem}.json.*corrupt or truncated"):
        assert main(["resume", str(killed), "--no-progress"]) == 0
    final = f"checkpoints/ckpt_{iters:06d}.json"
    m_whole, meta_whole = ae.workflow.load_checkpoint(whole / final)
    m_killed, meta_killed = ae.workflow.load_checkpoint(killed / final)
    _assert_same(m_killed, m_whole)
    _assert_same(meta_killed["infos"], meta_whole["infos"])
    assert meta_killed["infos"].ok.shape == (iters,)
    _assert_same(ae.workflow.load_moseq_model(killed / "model.npz"), ae.workflow.load_moseq_model(whole / "model.npz"))
    with np.load(whole / "results.npz") as a, np.load(killed / "results.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    for name in FIGURES:
        assert _is_png(killed / f"{name}.png")

    # resume with more sweeps extends the chain; apply labels recordings with the fitted model
    assert main(["resume", str(whole), "--iters", str(iters + 10), "--no-progress"]) == 0
    assert ae.workflow.load_checkpoint(whole / "checkpoints")[1]["iteration"] == iters + 10
    applied = tmp_path / "applied"
    assert main(["apply", str(whole), str(data), "--out", str(applied)]) == 0
    with np.load(applied / "results.npz") as f:
        for name, rec in recs.items():
            z = f[f"states/{name}"]
            assert z.shape == (len(rec),) and (z[:1] == -1).all() and (z[1:] < 4).all()
            assert ((z >= 0) == ~np.isnan(rec).any(axis=1) & (np.arange(len(rec)) >= 1)
                    & ~np.isnan(np.roll(rec, 1, axis=0)).any(axis=1)).all()
    for name in FIGURES[1:]:
        assert _is_png(applied / f"{name}.png")
    _recordings(tmp_path / "wide.npz", dims=3)
    capsys.readouterr()
    assert main(["apply", str(whole), str(tmp_path / "wide.npz"), "--out", str(tmp_path / "x")]) == 1
    _one_line_error(capsys, "D = 3")

    # data that overflow float32: the fit stops at the first sweep, checkpoints the model before it, one-line error
    np.savez(tmp_path / "huge.npz", **{name: rec * 1e25 for name, rec in recs.items()})
    huge = tmp_path / "huge"
    args = [a if a != str(data) else str(tmp_path / "huge.npz") for a in args]
    assert main(args + ["--no-standardize", "--out", str(huge)]) == 1
    _one_line_error(capsys, "sweep 1 produced non-finite values", "after sweep 0 is checkpointed", alone=False)
    assert ae.workflow.load_checkpoint(huge / "checkpoints")[1]["iteration"] == 0
    assert not (huge / "model.npz").exists()
