"""`estimate_memory`: how much memory a Gibbs sweep needs, before fitting."""

import math
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._ar import STATS_BLOCK, STATS_BLOCKS_PER_STEP
from ._inference import DEFAULT_BLOCK


# Resident memory of a process that has imported JAX, initialised a model and compiled
# the sweep, beyond data and temporaries: the JAX runtime (about 0.15 GiB) plus compiled
# programs and the pages the allocator keeps after compiling (about 0.7 GiB). Measured
# on CPU with JAX 0.10 by benchmarks/bench_sweep.py (peak RSS minus the other terms).
RUNTIME_BYTES = int(0.85 * 2**30)


class MemoryEstimate(eqx.Module):
    """Bytes needed by a Gibbs sweep, by kind. `total` adds them up."""

    data: int  # x, mask and z
    messages: int  # the filtered messages of the state step, the largest temporary
    working: int  # other temporaries: likelihood blocks, sufficient statistics
    runtime: int  # JAX runtime and compiled programs (a measured constant)
    total: int

    def __str__(self) -> str:
        gib = lambda b: f"{b / 2**30:.2f} GiB"
        return (
            f"total {gib(self.total)} = data {gib(self.data)} + filtered messages {gib(self.messages)} "
            f"+ working {gib(self.working)} + runtime {gib(self.runtime)}"
        )


def estimate_memory(
    num_sequences: int,
    num_frames: int,
    latent_dim: int,
    nlags: int,
    num_states: int,
    *,
    dtype="float32",
    sequence_chunk: int | None = None,
    num_chains: int = 1,
    exact: bool = False,
) -> MemoryEstimate:
    """Estimate the memory of fitting a model, before fitting it.

    **Arguments:**

    - `num_sequences`, `num_frames`, `latent_dim`, `nlags`, `num_states`: `N, T, D, L, K`.
    - `dtype`: the floating dtype of the data and parameters.
    - `sequence_chunk`: as in `ARHMM.resample`; the filtered messages then scale with it
      instead of with `num_sequences`.
    - `num_chains`: models run together in one `vmap` (the data are shared; the states,
      messages and temporaries are per chain).
    - `exact`: compile the sweep for these shapes (takes seconds, runs nothing) and take
      the temporaries from XLA's own buffer assignment instead of the formula.

    **Returns:** a `MemoryEstimate` in bytes; `print` it for a summary.
    """
    N, T, D, L, K = num_sequences, num_frames, latent_dim, nlags, num_states
    s = np.dtype(dtype).itemsize
    Tz = T - L
    AD = D * L + 1 + D
    Nc = N if sequence_chunk is None else min(N, sequence_chunk)
    data = N * T * D * s + N * T * s + num_chains * N * Tz * 4  # x and mask are shared; one z per chain
    messages = math.ceil(Tz / DEFAULT_BLOCK) * DEFAULT_BLOCK * Nc * K * s
    blocks = 3 * Nc * DEFAULT_BLOCK * K * D * s
    num_blocks = math.ceil(N * Tz / STATS_BLOCK) + K
    stats = 5 * N * Tz * 4 + 3 * STATS_BLOCK * STATS_BLOCKS_PER_STEP * AD * s + num_blocks * AD * AD * s
    working = blocks + stats
    if exact:
        working = max(0, _compiled_temporaries(N, T, D, L, K, dtype, sequence_chunk) - messages)
    messages, working = num_chains * messages, num_chains * working
    total = data + messages + working + RUNTIME_BYTES
    return MemoryEstimate(data=data, messages=messages, working=working, runtime=RUNTIME_BYTES, total=total)


def _compiled_temporaries(N, T, D, L, K, dtype, sequence_chunk) -> int:
    from ._gibbs import SweepOptions, gibbs_sweep
    from ._hyperparams import Hyperparams
    from ._params import Params
    from ._states import States

    dt = jnp.dtype(dtype)
    hp = Hyperparams.from_scales(K, D, L)
    hp = jax.tree.map(lambda a: a.astype(dt), hp)
    A = D * L + 1
    params = Params(Ab=jnp.zeros((K, D, A), dt), Q=jnp.zeros((K, D, D), dt), pi=jnp.zeros((K, K), dt),
                    betas=jnp.zeros((K,), dt))
    states = States(z=jnp.zeros((N, T - L), jnp.int32))
    options = SweepOptions(sequence_chunk=sequence_chunk)
    sweep = jax.jit(lambda p, s, x, mask, key: gibbs_sweep(key, hp, p, s, x, mask, options))
    compiled = sweep.lower(
        params, states, jax.ShapeDtypeStruct((N, T, D), dt), jax.ShapeDtypeStruct((N, T), dt), jax.random.key(0)
    ).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def available_memory(device=None) -> int | None:
    """Bytes free for new buffers on `device` (default: the first of `jax.devices()`).

    On an accelerator: its allocator's `bytes_limit - bytes_in_use` (`device.memory_stats()`).
    On a CPU: the host's available memory (`MemAvailable` of `/proc/meminfo`, else
    `os.sysconf` free pages). `None` when it cannot be known.
    """
    device = jax.devices()[0] if device is None else device
    if device.platform != "cpu":
        try:
            stats = device.memory_stats()
        except Exception:  # some backends do not implement it
            stats = None
        if stats and "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory_fits(
    num_sequences: int,
    num_frames: int,
    latent_dim: int,
    nlags: int,
    num_states: int,
    *,
    dtype="float32",
    sequence_chunk: int | None = None,
    num_chains: int = 1,
    extra_bytes: int = 0,
    device=None,
    available: int | None = None,
) -> MemoryEstimate:
    """Raise `MemoryError` with advice when `num_chains` chains will not fit in memory.

    The need is what a run adds to the process: the states, filtered messages and
    temporaries of every chain (`estimate_memory`), plus `extra_bytes` (e.g. saved
    samples); the data and the JAX runtime are already resident. It is compared with
    `available` bytes (default `available_memory(device)`); nothing is checked when that
    is unknown. Pass the sizes held by one device (chains and sequences per shard).

    **Returns:** the `MemoryEstimate`.
    """
    est = estimate_memory(num_sequences, num_frames, latent_dim, nlags, num_states, dtype=dtype,
                          sequence_chunk=sequence_chunk, num_chains=num_chains)
    available = available_memory(device) if available is None else available
    z_bytes = num_chains * num_sequences * (num_frames - nlags) * 4
    need = est.messages + est.working + z_bytes + int(extra_bytes)
    if available is not None and need > available:
        per_chain = need / max(num_chains, 1)
        fit = int(available // per_chain) if per_chain > 0 else 0
        chunk = 1 if sequence_chunk is None else max(1, sequence_chunk // 2)
        raise MemoryError(
            f"{num_chains} chain(s) over N={num_sequences} x T={num_frames} frames with K={num_states} states need "
            f"about {need / 2**30:.2f} GiB of working memory ({est}), but only {available / 2**30:.2f} GiB is "
            f"available. Run fewer chains at once (about {fit} fit), pass `sequence_chunk={chunk}` to filter fewer "
            "sequences at a time, save fewer samples (a larger `thin`), or shard the chains over more devices "
            "(`mesh=chain_mesh(...)`)."
        )
    return est
