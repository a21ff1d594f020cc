"""States in use and median run duration against plain-Python run counting."""

import jax.numpy as jnp
import numpy as np
import pytest

from arhmm_eqx._summaries import median_duration, num_states_used, run_length_histogram


def _python_runs(z, valid):
    lengths = []
    for zs, vs in zip(z, valid):
        current, prev = 0, None
        for state, ok in zip(zs, vs):
            if not ok:
                if current:
                    lengths.append(current)
                current, prev = 0, None
                continue
            if prev is not None and state == prev:
                current += 1
            else:
                if current:
                    lengths.append(current)
                current = 1
            prev = state
        if current:
            lengths.append(current)
    return lengths


@pytest.mark.parametrize("seed", range(5))
def test_run_lengths_match_python(seed):
    rng = np.random.default_rng(seed)
    N, Tz, K = 3, 40, 4
    z = np.repeat(rng.integers(0, K, (N, Tz // 4)), 4, axis=1)
    z = np.where(rng.random((N, Tz)) < 0.2, rng.integers(0, K, (N, Tz)), z)
    valid = rng.random((N, Tz)) > 0.15
    valid[1, 30:] = False
    lengths = _python_runs(z, valid)
    hist = np.asarray(run_length_histogram(jnp.asarray(z, jnp.int32), jnp.asarray(valid)))
    np.testing.assert_array_equal(hist, np.bincount(lengths, minlength=Tz + 1))
    want_median = np.sort(lengths)[(len(lengths) - 1) // 2]
    assert float(median_duration(jnp.asarray(z, jnp.int32), jnp.asarray(valid))) == want_median
    used = len(set(z[valid].tolist()))
    assert int(num_states_used(jnp.asarray(z, jnp.int32), jnp.asarray(valid), K)) == used


def test_no_valid_frame_gives_zero():
    z = jnp.zeros((2, 5), jnp.int32)
    valid = jnp.zeros((2, 5), bool)
    assert float(median_duration(z, valid)) == 0.0
    assert int(num_states_used(z, valid, 3)) == 0
