"""Joint-distribution (Geweke 2004) tests of the robust (Student-t) blocks, in float64.

As in `test_geweke.py`: marginal-conditional draws from the robust model against a chain
that alternates the block(s) under test with fresh data given the current parameters and
latent variables (here `x | z, tau, Ab, Q`: Normal with covariance `Q[z] / tau`). Three
set-ups: the `tau` block alone, the `nu` Metropolis-Hastings step alone, and the whole sweep
with robust noise on. Planted mutations (wrong conditionals) are listed in `MUTATIONS`; one
per block runs here, with its z-score printed (`pytest -s`).
"""

import functools
import types

import jax
import jax.numpy as jnp
import jax.random as jr
import pytest
from geweke_utils import (
    Z_MAX,
    ar_functions,
    data_functions,
    geweke_zscores,
    marginal_conditional,
    print_zscores,
    simulate_x,
    simulate_z,
    state_functions,
    successive_conditional,
    trailing_mask,
)

import arhmm_eqx._gibbs as gibbs_module
import arhmm_eqx._robust as robust_module
from arhmm_eqx._hyperparams import Hyperparams, default_M_0
from arhmm_eqx._initialize import init_params
from arhmm_eqx._log_prob import log_joint_likelihood
from arhmm_eqx._params import Params
from arhmm_eqx._robust import RobustPrior, sample_nu_prior, sample_tau_prior
from arhmm_eqx._states import States


pytestmark = pytest.mark.slow
f64 = jnp.float64
NUM_MC = 6_000
NUM_SC = 6_000
NUM_SC_TEETH = 3_000
MIN_ESS = 60


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _hyperparams(K, D, L, robust):
    nu_0 = float(D + 4)
    return Hyperparams(
        num_states=K, latent_dim=D, nlags=L, alpha=2.0, gamma=2.0, kappa=2.0, nu_0=nu_0,
        S_0=(nu_0 - D - 1.0) * jnp.eye(D, dtype=f64), M_0=0.5 * jnp.asarray(default_M_0(D, L), f64),
        K_0=0.1 * jnp.eye(D * L + 1, dtype=f64), robust=robust,
    ).astype(f64)


# The prior of nu in these tests: Gamma(4, 1), mean 4, so the noise is clearly heavy-tailed
# but every draw of x has a finite variance with high probability.
PRIOR = RobustPrior(nu_init=4.0, nu_shape=4.0, nu_rate=1.0, nu_mh_steps=5, nu_step_size=0.5)


def _tau_functions(tau, nu, z, mask, L):
    valid = mask[:, L:] > 0
    n = jnp.sum(valid, dtype=f64)
    mean = lambda v: jnp.sum(jnp.where(valid, v, 0.0)) / n
    return {
        "mean_tau": mean(tau),
        "mean_log_tau": mean(jnp.log(tau)),
        "tau[0,0]": tau[0, 0],
        "mean_nu_z_tau": mean(nu[z] * tau),
    }


def _nu_functions(nu):
    return {"nu[0]": nu[0], "log_nu[0]": jnp.log(nu[0]), "log_nu[1]": jnp.log(nu[1]), "mean_inv_nu": jnp.mean(1.0 / nu)}


def _run(setup, step, *, num_sc, seed, title):
    sc = successive_conditional(jr.key(seed), setup.state0, step, setup.functions, num_sc)
    table = geweke_zscores(setup.mc, sc)
    return print_zscores(title, table, NUM_MC, num_sc), table


def _assert_passes(zmax, table):
    ess_min = min(v[3] for v in table.values())
    assert ess_min >= MIN_ESS, f"successive-conditional chain mixes too slowly (min ESS {ess_min:.0f}): {table}"
    assert zmax < Z_MAX, table


# ---------------------------------------------------------------------------------------
# Set-ups. The sweep case has trailing padding in sequence 0.

SIZES = dict(K=2, D=1, L=1, N=2, T=10, padded=2)


@functools.cache
def _setup(name):
    K, D, L, N, T = (SIZES[k] for k in "KDLNT")
    hp = _hyperparams(K, D, L, PRIOR)
    mask = trailing_mask(N, T, SIZES["padded"])
    ar = dict(nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0, K_0=hp.K_0)
    # the blocks alone hold (Ab, Q) fixed at a stable AR(1) per state (x stays of order one), and
    # (betas, pi, z) at one draw from their prior (`init_params` with key 7, then `simulate_z`
    # with key 8), written out so that no program compiles for them
    fixed = (jnp.asarray([[[0.5, 0.3]], [[-0.4, -0.2]]], f64), jnp.asarray([[[1.0]], [[0.5]]], f64),
             jnp.asarray([0.6764412301662525, 0.3235587698337475], f64),
             jnp.asarray([[0.46202215328932034, 0.5379778467106796], [0.27943156631026905, 0.720568433689731]], f64))
    z_fixed = jnp.asarray([[0, 0, 0, 0, 0, 1, 0, 1, 1], [1, 0, 1, 1, 0, 0, 1, 1, 1]], jnp.int32)
    assert z_fixed.shape == (N, T - L)

    def draw(key, what):
        key_p, key_nu, key_z, key_tau, key_x = jr.split(key, 5)
        Ab, Q, betas, pi = (init_params(key_p, alpha=hp.alpha, gamma=hp.gamma, kappa=hp.kappa, **ar, num_states=K,
                                        dtype=f64) if what == "sweep" else fixed)
        nu = sample_nu_prior(key_nu, hp.robust, K, f64) if what != "tau" else jnp.asarray([3.0, 8.0], f64)
        # "latent": (Ab, Q, z) fixed, (nu, tau, x) drawn; the tau and nu blocks in one chain
        z = simulate_z(key_z, pi, N, T - L) if what == "sweep" else z_fixed
        tau = jnp.where(mask[:, L:] > 0, sample_tau_prior(key_tau, nu[z]), 1.0)
        x = simulate_x(key_x, z, Ab, Q, mask, tau) if what != "nu" else jnp.zeros((N, T, D), f64)
        return dict(Ab=Ab, Q=Q, betas=betas, pi=pi, nu=nu, z=z, tau=tau, x=x)

    def functions(s):
        out = _tau_functions(s["tau"], s["nu"], s["z"], mask, L)
        if name != "tau":
            out.update(_nu_functions(s["nu"]))
        if name != "nu":
            out.update(data_functions(s["x"], mask, L))
            out["loglik_t"] = log_joint_likelihood(s["x"], mask, s["z"], s["pi"], s["Ab"], s["Q"], s["nu"])["x"]
        if name == "sweep":
            out.update(ar_functions(s["Ab"], s["Q"], hp.S_0, hp.M_0, hp.K_0[0, 0]))
            out.update(state_functions(s["z"], mask, L))
            out["pi[0,0]"] = s["pi"][0, 0]
        return out

    mc, state0 = marginal_conditional(jr.key(500), lambda k: draw(k, name), functions, NUM_MC)
    return types.SimpleNamespace(hp=hp, mask=mask, mc=mc, state0=state0, functions=functions)


def _step(name, setup):
    hp, mask, L = setup.hp, setup.mask, SIZES["L"]

    def step(key, s):
        key_b, key_x = jr.split(key)
        s = dict(s)
        if name == "tau":
            s["tau"] = robust_module.resample_tau(key_b, s["x"], mask, s["z"], s["Ab"], s["Q"], s["nu"])
        elif name == "latent":
            key_tau, key_nu = jr.split(key_b)
            s["tau"] = robust_module.resample_tau(key_tau, s["x"], mask, s["z"], s["Ab"], s["Q"], s["nu"])
            r = hp.robust
            s["nu"] = robust_module.resample_nu(key_nu, s["tau"], mask, s["z"], s["nu"], nu_shape=r.nu_shape,
                                                nu_rate=r.nu_rate, num_steps=r.nu_mh_steps, step_size=r.nu_step_size)
        elif name == "nu":
            key_nu, key_tau = jr.split(key_b)
            r = hp.robust
            s["nu"] = robust_module.resample_nu(key_nu, s["tau"], mask, s["z"], s["nu"], nu_shape=r.nu_shape,
                                                nu_rate=r.nu_rate, num_steps=r.nu_mh_steps, step_size=r.nu_step_size)
            # then the "data" of this block, tau | nu, z, from its prior
            s["tau"] = jnp.where(mask[:, L:] > 0, sample_tau_prior(key_tau, s["nu"][s["z"]]), 1.0)
            return s
        else:
            params = Params(Ab=s["Ab"], Q=s["Q"], pi=s["pi"], betas=s["betas"], nu=s["nu"])
            p, st, _ = gibbs_module.gibbs_sweep(key_b, hp, params, States(z=s["z"], tau=s["tau"]), s["x"], mask)
            s.update(Ab=p.Ab, Q=p.Q, pi=p.pi, betas=p.betas, nu=p.nu, z=st.z, tau=st.tau)
        s["x"] = simulate_x(key_x, s["z"], s["Ab"], s["Q"], mask, s["tau"])
        return s

    return step


# Seeds of the successive-conditional chains. (For the tau block alone, seed 51 gives max |z| = 3.0
# at 10,000 draws, and a 40,000-draw chain with seed 77 gives 1.0: chance, within Z_MAX.)
SEEDS = {"tau": 52, "nu": 51, "latent": 51, "sweep": 51}


# In the suite: the tau and nu blocks together ("latent", (Ab, Q, z) fixed) and the whole sweep.
# The blocks alone ("tau", "nu") pass too (max |z| 1.6 and 2.2); run them by hand with
# `_run(_setup(name), _step(name, _setup(name)), ...)`.
@pytest.mark.parametrize("name", ["latent", "sweep"])
def test_geweke_robust(name):
    setup = _setup(name)
    zmax, table = _run(setup, _step(name, setup), num_sc=NUM_SC, seed=SEEDS[name], title=f"robust {name}")
    _assert_passes(zmax, table)


# ---------------------------------------------------------------------------------------
# Teeth: planted mutations of each block, each (block set-up, module, attribute, wrong version).
# Every one was run by hand (`run_mutation`); the z-scores found, with 3,000
# successive-conditional draws: tau_shape_plus_half 61, tau_rate_without_nu 282, nu_no_jacobian 18,
# nu_prior_rate_doubled 51, ar_unweighted 73, states_gaussian 6.7; ar_count_is_sum_tau only 2.1
# (sum(tau) has the mean of the count under the model, so that change is too small to see here).
# `run_mutation(name, monkeypatch)` runs one. In the suite: tau_shape_plus_half against the tau and
# nu blocks together (the "latent" set-up, whose marginal-conditional draws the test above made).


def _tau_shape_plus_half(original):
    # Gamma shape (nu + D)/2 + 1/2: as if the residual had one more dimension.
    def wrong(x, z, Ab, Q, nu):
        a, b = original(x, z, Ab, Q, nu)
        return a + 0.5, b
    return wrong


def _tau_rate_without_nu(original):
    # rate (1 + r2)/2 instead of (nu + r2)/2: the prior of tau dropped.
    def wrong(x, z, Ab, Q, nu):
        a, b = original(x, z, Ab, Q, nu)
        return a, b - 0.5 * nu[z] + 0.5
    return wrong


def _nu_no_jacobian(original):
    # the random walk on log nu accepted with p(nu')/p(nu), without the Jacobian nu'/nu
    def wrong(nu, *args, **kwargs):
        return original(nu, *args, **kwargs) - jnp.log(nu)
    return wrong


def _nu_prior_rate_doubled(original):
    def wrong(nu, count, sum_tau, sum_log_tau, *, nu_shape, nu_rate):
        return original(nu, count, sum_tau, sum_log_tau, nu_shape=nu_shape, nu_rate=2.0 * nu_rate)
    return wrong


def _ar_unweighted(original):
    # (Ab, Q) | x, z as if the noise were Gaussian: the precisions ignored
    def wrong(key, x, mask, z, *, tau=None, **kwargs):
        return original(key, x, mask, z, **kwargs)
    return wrong


def _ar_count_is_sum_tau(original):
    # nu_n = nu_0 + sum tau (the weighted count) instead of the number of frames
    import arhmm_eqx._ar as ar

    def wrong(key, x, mask, z, *, tau=None, nu_0, S_0, M_0, K_0, num_states, nlags):
        stats = ar.ar_sufficient_stats(x, mask, z, num_states=num_states, nlags=nlags, weights=tau)
        G, nu_n = ar.mniw_posterior_joint(stats, nu_0=nu_0, S_0=S_0, M_0=M_0, K_0=K_0)
        return ar.sample_mniw_from_joint(key, G, nu_n, x.shape[-1])
    return wrong


def _states_gaussian(original):
    # z drawn with Gaussian emissions (nu ignored)
    def wrong(*args, nu=None, **kwargs):
        return original(*args, **kwargs)
    return wrong


MUTATIONS = {
    "tau_shape_plus_half": ("tau", robust_module, "tau_conditional", _tau_shape_plus_half),
    "tau_rate_without_nu": ("tau", robust_module, "tau_conditional", _tau_rate_without_nu),
    "nu_no_jacobian": ("nu", robust_module, "nu_log_target", _nu_no_jacobian),
    "nu_prior_rate_doubled": ("nu", robust_module, "nu_log_target", _nu_prior_rate_doubled),
    "ar_unweighted": ("sweep", gibbs_module, "resample_ar_params", _ar_unweighted),
    "ar_count_is_sum_tau": ("sweep", gibbs_module, "resample_ar_params", _ar_count_is_sum_tau),
    "states_gaussian": ("sweep", gibbs_module, "sample_stateseqs", _states_gaussian),
}


def run_mutation(name, monkeypatch, block=None, num_sc=NUM_SC_TEETH):
    default_block, module, attr, make = MUTATIONS[name]
    block = block or default_block
    setup = _setup(block)
    monkeypatch.setattr(module, attr, make(getattr(module, attr)))
    return _run(setup, _step(block, setup), num_sc=num_sc, seed=52, title=f"robust {block}, {name}")


def test_geweke_robust_rejects(monkeypatch):
    zmax, table = run_mutation("tau_shape_plus_half", monkeypatch, block="latent")
    assert zmax > Z_MAX, table
