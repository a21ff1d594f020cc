"""Cheap summaries of a state sequence, traced every sweep: states in use and run durations."""

import jax
import jax.numpy as jnp

from ._custom_types import Array, Bool, Float, Int


def run_starts(z: Int[Array, "N Tz"], valid: Bool[Array, "N Tz"]) -> Bool[Array, "N Tz"]:
    """True at each valid frame that starts a run: its predecessor is absent, masked, or in
    another state (a masked gap ends a run, as in `count_runs`)."""
    prev_valid = jnp.concatenate([jnp.zeros_like(valid[:, :1]), valid[:, :-1]], axis=1)
    changed = jnp.concatenate([jnp.ones_like(z[:, :1], bool), z[:, 1:] != z[:, :-1]], axis=1)
    return (changed | ~prev_valid) & valid


def num_states_used(z: Int[Array, "N Tz"], valid: Bool[Array, "N Tz"], num_states: int) -> Int[Array, ""]:
    """Number of states that label at least one valid frame."""
    counts = jax.ops.segment_sum(valid.reshape(-1).astype(jnp.int32), z.reshape(-1), num_segments=num_states)
    return jnp.sum(counts > 0).astype(jnp.int32)


def run_length_histogram(z: Int[Array, "N Tz"], valid: Bool[Array, "N Tz"]) -> Int[Array, " Tz+1"]:
    """`h[l]`: number of runs (maximal stretches of one state among valid frames) of length `l`.

    Runs cut by the end of a sequence or by a masked gap count with the length they have.
    """
    N, Tz = z.shape
    starts = run_starts(z, valid)
    offsets = (jnp.arange(N, dtype=jnp.int32) * Tz)[:, None]
    run_id = (jnp.cumsum(starts, axis=1, dtype=jnp.int32) - 1 + offsets).reshape(-1)
    run_id = jnp.where(valid.reshape(-1), run_id, N * Tz)  # masked frames go to a dropped segment
    lengths = jax.ops.segment_sum(valid.reshape(-1).astype(jnp.int32), run_id, num_segments=N * Tz)
    length_at_start = jnp.where(starts.reshape(-1), lengths[jnp.minimum(run_id, N * Tz - 1)], 0)
    return jax.ops.segment_sum(starts.reshape(-1).astype(jnp.int32), length_at_start, num_segments=Tz + 1)


def median_duration(z: Int[Array, "N Tz"], valid: Bool[Array, "N Tz"]) -> Float[Array, ""]:
    """Median run length in frames (the lower median over runs; 0 when no frame is valid)."""
    hist = run_length_histogram(z, valid)
    cum = jnp.cumsum(hist)
    total = cum[-1]
    median = jnp.argmax(2 * cum >= total)
    return jnp.where(total > 0, median, 0).astype(jnp.result_type(float))
