"""One process of a multi-process run, started by `test_multiprocess.py` (not a test file).

`python multiprocess_worker.py TASK PROCESS_ID NUM_PROCESSES PORT DATA OUT EXTRA` joins the run
through `init_distributed` (`jax.distributed.initialize`; 2 CPU devices per process unless
`ARHMM_EQX_TEST_DEVICES` says otherwise, gloo collectives), does TASK and writes what it saw
to the `.npz` OUT. DATA is an `.npz` with this process's own sequences only (`x`, `mask`,
`rows`, `num_sequences`). EXTRA is, for `library` and `chains`, an `.npz` with every sequence
(for the layouts that replicate the data on every device) and, for `fit` and `resume`, the
checkpoint folder.

Tasks: `library` (chains over processes; sequences over processes from process-local rows;
a kappa grid), `chains` (only the first of those), `fit` (a fit with checkpoints, process 1
killed after the first one when `ARHMM_EQX_TEST_KILL=1`, or interrupted by Ctrl-C on process 1 when
`ARHMM_EQX_TEST_SIGINT=1`), `resume` (resume that fit, and the same fit without a stop).
"""

import os
import signal
import sys


os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + os.environ.get("ARHMM_EQX_TEST_DEVICES", "2")
os.environ["JAX_PLATFORMS"] = "cpu"

import jax


TASK, PID, NPROC, PORT, DATA, OUT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], *sys.argv[5:7]
EXTRA = sys.argv[7]
if os.environ.get("ARHMM_EQX_TEST_JAX_CACHE"):
    jax.config.update("jax_compilation_cache_dir", os.environ["ARHMM_EQX_TEST_JAX_CACHE"])
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
os.environ.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{PORT}", JAX_NUM_PROCESSES=str(NPROC), JAX_PROCESS_ID=str(PID))

from arhmm_eqx.workflow import init_distributed  # noqa: E402


# small timeouts: a missing process is noticed in seconds
init_distributed(initialization_timeout=60, heartbeat_timeout=5, shutdown_timeout=10)

import jax.random as jr  # noqa: E402
import jax.tree_util as jtu  # noqa: E402
import numpy as np  # noqa: E402

import arhmm_eqx as ae  # noqa: E402
from arhmm_eqx.workflow import fit, resume  # noqa: E402


K, D, L, C, ITERS = 3, 2, 1, 4, 3
HP = ae.Hyperparams.from_scales(K, D, L, kappa=1e2)
KAPPAS = (1e1, 1e3)


def flat(prefix: str, tree) -> dict:
    """The leaves of a (gathered) tree as named NumPy arrays."""
    leaves = jtu.tree_leaves(tree)
    return {f"{prefix}/{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}


def library(data) -> dict:
    out = {"devices": np.asarray(len(jax.devices())), "local_devices": np.asarray(len(jax.local_devices()))}
    from arhmm_eqx._sharding import gather

    # 1. chains over the 4 devices of both processes; every process holds the (small) data
    with np.load(EXTRA) as f:
        x, mask = f["x"], f["mask"]
    models = ae.init_chains(HP, x, mask, key=jr.key(1), num_chains=C)
    res, info = ae.run_chains(jr.key(2), models, x, mask, ITERS, mesh=ae.chain_mesh())
    out["chains_spread"] = np.asarray(not res.states.z.is_fully_addressable)
    out |= flat("chains", gather((res, info)))

    # 2. sequences over the 4 devices: this process loads only its own rows
    N = int(data["num_sequences"])
    mesh = ae.chain_mesh(num_sequence_shards=len(jax.devices()))
    rows = ae.process_sequences(mesh, N)
    assert (rows.start, rows.stop) == tuple(data["rows"]), (rows, data["rows"])  # the test gave us these rows
    xs, ms = ae.shard_sequences(data["x"], data["mask"], mesh, num_sequences=N)
    out["x_shape"] = np.asarray(xs.shape)
    out["x_local_rows"] = np.asarray(sum(s.data.shape[0] for s in xs.addressable_shards))
    out["x_spread"] = np.asarray(not xs.is_fully_addressable)
    models = ae.init_chains(HP, xs, ms, key=jr.key(1), num_chains=C)
    res, info = ae.run_chains(jr.key(2), models, xs, ms, ITERS, mesh=mesh)
    out |= flat("sequences", gather((res, info)))

    # 3. a kappa grid, 2 kappas x 2 chains, as one program over both processes
    scan = ae.kappa_scan(HP, KAPPAS, x, mask, key=jr.key(3), num_iters=ITERS, chains_per_kappa=2,
                         mesh=ae.chain_mesh())
    out["kappa_durations"] = np.asarray(scan.durations)
    out |= flat("kappa", (scan.models, scan.infos))
    return out


def chains() -> dict:
    with np.load(EXTRA) as f:
        x, mask = f["x"], f["mask"]
    models = ae.init_chains(HP, x, mask, key=jr.key(1), num_chains=C)
    res, info = ae.run_chains(jr.key(2), models, x, mask, ITERS, mesh=ae.chain_mesh())
    from arhmm_eqx._sharding import gather

    spread = not res.states.z.is_fully_addressable
    return {"devices": np.asarray(len(jax.devices())), "chains_spread": np.asarray(spread)} | flat(
        "chains", gather((res, info)))


def interrupted_fit(model, xs, ms, options) -> dict:
    """A long fit in which process 1 alone gets Ctrl-C (SIGINT) once the checkpoint of sweep 2 exists."""
    import threading
    import time

    first = os.path.join(EXTRA, "ckpt_000002.json")

    def interrupt():
        while not os.path.exists(first):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    if PID == 1:
        threading.Thread(target=interrupt, daemon=True).start()
    result = fit(model, xs, ms, key=jr.key(5), num_iters=2000, checkpoint_dir=EXTRA, **options)
    from arhmm_eqx.workflow import load_checkpoint

    saved, meta = load_checkpoint(os.path.join(EXTRA, f"ckpt_{result.iteration:06d}.json"))
    return {"iteration": np.asarray(result.iteration), "reason": np.asarray(result.stopped_reason),
            "saved_iteration": np.asarray(meta["iteration"])} | flat("model", result.model) | flat("saved", saved)


def fit_task(data, resume_it: bool) -> dict:
    N = int(data["num_sequences"])
    mesh = ae.chain_mesh(num_sequence_shards=len(jax.devices()))
    xs, ms = ae.shard_sequences(data["x"], data["mask"], mesh, num_sequences=N)
    model = ae.ARHMM.from_prior(HP, xs, ms, key=jr.key(4))
    options = dict(save_every=2, progress=False, compile_cache=False, mesh=mesh)
    if not resume_it:
        if os.environ.get("ARHMM_EQX_TEST_SIGINT") == "1":
            return interrupted_fit(model, xs, ms, options)
        if PID == 1 and os.environ.get("ARHMM_EQX_TEST_KILL") == "1":
            fit(model, xs, ms, key=jr.key(5), num_iters=2, checkpoint_dir=EXTRA, **options)
            os.kill(os.getpid(), signal.SIGKILL)  # dies after the checkpoint of sweep 2
        result = fit(model, xs, ms, key=jr.key(5), num_iters=6, checkpoint_dir=EXTRA, **options)
        return {"iteration": np.asarray(result.iteration)}
    resumed = resume(EXTRA, xs, ms, num_iters=4, **options)
    straight = fit(model, xs, ms, key=jr.key(5), num_iters=6, checkpoint_dir=EXTRA + "-straight", **options)
    return {"iteration": np.asarray(resumed.iteration), "first_iter": np.asarray(resumed.first_iter)} | flat(
        "resumed", (resumed.model, resumed.infos)) | flat("straight", (straight.model, straight.infos))


def main() -> None:
    with np.load(DATA) as f:
        data = dict(f)
    if TASK == "library":
        out = library(data)
    elif TASK == "chains":
        out = chains()
    else:
        out = fit_task(data, resume_it=TASK == "resume")
    out["process_index"] = np.asarray(jax.process_index())
    np.savez(OUT, **out)
    print(f"process {PID}: done", flush=True)


if __name__ == "__main__":
    main()
