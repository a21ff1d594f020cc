"""The command line never replaces a file it did not write, never continues another chain, checks
every file before using it, and reports every failure in one line (cases of a hostile-user audit)."""

import fcntl
import json
import os
import shutil

import numpy as np
import pytest

import arhmm_eqx as ae
from arhmm_eqx.workflow._cli import main


ARGS = ["--num-states", "3", "--nlags", "1", "--iters", "2", "--save-every", "1", "--no-progress"]


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("arhmm-eqx")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in errors[0], err
    return errors[0]


def _recordings(path, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    recs = {f"r{i}": rng.normal(size=(T, 2)).cumsum(axis=0) * scale for i, T in enumerate((60, 50))}
    np.savez(path, **recs)
    return recs


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One finished fit (seed 1) and the data it was fitted on."""
    root = tmp_path_factory.mktemp("fitted")
    _recordings(root / "data.npz")
    assert main(["fit", str(root / "data.npz"), "--out", str(root / "fit"), "--seed", "1", *ARGS]) == 0
    return root


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_fit_never_replaces_files_it_did_not_write(fitted, tmp_path, capsys):
    data = fitted / "data.npz"
    # the user's own files under output names: refused, untouched, nothing written
    for name in ("states.csv", "model.npz", "usages.png", "standardizer.npz", "checkpoints"):
        out = tmp_path / f"own-{name}"
        out.mkdir()
        if name == "checkpoints":
            (out / name).mkdir()
            (out / name / "mine.txt").write_text("mine")
        else:
            (out / name).write_text("mine")
        before = _snapshot(out)
        assert main(["fit", str(data), "--out", str(out), *ARGS]) == 1
        _one_line_error(capsys, name, "Nothing was written")
        assert _snapshot(out) == before and sorted(os.listdir(out)) == [name]
    # the input file itself is an output name: `fit s/results.npz --out s`
    s = tmp_path / "s"
    s.mkdir()
    _recordings(s / "results.npz")
    before = _snapshot(s)
    assert main(["fit", str(s / "results.npz"), "--out", str(s), *ARGS]) == 1
    _one_line_error(capsys, "results.npz")
    assert _snapshot(s) == before
    # a symlink planted under an output name is refused, and its target is untouched
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "states.csv").symlink_to(victim)
    assert main(["fit", str(data), "--out", str(planted), *ARGS]) == 1
    _one_line_error(capsys, "states.csv")
    assert victim.read_text() == "precious"
    # `apply FIT new.npz --out FIT` would replace the fit's own result tables
    fit = fitted / "fit"
    before = _snapshot(fit)
    assert main(["apply", str(fit), str(data), "--out", str(fit)]) == 1
    _one_line_error(capsys, "results.npz", "belongs to a `fit`")
    assert _snapshot(fit) == before


def test_a_run_rewrites_only_its_own_files_without_following_links(fitted, tmp_path, capsys):
    out = tmp_path / "fit"
    shutil.copytree(fitted / "fit", out)
    manifest = json.loads((out / "arhmm-eqx-manifest.json").read_text())
    assert manifest["kind"] == "fit" and {"run.json", "checkpoints", "model.npz", "states.csv", "traces.png",
                                          "standardizer.npz"} <= set(manifest["files"])
    # links planted over the fit's own outputs, and temporary files of killed writes
    victims = {}
    for name in ("states.csv", "results.npz", "usages.png"):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_text("precious")
        (out / name).unlink()
        (out / name).symlink_to(victims[name])
    (out / ".states.csv.x1y2z3.tmp").write_text("partial")
    (out / "checkpoints" / ".ckpt_000003.eqx.abc_12.tmp").write_text("partial")
    (out / "notes.tmp").write_text("the user's")
    assert main(["resume", str(out), "--no-progress"]) == 0  # the chain is done: rewrites its results
    capsys.readouterr()
    for name, victim in victims.items():
        assert victim.read_text() == "precious" and not (out / name).is_symlink() and (out / name).stat().st_size
    assert not (out / ".states.csv.x1y2z3.tmp").exists()
    assert not (out / "checkpoints" / ".ckpt_000003.eqx.abc_12.tmp").exists()
    assert (out / "notes.tmp").read_text() == "the user's"
    # an apply folder: a new apply may replace what an apply wrote there, not the user's files
    applied = tmp_path / "applied"
    assert main(["apply", str(out), str(fitted / "data.npz"), "--out", str(applied)]) == 0
    assert main(["apply", str(out), str(fitted / "data.npz"), "--out", str(applied)]) == 0
    (applied / "apply.json").unlink()
    (applied / "apply.json").symlink_to(victims["states.csv"])
    assert main(["apply", str(out), str(fitted / "data.npz"), "--out", str(applied)]) == 0
    assert victims["states.csv"].read_text() == "precious" and json.loads((applied / "apply.json").read_text())


def test_two_runs_into_one_folder_at_once(fitted, tmp_path, capsys):
    out = tmp_path / "fit"
    shutil.copytree(fitted / "fit", out)
    with open(out / ".arhmm-eqx.lock", "a") as lock:  # another run holds the folder
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = _snapshot(out)
        assert main(["resume", str(out), "--no-progress"]) == 1
        _one_line_error(capsys, "another arhmm-eqx run is writing to")
        assert _snapshot(out) == before
    assert main(["resume", str(out), "--no-progress"]) == 0


def test_options_are_checked_before_anything_is_written(fitted, tmp_path, capsys):
    out = tmp_path / "out"
    for bad, fragment in ((["--kappa", "inf"], "kappa"), (["--segment-length", "1"], "segment_length")):
        assert main(["fit", str(fitted / "data.npz"), "--out", str(out), *ARGS, *bad]) == 1
        _one_line_error(capsys, fragment)
        assert not out.exists()
    for seed in (str(2**64), str(-(2**63) - 1)):
        with pytest.raises(SystemExit) as exit_:
            main(["fit", str(fitted / "data.npz"), "--out", str(out), *ARGS, "--seed", seed])
        assert exit_.value.code == 2
        _one_line_error(capsys, "--seed", "64 bits")
        assert not out.exists()


def _swap_in(out, other, name="ckpt_000002"):
    for suffix in (".eqx", ".json"):
        shutil.copyfile(other / "checkpoints" / f"{name}{suffix}", out / "checkpoints" / f"{name}{suffix}")


def test_resume_never_continues_another_chain(fitted, tmp_path, capsys):
    data = fitted / "data.npz"
    base = tmp_path / "base"
    assert main(["fit", str(data), "--out", str(base), "--seed", "1", *ARGS[:4], "--iters", "4", "--save-every",
                 "2", "--no-progress"]) == 0
    other_seed = tmp_path / "seed2"
    assert main(["fit", str(data), "--out", str(other_seed), "--seed", "2", *ARGS]) == 0
    _recordings(tmp_path / "other.npz", seed=5)
    other_data = tmp_path / "otherdata"
    assert main(["fit", str(tmp_path / "other.npz"), "--out", str(other_data), "--seed", "1", *ARGS]) == 0
    other_kappa = tmp_path / "kappa"
    assert main(["fit", str(data), "--out", str(other_kappa), "--seed", "1", "--kappa", "7", *ARGS]) == 0
    capsys.readouterr()
    for other, fragment in ((other_seed, "its key is not that of --seed 1"), (other_data, "data_sha256"),
                            (other_kappa, "kappa")):
        out = tmp_path / f"swapped-{other.name}"
        shutil.copytree(base, out)
        for name in ("ckpt_000004.eqx", "ckpt_000004.json", "ckpt_000003.eqx", "ckpt_000003.json"):
            (out / "checkpoints" / name).unlink(missing_ok=True)
        _swap_in(out, other)
        before = _snapshot(out)
        assert main(["resume", str(out), "--no-progress"]) == 1
        _one_line_error(capsys, "ckpt_000002.json", "not of the fit", fragment)
        assert _snapshot(out) == before
    # an edited .json (states_only, key, iteration) is damaged: skipped with a warning, the chain
    # resumes from the previous checkpoint and ends where the uninterrupted one ends
    for field in ("states_only", "key", "iteration"):
        out = tmp_path / f"edited-{field}"
        shutil.copytree(base, out)
        path = out / "checkpoints" / "ckpt_000004.json"
        meta = json.loads(path.read_text())
        if field == "states_only":
            meta["sweep_options"]["states_only"] = True
        elif field == "key":
            meta["key"]["data"][-1] += 1
        else:
            meta["iteration"] = 3
        path.write_text(json.dumps(meta))
        with pytest.warns(RuntimeWarning, match="skipping ckpt_000004.json"):
            assert main(["resume", str(out), "--no-progress"]) == 0
        capsys.readouterr()
        np.testing.assert_array_equal(np.asarray(ae.workflow.load_moseq_model(out / "model.npz").params.Ab),
                                      np.asarray(ae.workflow.load_moseq_model(base / "model.npz").params.Ab))


def test_files_are_checked_and_errors_are_one_line(fitted, tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    out = str(tmp_path / "out")
    (tmp_path / "text.npz").write_text("not a zip")
    (tmp_path / "empty.npz").write_bytes(b"")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(np.arange(120, dtype="<f8").tobytes())
    with h5py.File(tmp_path / "external.h5", "w") as f:
        f.create_dataset("rec", shape=(60, 2), dtype="<f8", external=[(str(secret), 0, 960)])
    np.savez(tmp_path / "linked_target.npz", a=np.zeros(3))
    with h5py.File(tmp_path / "target.h5", "w") as f:
        f["rec"] = np.random.default_rng(0).normal(size=(60, 2))
    with h5py.File(tmp_path / "link.h5", "w") as f:
        f["rec"] = h5py.ExternalLink(str(tmp_path / "target.h5"), "rec")
    with h5py.File(tmp_path / "huge.h5", "w") as f:  # declares 16 TiB, stores nothing
        f.create_dataset("rec", shape=(2**40, 2), dtype="<f8", chunks=(1024, 2))
    cases = [("text.npz", "not a valid .npz file"), ("empty.npz", "not a valid .npz file"),
             ("external.h5", "external raw storage"), ("link.h5", "external link"), ("huge.h5", "more than the")]
    for name, fragment in cases:
        assert main(["fit", str(tmp_path / name), "--out", out, *ARGS]) == 1
        line = _one_line_error(capsys, name, fragment)
        assert "allow_pickle" not in line
        assert not os.path.exists(out)
    # a fit folder whose run.json or standardizer.npz is damaged
    fit = tmp_path / "fit"
    shutil.copytree(fitted / "fit", fit)
    run = json.loads((fit / "run.json").read_text())
    del run["seed"]
    (fit / "run.json").write_text(json.dumps(run))
    for command in (["resume", str(fit)], ["apply", str(fit), str(fitted / "data.npz"), "--out", out]):
        assert main(command) == 1
        _one_line_error(capsys, "run.json", "missing seed")
    shutil.copyfile(fitted / "fit" / "run.json", fit / "run.json")
    for garbage in (b"garbage", None):
        if garbage is None:
            np.savez(fit / "standardizer.npz", mean=np.zeros(2), matrix=np.zeros((2, 2)))
        else:
            (fit / "standardizer.npz").write_bytes(garbage)
        assert main(["apply", str(fit), str(fitted / "data.npz"), "--out", out]) == 1
        _one_line_error(capsys, "standardizer.npz")
    assert not os.path.exists(out)


@pytest.mark.slow  # a separate process that imports JAX and compiles
def test_ctrl_c_while_compiling_exits_130_cleanly(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    _recordings(tmp_path / "data.npz")
    out = tmp_path / "out"
    # `python -m arhmm_eqx`, with Python's own Ctrl-C handler installed first: a test run started
    # in the background ignores SIGINT, and its children would inherit that (a terminal does not)
    as_from_a_terminal = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                          "runpy.run_module('arhmm_eqx', run_name='__main__', alter_sys=True)")
    proc = subprocess.Popen([sys.executable, "-c", as_from_a_terminal, "fit", str(tmp_path / "data.npz"), "--out",
                             str(out), "--num-states", "20", "--nlags", "2", "--iters", "100000", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while not (out / "checkpoints" / "ckpt_000000.json").exists():  # written just before the sweep compiles
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err, err
    if "saved" in err:  # only a checkpoint that exists is claimed
        name = err.split("checkpoint ")[1].split()[0]
        assert ae.workflow.load_checkpoint(out / "checkpoints" / name)[1]["iteration"] >= 0
