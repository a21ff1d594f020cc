"""The options together: a joint-distribution (Geweke 2004) test of the whole sweep of a model
with robust (Student-t) noise, per-group transition matrices AND learned concentrations
(`alpha`, `gamma`), in float64.

Each option has its own Geweke tests (`test_robust_geweke.py`, `test_groups.py`,
`test_concentrations.py`); this one checks that they compose: the state step uses each
sequence's own group matrix with the Student-t emissions, the `tau`-weighted AR update and the
`nu` step see the states of both groups, the per-group transition block sees the states drawn
that way, and the concentrations' conditionals take the rows and tables of every group.

Teeth, run by hand: drawing every sequence's states with group 0's matrix (the state step
ignoring the groups) gives z = +5.99 on `switches1_x_stay0` (6,000 draws each side).
"""

import equinox as eqx
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

from arhmm_eqx._concentrations import ConcentrationPrior
from arhmm_eqx._gibbs import gibbs_sweep
from arhmm_eqx._group_transitions import init_group_transitions
from arhmm_eqx._hyperparams import Hyperparams, default_M_0
from arhmm_eqx._initialize import init_params
from arhmm_eqx._log_prob import log_joint_likelihood
from arhmm_eqx._params import Params
from arhmm_eqx._robust import RobustPrior, sample_nu_prior, sample_tau_prior
from arhmm_eqx._states import States


pytestmark = pytest.mark.slow
f64 = jnp.float64
K, D, L, N, T, G = 2, 1, 1, 2, 10, 2
GROUPS = jnp.asarray([0, 1], jnp.int32)
NUM_MC = NUM_SC = 6_000
MIN_ESS = 60


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _hyperparams():
    nu_0 = float(D + 4)
    return Hyperparams(
        num_states=K, latent_dim=D, nlags=L, alpha=2.0, gamma=2.0, kappa=2.0, nu_0=nu_0,
        S_0=(nu_0 - D - 1.0) * jnp.eye(D, dtype=f64), M_0=0.5 * jnp.asarray(default_M_0(D, L), f64),
        K_0=0.1 * jnp.eye(D * L + 1, dtype=f64), num_groups=G,
        robust=RobustPrior(nu_init=4.0, nu_shape=4.0, nu_rate=1.0, nu_mh_steps=5, nu_step_size=0.5),
        concentrations=CONC,
    ).astype(f64)


CONC = ConcentrationPrior(alpha_shape=3.0, alpha_rate=1.0, gamma_shape=3.0, gamma_rate=1.0)


@pytest.mark.extended
def test_geweke_robust_noise_groups_and_learned_concentrations():
    hp = _hyperparams()
    mask = trailing_mask(N, T, 2)
    ar = dict(nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0, K_0=hp.K_0)

    def draw(key):
        key_p, key_t, key_nu, key_z, key_tau, key_x, key_a, key_g = jr.split(key, 8)
        c = hp.concentrations  # in float64, as the rest of hp
        alpha = jr.gamma(key_a, c.alpha_shape, dtype=f64) / c.alpha_rate
        gamma = jr.gamma(key_g, c.gamma_shape, dtype=f64) / c.gamma_rate
        Ab, Q, _, _ = init_params(key_p, alpha=alpha, gamma=gamma, kappa=hp.kappa, **ar, num_states=K, dtype=f64)
        betas, pi = init_group_transitions(key_t, alpha=alpha, kappa=hp.kappa, gamma=gamma, num_states=K,
                                           num_groups=G, dtype=f64)
        nu = sample_nu_prior(key_nu, hp.robust, K, f64)
        z = jnp.concatenate([simulate_z(k, pi[g], 1, T - L) for k, g in zip(jr.split(key_z, N), (0, 1))])
        tau = jnp.where(mask[:, L:] > 0, sample_tau_prior(key_tau, nu[z]), 1.0)
        x = simulate_x(key_x, z, Ab, Q, mask, tau)
        return dict(Ab=Ab, Q=Q, betas=betas, pi=pi, nu=nu, z=z, tau=tau, x=x, alpha=alpha, gamma=gamma)

    def functions(s):
        valid = mask[:, L:] > 0
        mean = lambda v: jnp.sum(jnp.where(valid, v, 0.0)) / jnp.sum(valid, dtype=f64)
        out = {"log_alpha": jnp.log(s["alpha"]), "log_gamma": jnp.log(s["gamma"]),
               "mean_log_tau": mean(jnp.log(s["tau"])), "log_nu[0]": jnp.log(s["nu"][0]),
               "pi0[0,0]": s["pi"][0, 0, 0], "pi1[1,1]": s["pi"][1, 1, 1], "betas[0]": s["betas"][0],
               "switches_group1": jnp.sum((s["z"][1, 1:] != s["z"][1, :-1]) & valid[1, 1:], dtype=f64)}
        # each group's switches against the self-transitions of its own and of the other matrix:
        # drawing a sequence with another group's matrix moves these cross moments
        switches = jnp.sum((s["z"][:, 1:] != s["z"][:, :-1]) & valid[:, 1:], axis=1, dtype=f64)
        stay = jnp.trace(s["pi"], axis1=1, axis2=2)
        for n in range(N):
            for g in range(G):
                out[f"switches{n}_x_stay{g}"] = switches[n] * stay[g]
        out.update(data_functions(s["x"], mask, L))
        out.update(ar_functions(s["Ab"], s["Q"], hp.S_0, hp.M_0, hp.K_0[0, 0]))
        out.update(state_functions(s["z"], mask, L))
        pi_n = s["pi"][GROUPS]
        out["loglik_t"] = log_joint_likelihood(s["x"], mask, s["z"], pi_n, s["Ab"], s["Q"], s["nu"])["x"]
        return out

    def step(key, s):
        key_b, key_x = jr.split(key)
        params = Params(Ab=s["Ab"], Q=s["Q"], pi=s["pi"], betas=s["betas"], nu=s["nu"])
        hp_s = eqx.tree_at(lambda h: (h.alpha, h.gamma), hp, (s["alpha"], s["gamma"]))
        p, st, info = gibbs_sweep(key_b, hp_s, params, States(z=s["z"], groups=GROUPS, tau=s["tau"]), s["x"], mask)
        s = dict(s, Ab=p.Ab, Q=p.Q, pi=p.pi, betas=p.betas, nu=p.nu, z=st.z, tau=st.tau, alpha=info.alpha,
                 gamma=info.gamma)
        s["x"] = simulate_x(key_x, s["z"], s["Ab"], s["Q"], mask, s["tau"])
        return s

    mc, state0 = marginal_conditional(jr.key(600), draw, functions, NUM_MC)
    sc = successive_conditional(jr.key(61), state0, step, functions, NUM_SC)
    table = geweke_zscores(mc, sc)
    zmax = print_zscores("robust noise, groups and learned concentrations, whole sweep", table, NUM_MC, NUM_SC)
    ess_min = min(v[3] for v in table.values())
    assert ess_min >= MIN_ESS, f"successive-conditional chain mixes too slowly (min ESS {ess_min:.0f}): {table}"
    assert zmax < Z_MAX, table
