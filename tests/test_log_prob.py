"""Log probabilities and AR log-likelihoods against numpy/scipy, with the masking rules of model.md."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.stats
from helpers import enumerate_paths, random_model, reference_ar_ll

import arhmm_eqx as ae
import arhmm_eqx.compat as compat
from arhmm_eqx import _ar, _inference, _log_prob


K, D, L = 3, 2, 2
# z frames (x frame t + L) masked: sequence 0 at 2 (middle) and 6 (end); sequence 1 at 3, 4
# (a middle gap) and 5, 6 (end). Frame 0 of sequence 1 (a lag only) is masked too.
MASK = np.array(
    [
        [1, 1, 1, 1, 0, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 0, 0, 1, 0],
    ],
    dtype=np.float64,
)
N, T = MASK.shape
TZ = T - L


def _sticky_z(rng, shape):
    z = np.zeros(shape, dtype=np.int32)
    z[..., 0] = rng.integers(0, K, shape[:-1])
    for t in range(1, shape[-1]):
        stay = rng.random(shape[:-1]) < 0.6
        z[..., t] = np.where(stay, z[..., t - 1], rng.integers(0, K, shape[:-1]))
    return z


def _problem(dtype, seed=0):
    k_model, k_x = jr.split(jr.key(seed))
    Ab, Q, pi, betas = random_model(k_model, K, D, L, dtype)
    x = 1.5 * jr.normal(k_x, (N, T, D), dtype=dtype)
    z = jnp.asarray(_sticky_z(np.random.default_rng(seed), (N, TZ)))
    return x, jnp.asarray(MASK, dtype), z, Ab, Q, pi, betas


def _model(Ab, Q, pi, betas, z, **hyper):
    hp = ae.Hyperparams.from_scales(K, D, L, **hyper)
    return ae.ARHMM(hp, ae.Params(Ab=Ab, Q=Q, pi=pi, betas=betas), ae.States(z=z))


def _zero_nonfinite_masked(x, mask):
    """What the library promises a non-finite value in a masked frame acts as: 0. Finite values
    of masked frames are kept (they are lags of the valid frames after them)."""
    return jnp.where((mask[..., None] > 0) | jnp.isfinite(x), x, jnp.zeros((), x.dtype))


def _ref_continuous(x, z, Ab, Q):
    """log N(x[t] | Ab[z] u_t, Q[z]) for every frame t >= L, no mask, by scipy."""
    x, Ab, Q = (np.asarray(a, np.float64) for a in (x, Ab, Q))
    out = np.zeros(z.shape)
    for idx in np.ndindex(*z.shape[:-1]):
        for t in range(z.shape[-1]):
            u = np.concatenate([x[idx][t : t + L].reshape(-1), [1.0]])
            k = int(z[idx][t])
            out[idx][t] = scipy.stats.multivariate_normal(Ab[k] @ u, Q[k]).logpdf(x[idx][t + L])
    return out


def _ref_discrete(z, pi):
    z, log_pi = np.asarray(z), np.log(np.asarray(pi, np.float64))
    return log_pi[z[..., :-1], z[..., 1:]]


def test_discrete_stateseq_log_prob():
    x, mask, z, Ab, Q, pi, _ = _problem(jnp.float32)
    for zz in (z[0], z, jnp.stack([z, z[::-1]])):
        ref = _ref_discrete(zz, pi)
        for out in (_log_prob.discrete_stateseq_log_prob(zz, pi), compat.discrete_stateseq_log_prob(zz, pi)):
            assert out.shape == zz.shape[:-1] + (TZ - 1,)
            np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6)


def test_continuous_stateseq_log_prob():
    with jax.enable_x64(True):
        x, mask, z, Ab, Q, pi, _ = _problem(jnp.float64)
        ref = _ref_continuous(x, np.asarray(z), Ab, Q)
        outs = (_log_prob.continuous_stateseq_log_prob(x, z, Ab, Q), compat.continuous_stateseq_log_prob(x, z, Ab, Q))
        for out in outs:
            assert out.shape == (N, TZ)
            np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-10)
        single = _log_prob.continuous_stateseq_log_prob(x[1], z[1], Ab, Q)  # no batch axis
        assert single.shape == (TZ,)
        np.testing.assert_allclose(np.asarray(single), ref[1], rtol=1e-10)


def _ref_transition_weights(mask):
    """1 for a transition into a state frame that is valid or followed later by a valid one."""
    m = np.asarray(mask)[:, L + 1 :] > 0
    return np.array([[np.any(row[t:]) for t in range(row.size)] for row in m], np.float64)


def _ref_log_joint(x, mask, z, pi, Ab, Q):
    mask = np.asarray(mask)
    return {
        "z": float(np.sum(_ref_discrete(z, pi) * _ref_transition_weights(mask))),
        "x": float(np.sum(_ref_continuous(x, np.asarray(z), Ab, Q) * mask[:, L:])),
    }


def test_log_joint_likelihood():
    with jax.enable_x64(True):
        x, mask, z, Ab, Q, pi, betas = _problem(jnp.float64)
        ref = _ref_log_joint(x, mask, z, pi, Ab, Q)
        out = jax.jit(_log_prob.log_joint_likelihood)(x, mask, z, pi, Ab, Q)
        assert set(out) == {"z", "x"}
        for name in ("z", "x"):
            np.testing.assert_allclose(float(out[name]), ref[name], rtol=1e-10)
        # the public entry points (finite masked frames are kept as lags)
        x0 = _zero_nonfinite_masked(x, mask)
        ref0 = _ref_log_joint(x0, mask, z, pi, Ab, Q)
        model = _model(Ab, Q, pi, betas, z)
        params = {"Ab": Ab, "Q": Q, "pi": pi, "betas": betas}
        for out in (compat.log_joint_likelihood(x0, mask, z, pi, Ab, Q), model.log_joint_likelihood(x0, mask),
                    compat.model_likelihood({"x": x0, "mask": mask}, {"z": z}, params)):
            for name in ("z", "x"):
                np.testing.assert_allclose(float(out[name]), ref0[name], rtol=1e-10)


def test_marginal_log_likelihood():
    with jax.enable_x64(True):
        x, mask, z, Ab, Q, pi, betas = _problem(jnp.float64)
        ll = reference_ar_ll(x, mask, Ab, Q)
        ref = sum(enumerate_paths(ll[n], pi)[0] for n in range(N))
        out = jax.jit(_inference.marginal_log_likelihood)(x, mask, Ab, Q, pi)
        np.testing.assert_allclose(float(out), ref, rtol=1e-10)
        x0 = _zero_nonfinite_masked(x, mask)
        ll0 = reference_ar_ll(x0, mask, Ab, Q)
        ref0 = sum(enumerate_paths(ll0[n], pi)[0] for n in range(N))
        model = _model(Ab, Q, pi, betas, z)
        for out in (compat.marginal_log_likelihood(mask, x0, Ab, Q, pi), model.marginal_log_likelihood(x0, mask)):
            np.testing.assert_allclose(float(out), ref0, rtol=1e-10)


def test_public_entry_points_agree_with_kernels_on_finite_masked_frames():
    """model.md: `ll[t, k] = log N(x[t] | Ab[k] u_t, Q[k]) * mask[t]` with `u_t` built from `x`. A
    masked frame's own row is zero, but its (finite) values are still the lags of the valid frames
    after it; the compat functions and the `ARHMM` methods must give the kernels' answer."""
    with jax.enable_x64(True):
        x, mask, z, Ab, Q, pi, betas = _problem(jnp.float64)
        model = _model(Ab, Q, pi, betas, z)
        mll = float(_inference.marginal_log_likelihood(x, mask, Ab, Q, pi))
        lj = _log_prob.log_joint_likelihood(x, mask, z, pi, Ab, Q)
        marg = np.asarray(_inference.smoothed_marginals(x, mask, Ab, Q, pi))
        np.testing.assert_allclose(float(compat.marginal_log_likelihood(mask, x, Ab, Q, pi)), mll, rtol=1e-10)
        np.testing.assert_allclose(float(model.marginal_log_likelihood(x, mask)), mll, rtol=1e-10)
        lj_compat = compat.log_joint_likelihood(x, mask, z, pi, Ab, Q)
        np.testing.assert_allclose(float(lj_compat["x"]), float(lj["x"]), rtol=1e-10)
        marg_compat = compat.stateseq_marginals(x, mask, Ab, Q, pi)
        np.testing.assert_allclose(np.asarray(marg_compat), marg, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.asarray(model.stateseq_marginals(x, mask)), marg, rtol=1e-9, atol=1e-12)


def _ref_cross(x, mask, z, Ab, Q, masked_frame_ends_run=False):
    """C[j, k] = (sum over valid frames of j of ll_k - ll_j) / (runs of j + 1e-6), by a loop.

    Runs are counted per sequence on the valid frames: with the masked frames removed first,
    or (`masked_frame_ends_run`) with a masked frame ending the current run. The tests below
    use configurations where both readings give the same counts."""
    ll = reference_ar_ll(x, mask, Ab, Q)
    z, valid = np.asarray(z), np.asarray(mask)[:, L:] > 0
    summed, runs = np.zeros((K, K)), np.zeros(K)
    for n in range(z.shape[0]):
        prev = None
        for t in range(z.shape[1]):
            if not valid[n, t]:
                if masked_frame_ends_run:
                    prev = None
                continue
            j = z[n, t]
            summed[j] += ll[n, t]
            if j != prev:
                runs[j] += 1
            prev = j
    return (summed - np.diag(summed)[:, None]) / (runs[:, None] + 1e-6)


def test_state_cross_likelihoods():
    """Random sticky z with masked frames in the middle and at the end (here some runs start
    in a masked frame and go on in valid ones)."""
    with jax.enable_x64(True):
        x, mask, z, Ab, Q, pi, betas = _problem(jnp.float64)
        ref = _ref_cross(x, mask, z, Ab, Q)
        np.testing.assert_allclose(_ref_cross(x, mask, z, Ab, Q, masked_frame_ends_run=True), ref)
        out = jax.jit(_log_prob.state_cross_likelihoods)(x, mask, z, Ab, Q)
        assert out.shape == (K, K)
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-9, atol=1e-9)
        x0 = _zero_nonfinite_masked(x, mask)
        out = compat.state_cross_likelihoods({"Ab": Ab, "Q": Q}, {"x": x0, "z": z}, mask)
        np.testing.assert_allclose(out, _reference_cross_flattened(x0, mask, z, Ab, Q), rtol=1e-9, atol=1e-9)


def _reference_cross_flattened(x, mask, z, Ab, Q):
    """The reference's definition (jax_moseq 0.3.7 `state_cross_likelihoods`), in NumPy: the valid
    frames of all sequences, in order, form one series; `n_j` is the number of changepoints of
    that series into state `j` (its first run is not counted; a run goes on across the end of
    a sequence or a masked gap when the state is the same on both sides). A state with no
    changepoint has `n_j = 0` (the reference's `bincount` is shorter than `K` then)."""
    ll = reference_ar_ll(x, mask, Ab, Q)
    valid = np.asarray(mask)[:, L:] > 0
    ll_valid, z_valid = ll[valid], np.asarray(z)[valid]
    changepoints = np.flatnonzero(np.diff(z_valid)) + 1
    n = np.bincount(z_valid[changepoints], minlength=K)
    out = np.zeros((K, K))
    for j in range(K):
        summed = ll_valid[z_valid == j].sum(0)
        out[j] = (summed - summed[j]) / (n[j] + 1e-6)
    return out


def test_compat_state_cross_likelihoods_counts_changepoints_of_all_sequences_as_one_series():
    """Three sequences with trailing padding and an interior masked gap; `z` chosen so that runs
    continue across sequence ends and across the gap (then the compat count, over one series,
    and the native count, per sequence, differ)."""
    T3 = 12
    mask = np.ones((3, T3))
    mask[0, 5:7] = 0  # interior gap: z frames 3, 4
    mask[1, T3 - 3 :] = 0  # trailing padding
    mask[2, 4] = 0  # a one-frame gap: z frame 2
    z = np.array(
        [
            [0, 0, 1, 2, 2, 1, 1, 1, 2, 2],  # masked 2, 2 at z frames 3, 4: the 1-run goes on across the gap
            [2, 2, 2, 0, 0, 1, 1, 0, 0, 0],  # starts in 2 like sequence 0 ends; padding from z frame 7
            [1, 1, 0, 1, 1, 2, 2, 2, 0, 0],  # padding holds 0 (like the valid frame before); z frame 2 masked
        ],
        np.int32,
    )
    with jax.enable_x64(True):
        k_model, k_x = jr.split(jr.key(7))
        Ab, Q, _, _ = random_model(k_model, K, D, L, jnp.float64)
        x = np.asarray(1.5 * jr.normal(k_x, (3, T3, D), dtype=jnp.float64))
        expected = _reference_cross_flattened(x, mask, z, Ab, Q)
        out = compat.state_cross_likelihoods({"Ab": Ab, "Q": Q}, {"x": x, "z": z}, mask)
        assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (K, K)
        np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9)
        # x as a keyword argument instead of in `states`, and float32 inputs
        out32 = compat.state_cross_likelihoods(
            {"Ab": Ab.astype(jnp.float32), "Q": Q.astype(jnp.float32)}, {"z": z}, mask.astype(np.float32),
            x=x.astype(np.float32),
        )
        np.testing.assert_allclose(out32, expected, rtol=1e-4, atol=1e-3)
        # the native method counts every run of each sequence: a different normaliser here
        native = np.asarray(_log_prob.state_cross_likelihoods(jnp.asarray(x), jnp.asarray(mask), jnp.asarray(z), Ab, Q))
        np.testing.assert_allclose(native, _ref_cross(x, mask, z, Ab, Q, masked_frame_ends_run=True), rtol=1e-9)
        assert not np.allclose(native, out)


def test_state_cross_likelihoods_full_mask():
    """No masked frame: runs are the maximal blocks of each sequence (the first block counts)."""
    with jax.enable_x64(True):
        x, _, z, Ab, Q, _, _ = _problem(jnp.float64, seed=1)
        mask = jnp.ones((N, T), jnp.float64)
        out = jax.jit(_log_prob.state_cross_likelihoods)(x, mask, z, Ab, Q)
        np.testing.assert_allclose(np.asarray(out), _ref_cross(x, mask, z, Ab, Q), rtol=1e-9, atol=1e-9)


def test_state_cross_likelihoods_run_starting_in_a_masked_frame():
    """A run of state 1 that starts in a masked frame and continues into valid frames is one
    occurrence of state 1 (otherwise its row is divided by epsilon alone)."""
    with jax.enable_x64(True):
        x, _, _, Ab, Q, _, _ = _problem(jnp.float64)
        mask = jnp.ones((N, T), jnp.float64).at[0, L + 2].set(0.0)
        z = jnp.asarray(np.array([[0, 0, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2, 2]], np.int32))
        ref = _ref_cross(x, mask, z, Ab, Q)
        np.testing.assert_allclose(_ref_cross(x, mask, z, Ab, Q, masked_frame_ends_run=True), ref)
        out = _log_prob.state_cross_likelihoods(x, mask, z, Ab, Q)
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_ar_log_likelihoods(dtype):
    with jax.enable_x64(dtype == jnp.float64):
        x, mask, z, Ab, Q, pi, _ = _problem(dtype)
        ll = jax.jit(_ar.ar_log_likelihoods)(x, mask, Ab, Q)
        assert ll.shape == (N, TZ, K) and ll.dtype == dtype
        ref = reference_ar_ll(x, mask, Ab, Q)
        assert np.all(np.asarray(ll)[np.asarray(mask)[:, L:] == 0] == 0.0)
        eps = float(jnp.finfo(dtype).eps)
        # whitening and a GEMM of width A + D: relative error a few eps times the terms' size
        scale = 1.0 + np.abs(ref)
        np.testing.assert_array_less(np.abs(np.asarray(ll, np.float64) - ref), 100 * eps * scale)
        # the unmasked continuous log prob picks the column of z
        cont = np.asarray(_log_prob.continuous_stateseq_log_prob(x, z, Ab, Q), np.float64)
        full = np.asarray(_ar.ar_log_likelihoods(x, jnp.ones_like(mask), Ab, Q), np.float64)
        np.testing.assert_allclose(cont, np.take_along_axis(full, np.asarray(z)[..., None], -1)[..., 0],
                                   rtol=100 * eps, atol=100 * eps)


def _nan_problem():
    x, mask, z, Ab, Q, pi, betas = _problem(jnp.float32)
    x_bad = x.at[0, L + 2].set(jnp.nan).at[0, T - 1].set(jnp.inf).at[1, 0].set(-jnp.inf).at[1, L + 3, 1].set(jnp.nan)
    assert np.all(np.asarray(mask)[[0, 0, 1, 1], [L + 2, T - 1, 0, L + 3]] == 0)
    return x_bad, _zero_nonfinite_masked(x_bad, mask), mask, z, Ab, Q, pi, betas


def test_nonfinite_values_in_masked_frames_do_not_leak():
    x_bad, x0, mask, z, Ab, Q, pi, betas = _nan_problem()
    params = {"Ab": Ab, "Q": Q, "pi": pi, "betas": betas}
    model = _model(Ab, Q, pi, betas, z, kappa=10.0)
    key = jr.key(3)
    calls = {
        "log_joint_likelihood": lambda x: compat.log_joint_likelihood(x, mask, z, pi, Ab, Q),
        "marginal_log_likelihood": lambda x: compat.marginal_log_likelihood(mask, x, Ab, Q, pi),
        "stateseq_marginals": lambda x: compat.stateseq_marginals(x, mask, Ab, Q, pi),
        "state_cross_likelihoods": lambda x: compat.state_cross_likelihoods(params, {"x": x, "z": z}, mask),
        "resample_discrete_stateseqs": lambda x: compat.resample_discrete_stateseqs(key, x, mask, Ab, Q, pi),
        "ARHMM.log_joint_likelihood": lambda x: model.log_joint_likelihood(x, mask),
        "ARHMM.marginal_log_likelihood": lambda x: model.marginal_log_likelihood(x, mask),
        "ARHMM.stateseq_marginals": lambda x: model.stateseq_marginals(x, mask),
    }
    for name, f in calls.items():
        bad, good = f(x_bad), f(x0)
        for b, g in zip(jax.tree.leaves(bad), jax.tree.leaves(good)):
            if jnp.issubdtype(b.dtype, jnp.floating):
                assert np.all(np.isfinite(np.asarray(b))), name
            np.testing.assert_array_equal(np.asarray(b), np.asarray(g), err_msg=name)


def test_nonfinite_values_in_masked_frames_do_not_leak_into_resample():
    """`ARHMM.resample` (a full sweep) with NaN/inf in masked frames equals the sweep on the same
    data with those non-finite values set to 0, and everything it returns is finite. (Shapes as in
    test_smoke.py, so the compiled sweep is shared within a test session.)"""
    Ks, Ds, Ls, Ns, Ts = 4, 2, 2, 3, 60
    k_model, k_x = jr.split(jr.key(21))
    Ab, Q, pi, betas = random_model(k_model, Ks, Ds, Ls, jnp.float32)
    x = jr.normal(k_x, (Ns, Ts, Ds))
    mask = np.ones((Ns, Ts), np.float32)
    mask[0, 20:23] = 0
    mask[1, 50:] = 0
    mask[2, 0] = 0
    mask = jnp.asarray(mask)
    x_bad = x.at[0, 21].set(jnp.nan).at[1, Ts - 1, 0].set(jnp.inf).at[2, 0].set(-jnp.inf)
    model = ae.ARHMM(ae.Hyperparams.from_scales(Ks, Ds, Ls, kappa=100.0), ae.Params(Ab=Ab, Q=Q, pi=pi, betas=betas),
                     ae.States(z=jnp.zeros((Ns, Ts - Ls), jnp.int32)))
    bad = model.resample(x_bad, mask, key=jr.key(4))
    good = model.resample(_zero_nonfinite_masked(x_bad, mask), mask, key=jr.key(4))
    for b, g in zip(jax.tree.leaves(bad), jax.tree.leaves(good)):
        if jnp.issubdtype(b.dtype, jnp.floating):
            assert np.all(np.isfinite(np.asarray(b)))
        np.testing.assert_array_equal(np.asarray(b), np.asarray(g))


def test_nonfinite_values_in_valid_frames_raise():
    x_bad, x0, mask, z, Ab, Q, pi, betas = _nan_problem()
    model = _model(Ab, Q, pi, betas, z)
    for value in (jnp.nan, jnp.inf):
        x = x0.at[1, L + 1, 0].set(value)  # a valid frame
        assert float(mask[1, L + 1]) == 1.0
        calls = [
            lambda: compat.log_joint_likelihood(x, mask, z, pi, Ab, Q),
            lambda: compat.marginal_log_likelihood(mask, x, Ab, Q, pi),
            lambda: compat.stateseq_marginals(x, mask, Ab, Q, pi),
            lambda: compat.resample_discrete_stateseqs(jr.key(0), x, mask, Ab, Q, pi),
            lambda: model.marginal_log_likelihood(x, mask),
            lambda: model.resample(x, mask, key=jr.key(0)),
        ]
        for call in calls:
            with pytest.raises(ValueError, match="`x`"):
                call()
    # traced data: the check goes through eqx.error_if and still names `x`
    with pytest.raises(Exception, match="`x` has NaN"):
        eqx.filter_jit(lambda x: compat.marginal_log_likelihood(mask, x, Ab, Q, pi))(x)
