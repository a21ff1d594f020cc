"""Learned concentrations (model.md, "Learned concentrations"), in float64.

- Each conditional alone against its exact 1-D (or 2-D) posterior by quadrature, for fixed
  tiny counts: many independent chains of the conditional's own kernel, whose stationary
  law must be that posterior (mean and variance as z-scores). The three kernels run side by
  side in one compiled program.
- The transition block learning alpha, gamma and kappa (concentrations, tables, `betas`, `pi`
  given `z`, then `z ~ pi`) and the whole sweep learning alpha and gamma: Geweke
  joint-distribution tests (see `geweke_utils`), so that every conditional is in one. With
  teeth: a planted wrong conditional (per conditional) must reject; one compiled chain per
  test serves the correct sampler and its mutations (selected by a traced number).
- Structure: learning off leaves the chain bit-identical; vmap over chains with different
  priors equals a loop; fit/resume is bit-exact; command-line flags; bad priors.
- Recovery of known concentrations from simulated states."""

import functools
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from geweke_utils import (
    Z_MAX,
    geweke_zscores,
    marginal_conditional,
    print_zscores,
    simulate_x,
    simulate_z,
)
from scipy import integrate
from scipy.special import gammaln

import arhmm_eqx as ae
import arhmm_eqx._concentrations as conc_module
from arhmm_eqx._concentrations import (
    ConcentrationPrior,
    resample_hdp_with_concentrations,
    sample_alpha,
    sample_alpha_kappa,
    sample_gamma,
)
from arhmm_eqx._gibbs import gibbs_sweep
from arhmm_eqx._hyperparams import Hyperparams, default_M_0
from arhmm_eqx._initialize import init_params
from arhmm_eqx._params import Params
from arhmm_eqx._states import States
from arhmm_eqx._transitions import init_hdp_transitions


f64 = jnp.float64
Z_EXACT = 5.0  # |z| bound for the quadrature tests (a handful of moments, fixed seeds)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------------------
# Each conditional against its exact posterior, by quadrature.

COUNTS = np.array([[5.0, 1.0, 0.0], [2.0, 3.0, 1.0], [0.0, 0.0, 0.0]])  # row 2 unused
MBAR = np.array([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
BETAS = np.array([0.5, 0.3, 0.2])
NUM_CHAINS, CHAIN_STEPS = 1500, 15


def _moments_by_quadrature(log_density, lo, hi):
    grid = np.linspace(lo, hi, 20001)
    lp = log_density(grid)
    w = np.exp(lp - lp.max())
    z = integrate.trapezoid(w, grid)
    m1 = integrate.trapezoid(w * grid, grid) / z
    m2 = integrate.trapezoid(w * grid**2, grid) / z
    return m1, m2 - m1**2


def _zscores(draws, mean, var):
    draws = np.asarray(draws, np.float64)
    n = draws.size
    z_mean = (draws.mean() - mean) / np.sqrt(var / n)
    # var of the sample variance ~ (mu4 - var^2) / n; use the draws' fourth central moment
    mu4 = np.mean((draws - draws.mean()) ** 4)
    z_var = (draws.var(ddof=1) - var) / np.sqrt((mu4 - var**2) / n)
    return float(z_mean), float(z_var)


def _run_kernel(kernel, x0):
    """`NUM_CHAINS` independent chains of `kernel(key, x)`, `CHAIN_STEPS` steps each: the last values."""

    @jax.jit
    def run(keys):
        def chain(key):
            def body(x, k):
                return kernel(k, x), None

            return jax.lax.scan(body, x0, jr.split(key, CHAIN_STEPS))[0]

        return jax.vmap(chain)(keys)

    return run(jr.split(jr.key(0), NUM_CHAINS))


def _check(name, draws, mean, var):
    zm, zv = _zscores(draws, mean, var)
    print(f"\n[{name}] exact mean {mean:.4f} var {var:.4f}; draws {np.mean(draws):.4f} {np.var(draws):.4f}; "
          f"z {zm:+.2f} {zv:+.2f}")
    assert abs(zm) < Z_EXACT and abs(zv) < Z_EXACT, (zm, zv)


# the priors of the three checks: alpha (kappa fixed), gamma, and (alpha, kappa) with
# `alpha + kappa ~ Gamma(a, b)`, `rho ~ Beta(c, d)` (with counts of its own, `AK_COUNTS`)
ALPHA_ABK = (2.0, 0.5, 1.5)
GAMMA_AB = (2.0, 0.5)
AK_ABCD = (3.0, 0.5, 2.0, 2.0)
AK_COUNTS = np.array([[6.0, 1.0, 0.0], [2.0, 4.0, 1.0], [1.0, 0.0, 5.0]])


@functools.cache
def _exact_draws():
    """The three kernels (`sample_alpha`, `sample_gamma`, `sample_alpha_kappa`) side by side in
    one compiled program, each with its own key: `{name: last values of the chains}`."""
    a, b, kappa = (f64(v) for v in ALPHA_ABK)
    ga, gb = (f64(v) for v in GAMMA_AB)
    ka, kb, kc, kd = (f64(v) for v in AK_ABCD)
    counts, mbar = jnp.asarray(COUNTS), jnp.asarray(MBAR)
    ak_counts, betas = jnp.asarray(AK_COUNTS), jnp.asarray(BETAS)

    def kernel(key, x):
        key_a, key_g, key_ak = jr.split(key, 3)
        al, g, ak = x
        al = sample_alpha(key_a, counts, mbar, al, kappa, a, b)
        g = sample_gamma(key_g, mbar, g, ga, gb)
        ak = jnp.stack(sample_alpha_kappa(key_ak, ak_counts, betas, ak[0], ak[1], shape=ka, rate=kb, rho_a=kc,
                                          rho_b=kd))
        return al, g, ak

    al, g, ak = _run_kernel(kernel, (f64(1.0), f64(1.0), jnp.array([1.0, 1.0], f64)))
    ak = np.asarray(ak)
    return {"alpha": np.asarray(al), "gamma": np.asarray(g), "alpha (with kappa)": ak[:, 0], "kappa": ak[:, 1]}


def test_alpha_conditional_is_exact():
    """`alpha | mbar, n` (kappa fixed):
    `Gamma(a, b) alpha^mbar.. prod_i Gamma(alpha+kappa) / Gamma(alpha+kappa+n_i.)`."""
    a, b, kappa = ALPHA_ABK
    n_row = COUNTS.sum(1)

    def log_post(al):
        al = al[:, None]
        rows = np.where(n_row > 0, gammaln(al + kappa) - gammaln(al + kappa + n_row), 0.0).sum(1)
        return (a - 1 + MBAR.sum()) * np.log(al[:, 0]) - b * al[:, 0] + rows

    mean, var = _moments_by_quadrature(log_post, 1e-9, 80.0)
    _check("alpha", _exact_draws()["alpha"], mean, var)


def test_gamma_conditional_is_exact():
    """`gamma | mbar` (betas integrated out): `Gamma(a, b) Gamma(gamma) / Gamma(gamma + M) prod_j
    Gamma(gamma / K + M_j) / Gamma(gamma / K)`."""
    (a, b), K = GAMMA_AB, 3
    col = MBAR.sum(0)

    def log_post(g):
        g = g[:, None]
        cols = (gammaln(g / K + col) - gammaln(g / K)).sum(1)
        return (a - 1) * np.log(g[:, 0]) - b * g[:, 0] + gammaln(g[:, 0]) - gammaln(g[:, 0] + col.sum()) + cols

    mean, var = _moments_by_quadrature(log_post, 1e-9, 80.0)
    _check("gamma", _exact_draws()["gamma"], mean, var)


def test_alpha_kappa_conditional_is_exact():
    """`(alpha, kappa) | n, betas` with `alpha + kappa ~ Gamma(a, b)`, `rho ~ Beta(c, d)`, by a
    2-D quadrature over `(s, rho)` (moments of `alpha` and of `kappa`)."""
    a, b, c, d = AK_ABCD
    counts = AK_COUNTS
    K = 3

    s = np.linspace(1e-6, 60.0, 1501)[:, None]
    r = np.linspace(1e-6, 1 - 1e-6, 1501)[None, :]
    al, ka = s * (1 - r), s * r
    ll = np.zeros_like(al)
    for i in range(K):
        ll += gammaln(s) - gammaln(s + counts[i].sum())
        for j in range(K):
            cij = al * BETAS[j] + (ka if i == j else 0.0)
            if counts[i, j] > 0:
                ll += gammaln(cij + counts[i, j]) - gammaln(cij)
    lp = ll + (a - 1) * np.log(s) - b * s + (c - 1) * np.log(r) + (d - 1) * np.log(1 - r)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    draws = _exact_draws()
    for name, v in (("alpha (with kappa)", al), ("kappa", ka)):
        m1 = (w * v).sum()
        _check(name, draws[name], m1, (w * v**2).sum() - m1**2)


# ---------------------------------------------------------------------------------------
# The transition block with learning on: Geweke, with teeth.

K, L, N, TZ = 3, 1, 2, 14
NUM_MC, NUM_SC = 10_000, 4_000
NUM_SC_SWEEP = 4_000
BLOCK_CASES = {
    "alpha_gamma_kappa": ConcentrationPrior(alpha_shape=4.0, alpha_rate=0.5, gamma_shape=3.0, gamma_rate=1.0,
                                            rho_a=2.0, rho_b=2.0, learn_kappa=True),
}
KAPPA_FIXED = 3.0


def _draw_concentrations(key, prior):
    key_a, key_g, key_r = jr.split(key, 3)
    first = jr.gamma(key_a, prior.alpha_shape, dtype=f64) / prior.alpha_rate
    gamma = jr.gamma(key_g, prior.gamma_shape, dtype=f64) / prior.gamma_rate
    if prior.learn_kappa:  # first = alpha + kappa
        rho = jr.beta(key_r, prior.rho_a, prior.rho_b, dtype=f64)
        return first * (1 - rho), gamma, first * rho
    return first, gamma, f64(KAPPA_FIXED)


def _block_functions(s, mask):
    z = s["z"]
    switches = jnp.sum(z[:, 1:] != z[:, :-1], dtype=f64)
    out = {"alpha": s["alpha"], "gamma": s["gamma"], "log_gamma": jnp.log(s["gamma"]),
           "betas[0]": s["betas"][0], "pi[0,0]": s["pi"][0, 0], "switches": switches,
           "alpha*switches": s["alpha"] * switches, "gamma*betas0": s["gamma"] * s["betas"][0]}
    if "kappa" in s:
        out["kappa"] = s["kappa"]
        out["log_kappa"] = jnp.log(s["kappa"])
    return out


@functools.cache
def _block_setup(case):
    prior = BLOCK_CASES[case].astype(f64)
    mask = jnp.ones((N, TZ + L), f64)

    def prior_draw(key):
        key_c, key_t, key_z = jr.split(key, 3)
        alpha, gamma, kappa = _draw_concentrations(key_c, prior)
        betas, pi = init_hdp_transitions(key_t, alpha=alpha, kappa=kappa, gamma=gamma, num_states=K, dtype=f64)
        s = dict(alpha=alpha, gamma=gamma, betas=betas, pi=pi, z=simulate_z(key_z, pi, N, TZ))
        if prior.learn_kappa:
            s["kappa"] = kappa
        return s

    functions = functools.partial(_block_functions, mask=mask)
    mc, state0 = marginal_conditional(jr.key(200), prior_draw, functions, NUM_MC)
    return types.SimpleNamespace(prior=prior, mask=mask, mc=mc, state0=state0, functions=functions)


def _block_step(setup):
    prior, mask = setup.prior, setup.mask

    def step(key, s):
        key_b, key_z = jr.split(key)
        kappa = s.get("kappa", f64(KAPPA_FIXED))
        betas, pi, alpha, gamma, kappa = conc_module.resample_hdp_with_concentrations(
            key_b, s["z"], mask, s["betas"], alpha=s["alpha"], kappa=kappa, gamma=s["gamma"], prior=prior,
            num_states=K, nlags=L)
        out = dict(alpha=alpha, gamma=gamma, betas=betas, pi=pi, z=simulate_z(key_z, pi, N, TZ))
        if prior.learn_kappa:
            out["kappa"] = kappa
        return out

    return step


def _wrong_alpha(key, counts, mbar, alpha, kappa, shape, rate):
    # Teh et al.'s auxiliary `w ~ Beta(alpha + kappa + 1, n)` without its Bernoulli correction
    return sample_alpha(key, counts, mbar, alpha + 1.0, kappa, shape, rate)


def _wrong_gamma(key, mbar, gamma, shape, rate):
    # the top-level tables of the infinite model (concentration gamma) instead of gamma / K
    key_eta, key_t, key_g = jr.split(key, 3)
    col = mbar.sum(axis=0)
    total = col.sum()
    log_eta = jnp.where(total > 0, conc_module.sample_log_beta(key_eta, gamma, jnp.maximum(total, 1.0)), 0.0)
    t = conc_module.sample_cells(key_t, col, jnp.broadcast_to(gamma, col.shape), jnp.zeros_like(col))
    return jr.gamma(key_g, shape + t.sum(), dtype=mbar.dtype) / (rate - log_eta)


def _wrong_alpha_kappa(key, counts, betas, alpha, kappa, *, shape, rate, rho_a, rho_b):
    # a Beta(rho_a + 1, rho_b) prior of rho in the update instead of Beta(rho_a, rho_b)
    return sample_alpha_kappa(key, counts, betas, alpha, kappa, shape=shape, rate=rate, rho_a=rho_a + 1.0,
                              rho_b=rho_b)


# The planted mutations of each case (the conditionals that case runs). One compiled chain per
# case serves the correct sampler and its mutations: each conditional is patched with a
# `lax.cond` between itself and its mutation on a traced variant number (0: all correct).
MUTATIONS = {
    "alpha_gamma_kappa": {"sample_alpha_kappa": _wrong_alpha_kappa, "sample_gamma": _wrong_gamma},
}
_VARIANT = []  # the traced variant number while a chain is traced


def _selectable(real, wrong, number):
    def select(*args, **kwargs):
        return jax.lax.cond(_VARIANT[0] == number, lambda: wrong(*args, **kwargs), lambda: real(*args, **kwargs))

    return select


def _geweke_with_mutations(setup, step, num_sc, seed, mutations, title):
    """Geweke tables of `step`, correct and with each planted mutation in turn, from one compiled
    chain: `{None: (max |z|, table), target: (max |z|, table), ...}`."""
    key = jr.key(seed)
    num_chains = jax.tree.leaves(setup.state0)[0].shape[0]  # side by side, as `successive_conditional`
    chain_keys = jax.vmap(lambda c: jr.fold_in(key, c))(jnp.arange(num_chains))

    @jax.jit
    def run(states, variant):
        _VARIANT[:] = [variant]
        try:
            def body(states, i):
                states = jax.vmap(lambda k, s: step(jr.fold_in(k, i), s))(chain_keys, states)
                return states, jax.vmap(setup.functions)(states)

            traces = jax.lax.scan(body, states, jnp.arange(num_sc // num_chains))[1]
            return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), traces)
        finally:
            _VARIANT.clear()

    targets = list(mutations)
    tables = {}
    with pytest.MonkeyPatch.context() as mp:
        for number, target in enumerate(targets, start=1):
            mp.setattr(conc_module, target, _selectable(getattr(conc_module, target), mutations[target], number))
        for number, target in enumerate([None, *targets]):
            sc = {k: np.asarray(v) for k, v in run(setup.state0, jnp.int32(number)).items()}
            table = geweke_zscores(setup.mc, sc)
            tables[target] = (print_zscores(title + (f", wrong {target}" if target else ""), table, NUM_MC, num_sc),
                              table)
    return tables


@functools.cache
def _block_tables(case):
    setup = _block_setup(case)
    return _geweke_with_mutations(setup, _block_step(setup), NUM_SC, 21, MUTATIONS[case],
                                  f"transition block, learning {case}")


@pytest.mark.parametrize("case", list(BLOCK_CASES))
def test_geweke_transition_block_with_learning(case):
    zmax, table = _block_tables(case)[None]
    assert min(v[3] for v in table.values()) >= 100, table
    assert zmax < Z_MAX, table


@pytest.mark.parametrize("case, target", [(c, t) for c in MUTATIONS for t in MUTATIONS[c]])
def test_geweke_transition_block_rejects_wrong_conditional(case, target):
    zmax, table = _block_tables(case)[target]
    assert zmax > Z_MAX, table


# ---------------------------------------------------------------------------------------
# The whole sweep with learning on: Geweke.

SW_K, SW_D, SW_L, SW_N, SW_T = 2, 1, 1, 2, 12
# alpha and gamma learned, kappa fixed: `sample_alpha` (the transition block above learns
# kappa too, through `sample_alpha_kappa`), so that every conditional is in a Geweke test
SW_PRIOR = ConcentrationPrior(alpha_shape=4.0, alpha_rate=0.5, gamma_shape=3.0, gamma_rate=1.0)


def _sweep_hyperparams(alpha, gamma, kappa, prior):
    D, L = SW_D, SW_L
    nu_0 = float(D + 4)
    return Hyperparams(
        num_states=SW_K, latent_dim=D, nlags=L, alpha=alpha, gamma=gamma, kappa=kappa, nu_0=nu_0,
        S_0=(nu_0 - D - 1.0) * jnp.eye(D, dtype=f64), M_0=0.5 * jnp.asarray(default_M_0(D, L), f64),
        K_0=0.1 * jnp.eye(D * L + 1, dtype=f64), concentrations=prior)


@functools.cache
def _sweep_setup():
    prior = SW_PRIOR.astype(f64)
    mask = jnp.ones((SW_N, SW_T), f64).at[0, -2:].set(0.0)
    hp0 = _sweep_hyperparams(1.0, 1.0, 1.0, prior)

    def prior_draw(key):
        key_c, key_p, key_z, key_x = jr.split(key, 4)
        alpha, gamma, kappa = _draw_concentrations(key_c, prior)
        Ab, Q, betas, pi = init_params(key_p, alpha=alpha, gamma=gamma, kappa=kappa, nu_0=hp0.nu_0, S_0=hp0.S_0,
                                       M_0=hp0.M_0, K_0=hp0.K_0, num_states=SW_K, dtype=f64)
        z = simulate_z(key_z, pi, SW_N, SW_T - SW_L)
        return dict(alpha=alpha, gamma=gamma, kappa=kappa, Ab=Ab, Q=Q, betas=betas, pi=pi, z=z,
                    x=simulate_x(key_x, z, Ab, Q, mask))

    def functions(s):
        z = s["z"]
        switches = jnp.sum(z[:, 1:] != z[:, :-1], dtype=f64)
        return {"alpha": s["alpha"], "log_gamma": jnp.log(s["gamma"]),
                "pi[0,0]": s["pi"][0, 0], "betas[0]": s["betas"][0], "switches": switches,
                "Ab[0]": s["Ab"][0, 0, 0], "logQ[0]": jnp.log(s["Q"][0, 0, 0]),
                "alpha*switches": s["alpha"] * switches}

    mc, state0 = marginal_conditional(jr.key(300), prior_draw, functions, NUM_MC)
    return types.SimpleNamespace(prior=prior, mask=mask, mc=mc, state0=state0, functions=functions)


@functools.cache
def _sweep_tables():
    setup = _sweep_setup()
    mask, prior = setup.mask, setup.prior

    def step(key, s):
        key_sweep, key_x = jr.split(key)
        hp = _sweep_hyperparams(s["alpha"], s["gamma"], s["kappa"], prior)
        params = Params(Ab=s["Ab"], Q=s["Q"], pi=s["pi"], betas=s["betas"])
        p, states, info = gibbs_sweep(key_sweep, hp, params, States(z=s["z"]), s["x"], mask)
        return dict(alpha=info.alpha, gamma=info.gamma, kappa=info.kappa, Ab=p.Ab, Q=p.Q, betas=p.betas, pi=p.pi,
                    z=states.z, x=simulate_x(key_x, states.z, p.Ab, p.Q, mask))

    return _geweke_with_mutations(setup, step, NUM_SC_SWEEP, 31, {"sample_alpha": _wrong_alpha},
                                  "whole sweep, alpha and gamma learned")


def test_geweke_whole_sweep_with_learning():
    zmax, table = _sweep_tables()[None]
    assert min(v[3] for v in table.values()) >= 100, table
    assert zmax < Z_MAX, table


def test_geweke_whole_sweep_rejects_wrong_alpha_conditional():
    zmax, table = _sweep_tables()["sample_alpha"]
    assert zmax > Z_MAX, table


# ---------------------------------------------------------------------------------------
# Structure.


@functools.cache
def _base_problem():
    x = jr.normal(jr.key(1), (2, 30, 1), f64)
    mask = jnp.ones((2, 30), f64)
    hp = Hyperparams.from_scales(3, 1, 1, alpha=3.0, gamma=5.0, kappa=10.0)
    # fixed parameters and random states, built without compiling a draw from the prior
    Ab = jnp.array([[[0.9, -1.0]], [[0.5, 0.0]], [[-0.5, 1.0]]], f64)
    pi = jnp.full((3, 3), 0.1, f64) + 0.7 * jnp.eye(3, dtype=f64)
    params = Params(Ab=Ab, Q=jnp.ones((3, 1, 1), f64), pi=pi, betas=jnp.full((3,), 1.0 / 3.0, f64))
    z = jr.randint(jr.key(2), (2, 29), 0, 3, dtype=jnp.int32)
    return ae.ARHMM(hp, params, States(z=z)).check(), x, mask


def _small_problem(prior=None):
    """One small model, without or with a `ConcentrationPrior` (attached with `eqx.tree_at`, so
    that only one model is drawn from the prior and compiled for)."""
    model, x, mask = _base_problem()
    if prior is not None:
        model = eqx.tree_at(lambda m: m.hyperparams.concentrations, model, prior.astype(f64),
                            is_leaf=lambda v: v is None)
    return model, x, mask


# one prior structure for the structure, vmap and checkpoint tests, so they share compiled sweeps
STRUCT_PRIOR = ConcentrationPrior(gamma_shape=2.0, gamma_rate=0.1, learn_alpha=False, learn_gamma=True)


@pytest.mark.extended
def test_learning_off_is_unchanged_and_learning_on_is_in_the_model():
    model, x, mask = _small_problem(None)
    m1, info = ae.gibbs_step(jr.key(3), model, x, mask)
    assert info.alpha is None and info.gamma is None and info.kappa is None
    assert m1.hyperparams.concentrations is None and float(m1.hyperparams.alpha) == 3.0
    model2, _, _ = _small_problem(STRUCT_PRIOR)
    m2, info2 = ae.gibbs_step(jr.key(3), model2, x, mask)
    # only the learned concentration moves; its new value is in the model and in the trace
    assert float(m2.hyperparams.gamma) == float(info2.gamma) != 5.0
    assert float(m2.hyperparams.alpha) == float(info2.alpha) == 3.0
    assert float(m2.hyperparams.kappa) == float(info2.kappa) == 10.0
    # the AR block reads no concentration and gets the same subkey: the same Ab
    np.testing.assert_array_equal(np.asarray(m1.params.Ab), np.asarray(m2.params.Ab))


@pytest.mark.extended
def test_vmap_over_priors_equals_loop():
    models = [_small_problem(eqx.tree_at(lambda c: c.gamma_rate, STRUCT_PRIOR, jnp.asarray(r)))[0]
              for r in (0.1, 3.0)]
    _, x, mask = _small_problem(None)
    batched = jax.tree.map(lambda *a: jnp.stack(a), *models)
    keys = jr.split(jr.key(5), 2)
    out, _ = jax.vmap(lambda k, m: ae.gibbs_step(k, m, x, mask))(keys, batched)
    for i, m in enumerate(models):
        mi, _ = ae.gibbs_step(keys[i], m, x, mask)
        for name in ("alpha", "gamma", "kappa"):
            np.testing.assert_allclose(np.asarray(getattr(out.hyperparams, name)[i]),
                                       np.asarray(getattr(mi.hyperparams, name)), rtol=1e-10)
        np.testing.assert_array_equal(np.asarray(out.states.z[i]), np.asarray(mi.states.z))


def test_bad_prior_errors():
    with pytest.raises(ValueError, match="learn_kappa"):
        ConcentrationPrior(learn_alpha=False, learn_kappa=True)
    with pytest.raises(ValueError, match="alpha_rate"):
        ConcentrationPrior(alpha_rate=-1.0)
    with pytest.raises(TypeError, match="concentrations"):
        Hyperparams(
            num_states=3, latent_dim=1, nlags=1, alpha=1.0, gamma=1.0, kappa=1.0, nu_0=3.0, S_0=jnp.eye(1),
            M_0=jnp.zeros((1, 2)), K_0=jnp.eye(2), concentrations={"alpha": 1.0})


# ---------------------------------------------------------------------------------------
# Recovery: states simulated from the model with known concentrations; the posterior of the
# transition block (z observed) must cover the truth and be narrow enough to mean something.

REC_K, REC_N, REC_TZ, REC_ITERS, REC_BURN = 15, 20, 1000, 300, 100
REC_TRUTH = {"alpha": 4.0, "gamma": 6.0, "kappa": 20.0}


@pytest.mark.parametrize("learn_kappa", [False, True])
def test_recovery_of_concentrations(learn_kappa):
    truth = REC_TRUTH
    key_t, key_z, key_run = jr.split(jr.key(400 + learn_kappa), 3)
    betas, pi = init_hdp_transitions(key_t, alpha=f64(truth["alpha"]), kappa=f64(truth["kappa"]),
                                     gamma=f64(truth["gamma"]), num_states=REC_K, dtype=f64)
    z = simulate_z(key_z, pi, REC_N, REC_TZ)
    mask = jnp.ones((REC_N, REC_TZ + 1), f64)
    prior = ConcentrationPrior(alpha_shape=1.0, alpha_rate=0.05, gamma_shape=1.0, gamma_rate=0.05,
                               learn_kappa=learn_kappa).astype(f64)
    kappa0 = f64(1.0) if learn_kappa else f64(truth["kappa"])

    @jax.jit
    def run(key):
        def body(c, k):
            betas, alpha, gamma, kappa = c
            betas, _, alpha, gamma, kappa = resample_hdp_with_concentrations(
                k, z, mask, betas, alpha=alpha, kappa=kappa, gamma=gamma, prior=prior, num_states=REC_K, nlags=1)
            return (betas, alpha, gamma, kappa), jnp.stack([alpha, gamma, kappa])

        start = (jnp.full((REC_K,), 1.0 / REC_K, f64), f64(1.0), f64(1.0), kappa0)
        return jax.lax.scan(body, start, jr.split(key, REC_ITERS))[1]

    trace = np.asarray(run(key_run))[REC_BURN:]
    names = ("alpha", "gamma", "kappa") if learn_kappa else ("alpha", "gamma")
    report = {}
    for i, name in enumerate(names):
        mean, sd = trace[:, i].mean(), trace[:, i].std()
        report[name] = (truth[name], round(float(mean), 3), round(float(sd), 3))
    print(f"\n[recovery learn_kappa={learn_kappa}] truth, posterior mean, sd: {report}")
    for name, (t, mean, sd) in report.items():
        assert abs(mean - t) < 3.5 * sd, report  # the truth is a typical draw of the posterior
    # and the data pin alpha (and kappa) down: a posterior as wide as the prior would pass the above
    # (with kappa learned too, alpha and kappa trade off against each other and are less sharp)
    assert report["alpha"][2] < (0.4 if learn_kappa else 0.25) * truth["alpha"], report
    if learn_kappa:
        assert report["kappa"][2] < 0.5 * truth["kappa"], report


def test_fit_resume_is_bit_exact_with_learning(tmp_path):
    from arhmm_eqx.workflow import fit, load_checkpoint, resume

    model, x, mask = _small_problem(STRUCT_PRIOR)
    key = jr.key(7)
    straight = fit(model, x, mask, key=key, num_iters=4, progress=False, chunk_size=2, compile_cache=False)
    fit(model, x, mask, key=key, num_iters=2, checkpoint_dir=tmp_path, save_every=2, progress=False,
        chunk_size=2, compile_cache=False)
    loaded, meta = load_checkpoint(tmp_path)
    assert meta["concentrations"] == {"learn_alpha": False, "learn_gamma": True, "learn_kappa": False}
    assert loaded.hyperparams.concentrations.learns == ("gamma",) and meta["infos"].gamma.shape == (2,)
    assert float(loaded.hyperparams.concentrations.gamma_rate) == float(STRUCT_PRIOR.gamma_rate)
    resumed = resume(tmp_path, x, mask, num_iters=2, progress=False, chunk_size=2, compile_cache=False)
    for a, b in zip(jax.tree.leaves((straight.model, straight.infos)), jax.tree.leaves((resumed.model, resumed.infos))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert straight.infos.gamma.shape == (4,) and len(set(np.asarray(straight.infos.gamma).tolist())) == 4


@pytest.mark.extended  # the command line, as the other command-line tests
def test_command_line_flags():
    from arhmm_eqx.workflow import _cli

    args = _cli._parser().parse_args(["fit", "d.npz", "--out", "o", "--learn-kappa"])
    assert args.learn_kappa and not args.learn_concentrations
    prior = _cli._concentration_prior({"alpha": 5.7, "gamma": 1e3, "kappa": 1e6, "learn_kappa": True})
    assert prior.learns == ("alpha", "gamma", "kappa")
    np.testing.assert_allclose(float(prior.alpha_shape / prior.alpha_rate), 5.7 + 1e6)
    assert _cli._concentration_prior({"alpha": 5.7, "gamma": 1e3, "kappa": 1e6}) is None
    run = {k: 1 for k in _cli._CHAIN_OPTIONS}
    assert _cli._chain_identity(run) == run  # runs without learning keep the identity of earlier versions
    assert _cli._chain_identity(run | {"learn_concentrations": True})["learn_concentrations"] is True
