"""Joint-distribution (Geweke 2004) tests of the Gibbs sweep and of each of its blocks, in float64.

Each test compares the means of test functions under independent draws from the model
(marginal-conditional) and along a chain that alternates the conditional(s) under test
with a fresh draw of the data (successive-conditional); see `geweke_utils`. Each block also
has teeth: the same test with a deliberately wrong conditional, monkeypatched here (never
in the library), must reject. Run with `pytest -s` to see the z-scores.

Masked frames are trailing padding, except in the gapped case, which has a leading masked
stretch, an interior gap and trailing padding: the sampler is exact for all of them under
model.md's counting rule (a transition counts when the frame it enters is valid or is
followed later in its sequence by a valid frame); masked `x` is noise outside the model.
The prior draws of each set-up are computed once (`_setup`, cached) and always before any
monkeypatching; none of them uses a patched attribute anyway.
"""

import functools
import types

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
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
from helpers import random_model

import arhmm_eqx._ar as ar_module
import arhmm_eqx._gibbs as gibbs_module
import arhmm_eqx._inference as inference_module
import arhmm_eqx._transitions as transitions_module
from arhmm_eqx._ar import init_ar_params
from arhmm_eqx._generate import simulate_dataset
from arhmm_eqx._hyperparams import Hyperparams, default_M_0
from arhmm_eqx._initialize import init_params
from arhmm_eqx._log_prob import log_joint_likelihood
from arhmm_eqx._params import Params
from arhmm_eqx._states import States
from arhmm_eqx._transitions import init_hdp_transitions, transition_weights


pytestmark = pytest.mark.slow
f64 = jnp.float64
NUM_MC = 20_000
NUM_SC = 20_000  # correct samplers
NUM_SC_TEETH = 10_000  # wrong conditionals: the shift is many standard errors
MIN_ESS = 100


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _hyperparams(K, D, L, *, alpha=2.0, gamma=2.0, kappa=2.0, K_0_scale=0.1, M_0_scale=0.5, nu_extra=4):
    """A prior under which the successive-conditional chain mixes: `nu_0 = D + 4` with
    `S_0 = (nu_0 - D - 1) I` (so `E[Q] = I`), `M_0` half the random-walk mean, `K_0 = 0.1 I`.

    (With the default `nu_0 = D + 2` and the random-walk `M_0`, prior draws are explosive
    with non-negligible probability; the chain then sticks for thousands of sweeps on
    trajectories of size 1e8, where the data swamp the prior.)
    """
    nu_0 = float(D + nu_extra)
    hp = Hyperparams(
        num_states=K, latent_dim=D, nlags=L, alpha=alpha, gamma=gamma, kappa=kappa, nu_0=nu_0,
        S_0=(nu_0 - D - 1.0) * jnp.eye(D, dtype=f64),
        M_0=M_0_scale * jnp.asarray(default_M_0(D, L), f64),
        K_0=K_0_scale * jnp.eye(D * L + 1, dtype=f64),
    )
    assert all(leaf.dtype == f64 for leaf in jax.tree.leaves(hp))
    return hp


def _ar_kwargs(hp):
    return dict(nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0, K_0=hp.K_0)


def _hdp_functions(betas, pi, z, mask, L, padded):
    out = state_functions(z, mask, L, padded=padded)
    log_pz = jnp.log(pi[z[:, :-1], z[:, 1:]])
    counted = transition_weights(mask, L) > 0
    out.update({
        "betas[0]": betas[0],
        "log_betas[0]": jnp.log(betas[0]),
        "sum_betas2": jnp.sum(betas**2),
        "pi[0,0]": pi[0, 0],
        "mean_diag_pi": jnp.mean(jnp.diagonal(pi)),
        "log_p_z": jnp.sum(jnp.where(counted, log_pz, 0.0)),  # the transitions that count
        "betas0*usage0": betas[0] * out["usage[0]"],
        "pi00*usage0": pi[0, 0] * out["usage[0]"],
    })
    return out


def _loglik_x(s, mask):
    return log_joint_likelihood(s["x"], mask, s["z"], s["pi"], s["Ab"], s["Q"])["x"]


def _run(setup, step, *, num_sc, seed, title):
    sc = successive_conditional(jr.key(seed), setup.state0, step, setup.functions, num_sc)
    table = geweke_zscores(setup.mc, sc)
    return print_zscores(title, table, NUM_MC, num_sc), table


def _assert_passes(zmax, table):
    # ESS gate: with 20k draws (5 chains of 4,000), ESS >= 100 means an autocorrelation time
    # <= 200, half the length of a batch (10 batches of 400 draws per chain), so the
    # batch-means standard error holds;
    # below it a failure would say "mixes too slowly", not "wrong".
    ess_min = min(v[3] for v in table.values())
    assert ess_min >= MIN_ESS, f"successive-conditional chain mixes too slowly (min ESS {ess_min:.0f}): {table}"
    assert zmax < Z_MAX, table


# ---------------------------------------------------------------------------------------
# Set-ups: a prior, a mask, the marginal-conditional draws and the test functions.

def _first_in_every_run(mutations: dict) -> list:
    """The first planted mutation of a block in every run; the others in the extended tier
    (`ARHMM_EQX_TEST_EXTENDED=1`), for CI time."""
    names = list(mutations)
    return names[:1] + [pytest.param(n, marks=pytest.mark.extended) for n in names[1:]]


JOINT_CASES = {
    # K, D, L, N, T, trailing padded frames of sequence 0
    "K3_D1_L1_padded": (3, 1, 1, 2, 12, 3),
    "K2_D2_L2": (2, 2, 2, 1, 10, 0),
    # the mask below: a leading masked stretch, an interior gap and trailing padding
    "K3_D1_L1_gaps": (3, 1, 1, 2, 16, 2),
}


def _gapped_mask(N, T, padded):
    """Every sequence: frames 0..3 masked (a leading stretch past the lag) and 7..11 masked
    (an interior gap); the last `padded` frames of sequence 0 masked too. About half of the
    transitions enter masked frames, so the old counting rule shifts the joint clearly."""
    mask = trailing_mask(N, T, padded)
    return mask.at[:, :4].set(0.0).at[:, 7:12].set(0.0)


def _gap_functions(z, mask, L):
    """Switches into masked frames that are followed by a valid one (leading stretch and
    interior gap): transitions the old counting rule left out of the conditional of `pi`."""
    counted = transition_weights(mask, L) > 0
    masked = mask[:, L + 1 :] <= 0
    switch = z[:, 1:] != z[:, :-1]
    stay0 = (z[:, 1:] == 0) & (z[:, :-1] == 0)
    return {
        "switches_in_gaps": jnp.sum(counted & masked & switch, dtype=f64),
        "stays0_in_gaps": jnp.sum(counted & masked & stay0, dtype=f64),
    }


@functools.cache
def _setup(name):
    if name in JOINT_CASES:
        return _joint_setup(name)
    if name.startswith("hdp_"):
        return _hdp_setup(name.removeprefix("hdp_"))
    return {"ar": _ar_setup, "states": _states_setup}[name]()


def _joint_setup(case):
    K, D, L, N, T, padded = JOINT_CASES[case]
    hp = _hyperparams(K, D, L)
    gapped = case.endswith("_gaps")
    mask = _gapped_mask(N, T, padded) if gapped else trailing_mask(N, T, padded)

    def prior_draw(key):
        key_p, key_z, key_x = jr.split(key, 3)
        Ab, Q, betas, pi = init_params(key_p, alpha=hp.alpha, gamma=hp.gamma, kappa=hp.kappa, **_ar_kwargs(hp),
                                       num_states=K, dtype=f64)
        z = simulate_z(key_z, pi, N, T - L)
        return dict(Ab=Ab, Q=Q, betas=betas, pi=pi, z=z, x=simulate_x(key_x, z, Ab, Q, mask))

    def functions(s):
        out = ar_functions(s["Ab"], s["Q"], hp.S_0, hp.M_0, hp.K_0[0, 0])
        hdp = _hdp_functions(s["betas"], s["pi"], s["z"], mask, L, padded > 0)
        out.update({k: v for k, v in hdp.items() if k not in ("betas[0]", "log_betas[0]", "pi00*usage0")})
        out.update(data_functions(s["x"], mask, L))
        out["loglik_x"] = _loglik_x(s, mask)
        if gapped:
            out.update(_gap_functions(s["z"], mask, L))
        return out

    mc, state0 = marginal_conditional(jr.key(100), prior_draw, functions, NUM_MC)
    assert state0["Ab"].dtype == f64 and state0["x"].dtype == f64
    return types.SimpleNamespace(hp=hp, mask=mask, mc=mc, state0=state0, functions=functions)


def _joint_step(setup, *, sweep_mask=None):
    hp, mask = setup.hp, setup.mask
    sweep_mask = mask if sweep_mask is None else sweep_mask

    def step(key, s):
        key_sweep, key_x = jr.split(key)
        params = Params(Ab=s["Ab"], Q=s["Q"], pi=s["pi"], betas=s["betas"])
        p, states, _ = gibbs_module.gibbs_sweep(key_sweep, hp, params, States(z=s["z"]), s["x"], sweep_mask)
        z = states.z
        return dict(Ab=p.Ab, Q=p.Q, betas=p.betas, pi=p.pi, z=z, x=simulate_x(key_x, z, p.Ab, p.Q, mask))

    return step


# ---------------------------------------------------------------------------------------
# The simulators here follow model.md; so must the library's (used by `ARHMM.simulate`).


@pytest.mark.parametrize("x64", [False, True])
def test_library_simulator_matches_geweke_simulators(x64):
    """`_generate.simulate_dataset` draws `(z, x)` as `simulate_z` / `simulate_x` do: first
    state uniform, `L` standard-normal initial lags, regressors oldest lag first. Two-sample
    z-scores of iid draws on moments that see each of these conventions."""
    K, D, L, N, T, M = 3, 2, 2, 2, 8, 20_000
    with jax.enable_x64(x64):
        dtype = f64 if x64 else jnp.float32
        Ab, Q, pi, _ = random_model(jr.key(5), K, D, L, dtype=dtype)
        # A strong coefficient on the most recent lag only, so that the lag order shows
        # (with oldest and newest lags swapped, the two product moments move by ~30 z).
        Ab = Ab.at[:, :, (L - 1) * D : L * D].add(0.5 * jnp.eye(D, dtype=dtype))
        mask = jnp.ones((N, T), dtype)

        def functions(z, x):
            return {
                "z[0,0]==0": (z[0, 0] == 0).astype(dtype),
                "usage[0]": jnp.mean((z == 0).astype(dtype)),
                "switches": jnp.sum((z[:, 1:] != z[:, :-1]).astype(dtype)),
                "x[L]": x[0, L, 0],
                "x[L]*x[L-1]": x[0, L, 0] * x[0, L - 1, 0],
                "x[L]*x[0]": x[0, L, 0] * x[0, 0, 0],
                "x[0]^2": x[0, 0, 0] ** 2,
                "log_mean_x2": jnp.log(jnp.mean(x**2)),
            }

        def reference(key):
            key_z, key_x = jr.split(key)
            z = simulate_z(key_z, pi, N, T - L)
            return functions(z, simulate_x(key_x, z, Ab, Q, mask))

        library = jax.jit(jax.vmap(lambda k: functions(*simulate_dataset(k, pi, Ab, Q, N, T))))
        lib = {k: np.asarray(v, np.float64) for k, v in library(jr.split(jr.key(6), M)).items()}
        ref = {k: np.asarray(v, np.float64) for k, v in jax.jit(jax.vmap(reference))(jr.split(jr.key(7), M)).items()}
    zs = {k: (lib[k].mean() - ref[k].mean()) / np.sqrt(lib[k].var(ddof=1) / M + ref[k].var(ddof=1) / M) for k in lib}
    print(f"\n[simulator x64={x64}]", {k: round(float(v), 2) for k, v in zs.items()})
    assert max(abs(v) for v in zs.values()) < Z_MAX, zs


# ---------------------------------------------------------------------------------------
# The whole Gibbs sweep (`_gibbs.gibbs_sweep`), then x given (Ab, Q, z).


@pytest.mark.parametrize("case", [c if c != "K2_D2_L2" else pytest.param(c, marks=pytest.mark.extended)
                                  for c in JOINT_CASES])  # D = 2, L = 2 in the extended tier (CI time)
def test_geweke_joint_gibbs_sweep(case):
    setup = _setup(case)
    zmax, table = _run(setup, _joint_step(setup), num_sc=NUM_SC, seed=11, title=f"joint sweep {case}")
    _assert_passes(zmax, table)


def test_geweke_joint_rejects_sweep_ignoring_mask():
    """Teeth: a sweep that reads the padded (noise) frames must be caught."""
    setup = _setup("K3_D1_L1_padded")
    step = _joint_step(setup, sweep_mask=jnp.ones_like(setup.mask))
    zmax, table = _run(setup, step, num_sc=NUM_SC_TEETH, seed=12, title="joint sweep, mask ignored")
    assert zmax > Z_MAX, table


def _old_counting_rule(original):
    # The first version of model.md: a transition counts only when the frame it enters is
    # valid, so the transitions into a leading stretch or an interior gap are left out.
    return lambda mask, nlags: (mask[:, nlags + 1 :] > 0).astype(jnp.result_type(float))


@pytest.mark.extended  # CI time: the mask-ignoring sweep above is rejected in every run
def test_geweke_joint_rejects_old_counting_rule(monkeypatch):
    """Teeth for the gapped case: the counting rule of the first model.md must be caught."""
    setup = _setup("K3_D1_L1_gaps")
    monkeypatch.setattr(transitions_module, "transition_weights", _old_counting_rule(None))
    zmax, table = _run(setup, _joint_step(setup), num_sc=NUM_SC_TEETH, seed=13, title="joint sweep, old counting rule")
    assert zmax > Z_MAX, table


# ---------------------------------------------------------------------------------------
# HDP transitions alone: (betas, pi) | z by `resample_hdp_transitions`, then z ~ pi.

HDP_CASES = {
    # alpha, gamma, kappa, T (K = 3, L = 1, N = 2, last 3 frames of sequence 0 padded)
    "kappa2": (2.0, 2.0, 2.0, 20),
    # Every diagonal cell in the table-count sampler's asymptotic regime (kappa > 10 (1 + a)).
    "sticky_kappa50": (1.0, 3.0, 50.0, 30),
}
HDP_K, HDP_L, HDP_N = 3, 1, 2


def _hdp_setup(case):
    alpha, gamma, kappa, T = HDP_CASES[case]
    K, L, N = HDP_K, HDP_L, HDP_N
    hp = _hyperparams(K, 1, L, alpha=alpha, gamma=gamma, kappa=kappa)
    mask = trailing_mask(N, T, 3)

    def prior_draw(key):
        key_t, key_z = jr.split(key)
        betas, pi = init_hdp_transitions(key_t, alpha=hp.alpha, kappa=hp.kappa, gamma=hp.gamma, num_states=K,
                                         dtype=f64)
        return dict(betas=betas, pi=pi, z=simulate_z(key_z, pi, N, T - L))

    def functions(s):
        return _hdp_functions(s["betas"], s["pi"], s["z"], mask, L, padded=False)

    mc, state0 = marginal_conditional(jr.key(200), prior_draw, functions, NUM_MC)
    assert state0["betas"].dtype == f64 and state0["pi"].dtype == f64
    return types.SimpleNamespace(hp=hp, mask=mask, T=T, mc=mc, state0=state0, functions=functions)


def _hdp_step(setup):
    hp, mask, T = setup.hp, setup.mask, setup.T
    K, L, N = HDP_K, HDP_L, HDP_N

    def step(key, s):
        key_t, key_z = jr.split(key)
        betas, pi = transitions_module.resample_hdp_transitions(
            key_t, s["z"], mask, s["betas"], alpha=hp.alpha, kappa=hp.kappa, gamma=hp.gamma, num_states=K, nlags=L
        )
        return dict(betas=betas, pi=pi, z=simulate_z(key_z, pi, N, T - L))

    return step


@pytest.mark.parametrize("case", list(HDP_CASES))
def test_geweke_hdp_transitions(case):
    setup = _setup(f"hdp_{case}")
    zmax, table = _run(setup, _hdp_step(setup), num_sc=NUM_SC, seed=21, title=f"HDP transitions {case}")
    _assert_passes(zmax, table)


# Teeth. Each mutation is (module, attribute, make_wrong(original)). Most change the arguments
# of the kernel the step calls (its signature is the kernel API); the table-count one patches
# a helper of `_transitions` (a rename makes it fail loudly with an AttributeError).


def _tables_without_stickiness(original):
    # Table counts as if there were no sticky pseudo-customers (and so no override thinning).
    return lambda key, counts, betas, alpha, kappa: original(key, counts, betas, alpha, jnp.zeros_like(kappa))


def _hdp_with(**changes):
    def make(original):
        def wrong(key, z, mask, betas, *, alpha, kappa, gamma, num_states, nlags):
            args = dict(alpha=alpha, kappa=kappa, gamma=gamma)
            args = {k: changes.get(k, lambda v: v)(v) for k, v in args.items()}
            return original(key, z, mask, betas, **args, num_states=num_states, nlags=nlags)

        return wrong

    return make


HDP_MUTATIONS = {
    "tables_ignore_kappa": (transitions_module, "sample_override_table_counts", _tables_without_stickiness),
    # betas ~ Dirichlet(gamma + sum_i mbar[i]) instead of gamma / K + ...
    "gamma_not_over_K": (transitions_module, "resample_hdp_transitions", _hdp_with(gamma=lambda g: g * HDP_K)),
    "kappa_halved": (transitions_module, "resample_hdp_transitions", _hdp_with(kappa=lambda k: 0.5 * k)),
}


def _apply(monkeypatch, mutation):
    module, attr, make = mutation
    monkeypatch.setattr(module, attr, make(getattr(module, attr)))


@pytest.mark.parametrize("mutation", _first_in_every_run(HDP_MUTATIONS))
def test_geweke_hdp_transitions_rejects(mutation, monkeypatch):
    setup = _setup("hdp_kappa2")
    _apply(monkeypatch, HDP_MUTATIONS[mutation])
    zmax, table = _run(setup, _hdp_step(setup), num_sc=NUM_SC_TEETH, seed=22, title=f"HDP transitions, {mutation}")
    assert zmax > Z_MAX, table


# ---------------------------------------------------------------------------------------
# AR parameters alone: (Ab, Q) | x, z by `resample_ar_params` with z fixed, then x | z, Ab, Q.

AR_SIZES = dict(K=3, D=2, L=1, N=2, T=12, padded=3)
# z of frames 1..11; state 2 only on the padded frames 9..11 of sequence 0, so it has no
# valid frame and its conditional is the prior.
AR_Z = ((0, 0, 0, 1, 1, 1, 0, 0, 2, 2, 2), (1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0))


# Two full runs on a 2-core machine stalled at 0 % CPU (an XLA CPU deadlock, cause not yet
# found) while computing this set-up's 20000 vmapped prior draws; in other runs it passes in
# about 15 s. Skipped in CI until understood; run by hand with `pytest tests/test_geweke.py`.
def _ar_setup():
    K, D, L, N, T = (AR_SIZES[k] for k in "KDLNT")
    hp = _hyperparams(K, D, L)
    mask = trailing_mask(N, T, AR_SIZES["padded"])
    z = jnp.asarray(AR_Z, jnp.int32)

    def prior_draw(key):
        key_p, key_x = jr.split(key)
        Ab, Q = init_ar_params(key_p, **_ar_kwargs(hp), num_states=K)
        return dict(Ab=Ab, Q=Q, x=simulate_x(key_x, z, Ab, Q, mask))

    def functions(s):
        out = ar_functions(s["Ab"], s["Q"], hp.S_0, hp.M_0, hp.K_0[0, 0], states=(0, 2))
        out["logdetQ[1]"] = 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(s["Q"][1]))))
        out.update(data_functions(s["x"], mask, L))
        out["loglik_x"] = log_joint_likelihood(s["x"], mask, z, jnp.full((K, K), 1.0 / K, f64), s["Ab"], s["Q"])["x"]
        return out

    mc, state0 = marginal_conditional(jr.key(300), prior_draw, functions, NUM_MC)
    assert state0["Ab"].dtype == f64 and state0["x"].dtype == f64
    return types.SimpleNamespace(hp=hp, mask=mask, z=z, mc=mc, state0=state0, functions=functions)


def _ar_step(setup):
    hp, mask, z = setup.hp, setup.mask, setup.z

    def step(key, s):
        key_p, key_x = jr.split(key)
        Ab, Q = ar_module.resample_ar_params(key_p, s["x"], mask, z, **_ar_kwargs(hp), num_states=AR_SIZES["K"],
                                             nlags=AR_SIZES["L"])
        return dict(Ab=Ab, Q=Q, x=simulate_x(key_x, z, Ab, Q, mask))

    return step


def test_geweke_ar_params():
    setup = _setup("ar")
    zmax, table = _run(setup, _ar_step(setup), num_sc=NUM_SC, seed=31, title="AR parameters")
    _assert_passes(zmax, table)


def _ar_with(**changes):
    # The conditional run with a wrong nu_0, M_0 or mask while the prior keeps the right ones.
    def make(original):
        def wrong(key, x, mask, z, *, nu_0, S_0, M_0, K_0, num_states, nlags):
            args = dict(mask=mask, nu_0=nu_0, M_0=M_0)
            args = {k: changes.get(k, lambda v: v)(v) for k, v in args.items()}
            return original(key, x, args["mask"], z, nu_0=args["nu_0"], S_0=S_0, M_0=args["M_0"], K_0=K_0,
                            num_states=num_states, nlags=nlags)

        return wrong

    return make


AR_MUTATIONS = {
    "nu_n_plus_2": (ar_module, "resample_ar_params", _ar_with(nu_0=lambda v: v + 2.0)),
    "prior_mean_dropped": (ar_module, "resample_ar_params", _ar_with(M_0=jnp.zeros_like)),
    "mask_ignored": (ar_module, "resample_ar_params", _ar_with(mask=jnp.ones_like)),
}


@pytest.mark.parametrize("mutation", _first_in_every_run(AR_MUTATIONS))
def test_geweke_ar_params_rejects(mutation, monkeypatch):
    setup = _setup("ar")
    _apply(monkeypatch, AR_MUTATIONS[mutation])
    zmax, table = _run(setup, _ar_step(setup), num_sc=NUM_SC_TEETH, seed=32, title=f"AR parameters, {mutation}")
    assert zmax > Z_MAX, table


# ---------------------------------------------------------------------------------------
# States alone: z | x, Ab, Q, pi by `sample_stateseqs`, then x | z, Ab, Q.

STATES_SIZES = dict(K=3, D=2, L=2, N=2, T=12, padded=3)


def _states_setup():
    K, D, L, N, T = (STATES_SIZES[k] for k in "KDLNT")
    mask = trailing_mask(N, T, STATES_SIZES["padded"])
    Ab, Q, pi, _ = random_model(jr.key(3), K, D, L, dtype=f64)
    params = dict(Ab=Ab, Q=Q, pi=pi)

    def prior_draw(key):
        key_z, key_x = jr.split(key)
        z = simulate_z(key_z, pi, N, T - L)
        return dict(z=z, x=simulate_x(key_x, z, Ab, Q, mask))

    def functions(s):
        z = s["z"]
        out = state_functions(z, mask, L, padded=True)
        out.update(state_functions(z, mask, L, state=1))
        out["z[0,0]==0"] = (z[0, 0] == 0).astype(f64)
        out["z[0,-1]==0 (padded)"] = (z[0, -1] == 0).astype(f64)
        out["z[1,-1]==0"] = (z[1, -1] == 0).astype(f64)
        out["n[0,1]"] = jnp.sum((mask[:, L + 1 :] > 0) & (z[:, :-1] == 0) & (z[:, 1:] == 1), dtype=f64)
        lj = log_joint_likelihood(s["x"], mask, z, pi, Ab, Q)
        out["loglik_x"], out["log_p_z"] = lj["x"], lj["z"]
        out.update(data_functions(s["x"], mask, L))
        return out

    mc, state0 = marginal_conditional(jr.key(400), prior_draw, functions, NUM_MC)
    assert state0["x"].dtype == f64
    return types.SimpleNamespace(mask=mask, params=params, mc=mc, state0=state0, functions=functions)


def _states_step(setup):
    mask, p = setup.mask, setup.params

    def step(key, s):
        key_z, key_x = jr.split(key)
        z, _, _ = inference_module.sample_stateseqs(key_z, s["x"], mask, p["Ab"], p["Q"], p["pi"])
        return dict(z=z, x=simulate_x(key_x, z, p["Ab"], p["Q"], mask))

    return step


def test_geweke_states():
    setup = _setup("states")
    zmax, table = _run(setup, _states_step(setup), num_sc=NUM_SC, seed=41, title="states")
    _assert_passes(zmax, table)


def _states_with(x=lambda v: v, mask=lambda v: v, pi=lambda v: v):
    def make(original):
        def wrong(key, x_, mask_, Ab, Q, pi_, **kwargs):
            return original(key, x(x_), mask(mask_), Ab, Q, pi(pi_), **kwargs)

        return wrong

    return make


STATES_MUTATIONS = {
    # The conditional sees x delayed by one frame: every frame is paired with the wrong lags.
    "lag_off_by_one": (inference_module, "sample_stateseqs",
                       _states_with(x=lambda v: jnp.concatenate([v[:, :1], v[:, :-1]], axis=1))),
    "mask_ignored": (inference_module, "sample_stateseqs", _states_with(mask=jnp.ones_like)),
    # Forward filtering / backward sampling with pi^T (pi is not symmetric).
    "pi_transposed": (inference_module, "sample_stateseqs", _states_with(pi=jnp.transpose)),
}


@pytest.mark.parametrize("mutation", _first_in_every_run(STATES_MUTATIONS))
def test_geweke_states_rejects(mutation, monkeypatch):
    setup = _setup("states")
    _apply(monkeypatch, STATES_MUTATIONS[mutation])
    zmax, table = _run(setup, _states_step(setup), num_sc=NUM_SC_TEETH, seed=42, title=f"states, {mutation}")
    assert zmax > Z_MAX, table
