"""Several processes joined by `jax.distributed` equal one process.

Each test starts 2 local CPU processes (`multiprocess_worker.py`), each with 2 host devices and
gloo collectives, which run one program over the 4 devices (one test starts 4 processes of one
device each); each process writes what it saw to
an `.npz` that the test compares with the same run in this (single) process. Every wait is
bounded (joining, barriers, `subprocess` timeouts), so a broken run fails in seconds.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import pytest

import arhmm_eqx as ae


HERE = pathlib.Path(__file__).parent
WORKER = HERE / "multiprocess_worker.py"
K, D, L, C, ITERS, N, T = 3, 2, 1, 4, 3, 4, 200  # as in the worker
HP = ae.Hyperparams.from_scales(K, D, L, kappa=1e2)
TIMEOUT = 300  # seconds for one run of the 2 processes, compilation on 2 busy cores included


def _data():
    x = np.cumsum(0.3 * np.asarray(jr.normal(jr.key(0), (N, T, D))), axis=1).astype(np.float32)
    mask = np.ones((N, T), np.float32)
    mask[1, T - 30:] = 0.0
    return x, mask


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    """The workers of this file share one persistent compilation cache (the test run's, if it
    has one), so that a later run of the same programs (the resume) loads them."""
    global _CACHE
    _CACHE = os.environ.get("ARHMM_EQX_TEST_JAX_CACHE") or str(tmp_path_factory.mktemp("jax-cache"))
    yield


_CACHE = None


def _start(task: str, tmp: pathlib.Path, extra: str, env_extra: dict | None = None, num_processes: int = 2):
    """Start the workers; each gets an `.npz` with only its own sequences."""
    x, mask = _data()
    port, procs = _free_port(), []
    per = N // num_processes
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent / "src"),
                                                                   os.environ.get("PYTHONPATH")])))
    env |= {"ARHMM_EQX_TEST_JAX_CACHE": _CACHE} | (env_extra or {})
    for i in range(num_processes):
        rows = slice(i * per, (i + 1) * per)
        own = tmp / f"{task}-data-{i}.npz"
        np.savez(own, x=x[rows], mask=mask[rows], rows=np.asarray([rows.start, rows.stop]), num_sequences=N)
        out = tmp / f"{task}-out-{i}.npz"
        with open(tmp / f"{task}-log-{i}.txt", "w") as log:  # the child keeps its own copy of the file
            procs.append(subprocess.Popen([sys.executable, str(WORKER), task, str(i), str(num_processes), str(port),
                                           str(own), str(out), extra], stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs


def _wait(procs, task: str, tmp: pathlib.Path, timeout: float = TIMEOUT) -> list[dict]:
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = [(tmp / f"{task}-log-{i}.txt").read_text() for i in range(len(procs))]
    codes = [p.returncode for p in procs]
    assert codes == [0] * len(procs), f"exit codes {codes}\n" + "\n".join(log[-3000:] for log in logs)
    results = []
    for i in range(len(procs)):
        with np.load(tmp / f"{task}-out-{i}.npz") as f:
            results.append(dict(f))
    return results


def _leaves(result: dict, prefix: str) -> list[np.ndarray]:
    names = sorted((k for k in result if k.startswith(prefix + "/")), key=lambda k: int(k.split("/")[1]))
    return [result[k] for k in names]


def _assert_matches(got: list, want, *, floats_exact: bool = False) -> None:
    """Integers (states, counts, flags) exactly; floats to 1e-4 relative (see `test_sharding.py`:
    a sum split over devices is added in another order), or bit for bit."""
    want = [np.asarray(leaf) for leaf in jtu.tree_leaves(want)]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        if np.issubdtype(b.dtype, np.floating) and not floats_exact:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        else:
            np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def library_run(tmp_path_factory):
    """The workers' `library` task, started first; the single-process reference runs meanwhile."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    x, mask = _data()
    np.savez(tmp / "shared.npz", x=x, mask=mask)
    procs = _start("library", tmp, str(tmp / "shared.npz"))
    try:
        models = ae.init_chains(HP, x, mask, key=jr.key(1), num_chains=C)
        reference = ae.run_chains(jr.key(2), models, x, mask, ITERS)
        scan = ae.kappa_scan(HP, (1e1, 1e3), x, mask, key=jr.key(3), num_iters=ITERS, chains_per_kappa=2)
        reference = jax.device_get(reference)
    finally:
        results = _wait(procs, "library", tmp)
    return results, reference, scan


def test_two_processes_see_four_devices(library_run):
    results, _, _ = library_run
    assert [int(r["process_index"]) for r in results] == [0, 1]
    assert all(int(r["devices"]) == 4 and int(r["local_devices"]) == 2 for r in results)


def test_chains_over_processes_equal_one_process(library_run):
    results, reference, _ = library_run
    for r in results:
        assert bool(r["chains_spread"])  # the chains really lay on both processes' devices
        _assert_matches(_leaves(r, "chains"), reference)


def test_sequences_over_processes_from_local_rows_equal_one_process(library_run):
    """Each process loaded only its 2 of the 4 sequences; the global `x` is never on one process."""
    results, reference, _ = library_run
    for r in results:
        assert r["x_shape"].tolist() == [N, T, D]
        assert bool(r["x_spread"]) and int(r["x_local_rows"]) == N // 2
        _assert_matches(_leaves(r, "sequences"), reference)


def test_every_process_sees_the_same_global_traces(library_run):
    results, _, _ = library_run
    for prefix in ("chains", "sequences", "kappa"):
        _assert_matches(_leaves(results[1], prefix), _leaves(results[0], prefix), floats_exact=True)


def test_kappa_grid_over_processes_equals_one_process(library_run):
    results, _, scan = library_run
    for r in results:
        np.testing.assert_allclose(r["kappa_durations"], scan.durations, rtol=1e-6)
        _assert_matches(_leaves(r, "kappa"), (scan.models, scan.infos))


@pytest.mark.extended
def test_four_processes_chains_equal_one_process(library_run, tmp_path):
    """4 processes of 1 device each: the 4 chains, one per process, equal the single-process run."""
    _, reference, _ = library_run
    x, mask = _data()
    np.savez(tmp_path / "shared.npz", x=x, mask=mask)
    procs = _start("chains", tmp_path, str(tmp_path / "shared.npz"), {"ARHMM_EQX_TEST_DEVICES": "1"},
                   num_processes=4)
    results = _wait(procs, "chains", tmp_path)
    for r in results:
        assert int(r["devices"]) == 4 and bool(r["chains_spread"])
        _assert_matches(_leaves(r, "chains"), reference)


@pytest.mark.extended
def test_ctrl_c_on_one_process_stops_all_after_the_same_sweep(tmp_path):
    """Ctrl-C (SIGINT) reaches process 1 only: both processes stop after the same chunk, report
    `"interrupted"`, and the checkpoint of that sweep holds the model they return."""
    folder = str(tmp_path / "checkpoints")
    results = _wait(_start("fit", tmp_path, folder, {"ARHMM_EQX_TEST_SIGINT": "1"}), "fit", tmp_path)
    iterations = [int(r["iteration"]) for r in results]
    print(f"both processes stopped after sweep {iterations[0]} of 2000")
    assert iterations[0] == iterations[1] and 2 <= iterations[0] < 2000, iterations
    for r in results:
        assert str(r["reason"]) == "interrupted" and int(r["saved_iteration"]) == iterations[0]
        _assert_matches(_leaves(r, "saved"), _leaves(r, "model"), floats_exact=True)
    _assert_matches(_leaves(results[1], "model"), _leaves(results[0], "model"), floats_exact=True)


@pytest.mark.slow
@pytest.mark.extended
def test_killed_process_stops_the_other_and_resume_is_bit_exact(tmp_path):
    """Process 1 is killed (SIGKILL) after the checkpoint of sweep 2: process 0 stops with an error
    within seconds (heartbeat timeout 5 s) instead of hanging. Both processes then resume from that
    checkpoint, which equals, bit for bit, the same 2-process fit run without a stop; that fit
    equals the same fit in one process."""
    folder = str(tmp_path / "checkpoints")
    procs = _start("fit", tmp_path, folder, {"ARHMM_EQX_TEST_KILL": "1"})
    start = time.monotonic()
    try:
        procs[1].wait(timeout=TIMEOUT)
        killed_at = time.monotonic()
        procs[0].wait(timeout=60)
        stopped_after = time.monotonic() - killed_at
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    log0 = (tmp_path / "fit-log-0.txt").read_text()
    assert procs[1].returncode == -signal.SIGKILL, (tmp_path / "fit-log-1.txt").read_text()[-3000:]
    print(f"process 0 exited with {procs[0].returncode}, {stopped_after:.1f} s after process 1 was killed")
    assert procs[0].returncode != 0 and not (tmp_path / "fit-out-0.npz").exists(), log0[-3000:]
    # the collective in progress fails at once; the coordinator then ends the process
    assert "Connection closed by peer" in log0 or "heartbeat timeout" in log0, log0[-3000:]
    assert stopped_after < 60, f"process 0 took {stopped_after:.0f} s to stop ({time.monotonic() - start:.0f} s)"
    saved = sorted(p.name for p in pathlib.Path(folder).glob("*.json"))
    assert saved[:2] == ["ckpt_000000.json", "ckpt_000002.json"], saved  # written by process 0 only, once each

    results = _wait(_start("resume", tmp_path, folder), "resume", tmp_path)
    for r in results:
        assert int(r["iteration"]) == 6
        _assert_matches(_leaves(r, "resumed"), [np.asarray(v) for v in _leaves(r, "straight")], floats_exact=True)
    _assert_matches(_leaves(results[1], "resumed"), _leaves(results[0], "resumed"), floats_exact=True)
    # and the 2-process fit equals the same fit in one process (states exactly, floats to rounding)
    from arhmm_eqx.workflow import fit

    x, mask = _data()
    one = fit(ae.ARHMM.from_prior(HP, x, mask, key=jr.key(4)), x, mask, key=jr.key(5), num_iters=6, progress=False,
              compile_cache=False)
    _assert_matches(_leaves(results[0], "straight"), (one.model, one.infos))


@pytest.mark.slow
@pytest.mark.extended
def test_command_line_fit_on_two_processes_equals_one_process(tmp_path):
    """`arhmm-eqx fit --distributed` on 2 processes: process 0 alone writes the run file, the
    checkpoints, the results and the figures, and the states equal those of a 1-process fit."""
    x, mask = _data()
    recordings = {f"rec{i}": np.where(mask[i][:, None] > 0, x[i], np.nan) for i in range(N)}
    np.savez(tmp_path / "recordings.npz", **recordings)
    options = ["--iters", "4", "--save-every", "2", "--num-states", str(K), "--nlags", str(L), "--kappa", "100",
               "--no-progress"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent / "src"),
                                                                   os.environ.get("PYTHONPATH")])),
               XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               ARHMM_EQX_COMPILE_CACHE="0", OPENBLAS_NUM_THREADS="1")
    command = [sys.executable, "-m", "arhmm_eqx", "fit", str(tmp_path / "recordings.npz")]
    port = _free_port()
    procs = [subprocess.Popen([*command, "--out", str(tmp_path / "two"), "--distributed", *options],
                              env=env | {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                                         "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    one = subprocess.run([*command, "--out", str(tmp_path / "one"), *options], env=env, capture_output=True,
                         text=True, timeout=TIMEOUT)
    try:
        logs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "wrote results and figures" in logs[0] and "wrote results" not in logs[1]
    two, single = tmp_path / "two", tmp_path / "one"
    assert sorted(p.name for p in (two / "checkpoints").glob("*.json")) == [
        "ckpt_000000.json", "ckpt_000002.json", "ckpt_000004.json"]
    for name in ("run.json", "model.npz", "results.npz", "states.csv", "traces.png"):
        assert (two / name).is_file(), name
    with np.load(two / "results.npz") as a, np.load(single / "results.npz") as b:
        states = [k for k in b.files if k.startswith("states/")]
        assert states and all(np.array_equal(a[k], b[k]) for k in states)

    # resume on 2 processes, and kill process 1 mid-run: process 0 says so in one line and exits 1
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "arhmm_eqx", "resume", str(two), "--iters", "400",
                               "--distributed", "--no-progress"],
                              env=env | {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                                         "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (two / "checkpoints" / "ckpt_000006.json").exists() and procs[1].poll() is None:
            assert time.monotonic() < deadline, "the resumed run wrote no checkpoint"
            time.sleep(0.05)
        procs[1].kill()
        log0 = procs[0].communicate(timeout=60)[0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()  # reads and closes the pipe
    assert procs[0].returncode == 1, log0[-3000:]
    assert "arhmm-eqx: error: another process of this --distributed run stopped" in log0, log0[-3000:]
    assert f"arhmm-eqx resume {two} --distributed" in log0
