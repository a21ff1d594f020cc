"""Viterbi: the most likely path against all K**T paths, with masked gaps and tails."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import all_paths, enumerate_paths, random_model, reference_ar_ll

import arhmm_eqx as ae
from arhmm_eqx._inference import viterbi as _viterbi
from arhmm_eqx.workflow import example_model, matched_accuracy


K, D, L = 3, 2, 2
# z frames 2 and 5 masked in sequence 0 (a gap and the tail); 1, 2 and 4, 5 in sequence 1.
MASK = np.array([[1, 1, 1, 1, 0, 1, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0]], dtype=np.float64)
N, T = MASK.shape
TZ = T - L


def _model(seed, dtype):
    k_model, k_x = jr.split(jr.key(seed))
    Ab, Q, pi, betas = random_model(k_model, K, D, L, dtype)
    x = 1.5 * jr.normal(k_x, (N, T, D), dtype=dtype)
    hp = ae.Hyperparams.from_scales(K, D, L)
    params = ae.Params(Ab=Ab, Q=Q, pi=pi, betas=betas)
    return ae.ARHMM(hp, params, ae.States(z=jnp.zeros((N, TZ), jnp.int32))), x, jnp.asarray(MASK, dtype)


def _viterbi_with_backpointers(ll, pi):
    """The textbook kernel (one sequence): max and argmax over `(K, K)` per frame, back-pointers
    stored, then followed. An oracle for the library's, which stores scores only."""
    log_pi = jnp.log(pi)

    def forward(score, ll_t):
        cand = score[:, None] + log_pi
        score = jnp.max(cand, axis=0) + ll_t
        return score - jnp.max(score), jnp.argmax(cand, axis=0).astype(jnp.int32)

    score_last, backs = jax.lax.scan(forward, ll[0] - jnp.max(ll[0]), ll[1:])
    z_last = jnp.argmax(score_last).astype(jnp.int32)
    _, z_rest = jax.lax.scan(lambda z, b: (b[z], b[z]), z_last, backs, reverse=True)
    return jnp.concatenate([z_rest, z_last[None]])


def _one(ll, pi):
    return _viterbi.viterbi_from_ll(ll[None], pi)[0]


def _best_path(ll, pi):
    """The most likely path by enumeration, and the gap to the second best (log scale)."""
    _, _, probs = enumerate_paths(ll, pi)
    order = np.argsort(probs)
    return all_paths(K, ll.shape[0])[order[-1]], np.log(probs[order[-1]]) - np.log(probs[order[-2]])


@pytest.mark.parametrize("seed", range(4))
def test_most_likely_states_match_enumeration(seed):
    with jax.enable_x64(True):
        model, x, mask = _model(seed, jnp.float64)
        ll = reference_ar_ll(x, mask, model.params.Ab, model.params.Q)
        z_full = np.asarray(model.most_likely_states(x, mask, fill_value=None))
        z_fill = np.asarray(model.most_likely_states(x, mask))
        assert z_full.shape == (N, TZ) and z_full.dtype == np.int32
        for n in range(N):
            best, gap = _best_path(ll[n], model.params.pi)
            assert gap > 1e-6  # a unique maximiser, so the comparison is exact
            np.testing.assert_array_equal(z_full[n], best)
            valid = MASK[n, L:] > 0
            np.testing.assert_array_equal(z_fill[n][valid], best[valid])
            assert np.all(z_fill[n][~valid] == -1)
        z_other = np.asarray(model.most_likely_states(x, mask, fill_value=K))
        assert np.all(z_other[MASK[:, L:] == 0] == K)


def test_viterbi_from_ll_matches_enumeration_float32():
    """The kernel on random log-likelihoods (float32), including rows zeroed by a mask."""
    pi = random_model(jr.key(3), K, D, L, jnp.float32)[2]
    fn = jax.jit(_one)
    rng = np.random.default_rng(0)
    for trial in range(10):
        ll = rng.normal(size=(7, K)) * 2.0 - 3.0
        ll[rng.random(7) < 0.3] = 0.0
        best, gap = _best_path(ll, pi)
        if gap < 1e-3:  # float32 cannot separate nearly tied paths
            continue
        np.testing.assert_array_equal(np.asarray(fn(jnp.asarray(ll, jnp.float32), pi)), best)


def test_viterbi_is_not_the_marginal_argmax():
    """Teeth: with a strongly sticky chain the joint path differs from the framewise argmax of
    the smoothed marginals in some frame, and the joint path is the better path."""
    with jax.enable_x64(True):
        pi = jnp.asarray([[0.9, 0.1], [0.1, 0.9]], jnp.float64)
        ll = jnp.asarray([[0.0, -0.2], [-1.5, 0.0], [0.0, -0.2], [0.0, -2.0], [-1.5, 0.0]], jnp.float64)
        z = np.asarray(_one(ll, pi))
        log_z, marginals, probs = enumerate_paths(np.asarray(ll), np.asarray(pi))
        paths = all_paths(2, 5)
        np.testing.assert_array_equal(z, paths[np.argmax(probs)])
        assert not np.array_equal(z, marginals.argmax(axis=1))


def test_long_sequence_recovers_true_states():
    """float32, T = 4000: scores are re-centred every step, so a long sequence decodes the truth."""
    truth = example_model(jr.key(0), 4, 3, 2, mean_duration=30.0)
    z_true, x = truth.simulate(2, 4000, key=jr.key(1))
    mask = jnp.ones(x.shape[:2])
    z = truth.most_likely_states(x, mask)
    assert matched_accuracy(np.asarray(z_true), np.asarray(z), 4, 4) > 0.98


def test_bad_input_is_reported(library_checks):
    model, x, mask = _model(0, jnp.float32)
    with pytest.raises(ValueError, match="`x` must have shape"):
        model.most_likely_states(x[0], mask)
    with pytest.raises(ValueError, match="`mask` must have shape"):
        model.most_likely_states(x, mask[:, 1:])


@pytest.mark.parametrize("K_big, ties", [(7, False), (5, True)])
def test_same_paths_as_stored_backpointers(K_big, ties):
    """The same paths, ties included, as the kernel that stores every back-pointer (float32,
    several sequences with masked rows; with `ties`, the log-likelihoods take few distinct
    values so that equal scores happen)."""
    rng = np.random.default_rng(K_big)
    pi = rng.dirichlet(np.ones(K_big), size=K_big) * 0.5 + 0.5 * np.eye(K_big)
    if ties:
        pi = np.full((K_big, K_big), 1.0 / K_big)
        ll = rng.integers(-2, 1, size=(6, 40, K_big)).astype(np.float32)
    else:
        ll = (rng.normal(size=(6, 40, K_big)) * 3.0).astype(np.float32)
    ll[rng.random((6, 40)) < 0.2] = 0.0
    pi = jnp.asarray(pi, jnp.float32)
    got = np.asarray(jax.jit(_viterbi.viterbi_from_ll)(jnp.asarray(ll), pi))
    want = np.stack([np.asarray(jax.jit(_viterbi_with_backpointers)(jnp.asarray(row), pi)) for row in ll])
    np.testing.assert_array_equal(got, want)
