"""Joining the processes of a multi-process run: `init_distributed`, on JAX's own runtime."""

import os


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"the environment variable {name} must be an integer; got {text!r}.") from None


def init_distributed(
    *,
    initialization_timeout: int = 300,
    heartbeat_timeout: int = 100,
    shutdown_timeout: int = 300,
) -> tuple[int, int]:
    """Join this process to a multi-process run (`jax.distributed.initialize`); call it first,
    before any JAX computation, in every process.

    Where the processes are: from the environment variables `JAX_COORDINATOR_ADDRESS`
    (`host:port` of process 0), `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` when they are set;
    otherwise JAX detects the cluster itself (SLURM, Open MPI, and the others
    `jax.distributed.initialize` knows). CPU collectives use gloo, so that CPU processes can
    run one program together (GPUs use NCCL as always).

    A process that dies or stops answering is noticed by the others after `heartbeat_timeout`
    seconds; they then stop with an error instead of waiting for it.

    **Arguments:**

    - `initialization_timeout`: seconds to wait for every process to join.
    - `heartbeat_timeout`: seconds without a heartbeat after which a process counts as dead.
    - `shutdown_timeout`: seconds a finishing process waits for the others at exit.

    **Returns:** `(process_index, process_count)`.
    """
    import jax

    num_processes, process_id = _env_int("JAX_NUM_PROCESSES"), _env_int("JAX_PROCESS_ID")
    if (num_processes is None) != (process_id is None):
        raise ValueError("set both JAX_NUM_PROCESSES and JAX_PROCESS_ID (with JAX_COORDINATOR_ADDRESS), or "
                         "neither (to let JAX detect the cluster, e.g. under SLURM).")
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"JAX_PROCESS_ID must be in 0 .. JAX_NUM_PROCESSES - 1 = {num_processes - 1}; "
                         f"got {process_id}.")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        num_processes=num_processes, process_id=process_id, initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout, shutdown_timeout_seconds=shutdown_timeout,
    )
    return jax.process_index(), jax.process_count()
