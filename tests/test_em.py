"""MAP-EM: E-step and M-step against enumeration and closed forms, monotone log posterior, recovery."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
import scipy.stats
from helpers import all_paths, enumerate_paths, random_model, reference_ar_ll

import arhmm_eqx as ae
from arhmm_eqx import _em
from arhmm_eqx._generate import simulate_dataset


K, D, L = 3, 2, 2
A = D * L + 1
# z frames 2 (gap) and 5 (tail) masked in sequence 0; 1, 2 (gap) and 4, 5 (tail) in sequence 1.
MASK = np.array([[1, 1, 1, 1, 0, 1, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0]], dtype=np.float64)
N, T = MASK.shape
TZ = T - L
# alpha * betas straddles 1, so both branches of the floored Dirichlet concentrations are used.
HP_KW = dict(alpha=2.0, kappa=2.0, S_0_scale=0.5, K_0_scale=1.0)


def _tiny():
    """float64 problem (call inside `jax.enable_x64`): hyperparams, params, x, mask."""
    k_model, k_x = jr.split(jr.key(0))
    Ab, Q, pi, betas = random_model(k_model, K, D, L, jnp.float64)
    x = 1.5 * jr.normal(k_x, (N, T, D), dtype=jnp.float64)
    hp = ae.Hyperparams.from_scales(K, D, L, **HP_KW)
    return hp, ae.Params(Ab=Ab, Q=Q, pi=pi, betas=betas), x, jnp.asarray(MASK)


def _enumerated_estep(x, p):
    """gamma, expected counts (transitions up to each sequence's last valid frame) and log p(x)."""
    ll = reference_ar_ll(x, MASK, p.Ab, p.Q)
    paths = all_paths(K, TZ)
    gammas, counts, log_px = [], np.zeros((K, K)), 0.0
    for n in range(N):
        log_z, marg, probs = enumerate_paths(ll[n], p.pi)
        last = np.max(np.nonzero(MASK[n, L:])[0])
        for t in range(1, last + 1):
            np.add.at(counts, (paths[:, t - 1], paths[:, t]), probs)
        gammas.append(marg)
        log_px += log_z
    return np.stack(gammas), counts, log_px


def _regressors(x):
    x = np.asarray(x, np.float64)
    return np.stack([np.concatenate([x[:, t - L : t].reshape(N, -1), np.ones((N, 1)), x[:, t]], 1)
                     for t in range(L, T)], axis=1)  # (N, Tz, A + D)


def _scipy_log_prior(hp, Ab, Q, pi, betas):
    hp64 = {k: np.asarray(getattr(hp, k), np.float64) for k in ("alpha", "kappa", "nu_0", "S_0", "M_0", "K_0")}
    conc = np.maximum(hp64["alpha"] * betas[None] + hp64["kappa"] * np.eye(K), 1.0)
    lp = sum(scipy.stats.dirichlet.logpdf(pi[i], conc[i]) for i in range(K))
    for k in range(K):
        lp += scipy.stats.invwishart.logpdf(Q[k], df=float(hp64["nu_0"]), scale=hp64["S_0"])
        lp += scipy.stats.matrix_normal.logpdf(Ab[k], mean=hp64["M_0"], rowcov=Q[k], colcov=hp64["K_0"])
    return lp


def test_estep_matches_enumeration():
    with jax.enable_x64(True):
        hp, p, x, mask = _tiny()
        mll, stats, counts = jax.jit(_em.expected_stats)(x, mask, p.Ab, p.Q, p.pi)
        gamma, counts_ref, log_px = _enumerated_estep(x, p)
        np.testing.assert_allclose(float(mll), log_px, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(counts), counts_ref, rtol=1e-9, atol=1e-12)
        v = _regressors(x)
        w = gamma * MASK[:, L:, None]
        stats_ref = np.einsum("ntk,nti,ntj->kij", w, v, v)
        np.testing.assert_allclose(np.asarray(stats), stats_ref, rtol=1e-9, atol=1e-10)


def test_mstep_matches_closed_form_and_maximises():
    """M-step vs the formulas of model.md §2 (mode: `Q = S_n / (nu_n + D + 1 + A)`) and the
    Dirichlet mode; then the expected complete log posterior, computed independently with scipy,
    is lower at every small perturbation of the M-step's output."""
    with jax.enable_x64(True):
        hp, p, x, mask = _tiny()
        kw = {k: getattr(hp, k) for k in ("alpha", "kappa", "nu_0", "S_0", "M_0", "K_0")}
        _, (Ab, Q, pi) = jax.jit(_em.em_update)(x, mask, p.Ab, p.Q, p.pi, p.betas, **kw)
        Ab, Q, pi = (np.asarray(a) for a in (Ab, Q, pi))
        log_prior = float(ae.ARHMM(hp, ae.Params(Ab=jnp.asarray(Ab), Q=jnp.asarray(Q), pi=jnp.asarray(pi),
                                                  betas=p.betas), ae.States(z=jnp.zeros((N, TZ), jnp.int32)))
                          .log_prior())
    gamma, counts, _ = _enumerated_estep(x, p)
    v = _regressors(x)
    stats = np.einsum("ntk,nti,ntj->kij", gamma * MASK[:, L:, None], v, v)
    nu_0, S_0, M_0, K_0 = (np.asarray(getattr(hp, k), np.float64) for k in ("nu_0", "S_0", "M_0", "K_0"))
    K_0_inv = np.linalg.inv(K_0)
    for k in range(K):
        S_uu, S_yu, S_yy, n_k = stats[k, :A, :A], stats[k, A:, :A], stats[k, A:, A:], stats[k, A - 1, A - 1]
        K_n = np.linalg.inv(K_0_inv + S_uu)
        M_n = (M_0 @ K_0_inv + S_yu) @ K_n
        S_n = S_0 + S_yy + M_0 @ K_0_inv @ M_0.T - M_n @ np.linalg.inv(K_n) @ M_n.T
        np.testing.assert_allclose(Ab[k], M_n, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(Q[k], S_n / (nu_0 + n_k + D + 1 + A), rtol=1e-9, atol=1e-12)
    betas = np.asarray(p.betas, np.float64)
    conc = np.maximum(float(hp.alpha) * betas[None] + float(hp.kappa) * np.eye(K), 1.0)
    assert np.any(float(hp.alpha) * betas < 1) and np.any(float(hp.alpha) * betas > 1)
    expo = counts + conc - 1
    np.testing.assert_allclose(pi, expo / expo.sum(1, keepdims=True), rtol=1e-10)
    np.testing.assert_allclose(log_prior, _scipy_log_prior(hp, Ab, Q, pi, betas), rtol=1e-10)

    def objective(Ab, Q, pi):  # E_q[log p(x, z | params)] + log p(params), up to terms free of params
        ll = reference_ar_ll(x, MASK, Ab, Q)
        return np.sum(gamma * ll) + np.sum(counts * np.log(pi)) + _scipy_log_prior(hp, Ab, Q, pi, betas)

    best = objective(Ab, Q, pi)
    rng = np.random.default_rng(1)
    L_Q = np.linalg.cholesky(Q)
    for _ in range(8):
        eps = 1e-2
        L_new = L_Q + eps * np.tril(rng.normal(size=L_Q.shape))
        logits = np.log(pi) + eps * rng.normal(size=pi.shape)
        pi_new = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        worse = objective(Ab + eps * rng.normal(size=Ab.shape), L_new @ np.swapaxes(L_new, 1, 2), pi_new)
        assert worse < best


def _simulated(dtype, num_sequences=3, num_frames=200):
    """Three well-separated states (D=2, L=2) with a masked gap and a masked tail."""
    truth = ae.ARHMM(ae.Hyperparams.from_scales(3, D, L), *_true_params(dtype), ae.States(z=jnp.zeros((1, 1),
                                                                                                    jnp.int32)))
    z, x = truth.simulate(num_sequences, num_frames, key=jr.key(1))
    mask = np.ones(x.shape[:2])
    mask[0, 60:70] = 0
    mask[1, -40:] = 0
    return truth, z, x, jnp.asarray(mask, dtype)


def _true_params(dtype):
    rot = lambda a: np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lin = [0.9 * rot(0.4), 0.9 * rot(-0.4), 0.5 * np.eye(D)]
    fixed = [np.array([0.6, 0.0]), np.array([-0.6, 0.0]), np.array([0.0, 0.6])]
    Ab = np.stack([np.concatenate([np.zeros((D, D)), lin[k], ((np.eye(D) - lin[k]) @ fixed[k])[:, None]], 1)
                   for k in range(3)])
    Q = np.stack([0.02 * np.eye(D)] * 3)
    pi = np.full((3, 3), 0.05 / 2) + (0.95 - 0.05 / 2) * np.eye(3)
    betas = np.full(3, 1 / 3)
    return (ae.Params(Ab=jnp.asarray(Ab, dtype), Q=jnp.asarray(Q, dtype), pi=jnp.asarray(pi, dtype),
                      betas=jnp.asarray(betas, dtype)),)


def test_log_posterior_never_decreases_and_fixed_point():
    with jax.enable_x64(True):
        _, _, x, mask = _simulated(jnp.float64)
        hp = ae.Hyperparams.from_scales(4, D, L, kappa=50.0, S_0_scale=0.02)
        model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(3))
        fitted, info = ae.fit_em(model, x, mask, max_iters=400, tol=1e-12)
        n = int(info.num_iters)
        trace = np.asarray(info.log_posterior)
        assert bool(info.converged) and 5 < n < 400
        assert np.all(np.isnan(trace[n + 1 :])) and np.all(np.isfinite(trace[: n + 1]))
        assert np.all(np.diff(trace[: n + 1]) >= -1e-9 * np.abs(trace[: n + 1]).max())
        assert trace[n] - trace[0] > 100.0  # it did climb
        np.testing.assert_allclose(float(fitted.log_posterior(x, mask)), trace[n], rtol=1e-12)
        np.testing.assert_allclose(float(fitted.marginal_log_likelihood(x, mask)),
                                   float(info.marginal_log_likelihood[n]), rtol=1e-12)
        # at the fixed point one more E-step and M-step changes (almost) nothing
        p = fitted.params
        kw = {k: getattr(hp, k) for k in ("alpha", "kappa", "nu_0", "S_0", "M_0", "K_0")}
        _, (Ab, Q, pi) = jax.jit(_em.em_update)(x, mask, p.Ab, p.Q, p.pi, p.betas, **kw)
        np.testing.assert_allclose(np.asarray(Ab), np.asarray(p.Ab), atol=1e-5)
        np.testing.assert_allclose(np.asarray(Q), np.asarray(p.Q), rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(np.asarray(pi), np.asarray(p.pi), atol=1e-6)
        # the fitted states are the most likely path, valid in every frame
        np.testing.assert_array_equal(np.asarray(fitted.states.z),
                                      np.asarray(fitted.most_likely_states(x, mask, fill_value=None)))


@pytest.mark.slow
def test_em_recovers_simulated_parameters():
    """Best of 4 restarts (one vmapped fit) from prior draws; Hungarian matching of states; each matched
    `Ab` within 5 posterior standard deviations `sqrt(Q_ii K_n_jj)` (K_n from the true labels)."""
    (p_true,) = _true_params(jnp.float32)
    z_true, x = simulate_dataset(jr.key(0), p_true.pi, p_true.Ab, p_true.Q, 4, 500)
    mask = jnp.ones(x.shape[:2])
    hp = ae.Hyperparams.from_scales(3, D, L, kappa=300.0, S_0_scale=0.02)
    starts = eqx.filter_vmap(lambda k: ae.ARHMM.from_prior(hp, x, mask, key=k))(jr.split(jr.key(4), 4))
    fits, infos = eqx.filter_vmap(lambda m: ae.fit_em(m, x, mask, max_iters=200))(starts)
    best = int(np.nanargmax(np.nanmax(np.asarray(infos.log_posterior), axis=1)))
    fitted = jax.tree.map(lambda a: a[best], fits)
    assert bool(infos.converged[best])
    _check_recovery(fitted, np.asarray(z_true), x, hp, p_true)


def _check_recovery(fitted, z_true, x, hp, p_true):
    z_fit = np.asarray(fitted.states.z)
    confusion = np.zeros((3, 3))
    np.add.at(confusion, (z_true.ravel(), z_fit.ravel()), 1.0)
    rows, cols = (np.asarray(a) for a in optax.assignment.hungarian_algorithm(-jnp.asarray(confusion)))
    assert confusion[rows, cols].sum() / confusion.sum() > 0.95
    x64 = np.asarray(x, np.float64)
    u = np.concatenate([x64[:, :-2], x64[:, 1:-1], np.ones(x64.shape[:2] + (1,))[:, 2:]], axis=-1)
    K_0_inv = np.linalg.inv(np.asarray(hp.K_0, np.float64))
    Ab_true, Q_true = np.asarray(p_true.Ab, np.float64), np.asarray(p_true.Q, np.float64)
    for k, c in zip(rows, cols):
        u_k = u[z_true == k]
        K_n = np.linalg.inv(K_0_inv + u_k.T @ u_k)
        sd = np.sqrt(np.outer(np.diag(Q_true[k]), np.diag(K_n)))
        z_scores = (np.asarray(fitted.params.Ab[c], np.float64) - Ab_true[k]) / sd
        assert np.max(np.abs(z_scores)) < 5.0, (k, z_scores)
        np.testing.assert_allclose(np.diag(fitted.params.Q[c]), np.diag(Q_true[k]), rtol=0.25)


@pytest.mark.slow
def test_gibbs_and_em_seed_each_other():
    _, _, x, mask = _simulated(jnp.float32, num_frames=120)
    hp = ae.Hyperparams.from_scales(4, D, L, kappa=50.0, S_0_scale=0.02)
    model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(0))
    sample, _ = ae.run_chain(jr.key(1), model, x, mask, 2)
    fitted, info = ae.fit_em(sample, x, mask, max_iters=20)
    assert isinstance(fitted, ae.ARHMM) and fitted.states.z.shape == sample.states.z.shape
    assert float(info.log_posterior[int(info.num_iters)]) >= float(sample.log_posterior(x, mask))
    np.testing.assert_array_equal(np.asarray(fitted.params.betas), np.asarray(sample.params.betas))  # kept
    again, infos = ae.run_chain(jr.key(2), fitted, x, mask, 2)
    assert bool(infos.ok.all()) and isinstance(again, ae.ARHMM)


def test_bad_arguments_are_reported(library_checks):
    model, _, x, mask = _simulated(jnp.float32, num_frames=40)
    with pytest.raises(ValueError, match="`max_iters`"):
        ae.fit_em(model, x, mask, max_iters=0)
    with pytest.raises(ValueError, match="`tol`"):
        ae.fit_em(model, x, mask, tol=-1.0)
    with pytest.raises(ValueError, match="`x` must have shape"):
        ae.fit_em(model, x[0], mask)
    # numpy scalars are numbers too
    fitted, info = ae.fit_em(model, x, mask, max_iters=2, tol=np.float32(1e-3))
    assert info.log_posterior.shape == (3,)
    # without the final Viterbi pass: the same parameters, and the given states kept
    z = jnp.asarray(np.arange(x.shape[0] * (x.shape[1] - L)).reshape(x.shape[0], -1) % model.hyperparams.num_states)
    model = ae.ARHMM(model.hyperparams, model.params, ae.States(z=z.astype(jnp.int32)))
    kept, info_kept = ae.fit_em(model, x, mask, max_iters=2, tol=np.float32(1e-3), most_likely_states=False)
    np.testing.assert_array_equal(np.asarray(kept.states.z), np.asarray(model.states.z))
    for a, b in zip(jax.tree.leaves((fitted.params, info)), jax.tree.leaves((kept.params, info_kept))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(TypeError, match="`most_likely_states`"):
        ae.fit_em(model, x, mask, most_likely_states="no")
    with pytest.raises(ValueError, match="states `z` have shape"):
        ae.fit_em(model, x[:, :30], mask[:, :30], most_likely_states=False)
