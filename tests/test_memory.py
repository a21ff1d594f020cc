"""The memory knob (`sequence_chunk`) and `estimate_memory`."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import arhmm_eqx as ae
from arhmm_eqx import _inference


K, D, L, N, T = 4, 2, 2, 3, 40


def _data():
    x = jr.normal(jr.key(0), (N, T, D))
    mask = np.ones((N, T), np.float32)
    mask[1, 30:] = 0
    mask[2, 10:14] = 0
    return x, jnp.asarray(mask)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_sequence_chunk_gives_the_same_samples(chunk):
    x, mask = _data()
    model = ae.ARHMM.from_prior(ae.Hyperparams.from_scales(K, D, L, kappa=10.0), x, mask, key=jr.key(1))
    p = model.params
    z, ll, lm = _inference.sample_stateseqs(jr.key(2), x, mask, p.Ab, p.Q, p.pi)
    zc, llc, lmc = _inference.sample_stateseqs(jr.key(2), x, mask, p.Ab, p.Q, p.pi, sequence_chunk=chunk)
    np.testing.assert_array_equal(np.asarray(zc), np.asarray(z))
    # sums over chunks are taken in another order: float32 rounding of a sum of ~100 terms
    np.testing.assert_allclose(float(llc), float(ll), rtol=1e-5)
    np.testing.assert_allclose(float(lmc), float(lm), rtol=1e-5)


def test_sequence_chunk_through_resample():
    x, mask = _data()
    model = ae.ARHMM.from_prior(ae.Hyperparams.from_scales(K, D, L, kappa=10.0), x, mask, key=jr.key(1))
    a = model.resample(x, mask, key=jr.key(3))
    b = model.resample(x, mask, key=jr.key(3), sequence_chunk=2)
    np.testing.assert_array_equal(np.asarray(a.states.z), np.asarray(b.states.z))
    np.testing.assert_array_equal(np.asarray(a.params.Ab), np.asarray(b.params.Ab))


def test_bad_sequence_chunk():
    x, mask = _data()
    model = ae.ARHMM.from_prior(ae.Hyperparams.from_scales(K, D, L), x, mask, key=jr.key(1))
    with pytest.raises(ValueError, match="sequence_chunk"):
        model.resample(x, mask, key=jr.key(3), sequence_chunk=0)


def test_estimate_memory_scales_and_matches_compiled_temporaries():
    big = ae.estimate_memory(20, 36_000, 10, 3, 100)
    # the filtered messages: T-L frames (rounded up to the time block) x N x K float32 numbers
    assert big.messages == pytest.approx(36_032 * 20 * 100 * 4)
    assert big.total == big.data + big.messages + big.working + big.runtime
    chunked = ae.estimate_memory(20, 36_000, 10, 3, 100, sequence_chunk=4)
    assert chunked.messages * 5 == big.messages and chunked.total < big.total
    assert ae.estimate_memory(20, 36_000, 10, 3, 100, num_chains=4).messages == 4 * big.messages
    assert ae.estimate_memory(20, 36_000, 10, 3, 100, dtype="float64").messages == 2 * big.messages
    # the formula against XLA's own buffer assignment for a small workload
    small = ae.estimate_memory(4, 5_000, 10, 3, 50)
    exact = ae.estimate_memory(4, 5_000, 10, 3, 50, exact=True)
    assert exact.messages + exact.working == pytest.approx(small.messages + small.working, rel=0.5)
    assert "GiB" in str(small)


def test_parallel_option_gives_the_same_sweep():
    """`parallel=True` (parallel-in-time filter and sampler) draws the same states as the
    sequential path on the same key (float32 rounding aside: all but a few frames)."""
    x, mask = _data()
    model = ae.ARHMM.from_prior(ae.Hyperparams.from_scales(K, D, L, kappa=10.0), x, mask, key=jr.key(1))
    a = model.resample(x, mask, key=jr.key(3))
    b = model.resample(x, mask, key=jr.key(3), parallel=True)
    assert np.mean(np.asarray(a.states.z) == np.asarray(b.states.z)) > 0.97
    np.testing.assert_array_equal(np.asarray(a.params.Ab), np.asarray(b.params.Ab))


def test_parallel_with_sequence_chunk():
    x, mask = _data()
    model = ae.ARHMM.from_prior(ae.Hyperparams.from_scales(K, D, L, kappa=10.0), x, mask, key=jr.key(1))
    p = model.params
    z, _, lm = _inference.sample_stateseqs(jr.key(2), x, mask, p.Ab, p.Q, p.pi, parallel=True)
    zc, _, lmc = _inference.sample_stateseqs(jr.key(2), x, mask, p.Ab, p.Q, p.pi, parallel=True, sequence_chunk=2)
    np.testing.assert_array_equal(np.asarray(zc), np.asarray(z))
    np.testing.assert_allclose(float(lmc), float(lm), rtol=1e-5)
