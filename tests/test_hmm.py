"""Forward filter, backward sampler and smoother against all K**T paths, with masked frames (model.md §3)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import oracles
from helpers import chi2_pvalue, enumerate_paths, path_codes, random_model, reference_ar_ll

from arhmm_eqx import _inference


K, D, L = 3, 2, 2
# Frames of x; z[t] belongs to frame t + L. Masked z frames: 2 (middle) and 5 (end) in
# sequence 0; 1, 2 (a middle gap) and 4, 5 (end) in sequence 1.
MASK = np.array(
    [
        [1, 1, 1, 1, 0, 1, 1, 0],
        [1, 1, 1, 0, 0, 1, 0, 0],
    ],
    dtype=np.float64,
)
N, T = MASK.shape
TZ = T - L
P_MIN = 1e-4  # chi-square threshold: a correct sampler fails with probability 1e-4


def _problem(dtype, seed=0):
    """x, mask, Ab, Q, pi for N=2 sequences of T=8 frames; x is finite everywhere."""
    k_model, k_x = jr.split(jr.key(seed))
    Ab, Q, pi, _ = random_model(k_model, K, D, L, dtype)
    x = 1.5 * jr.normal(k_x, (N, T, D), dtype=dtype)
    return x, jnp.asarray(MASK, dtype), Ab, Q, pi


def _random_ll(seed, Tz, mask_z, dtype):
    rng = np.random.default_rng(seed)
    ll = rng.normal(size=(Tz, K)) * 1.5 - 3.0
    return jnp.asarray(ll * mask_z[:, None], dtype)


def test_forward_filter_and_smoother_match_enumeration():
    mask_z = MASK[0, L:]
    with jax.enable_x64(True):
        pi = _problem(jnp.float64)[4]
        ll = _random_ll(1, TZ, mask_z, jnp.float64)
        log_norm, filtered = jax.jit(oracles.forward_filter)(ll, pi)
        smoothed = jax.jit(oracles.smoother)(ll, pi)
        log_z, marginals, _ = enumerate_paths(ll, pi)
        np.testing.assert_allclose(float(log_norm), log_z, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(smoothed), marginals, rtol=1e-10, atol=1e-12)
        for t in range(TZ):  # filtered[t] = p(z[t] | frames up to t): the last marginal of the prefix
            np.testing.assert_allclose(np.asarray(filtered[t]), enumerate_paths(ll[: t + 1], pi)[1][-1],
                                       rtol=1e-10, atol=1e-12)


def test_stateseq_functions_match_enumeration_with_masks():
    with jax.enable_x64(True):
        x, mask, Ab, Q, pi = _problem(jnp.float64)
        ll_ref = reference_ar_ll(x, mask, Ab, Q)
        enum = [enumerate_paths(ll_ref[n], pi) for n in range(N)]
        mll = jax.jit(_inference.marginal_log_likelihood)(x, mask, Ab, Q, pi)
        assert mll.dtype == jnp.float64
        np.testing.assert_allclose(float(mll), sum(e[0] for e in enum), rtol=1e-10)
        expected = np.stack([e[1] for e in enum])
        marg = jax.jit(_inference.smoothed_marginals)(x, mask, Ab, Q, pi)
        assert marg.shape == (N, TZ, K) and marg.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(marg), expected, rtol=1e-9, atol=1e-12)
        # the blocked smoother does not depend on the block size (padding frames at the end
        # of the last block) or on the sequence chunking (padding sequences)
        for block, chunk in ((3, None), (5, 1), (64, 2)):
            m = _inference.smoothed_marginals(x, mask, Ab, Q, pi, block=block, sequence_chunk=chunk)
            np.testing.assert_allclose(np.asarray(m), expected, rtol=1e-9, atol=1e-12, err_msg=f"{block=} {chunk=}")
        ref = oracles.stateseq_marginals_from_ll(jnp.asarray(ll_ref), pi)
        np.testing.assert_allclose(np.asarray(ref), expected, rtol=1e-9, atol=1e-12)
        # sample_stateseqs_from_ll also returns the per-sequence normalisers
        _, log_norms = jax.jit(oracles.sample_stateseqs_from_ll)(jr.key(0), jnp.asarray(ll_ref), pi)
        np.testing.assert_allclose(np.asarray(log_norms), [e[0] for e in enum], rtol=1e-10)


_N_DRAWS = 20000


@jax.jit
def _draw_paths(keys, x, mask, Ab, Q, pi):
    """One posterior path of sequence 0 per key, through the x-level sampler."""
    one = lambda k: _inference.sample_stateseqs(k, x[:1], mask[:1], Ab, Q, pi)[0][0]
    return jax.vmap(one)(keys)


def _path_pvalue(z, probs):
    counts = np.bincount(path_codes(z, K), minlength=K**TZ)
    return chi2_pvalue(counts, probs)


def test_sampled_paths_match_exact_posterior():
    """Path frequencies of FFBS equal the enumerated posterior (chi-square, p > 1e-4); and the
    same test rejects a sampler fed a transposed `pi` or the data without its mask."""
    x, mask, Ab, Q, pi = _problem(jnp.float32)
    probs = enumerate_paths(reference_ar_ll(x, mask, Ab, Q)[0], pi)[2]
    # the posterior is spread over many paths, so the test has something to compare
    assert np.sum(probs * K**TZ >= 1.0) > 50
    keys = jr.split(jr.key(7), _N_DRAWS)
    p_ok = _path_pvalue(_draw_paths(keys, x, mask, Ab, Q, pi), probs)
    assert p_ok > P_MIN, p_ok
    # teeth: a wrong transition matrix, and the mask dropped (masked frames then emit)
    assert not np.allclose(pi, pi.T, atol=0.05)
    p_transposed = _path_pvalue(_draw_paths(keys, x, mask, Ab, Q, pi.T), probs)
    p_unmasked = _path_pvalue(_draw_paths(keys, x, jnp.ones_like(mask), Ab, Q, pi), probs)
    assert p_transposed < P_MIN, p_transposed
    assert p_unmasked < P_MIN, p_unmasked


def test_sampler_from_ll_matches_exact_posterior_per_sequence():
    """`sample_stateseqs_from_ll` on a batch of N copies draws each row independently from the posterior."""
    mask_z = MASK[1, L:]
    ll = _random_ll(3, TZ, mask_z, jnp.float32)
    pi = _problem(jnp.float32, seed=2)[4]
    probs = enumerate_paths(ll, pi)[2]
    sampler = jax.jit(oracles.sample_stateseqs_from_ll)
    z, _ = sampler(jr.key(11), jnp.broadcast_to(ll, (_N_DRAWS, TZ, K)), pi)
    assert z.dtype == jnp.int32 and z.shape == (_N_DRAWS, TZ)
    p_ok = _path_pvalue(z, probs)
    assert p_ok > P_MIN, p_ok
    # teeth: the same test rejects draws made with a wrong (uniform) transition matrix
    z_wrong, _ = sampler(jr.key(11), jnp.broadcast_to(ll, (_N_DRAWS, TZ, K)), jnp.full((K, K), 1.0 / K))
    assert _path_pvalue(z_wrong, probs) < P_MIN


def test_float32_matches_float64_enumeration():
    mask_z = MASK[0, L:]
    ll64 = np.asarray(_random_ll(5, TZ, mask_z, jnp.float32), np.float64)
    pi = _problem(jnp.float32)[4]
    log_z, marginals, _ = enumerate_paths(ll64, pi)
    log_norm, _ = jax.jit(oracles.forward_filter)(jnp.asarray(ll64, jnp.float32), pi)
    smoothed = jax.jit(oracles.smoother)(jnp.asarray(ll64, jnp.float32), pi)
    assert log_norm.dtype == jnp.float32 and smoothed.dtype == jnp.float32
    eps = float(np.finfo(np.float32).eps)
    # a few roundings per step and per state, accumulated over TZ steps, on terms of size |ll|
    scale = 1.0 + np.abs(ll64).max(axis=1).sum() + TZ * np.log(K)
    assert abs(float(log_norm) - log_z) <= 10 * TZ * K * eps * scale
    np.testing.assert_allclose(np.asarray(smoothed), marginals, atol=10 * TZ * K * eps)


def test_long_sequence_does_not_underflow():
    """T = 20000, K = 3, with emission log-likelihoods near -800 (exp underflows even in float64):
    the log-likelihood is finite and equals a float64 normalised forward pass in numpy, to the
    worst-case rounding bound of recursive summation (Tz * eps * sum of |terms|) in both dtypes."""
    Tz = 20000
    rng = np.random.default_rng(0)
    ll = -800.0 + 5.0 * rng.normal(size=(Tz, K))
    ll[rng.random(Tz) < 0.1] = 0.0  # some masked frames
    pi = _problem(jnp.float32)[4]
    ll = ll.astype(np.float32).astype(np.float64)
    pi64 = np.asarray(pi, np.float64)
    pred, ref = np.full(K, 1.0 / K), 0.0
    for t in range(Tz):
        m = ll[t].max()
        w = pred * np.exp(ll[t] - m)
        ref += np.log(w.sum()) + m
        pred = (w / w.sum()) @ pi64
    size = np.abs(ll).max(axis=1).sum() + Tz * np.log(K)
    for dtype in (jnp.float32, jnp.float64):
        with jax.enable_x64(dtype == jnp.float64):
            ll_d, pi_d = jnp.asarray(ll, dtype), jnp.asarray(pi64, dtype)
            log_norm, filtered = jax.jit(oracles.forward_filter)(ll_d, pi_d)
            smoothed = jax.jit(oracles.smoother)(ll_d, pi_d)
            z, log_norms = jax.jit(oracles.sample_stateseqs_from_ll)(jr.key(0), ll_d[None], pi_d)
        eps = float(jnp.finfo(dtype).eps)
        assert log_norm.dtype == dtype and np.isfinite(float(log_norm))
        assert np.all(np.isfinite(np.asarray(filtered))) and np.all(np.isfinite(np.asarray(smoothed)))
        np.testing.assert_allclose(np.asarray(smoothed).sum(-1), 1.0, atol=10 * K * eps)
        assert abs(float(log_norm) - ref) <= Tz * eps * size, (dtype, float(log_norm), ref)
        assert np.all((np.asarray(z) >= 0) & (np.asarray(z) < K)) and np.isfinite(float(log_norms[0]))


def test_filter_survives_transitions_through_floored_entries():
    """A frame that only a state reachable through `tiny` entries of `pi` explains: the
    float32 filter must stay finite (products `filt * tiny` are subnormal and flush to zero)
    and agree with float64, where nothing underflows; the sampler must pick that state."""
    tiny = float(np.finfo(np.float32).tiny)
    pi = np.array([[0.5, tiny, 0.5], [tiny, 1.0 - 2 * tiny, tiny], [0.5, tiny, 0.5]])
    Ab = np.array([[[0.0, 0.0]], [[0.0, 10.0]], [[0.0, 0.3]]])  # D=1, L=1: x_t = bias + noise
    Q = np.full((3, 1, 1), 1e-2)
    x = np.concatenate([np.full(6, 0.15), np.full(6, 10.0)])[None, :, None]
    mask = np.ones((1, 12))
    with jax.enable_x64(True):
        args64 = [jnp.asarray(a, jnp.float64) for a in (x, mask, Ab, Q, pi)]
        want = float(_inference.marginal_log_likelihood(*args64))
    args32 = [jnp.asarray(a, jnp.float32) for a in (x, mask, Ab, Q, pi)]
    got = float(jax.jit(_inference.marginal_log_likelihood)(*args32))
    assert np.isfinite(got)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    z, _, log_marg = jax.jit(_inference.sample_stateseqs)(jr.key(0), *args32)
    assert np.isfinite(float(log_marg))
    np.testing.assert_array_equal(np.asarray(z)[0, 5:], 1)
    marg = np.asarray(jax.jit(_inference.smoothed_marginals)(*args32))
    assert np.all(np.isfinite(marg))
    np.testing.assert_allclose(marg[0, 5:, 1], 1.0, atol=1e-6)


def test_sampled_states_are_scored_exactly():
    """The `log p(x | z, Ab, Q)` returned with the draw (read off the filter's normalisers)
    equals the direct sum of the emission log-likelihoods of the drawn states, with masked
    gaps, trailing padding, blocks that split the sequence and chunks of sequences."""
    for dtype, rtol in ((jnp.float64, 1e-10), (jnp.float32, 1e-5)):
        with jax.enable_x64(dtype == jnp.float64):
            x, mask, Ab, Q, pi = _problem(dtype, seed=3)
            ll = reference_ar_ll(x, mask, Ab, Q)  # (N, TZ, K), 0 on masked frames
            for block, chunk in ((64, None), (3, None), (4, 1)):
                z, ll_z, _ = _inference.sample_stateseqs(jr.key(block), x, mask, Ab, Q, pi, block=block,
                                                         sequence_chunk=chunk)
                direct = np.take_along_axis(np.asarray(ll, np.float64), np.asarray(z)[..., None], -1).sum()
                np.testing.assert_allclose(float(ll_z), direct, rtol=rtol, err_msg=f"{dtype} {block=} {chunk=}")
