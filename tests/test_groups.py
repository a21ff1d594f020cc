"""Per-group transition matrices (`Hyperparams.num_groups`): exact conditionals and the model around them.

Geweke joint-distribution tests (see `geweke_utils`) of the per-group transition block and of
the whole sweep with groups on, each with a planted wrong conditional that must be caught;
one group equals the model without groups; recovery of per-group transition matrices.
Run with `pytest -s` to see the z-scores.
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
    successive_conditional,
    trailing_mask,
)

import arhmm_eqx as ae
import arhmm_eqx._gibbs as gibbs_module
import arhmm_eqx._group_transitions as group_module
from arhmm_eqx._ar import init_ar_params
from arhmm_eqx._hyperparams import Hyperparams, default_M_0
from arhmm_eqx._log_prob import log_joint_likelihood
from arhmm_eqx._params import Params
from arhmm_eqx._states import States
from arhmm_eqx._transitions import transition_weights


f64 = jnp.float64
NUM_MC = 5_000
NUM_SC = 4_000  # correct samplers (5 chains of 800): min ESS ~140-160 (the gate asks for 100)
# Wrong conditionals: each chain starts from the model's joint and must drift away from it,
# so 5 chains of 400 draws caught `pi[0]` for every sequence at |z| 3.9 only; 5 chains of 800
# catch the two mutations at |z| 6.8 and 9.3
NUM_SC_TEETH = 4_000
MIN_ESS = 100


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True)
def _compile_bound(request):
    """The tests not marked slow compile many programs that then run for milliseconds: they
    compile with XLA's optimisations mostly off, as `run_tests.py` does for whole files. (This
    file is runtime-bound as a whole: its Geweke chains and recovery run optimised code.)"""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


def _hyperparams(K, D, L, G, *, alpha=2.0, gamma=2.0, kappa=2.0):
    # As in test_geweke: a prior under which the successive-conditional chain mixes.
    nu_0 = float(D + 4)
    return Hyperparams(
        num_states=K, latent_dim=D, nlags=L, alpha=alpha, gamma=gamma, kappa=kappa, nu_0=nu_0,
        S_0=(nu_0 - D - 1.0) * jnp.eye(D, dtype=f64), M_0=0.5 * jnp.asarray(default_M_0(D, L), f64),
        K_0=0.1 * jnp.eye(D * L + 1, dtype=f64), num_groups=G,
    )


def _simulate_z_groups(key, pi, groups, Tz):
    """`z[n]` from its group's `pi[groups[n]]`, first state uniform."""
    keys = jr.split(key, groups.shape[0])
    return jax.vmap(lambda k, g: simulate_z(k, pi[g], 1, Tz)[0])(keys, groups)


def _group_functions(betas, pi, z, mask, groups, L):
    """Moments of `betas`, of each group's `pi[g]`, of their products across groups (which see
    whether `betas` is shared) and of the states of each group."""
    counted = transition_weights(mask, L) > 0
    valid = mask[:, L:] > 0
    pi_n = pi[groups]
    log_pz = jnp.log(pi_n[jnp.arange(z.shape[0])[:, None], z[:, :-1], z[:, 1:]])
    switch = z[:, 1:] != z[:, :-1]
    out = {
        "betas[0]": betas[0],
        "sum_betas2": jnp.sum(betas**2),
        "log_p_z": jnp.sum(jnp.where(counted, log_pz, 0.0)),
        "pi0[0,1]*pi1[0,1]": pi[0, 0, 1] * pi[1, 0, 1],
    }
    for g in range(pi.shape[0]):
        in_g = (groups == g)[:, None]
        usage = jnp.sum(valid & in_g & (z == 0), dtype=f64) / jnp.sum(valid & in_g, dtype=f64)
        out[f"pi{g}[0,0]"] = pi[g, 0, 0]
        out[f"mean_diag_pi{g}"] = jnp.mean(jnp.diagonal(pi[g]))
        out[f"usage0_g{g}"] = usage
        out[f"switches_g{g}"] = jnp.sum(counted & in_g & switch, dtype=f64)
        out[f"betas0*usage0_g{g}"] = betas[0] * usage
    return out


def _run(setup, step, *, num_sc, seed, title):
    sc = successive_conditional(jr.key(seed), setup.state0, step, setup.functions, num_sc)
    table = geweke_zscores(setup.mc, sc)
    return print_zscores(title, table, NUM_MC, num_sc), table


def _assert_passes(zmax, table):
    ess_min = min(v[3] for v in table.values())
    assert ess_min >= MIN_ESS, f"successive-conditional chain mixes too slowly (min ESS {ess_min:.0f}): {table}"
    assert zmax < Z_MAX, table


# ---------------------------------------------------------------------------------------
# The transition block alone: (betas, pi) | z by `resample_group_transitions`, then z ~ pi[g].

# Group 1 holds most of the data, so that a step that ignores its counts shifts the joint.
TRANS = dict(K=3, L=1, G=2, T=16, groups=(0, 1, 1, 1, 1))
_SETUPS = {}


def _trans_setup():
    if "trans" in _SETUPS:
        return _SETUPS["trans"]
    K, L, G, T = (TRANS[k] for k in "KLGT")
    groups = jnp.asarray(TRANS["groups"], jnp.int32)
    hp = _hyperparams(K, 1, L, G)
    mask = trailing_mask(len(TRANS["groups"]), T, 3)

    def prior_draw(key):
        key_t, key_z = jr.split(key)
        betas, pi = group_module.init_group_transitions(
            key_t, alpha=hp.alpha, kappa=hp.kappa, gamma=hp.gamma, num_states=K, num_groups=G, dtype=f64)
        return dict(betas=betas, pi=pi, z=_simulate_z_groups(key_z, pi, groups, T - L))

    def functions(s):
        return _group_functions(s["betas"], s["pi"], s["z"], mask, groups, L)

    mc, state0 = marginal_conditional(jr.key(500), prior_draw, functions, NUM_MC)
    _SETUPS["trans"] = types.SimpleNamespace(hp=hp, mask=mask, groups=groups, mc=mc, state0=state0,
                                             functions=functions)
    return _SETUPS["trans"]


def _trans_step(setup):
    hp, mask, groups = setup.hp, setup.mask, setup.groups
    K, L, G, T = (TRANS[k] for k in "KLGT")

    def step(key, s):
        key_t, key_z = jr.split(key)
        betas, pi = group_module.resample_group_transitions(
            key_t, s["z"], mask, groups, s["betas"], alpha=hp.alpha, kappa=hp.kappa, gamma=hp.gamma,
            num_states=K, num_groups=G, nlags=L,
        )
        return dict(betas=betas, pi=pi, z=_simulate_z_groups(key_z, pi, groups, T - L))

    return step


@pytest.mark.slow
def test_geweke_group_transitions():
    setup = _trans_setup()
    zmax, table = _run(setup, _trans_step(setup), num_sc=NUM_SC, seed=51, title="per-group transitions")
    _assert_passes(zmax, table)


def _betas_from_group_0(original):
    # betas from the table counts of group 0 only, as if the other groups had no say
    return lambda key, mbar, gamma: original(key, mbar[:1], gamma)


TRANS_MUTATIONS = {
    "betas_from_group_0": (group_module, "sample_shared_betas", _betas_from_group_0),
}


@pytest.mark.slow
@pytest.mark.parametrize("mutation", list(TRANS_MUTATIONS))
def test_geweke_group_transitions_rejects(mutation, monkeypatch):
    setup = _trans_setup()
    module, attr, make = TRANS_MUTATIONS[mutation]
    monkeypatch.setattr(module, attr, make(getattr(module, attr)))
    zmax, table = _run(setup, _trans_step(setup), num_sc=NUM_SC_TEETH, seed=52,
                       title=f"per-group transitions, {mutation}")
    assert zmax > Z_MAX, table


# ---------------------------------------------------------------------------------------
# The whole sweep with groups: `gibbs_sweep`, then x given (Ab, Q, z).

# As for the transition block, group 1 holds most of the data (and the chain mixes faster).
JOINT = dict(K=3, D=1, L=1, G=2, T=12, groups=(0, 1, 1, 1))


def _joint_setup():
    if "joint" in _SETUPS:
        return _SETUPS["joint"]
    K, D, L, G, T = (JOINT[k] for k in "KDLGT")
    groups = jnp.asarray(JOINT["groups"], jnp.int32)
    hp = _hyperparams(K, D, L, G)
    mask = trailing_mask(len(JOINT["groups"]), T, 2)

    def prior_draw(key):
        key_ar, key_t, key_z, key_x = jr.split(key, 4)
        Ab, Q = init_ar_params(key_ar, nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0, K_0=hp.K_0, num_states=K)
        betas, pi = group_module.init_group_transitions(
            key_t, alpha=hp.alpha, kappa=hp.kappa, gamma=hp.gamma, num_states=K, num_groups=G, dtype=f64)
        z = _simulate_z_groups(key_z, pi, groups, T - L)
        return dict(Ab=Ab, Q=Q, betas=betas, pi=pi, z=z, x=simulate_x(key_x, z, Ab, Q, mask))

    def functions(s):
        out = ar_functions(s["Ab"], s["Q"], hp.S_0, hp.M_0, hp.K_0[0, 0])
        out.update(_group_functions(s["betas"], s["pi"], s["z"], mask, groups, L))
        out.update(data_functions(s["x"], mask, L))
        out["loglik_x"] = log_joint_likelihood(s["x"], mask, s["z"], s["pi"][groups], s["Ab"], s["Q"])["x"]
        return out

    mc, state0 = marginal_conditional(jr.key(600), prior_draw, functions, NUM_MC)
    _SETUPS["joint"] = types.SimpleNamespace(hp=hp, mask=mask, groups=groups, mc=mc, state0=state0,
                                             functions=functions)
    return _SETUPS["joint"]


def _joint_step(setup):
    hp, mask, groups = setup.hp, setup.mask, setup.groups

    def step(key, s):
        key_sweep, key_x = jr.split(key)
        params = Params(Ab=s["Ab"], Q=s["Q"], pi=s["pi"], betas=s["betas"])
        p, states, _ = gibbs_module.gibbs_sweep(key_sweep, hp, params, States(z=s["z"], groups=groups), s["x"], mask)
        z = states.z
        return dict(Ab=p.Ab, Q=p.Q, betas=p.betas, pi=p.pi, z=z, x=simulate_x(key_x, z, p.Ab, p.Q, mask))

    return step


@pytest.mark.slow
def test_geweke_joint_sweep_with_groups():
    setup = _joint_setup()
    zmax, table = _run(setup, _joint_step(setup), num_sc=NUM_SC, seed=61, title="joint sweep with groups")
    _assert_passes(zmax, table)


@pytest.mark.slow
def test_geweke_joint_sweep_rejects_states_with_group_0(monkeypatch):
    """Teeth: the state step drawing every sequence with group 0's `pi` must be caught."""
    setup = _joint_setup()
    monkeypatch.setattr(gibbs_module, "sequence_pi", lambda pi, groups: pi[jnp.zeros_like(groups)])
    zmax, table = _run(setup, _joint_step(setup), num_sc=NUM_SC_TEETH, seed=62, title="joint sweep, states use pi[0]")
    assert zmax > Z_MAX, table


# ---------------------------------------------------------------------------------------
# One group is the model without groups.


@functools.cache
def _one_group_pair():
    K, D, L, N, T = 3, 2, 1, 3, 40
    x = jr.normal(jr.key(0), (N, T, D), f64)
    mask = jnp.ones((N, T), f64).at[1, 30:].set(0.0)
    hp0 = ae.Hyperparams.from_scales(K, D, L, kappa=5.0, S_0_scale=0.5)
    hp1 = ae.Hyperparams.from_scales(K, D, L, kappa=5.0, S_0_scale=0.5, num_groups=1)
    m0 = ae.ARHMM.from_prior(hp0, x, mask, key=jr.key(1))
    m1 = ae.ARHMM.from_prior(hp1, x, mask, key=jr.key(1), groups=np.zeros(N, np.int32))
    return x, mask, m0, m1


@pytest.mark.extended
def test_one_group_chain_equals_ungrouped_chain():
    x, mask, m0, m1 = _one_group_pair()
    assert m1.params.pi.shape == (1, 3, 3)
    np.testing.assert_array_equal(m1.params.pi[0], m0.params.pi)
    np.testing.assert_array_equal(m1.states.z, m0.states.z)
    c0, i0 = ae.run_chain(jr.key(2), m0, x, mask, 6)
    c1, i1 = ae.run_chain(jr.key(2), m1, x, mask, 6)
    np.testing.assert_array_equal(c1.states.z, c0.states.z)
    np.testing.assert_array_equal(c1.params.pi[0], c0.params.pi)
    np.testing.assert_array_equal(c1.params.betas, c0.params.betas)
    np.testing.assert_array_equal(c1.params.Ab, c0.params.Ab)
    np.testing.assert_array_equal(i1.log_joint_z, i0.log_joint_z)
    assert c1.states.groups is not None and c0.states.groups is None


def test_groups_checked():
    x, mask, m0, m1 = _one_group_pair()
    hp2 = ae.Hyperparams.from_scales(3, 2, 1, num_groups=2)
    with pytest.raises(ValueError, match="`groups` is required"):
        ae.ARHMM.from_prior(hp2, x, mask, key=jr.key(0))
    with pytest.raises(ValueError, match=r"`groups` must hold states 0 \.\. 1"):
        ae.ARHMM.from_prior(hp2, x, mask, key=jr.key(0), groups=[0, 1, 2])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        ae.ARHMM.from_prior(hp2, x, mask, key=jr.key(0), groups=[0, 1])
    with pytest.raises(ValueError, match="no groups"):
        m0.marginal_log_likelihood(x, mask, groups=[0, 0, 0])
    with pytest.raises(ValueError, match="`groups` is needed"):
        m1.marginal_log_likelihood(x[:2], mask[:2])
    with pytest.raises(ValueError, match="num_groups"):
        ae.Hyperparams.from_scales(3, 2, 1, num_groups=0)
    m1.marginal_log_likelihood(x[:2], mask[:2], groups=[0, 0])
    bad = ae.ARHMM(m1.hyperparams, m1.params, States(z=m1.states.z))
    with pytest.raises(ValueError, match="states.groups"):
        bad.check()


def test_grouped_inference_matches_per_sequence_models():
    """With each sequence's own `pi` `(N, K, K)`, the marginal likelihood, smoothed marginals
    and Viterbi path of every sequence equal those of the one-`pi` pass with its group's
    matrix; the parallel and chunked state steps give the blocked pass's states. (One
    compiled program for all of it.)"""
    from helpers import random_model

    from arhmm_eqx._inference import marginal_log_likelihood, sample_stateseqs, smoothed_marginals, viterbi_paths

    K, D, L, N, T = 3, 2, 1, 4, 30
    groups = np.array([0, 1, 1, 0], np.int32)
    x = jr.normal(jr.key(3), (N, T, D), f64)
    mask = jnp.ones((N, T), f64).at[2, 25:].set(0.0).at[1, 8:12].set(0.0)
    Ab, Q, pi0, _ = random_model(jr.key(4), K, D, L, dtype=f64)
    pi1 = random_model(jr.key(5), K, D, L, dtype=f64)[2]
    pi_n = jnp.stack([pi0, pi1])[groups]

    @jax.jit
    def both(x, mask, pi_n):
        grouped = (marginal_log_likelihood(x, mask, Ab, Q, pi_n), smoothed_marginals(x, mask, Ab, Q, pi_n),
                   viterbi_paths(x, mask, Ab, Q, pi_n, fill_value=None))

        def one(xs, ms, p):
            xs, ms = xs[None], ms[None]
            return (marginal_log_likelihood(xs, ms, Ab, Q, p), smoothed_marginals(xs, ms, Ab, Q, p)[0],
                    viterbi_paths(xs, ms, Ab, Q, p, fill_value=None)[0])

        states = [sample_stateseqs(jr.key(6), x, mask, Ab, Q, pi_n, **kw)
                  for kw in ({}, {"parallel": True}, {"sequence_chunk": 3})]
        return grouped, jax.vmap(one)(x, mask, pi_n), states

    (ml, smooth, path), (ml_1, smooth_1, path_1), states = both(x, mask, pi_n)
    np.testing.assert_allclose(ml, ml_1.sum(), rtol=1e-12)
    np.testing.assert_allclose(smooth, smooth_1, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(path, path_1)
    assert not np.array_equal(pi_n[0], pi_n[1])  # the groups' matrices differ
    np.testing.assert_array_equal(states[0][0], states[1][0])
    np.testing.assert_array_equal(states[0][0], states[2][0])
    np.testing.assert_allclose(states[0][2], ml, rtol=1e-12)


@pytest.mark.extended
def test_grouped_chains_vmap():
    """`init_chains` / `run_chains` with groups: chain `c` is `from_prior` and `run_chain` with
    its own key (states exactly), all chains in one vmapped program."""
    K, D, L, N, T = 3, 2, 1, 3, 30
    groups = np.array([1, 0, 1], np.int32)
    x = jr.normal(jr.key(8), (N, T, D), f64)
    mask = jnp.ones((N, T), f64)
    hp = ae.Hyperparams.from_scales(K, D, L, kappa=5.0, S_0_scale=0.5, num_groups=2)
    models = ae.init_chains(hp, x, mask, key=jr.key(9), num_chains=2, groups=groups)
    assert models.params.pi.shape == (2, 2, K, K) and models.states.groups.shape == (2, N)
    models, infos = ae.run_chains(jr.key(10), models, x, mask, 3)
    one = ae.ARHMM.from_prior(hp, x, mask, key=jr.split(jr.key(9), 2)[1], groups=groups)
    one, _ = ae.run_chain(jr.split(jr.key(10), 2)[1], one, x, mask, 3, throw=False)
    np.testing.assert_array_equal(models.states.z[1], one.states.z)
    np.testing.assert_allclose(models.params.pi[1], one.params.pi, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Recovery: two groups with the same dynamics but different stickiness.

REC = dict(K_TRUE=3, K_FIT=4, D=2, L=1, T=400, groups=(0, 0, 1, 1), durations=(50.0, 10.0), sweeps=200)


def _sticky(duration, K):
    stay = 1.0 - 1.0 / duration
    pi = np.full((K, K), (1.0 - stay) / (K - 1))
    np.fill_diagonal(pi, stay)
    return pi


@pytest.mark.slow
def test_recovery_of_group_transition_matrices():
    """Each group's self-transition probabilities come back: with `n` transitions out of a state,
    a diagonal entry has posterior sd about `sqrt(p (1 - p) / n)` (<= 0.02 here), averaged over 3
    states, plus the pull of `kappa` (<= 0.01): the tolerance 0.04 is about 3 of those sds."""
    import optax
    from test_recovery import NOISE_VAR, _true_model  # the dynamics of the one-group recovery test

    K_TRUE, K_FIT, D, L, T = (REC[k] for k in ("K_TRUE", "K_FIT", "D", "L", "T"))
    groups = np.asarray(REC["groups"], np.int32)
    Ab, Q, _ = _true_model()
    pis = np.stack([_sticky(d, K_TRUE) for d in REC["durations"]])
    with jax.enable_x64(False):
        f32 = jnp.float32
        from arhmm_eqx._generate import simulate_dataset

        z_true, x = simulate_dataset(jr.key(0), jnp.asarray(pis[groups], f32), jnp.asarray(Ab, f32),
                                     jnp.asarray(Q, f32), len(groups), T)
        mask = jnp.ones(x.shape[:2], f32)
        hp = ae.Hyperparams.from_scales(K_FIT, D, L, kappa=30.0, S_0_scale=NOISE_VAR, K_0_scale=10.0, num_groups=2)
        model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(10), groups=groups)
        model, info = ae.run_chain(jr.key(20), model, x, mask, REC["sweeps"])
    assert bool(info.ok.all())
    z_true, z_fit = np.asarray(z_true), np.asarray(model.states.z)
    confusion = np.zeros((K_TRUE, K_FIT))
    np.add.at(confusion, (z_true.ravel(), z_fit.ravel()), 1.0)
    rows, cols = (np.asarray(a) for a in optax.assignment.hungarian_algorithm(-jnp.asarray(confusion)))
    accuracy = confusion[rows, cols].sum() / confusion.sum()
    assert accuracy >= 0.9, (accuracy, confusion)
    pi_fit = np.asarray(model.params.pi, np.float64)
    diag_fit = [float(np.mean(pi_fit[g][cols, cols])) for g in range(2)]
    diag_true = [float(pis[g][0, 0]) for g in range(2)]
    print(f"\n[recovery] accuracy {accuracy:.3f}; mean self-transition fit {diag_fit} true {diag_true}")
    for g in range(2):
        assert abs(diag_fit[g] - diag_true[g]) < 0.04, (g, diag_fit, diag_true)


# ---------------------------------------------------------------------------------------
# Workflow: prepare_recordings, fit / checkpoint / resume, results, the command line.


def _recordings():
    rng = np.random.default_rng(0)
    recs = {f"rec{i}": rng.normal(size=(40 + 5 * i, 2)).cumsum(0) * 0.1 for i in range(4)}
    recs["rec1"][10:14] = np.nan
    return recs, {"rec0": "wt", "rec1": "ko", "rec2": "wt", "rec3": "ko"}


def test_prepare_recordings_with_groups():
    recs, labels = _recordings()
    ds = ae.workflow.prepare_recordings(recs, nlags=1, groups=labels, segment_length=30)
    assert ds.group_names == ("ko", "wt") and ds.num_groups == 2
    expected = [1 if labels[ds.names[s.recording]] == "wt" else 0 for s in ds.segments]
    np.testing.assert_array_equal(ds.groups, expected)
    assert ds.recording_groups() == labels
    plain = ae.workflow.prepare_recordings(recs, nlags=1)
    assert plain.groups is None and plain.num_groups is None
    with pytest.raises(ValueError, match=r"missing \['rec3'\]"):
        ae.workflow.prepare_recordings(recs, nlags=1, groups={k: v for k, v in labels.items() if k != "rec3"})
    with pytest.raises(ValueError, match=r"unknown \['other'\]"):
        ae.workflow.prepare_recordings(recs, nlags=1, groups={**labels, "other": "wt"})


def _assert_same(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_grouped_fit_resumes_bit_for_bit_and_summarizes(tmp_path):
    with jax.enable_x64(False):
        recs, labels = _recordings()
        ds = ae.workflow.prepare_recordings(recs, nlags=1, groups=labels)
        hp = ae.Hyperparams.from_scales(3, 2, 1, kappa=20.0, num_groups=ds.num_groups)
        model = ae.ARHMM.from_prior(hp, ds.x, ds.mask, key=jr.key(1), groups=ds.groups)
        key = jr.key(2)
        whole = ae.workflow.fit(model, ds.x, ds.mask, key=key, num_iters=4, save_every=2, chunk_size=2,
                                checkpoint_dir=tmp_path / "a", progress=False)
        mid, meta = ae.workflow.load_checkpoint(tmp_path / "a" / "ckpt_000002.json")
        assert meta["num_groups"] == 2 and mid.hyperparams.num_groups == 2 and mid.params.pi.shape == (2, 3, 3)
        np.testing.assert_array_equal(mid.states.groups, ds.groups)
        resumed = ae.workflow.resume(tmp_path / "a" / "ckpt_000002.json", ds.x, ds.mask, num_iters=2,
                                     progress=False, checkpoint_dir=tmp_path / "b")
        _assert_same(resumed.model, whole.model)
        _assert_same(resumed.infos, whole.infos)
        relabelled, perm = ae.workflow.relabel_by_usage(whole.model, ds.mask)
        np.testing.assert_array_equal(relabelled.params.pi, whole.model.params.pi[:, perm][:, :, perm])
        np.testing.assert_allclose(relabelled.marginal_log_likelihood(ds.x, ds.mask),
                                   whole.model.marginal_log_likelihood(ds.x, ds.mask), rtol=1e-5)
        results = ae.workflow.summarize(relabelled, ds)
    assert results.groups == labels and set(results.group_usages) == {"ko", "wt"}
    for g, label in enumerate(ds.group_names):
        np.testing.assert_array_equal(results.group_pi[label], relabelled.params.pi[g])
        np.testing.assert_allclose(results.group_usages[label].sum(), 1.0)
    total = sum(results.group_transition_counts.values())
    np.testing.assert_array_equal(total, results.transition_counts)
    paths = ae.workflow.save_results(results, tmp_path / "res")
    assert (tmp_path / "res" / "group_usages.csv") in paths
    with np.load(tmp_path / "res" / "results.npz") as f:
        np.testing.assert_array_equal(f["group_pi/wt"], results.group_pi["wt"])
        assert list(f["group_of_recording"]) == [labels[n] for n in results.names]


@pytest.mark.extended  # the command line, as the other command-line tests
def test_cli_fit_with_groups_csv(tmp_path, capsys):
    from arhmm_eqx.workflow._cli import main

    recs, labels = _recordings()
    data = tmp_path / "recs.npz"
    np.savez(data, **recs)
    csv_path = tmp_path / "groups.csv"
    csv_path.write_text("recording,group\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
    out = tmp_path / "out"
    args = ["fit", str(data), "--out", str(out), "--num-states", "3", "--nlags", "1", "--iters", "4",
            "--save-every", "2", "--kappa", "20", "--no-progress", "--groups", str(csv_path)]
    with jax.enable_x64(False):
        assert main(args) == 0, capsys.readouterr().err
        with np.load(out / "results.npz") as f:
            assert f["group_pi/ko"].shape == (3, 3) and f["group_usages/wt"].shape == (3,)
        assert (out / "group_usages.csv").is_file()
        fitted = ae.workflow.load_moseq_model(out / "model.npz")  # the grouped model comes back grouped
        assert fitted.hyperparams.num_groups == 2 and fitted.params.pi.shape == (2, 3, 3)
        np.testing.assert_array_equal(fitted.states.groups, [1, 0, 1, 0])  # ko = 0, wt = 1
        # resume reads the groups back from run.json: asking for more sweeps continues the chain
        assert main(["resume", str(out), "--iters", "6", "--no-progress"]) == 0, capsys.readouterr().err
        capsys.readouterr()
        # a CSV that misses a recording, or names an unknown one: one-line errors naming them
        csv_path.write_text("rec0,wt\nrec1,ko\nrec2,wt\n")
        assert main(args[:3] + [str(tmp_path / "o2")] + args[4:]) == 1
        assert "missing ['rec3']" in capsys.readouterr().err
        csv_path.write_text("rec0,wt\nrec1,ko\nrec2,wt\nrec3,ko\nrec9,wt\n")
        assert main(args[:3] + [str(tmp_path / "o3")] + args[4:]) == 1
        assert "unknown ['rec9']" in capsys.readouterr().err
        csv_path.write_text("rec0,wt,extra\n")
        assert main(args[:3] + [str(tmp_path / "o4")] + args[4:]) == 1
        assert "each row must be `recording,group`" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# compat.separate_trans against the reference (jax_moseq 0.3.7, float64).

# Signatures of the reference's `models.arhmm.separate_trans` and `utils.transitions`
# functions, read with `inspect.signature` (name, kind, default; E: no default).
E = "EMPTY"
PK, VK = "POSITIONAL_OR_KEYWORD", "VAR_KEYWORD"
SEPARATE_TRANS_SIGNATURES = {
    "resample_discrete_stateseqs": [("seed", E), ("x", E), ("mask", E), ("group", E), ("Ab", E), ("Q", E),
                                    ("pi", E), ("kwargs", VK)],
    "resample_model": [("data", E), ("seed", E), ("states", E), ("params", E), ("hypparams", E),
                       ("states_only", False), ("verbose", False), ("kwargs", VK)],
    "init_model": [("data", None), ("states", None), ("params", None), ("hypparams", None), ("seed", "KEY0"),
                   ("trans_hypparams", None), ("ar_hypparams", None), ("num_groups", None), ("verbose", False),
                   ("kwargs", VK)],
    "count_transitions_by_group": [("num_states", E), ("num_groups", E), ("stateseqs", E), ("mask", E),
                                   ("group", E)],
    "resample_hdp_transitions_by_group": [("seed", E), ("z", E), ("mask", E), ("group", E), ("betas", E),
                                          ("alpha", E), ("kappa", E), ("gamma", E), ("num_groups", None),
                                          ("kwargs", VK)],
    "init_hdp_transitions_by_group": [("seed", E), ("num_states", E), ("num_groups", E), ("alpha", E),
                                      ("kappa", E), ("gamma", E), ("kwargs", VK)],
}


def test_separate_trans_signatures():
    import inspect

    from arhmm_eqx.compat import separate_trans

    for name, want in SEPARATE_TRANS_SIGNATURES.items():
        params = list(inspect.signature(getattr(separate_trans, name)).parameters.values())
        assert [p.name for p in params] == [n for n, _ in want], name
        for p, (_, default) in zip(params, want):
            if default == VK:
                assert p.kind == inspect.Parameter.VAR_KEYWORD, (name, p.name)
            elif default == E:
                assert p.default is inspect.Parameter.empty and p.kind.name == PK, (name, p.name)
            elif default == "KEY0":
                np.testing.assert_array_equal(np.asarray(p.default), np.asarray(jr.PRNGKey(0)))
            else:
                assert p.default == default, (name, p.name)


def _separate_trans_case():
    K, N, T = 3, 4, 25
    z = np.random.default_rng(0).integers(0, K, (N, T - 1))
    z[:, 5:12] = 0
    mask = np.ones((N, T))
    mask[1, -4:] = 0.0
    mask[3, -2:] = 0.0  # trailing padding only: the reference's counting rule and ours agree
    return z, mask, np.array([0, 1, 1, 0])


# `count_transitions_by_group(3, 2, z, mask, group)` of the reference on `_separate_trans_case`.
REF_COUNTS = [[[16.0, 1.0, 3.0], [2.0, 7.0, 4.0], [4.0, 4.0, 3.0]],
              [[16.0, 3.0, 2.0], [4.0, 4.0, 4.0], [2.0, 4.0, 3.0]]]
# Mean and sd over 3000 seeds (jr.split(jr.PRNGKey(1), 3000)) of the reference's
# `resample_hdp_transitions_by_group(seed, z, mask, group, REF_BETAS, 2.0, 5.0, 3.0)`.
REF_BETAS = [[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]]
REF_M = 3000
REF_MEAN_BETAS = [[0.413517412710134, 0.2971547487442628, 0.28932783854560323],
                  [0.32001438738322446, 0.30685016239659957, 0.37313545022017597]]
REF_SD_BETAS = [[0.14628418574589996, 0.13146428248333825, 0.13264303944122482],
                [0.13259678819697676, 0.13210099555970956, 0.13706432075615746]]
REF_MEAN_PI = [[[0.8099335580323237, 0.059371985904324125, 0.13069445606335214],
                [0.14119857841532216, 0.6313794017245246, 0.22742201986015323],
                [0.2683258713393994, 0.2573530863263215, 0.47432104233427913]],
               [[0.7701006874796641, 0.13031859613594365, 0.09958071638439221],
                [0.24346761572919995, 0.5096341915611003, 0.2468981927096997],
                [0.16215722410018896, 0.2872050867278352, 0.5506376891719759]]]
REF_SD_PI = [[[0.07400981829695062, 0.04616376306772706, 0.06414103540177624],
              [0.07633514655569731, 0.1059035615896255, 0.09235678752208779],
              [0.10347729417575754, 0.09921724019948285, 0.11567294100789095]],
             [[0.07945327360802867, 0.06431650329195242, 0.05742315845703555],
              [0.09836809268586284, 0.11503226612792286, 0.09724428630993541],
              [0.09086262958408448, 0.11170366166217048, 0.12465698409011337]]]


def test_separate_trans_matches_reference():
    """Counts equal the reference's; the per-group transition update has the reference's means
    (two-sample z-scores over 30 entries, |z| < 4.5 ~ Bonferroni at 2e-4)."""
    from arhmm_eqx.compat import separate_trans

    z, mask, group = _separate_trans_case()
    np.testing.assert_array_equal(separate_trans.count_transitions_by_group(3, 2, z, mask, group), REF_COUNTS)
    M = 3000
    draw = jax.jit(jax.vmap(lambda k: group_module.resample_separate_hdp_transitions(
        k, jnp.asarray(z, jnp.int32), jnp.asarray(mask), jnp.asarray(group, jnp.int32), jnp.asarray(REF_BETAS),
        alpha=jnp.asarray(2.0), kappa=jnp.asarray(5.0), gamma=jnp.asarray(3.0), num_states=3, num_groups=2,
        nlags=1)))
    betas, pi = (np.asarray(a) for a in draw(jr.split(jr.key(7), M)))
    one_b, one_pi = separate_trans.resample_hdp_transitions_by_group(0, z, mask, group, np.asarray(REF_BETAS),
                                                                     2.0, 5.0, 3.0)
    assert one_b.shape == (2, 3) and one_pi.shape == (2, 3, 3)
    zs = []
    for ours, mean, sd in ((betas, REF_MEAN_BETAS, REF_SD_BETAS), (pi, REF_MEAN_PI, REF_SD_PI)):
        mean, sd = np.asarray(mean), np.asarray(sd)
        zs.append((ours.mean(0) - mean) / np.sqrt(ours.var(0) / M + sd**2 / REF_M))
    worst = max(float(np.abs(v).max()) for v in zs)
    print(f"\n[compat separate_trans] max |z| vs reference over 24 means: {worst:.2f}")
    assert worst < 4.5, zs


@pytest.mark.extended
def test_separate_trans_model_loop():
    """`init_model` / `resample_model` as the reference is driven: dict keys, shapes, groups."""
    from arhmm_eqx.compat import initialize, separate_trans

    rng = np.random.default_rng(1)
    N, T, D, L, K = 4, 30, 2, 1, 3
    data = {"x": 0.3 * np.cumsum(rng.normal(size=(N, T, D)), axis=1), "mask": np.ones((N, T)),
            "group": np.array([0, 2, 1, 2])}
    hyp = initialize.init_hyperparams({"num_states": K, "alpha": 2.0, "gamma": 3.0, "kappa": 20.0},
                                      {"latent_dim": D, "nlags": L, "S_0_scale": 0.1, "K_0_scale": 1.0})
    model = separate_trans.init_model(data, hypparams=hyp, seed=0)
    assert model["hypparams"]["trans_hypparams"]["num_groups"] == 3
    assert model["params"]["betas"].shape == (3, K) and model["params"]["pi"].shape == (3, K, K)
    assert model["states"]["z"].shape == (N, T - L)
    for _ in range(2):
        model = separate_trans.resample_model(data, **model)
    assert set(model) == {"seed", "states", "params", "hypparams"}
    assert model["params"]["pi"].shape == (3, K, K)
    np.testing.assert_allclose(np.asarray(model["params"]["pi"]).sum(-1), 1.0, rtol=1e-6)
    z = separate_trans.resample_discrete_stateseqs(1, data["x"], data["mask"], data["group"], model["params"]["Ab"],
                                                   model["params"]["Q"], model["params"]["pi"])
    assert z.shape == (N, T - L)
    with pytest.raises(ValueError, match="`group` must hold groups 0 .. 2"):
        separate_trans.resample_model({**data, "group": np.array([0, 3, 1, 2])}, **model)
    b, p = separate_trans.init_hdp_transitions_by_group(0, K, 2, 2.0, 20.0, 3.0)
    assert b.shape == (2, K) and p.shape == (2, K, K)
