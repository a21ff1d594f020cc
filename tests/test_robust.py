"""Robust (Student-t) AR noise: the model API, outliers against the Gaussian model, recovery of
`nu` and the states on simulated Student-t data, and the exactness of the `tau` and `nu` kernels
(the joint-distribution tests are in `test_robust_geweke.py`)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.stats

import arhmm_eqx as ae
from arhmm_eqx._robust import resample_nu, resample_tau, student_t_log_density
from arhmm_eqx.workflow import example_model, matched_accuracy


K_TRUE, D, L = 3, 2, 1


def _short_runs(z, max_length: int) -> int:
    """Number of runs of at most `max_length` frames in the state paths `z` `(N, Tz)`."""
    n = 0
    for row in np.asarray(z):
        starts = np.flatnonzero(np.diff(row)) + 1
        lengths = np.diff(np.concatenate([[0], starts, [row.size]]))
        n += int(np.sum(lengths <= max_length))
    return n


def test_outliers_make_no_one_frame_states():
    """1 % of the frames of a 3-state AR-HMM (noise sd 0.1) jump by 3 in each dimension (30 sd), as
    tracking glitches do. A glitch at frame t spoils the residuals of frames t and t+1 (the next
    frame regresses on it), so the Gaussian model explains glitches with extra states visited for
    one or two frames; the robust model (nu fixed at 2), with its heavy tails, does not."""
    truth = example_model(jr.key(0), K_TRUE, D, L, mean_duration=50.0)
    z_true, x = truth.simulate(1, 2000, key=jr.key(1))
    rng = np.random.default_rng(0)
    x = np.array(x)
    glitch = rng.random(x.shape[:2]) < 0.01
    glitch[:, :L] = False
    x[glitch] += 3.0 * rng.choice([-1.0, 1.0], size=(int(glitch.sum()), D))
    mask = jnp.ones(x.shape[:2])
    K = 6
    out = {}
    for name, robust in (("gaussian", None), ("robust", ae.RobustPrior(nu_init=2.0, resample_nu=False))):
        hp = ae.Hyperparams.from_scales(K, D, L, kappa=1e4, robust=robust)
        model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(2))
        model, _ = ae.run_chain(jr.key(3), model, x, mask, num_iters=60)
        z = np.asarray(model.states.z)
        out[name] = dict(one_frame_runs=_short_runs(z, 1), short_runs=_short_runs(z, L + 1),
                         states_used=len(np.unique(z)), accuracy=matched_accuracy(np.asarray(z_true), z, K_TRUE, K))
    print(f"\n[outliers] {int(glitch.sum())} glitches:", out)
    g, r = out["gaussian"], out["robust"]
    assert g["short_runs"] >= 10 and g["states_used"] > K_TRUE, out  # the failure that robust noise fixes
    assert r["short_runs"] <= 2 and r["states_used"] == K_TRUE and r["accuracy"] > 0.98, out


def test_recovers_nu_and_states_from_student_t_data():
    """Data from a 3-state robust model with `nu = 2.5` in every state: from the true dynamics
    and `nu` started at 10, the sampler finds `nu` (each state's posterior covers 2.5) and the
    states (matched accuracy > 0.97)."""
    truth = example_model(jr.key(0), K_TRUE, D, L, mean_duration=50.0)
    nu_true = 2.5
    p = truth.params
    robust = ae.RobustPrior(nu_init=10.0, nu_shape=1.0, nu_rate=0.1)
    hp = ae.Hyperparams.from_scales(K_TRUE, D, L, kappa=1e4, robust=robust)
    params = ae.Params(Ab=p.Ab, Q=p.Q, pi=p.pi, betas=p.betas, nu=jnp.full((K_TRUE,), nu_true))
    z_true, x = ae.ARHMM(hp, params, ae.States(z=jnp.zeros((1, 1), jnp.int32), tau=jnp.ones((1, 1)))).simulate(
        1, 3000, key=jr.key(4))
    mask = jnp.ones(x.shape[:2])
    start = eqx_tree_nu(params, jnp.full((K_TRUE,), 10.0))
    model = ae.ARHMM(hp, start, ae.States(z=z_true, tau=jnp.ones(z_true.shape)))
    nus = []
    for i in range(4):
        model, _ = ae.run_chain(jr.key(5), model, x, mask, num_iters=50, start_iter=50 * i)
        nus.append(np.asarray(model.params.nu))
    accuracy = matched_accuracy(np.asarray(z_true), np.asarray(model.states.z), K_TRUE, K_TRUE)
    nus = np.stack(nus[1:])
    print(f"\n[recovery] nu draws (every 50 sweeps) {nus.round(2).tolist()}, accuracy {accuracy:.3f}")
    assert accuracy > 0.97
    # Posterior of nu_k given ~1000 frames: sd about 0.3 at 2.5. The draws must lie within a
    # factor 1.6 of the truth (4 posterior sd on the log scale) and not at the start value.
    assert np.all(np.abs(np.log(nus / nu_true)) < np.log(1.6)), nus


def eqx_tree_nu(params, nu):
    return ae.Params(Ab=params.Ab, Q=params.Q, pi=params.pi, betas=params.betas, nu=nu)


# ---------------------------------------------------------------------------------------
# Kernels against closed forms.


def test_student_t_log_density_matches_scipy():
    rng = np.random.default_rng(1)
    Dd = 3
    Q = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.2], [0.0, 0.2, 0.5]])
    mean, xs, nu = rng.normal(size=Dd), rng.normal(size=(5, Dd)) * 3, 3.7
    chol = np.linalg.cholesky(Q)
    white = np.linalg.solve(chol, (xs - mean).T).T
    log_norm = -np.log(np.diag(chol)).sum() - 0.5 * Dd * np.log(2 * np.pi)
    got = student_t_log_density(jnp.asarray((white**2).sum(-1)), jnp.asarray(log_norm), jnp.asarray(nu), Dd)
    want = scipy.stats.multivariate_t(loc=mean, shape=Q, df=nu).logpdf(xs)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_tau_draws_match_gamma_conditional():
    """`resample_tau`: mean and mean log of the draws against the Gamma((nu + D)/2, (nu + r2)/2)
    moments, frame by frame (z-scores from the draws' standard errors); masked frames are 1."""
    K, N, T, M = 2, 1, 6, 20_000
    Ab = 0.5 * jr.normal(jr.key(0), (K, D, D * L + 1))
    Q = jnp.stack([0.5 * jnp.eye(D), jnp.array([[1.0, 0.3], [0.3, 0.8]])])
    x = jr.normal(jr.key(1), (N, T, D))
    z = jnp.array([[0, 1, 1, 0, 1]], jnp.int32)
    nu = jnp.array([3.0, 8.0])
    mask = jnp.ones((N, T)).at[0, -1].set(0.0)
    taus = np.asarray(jax.jit(jax.vmap(lambda k: resample_tau(k, x, mask, z, Ab, Q, nu)))(jr.split(jr.key(2), M)),
                      np.float64)
    u = np.concatenate([np.asarray(x[0, :-1]), np.ones((T - 1, 1))], axis=1)
    r = np.asarray(x[0, 1:]) - np.einsum("tij,tj->ti", np.asarray(Ab)[np.asarray(z[0])], u)
    r2 = np.einsum("ti,tij,tj->t", r, np.linalg.inv(np.asarray(Q)[np.asarray(z[0])]), r)
    a, b = (np.asarray(nu)[np.asarray(z[0])] + D) / 2, (np.asarray(nu)[np.asarray(z[0])] + r2) / 2
    valid = np.asarray(mask[0, L:]) > 0
    t, a, b = taus[:, 0, valid], a[valid], b[valid]
    zs = (t.mean(0) - a / b) / (t.std(0) / np.sqrt(M))
    zs_log = (np.log(t).mean(0) - (scipy.special.digamma(a) - np.log(b))) / (np.log(t).std(0) / np.sqrt(M))
    print("\n[tau] z", zs.round(2), zs_log.round(2))
    assert np.all(np.abs(zs) < 4) and np.all(np.abs(zs_log) < 4)
    assert np.all(taus[:, 0, ~valid] == 1.0)


def test_nu_mh_leaves_its_target_invariant():
    """Start `nu` from its exact conditional given a few precisions (K = 1: the posterior on a
    grid, sampled by inverse CDF), take one MH step each: the draws keep the distribution
    (two-sample Kolmogorov-Smirnov against fresh exact draws)."""
    tau = jnp.array([[0.3, 1.7, 0.9, 0.2, 2.5]])
    mask = jnp.ones((1, 6))
    z = jnp.zeros((1, 5), jnp.int32)
    shape, rate = 2.0, 0.5
    grid = np.linspace(1e-3, 60, 200_001)
    half = grid / 2
    t = np.asarray(tau[0], np.float64)
    logp = ((shape - 1) * np.log(grid) - rate * grid + t.size * (half * np.log(half) - scipy.special.gammaln(half))
            + (half - 1) * np.log(t).sum() - half * t.sum())
    cdf = np.cumsum(np.exp(logp - logp.max()))
    cdf /= cdf[-1]
    rng = np.random.default_rng(3)
    exact = lambda n: np.interp(rng.random(n), cdf, grid)
    M = 20_000
    start = jnp.asarray(exact(M))[:, None]
    step = jax.jit(jax.vmap(lambda k, nu: resample_nu(k, tau, mask, z, nu, nu_shape=jnp.asarray(shape),
                                                       nu_rate=jnp.asarray(rate), num_steps=1, step_size=0.5)))
    after = np.asarray(step(jr.split(jr.key(6), M), start))[:, 0]
    moved = np.mean(after != np.asarray(start)[:, 0])
    p = scipy.stats.ks_2samp(after, exact(M)).pvalue
    print(f"\n[nu MH] acceptance {moved:.2f}, KS p = {p:.3f}")
    assert 0.2 < moved < 0.95 and p > 1e-3
    # Teeth: the same check catches a walk without the Jacobian of log nu (which is the same as
    # a prior shape one lower).
    wrong = jax.jit(jax.vmap(lambda k, nu: resample_nu(k, tau, mask, z, nu, nu_shape=jnp.asarray(shape - 1.0),
                                                        nu_rate=jnp.asarray(rate), num_steps=1, step_size=0.5)))
    after_wrong = np.asarray(wrong(jr.split(jr.key(6), M), start))[:, 0]
    assert scipy.stats.ks_2samp(after_wrong, exact(M)).pvalue < 1e-6


# ---------------------------------------------------------------------------------------
# The model API.


def test_state_step_matches_enumeration():
    """Student-t emissions through the blocked filter: per-frame log-densities against scipy, and
    the marginal likelihood, smoothed marginals and Viterbi path against all K**Tz paths."""
    from helpers import enumerate_paths, path_codes, random_model

    from arhmm_eqx._ar import ar_log_likelihoods
    from arhmm_eqx._inference import marginal_log_likelihood, smoothed_marginals, viterbi_paths

    K, T = 2, 7
    Ab, Q, pi, _ = random_model(jr.key(8), K, D, L)
    nu = jnp.array([1.5, 6.0])
    x = 2.0 * jr.normal(jr.key(9), (1, T, D))
    mask = jnp.ones((1, T)).at[0, 3].set(0.0)

    @jax.jit
    def run(x, mask):
        return (ar_log_likelihoods(x, mask, Ab, Q, nu), marginal_log_likelihood(x, mask, Ab, Q, pi, nu=nu),
                smoothed_marginals(x, mask, Ab, Q, pi, nu=nu),
                viterbi_paths(x, mask, Ab, Q, pi, nu=nu, fill_value=None))

    ll, marginal, smoothed, path = (np.asarray(a, np.float64) for a in run(x, mask))
    xn = np.asarray(x[0], np.float64)
    for t in range(T - L):
        for k in range(K):
            mean = np.asarray(Ab[k]) @ np.concatenate([xn[t], [1.0]])
            want = 0.0 if t + L == 3 else scipy.stats.multivariate_t(loc=mean, shape=np.asarray(Q[k]),
                                                                     df=float(nu[k])).logpdf(xn[t + L])
            np.testing.assert_allclose(ll[0, t, k], want, rtol=1e-4, atol=1e-4)
    log_z, marginals, probs = enumerate_paths(ll[0], np.asarray(pi))
    np.testing.assert_allclose(marginal, log_z, rtol=1e-5)
    np.testing.assert_allclose(smoothed[0], marginals, atol=1e-5)
    assert path_codes(path[0], K) == np.argmax(probs)


def _small():
    x = jnp.cumsum(0.3 * jr.normal(jr.key(0), (2, 30, D)), axis=1)
    mask = jnp.ones((2, 30)).at[1, -5:].set(0.0)
    hp = ae.Hyperparams.from_scales(3, D, L, kappa=10.0, robust=ae.RobustPrior())
    return hp, x, mask


def test_robust_model_api_and_checks():
    hp, x, mask = _small()
    model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(0))
    assert model.params.nu.shape == (3,) and model.states.tau.shape == model.states.z.shape
    np.testing.assert_allclose(model.params.nu, 4.0)
    assert np.all(np.asarray(model.states.tau)[1, -5:] == 1.0)
    new, info = ae.run_chain(jr.key(1), model, x, mask, num_iters=2)
    assert new.params.nu.shape == (3,) and not np.allclose(new.states.tau, model.states.tau)
    assert np.all(np.asarray(info.ok))
    lj = new.log_joint_likelihood(x, mask)
    assert np.isfinite(lj["x"]) and np.isfinite(new.marginal_log_likelihood(x, mask))
    # inconsistent robust pieces are named
    gaussian_hp = ae.Hyperparams.from_scales(3, D, L, kappa=10.0)
    with pytest.raises(ValueError, match="params.nu"):
        ae.ARHMM(gaussian_hp, new.params, new.states).check()
    with pytest.raises(ValueError, match="states.tau"):
        ae.ARHMM(hp, new.params, ae.States(z=new.states.z)).check()
    with pytest.raises(ValueError, match="params.nu"):
        ae.ARHMM.from_params(hp, eqx_tree_nu(new.params, None), x, mask, key=jr.key(0))
    with pytest.raises(ValueError, match="nu_rate"):
        ae.RobustPrior(nu_rate=-1.0)
    with pytest.raises(ValueError, match="log_prior"):
        new.log_prior()


def test_robust_fit_checkpoint_resume_and_model_file(tmp_path):
    """A robust fit checkpoints `nu`, `tau` and the prior's settings: resuming from sweep 2 gives
    the uninterrupted 4-sweep chain bit for bit; the MoSeq model file keeps the robust model."""
    from arhmm_eqx.workflow import fit, load_moseq_model, resume, save_moseq_model
    from arhmm_eqx.workflow._checkpoint import load_checkpoint

    hp, x, mask = _small()
    hp = ae.Hyperparams.from_scales(3, D, L, kappa=10.0, robust=ae.RobustPrior(nu_mh_steps=3, nu_step_size=0.3))
    model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(0))
    kw = dict(progress=False, compile_cache=False, chunk_size=2)
    full = fit(model, x, mask, key=jr.key(1), num_iters=4, checkpoint_dir=tmp_path / "a", save_every=2, **kw)
    loaded, meta = load_checkpoint(tmp_path / "a" / "ckpt_000002.json")
    assert loaded.hyperparams.robust == hp.robust and meta["robust"]["nu_mh_steps"] == 3
    (tmp_path / "b").mkdir()
    for suffix in (".eqx", ".json"):
        (tmp_path / "b" / f"ckpt_000002{suffix}").write_bytes((tmp_path / "a" / f"ckpt_000002{suffix}").read_bytes())
    resumed = resume(tmp_path / "b", x, mask, num_iters=2, **kw)
    for a, b in zip(jax.tree.leaves(full.model), jax.tree.leaves(resumed.model)):
        np.testing.assert_array_equal(a, b)
    assert resumed.model.states.tau is not None and resumed.model.hyperparams.robust == hp.robust
    path = save_moseq_model(tmp_path / "model.npz", full.model, key=jr.key(2))
    back = load_moseq_model(path)
    assert back.hyperparams.robust == full.model.hyperparams.robust
    np.testing.assert_array_equal(back.params.nu, full.model.params.nu)
    np.testing.assert_array_equal(back.states.tau, full.model.states.tau)
