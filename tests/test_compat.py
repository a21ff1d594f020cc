"""`arhmm_eqx.compat`: the reference (jax_moseq) signatures, dict layouts, SLDS-style use and round trips."""

import copy
import importlib
import inspect
import math

import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import pytest
import scipy.stats

import arhmm_eqx as ae
from arhmm_eqx import compat


P = inspect.Parameter
POS, KW = P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY
_SEED_DEFAULT = object()  # init_model's default seed, jr.PRNGKey(0): compared by value below

# (module, function) -> [(name, kind, default)], written from the reference API
# (seed/arhmm_reference_api.txt). `inspect.Parameter.empty` means "no default".
E = P.empty
REFERENCE_SIGNATURES = {
    ("initialize", "init_ar_params"): [
        ("seed", POS, E), ("num_states", KW, E), ("nu_0", KW, E), ("S_0", KW, E), ("M_0", KW, E), ("K_0", KW, E),
    ],
    ("initialize", "init_states"): [("seed", POS, E), ("x", POS, E), ("mask", POS, E), ("params", POS, E)],
    ("initialize", "init_params"): [("seed", POS, E), ("trans_hypparams", POS, E), ("ar_hypparams", POS, E)],
    ("initialize", "init_hyperparams"): [("trans_hypparams", POS, E), ("ar_hypparams", POS, E)],
    ("initialize", "init_model"): [
        ("data", POS, None), ("states", POS, None), ("params", POS, None), ("hypparams", POS, None),
        ("seed", POS, _SEED_DEFAULT), ("trans_hypparams", POS, None), ("ar_hypparams", POS, None),
        ("verbose", POS, False),
    ],
    ("gibbs", "resample_discrete_stateseqs"): [
        ("seed", POS, E), ("x", POS, E), ("mask", POS, E), ("Ab", POS, E), ("Q", POS, E), ("pi", POS, E),
    ],
    ("gibbs", "stateseq_marginals"): [("x", POS, E), ("mask", POS, E), ("Ab", POS, E), ("Q", POS, E), ("pi", POS, E)],
    ("gibbs", "resample_ar_params"): [
        ("seed", POS, E), ("nlags", KW, E), ("num_states", KW, E), ("mask", KW, E), ("x", KW, E), ("z", KW, E),
        ("nu_0", KW, E), ("S_0", KW, E), ("M_0", KW, E), ("K_0", KW, E),
    ],
    ("gibbs", "resample_model"): [
        ("data", POS, E), ("seed", POS, E), ("states", POS, E), ("params", POS, E), ("hypparams", POS, E),
        ("states_only", POS, False), ("verbose", POS, False),
    ],
    ("log_prob", "discrete_stateseq_log_prob"): [("z", POS, E), ("pi", POS, E)],
    ("log_prob", "continuous_stateseq_log_prob"): [("x", POS, E), ("z", POS, E), ("Ab", POS, E), ("Q", POS, E)],
    ("log_prob", "log_joint_likelihood"): [
        ("x", POS, E), ("mask", POS, E), ("z", POS, E), ("pi", POS, E), ("Ab", POS, E), ("Q", POS, E),
    ],
    ("log_prob", "model_likelihood"): [
        ("data", POS, E), ("states", POS, E), ("params", POS, E), ("hypparams", POS, None),
    ],
    ("log_prob", "state_cross_likelihoods"): [("params", POS, E), ("states", POS, E), ("mask", POS, E)],
    ("log_prob", "marginal_log_likelihood"): [
        ("mask", POS, E), ("x", POS, E), ("Ab", POS, E), ("Q", POS, E), ("pi", POS, E),
    ],
}
# Every reference function takes `**kwargs` overflow, except generate_states (fixed signature).
GENERATE_SIGNATURE = [
    ("seed", POS, E), ("pi", POS, E), ("Ab", POS, E), ("Q", POS, E), ("n_steps", POS, E), ("init_state", POS, None),
]


def _tree_equal(a, b):
    """Same structure and bitwise-equal leaves (arrays compared by value, dtype and shape)."""
    la, ta = jtu.tree_flatten(a)
    lb, tb = jtu.tree_flatten(b)
    if ta != tb:
        return False
    for u, v in zip(la, lb):
        u, v = np.asarray(u), np.asarray(v)
        if u.shape != v.shape or u.dtype != v.dtype or not np.array_equal(u, v):
            return False
    return True


def _snapshot(tree):
    """A deep copy with every leaf as a numpy array (to check that inputs are not mutated)."""
    return jtu.tree_map(lambda v: np.array(v, copy=True), tree)


# One set of sizes for the whole file (and the other test files), so compiled functions are reused.
K_, D_, L_, N_, T_ = 4, 2, 2, 3, 40


def _hyper_dicts(K=K_, D=D_, L=L_, kappa=50.0):
    trans = {"num_states": K, "alpha": 5.7, "gamma": 1e3, "kappa": kappa}
    ar = {"latent_dim": D, "nlags": L, "S_0_scale": 0.01, "K_0_scale": 10.0}
    return trans, ar


def _data(key, N=N_, T=T_, D=D_):
    x = jnp.cumsum(0.3 * jr.normal(key, (N, T, D)), axis=1)
    mask = jnp.ones((N, T)).at[1, T - 7 :].set(0.0)
    return {"x": x, "mask": mask}


# ---------------------------------------------------------------- signatures


@pytest.mark.parametrize("where", sorted(REFERENCE_SIGNATURES), ids=lambda w: ".".join(w))
def test_reference_signature(where):
    module_name, func_name = where
    module = importlib.import_module(f"arhmm_eqx.compat.{module_name}")
    assert hasattr(module, func_name), f"arhmm_eqx.compat.{module_name} lacks {func_name}"
    func = getattr(module, func_name)
    # also re-exported at the package level
    assert getattr(compat, func_name) is func
    params = list(inspect.signature(func).parameters.values())
    assert params[-1].kind == P.VAR_KEYWORD and params[-1].name == "kwargs"
    got = [(p.name, p.kind) for p in params[:-1]]
    want = [(name, kind) for name, kind, _ in REFERENCE_SIGNATURES[where]]
    assert got == want
    for p, (_, _, default) in zip(params[:-1], REFERENCE_SIGNATURES[where]):
        if default is _SEED_DEFAULT:
            np.testing.assert_array_equal(np.asarray(p.default), np.asarray(jr.PRNGKey(0)))
        elif default is E:
            assert p.default is E, f"{p.name} should have no default"
        else:
            assert p.default is default or p.default == default


def test_generate_states_signature():
    from arhmm_eqx.compat import generate

    assert compat.generate_states is generate.generate_states
    params = list(inspect.signature(generate.generate_states).parameters.values())
    assert [(p.name, p.kind, p.default) for p in params] == GENERATE_SIGNATURE


# ---------------------------------------------------------------- hyperparams, params, model dicts


def test_init_hyperparams_layout():
    K, D, L = 5, 3, 2  # dict layout only: nothing is compiled here
    trans, ar = _hyper_dicts(K, D, L)
    ar["extra_key"] = "kept"
    trans_before, ar_before = copy.deepcopy(trans), copy.deepcopy(ar)
    hp = compat.init_hyperparams(trans, ar)
    assert trans == trans_before and ar == ar_before  # inputs not mutated
    assert set(hp) == {"trans_hypparams", "ar_hypparams"}
    for k, v in trans.items():
        assert hp["trans_hypparams"][k] == v
    out = hp["ar_hypparams"]
    for k, v in ar.items():  # every given key kept, unchanged
        assert out[k] == v
    assert set(out) == set(ar) | {"S_0", "K_0", "M_0", "nu_0", "num_states"}
    A = D * L + 1
    np.testing.assert_allclose(np.asarray(out["S_0"]), 0.01 * np.eye(D), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["K_0"]), 10.0 * np.eye(A), rtol=1e-6)
    # M_0 = [0 (older lags), I (most recent lag), 0 (bias)], written out by hand for D=3, L=2
    M_0 = np.array(
        [[0, 0, 0, 1, 0, 0, 0],
         [0, 0, 0, 0, 1, 0, 0],
         [0, 0, 0, 0, 0, 1, 0]],
        dtype=float,
    )
    np.testing.assert_array_equal(np.asarray(out["M_0"]), M_0)
    assert float(out["nu_0"]) == D + 2
    assert int(out["num_states"]) == K


def test_init_params_and_ar_params_shapes():
    K, D, L = K_, D_, L_
    A = D * L + 1
    trans, ar = _hyper_dicts(K, D, L)
    params = compat.init_params(jr.PRNGKey(0), trans, ar)
    assert set(params) == {"Ab", "Q", "betas", "pi"}
    assert params["Ab"].shape == (K, D, A)
    assert params["Q"].shape == (K, D, D)
    assert params["betas"].shape == (K,)
    assert params["pi"].shape == (K, K)
    np.testing.assert_allclose(np.asarray(params["pi"]).sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(float(params["betas"].sum()), 1.0, rtol=1e-5)

    ar_full = compat.init_hyperparams(trans, ar)["ar_hypparams"]
    Ab, Q = compat.init_ar_params(jr.PRNGKey(1), **ar_full)  # ** overflow: latent_dim, nlags, ... ignored
    assert Ab.shape == (K, D, A) and Q.shape == (K, D, D)
    assert np.all(np.linalg.eigvalsh(np.asarray(Q)) > 0)


def test_init_model_keys_and_int_seed(key):
    trans, ar = _hyper_dicts()
    data = _data(key)
    model = compat.init_model(data, seed=7, trans_hypparams=trans, ar_hypparams=ar)
    assert set(model) == {"seed", "states", "params", "hypparams"}
    assert set(model["states"]) == {"z"}
    assert set(model["params"]) == {"Ab", "Q", "betas", "pi"}
    assert set(model["hypparams"]) == {"trans_hypparams", "ar_hypparams"}
    N, T, _ = data["x"].shape
    assert model["states"]["z"].shape == (N, T - ar["nlags"])
    assert jnp.issubdtype(model["states"]["z"].dtype, jnp.integer)
    # an int seed means jr.PRNGKey(seed), as in the reference
    same = compat.init_model(data, seed=jr.PRNGKey(7), trans_hypparams=trans, ar_hypparams=ar)
    assert _tree_equal(model, same)
    other = compat.init_model(data, seed=8, trans_hypparams=trans, ar_hypparams=ar)
    assert not np.array_equal(np.asarray(other["params"]["Ab"]), np.asarray(model["params"]["Ab"]))
    # passing hypparams directly works too and keeps the dict
    hyp = compat.init_hyperparams(trans, ar)
    m2 = compat.init_model(data, hypparams=hyp, seed=7)
    assert m2["hypparams"] is hyp or _tree_equal(m2["hypparams"], hyp)


def test_init_model_missing_arguments(key):
    trans, ar = _hyper_dicts()
    with pytest.raises(ValueError, match="data"):
        compat.init_model(trans_hypparams=trans, ar_hypparams=ar)
    with pytest.raises(ValueError, match="hypparams"):
        compat.init_model(_data(key))
    with pytest.raises(ValueError, match="hypparams"):
        compat.init_model(_data(key), trans_hypparams=trans)


def test_resample_model_loop(key):
    trans, ar = _hyper_dicts()
    data = _data(key)
    model = compat.init_model(data, seed=0, trans_hypparams=trans, ar_hypparams=ar)
    seeds = [np.asarray(model["seed"])]
    zs = [np.asarray(model["states"]["z"])]
    for _ in range(3):
        model = compat.resample_model(data, **model)
        assert set(model) == {"seed", "states", "params", "hypparams"}
        seeds.append(np.asarray(model["seed"]))
        zs.append(np.asarray(model["states"]["z"]))
        assert model["states"]["z"].shape == zs[0].shape
        np.testing.assert_allclose(np.asarray(model["params"]["pi"]).sum(1), 1.0, rtol=1e-5)
    # the seed handed back is fresh at every sweep
    assert len({s.tobytes() for s in seeds}) == len(seeds)


# ---------------------------------------------------------------- SLDS-style use


def _slds_model(key, K=K_, D=D_, L=L_, N=N_, T=T_):
    trans, ar = _hyper_dicts(K, D, L)
    k_data, k_z, k_init = jr.split(key, 3)
    arhmm_data = _data(k_data, N, T, D)
    m = compat.init_model(arhmm_data, seed=k_init, trans_hypparams=trans, ar_hypparams=ar)
    hypparams = dict(m["hypparams"], obs_hypparams={"sigmasq_0": 0.1, "sigmasq_C": 0.1, "nu_sigma": 1e5})
    data = {"mask": arhmm_data["mask"], "Y": jnp.zeros((N, T, 5))}
    # z deliberately unlike any posterior draw, so that resampling is seen to change it
    z0 = jr.randint(k_z, (N, T - L), 0, K)
    states = {"x": arhmm_data["x"], "z": z0, "v": jnp.ones((N, T, 3))}
    params = dict(m["params"], sigmasq=jnp.full((5,), 0.5), Cd=jnp.ones((5, D + 1)))
    return data, states, params, hypparams, arhmm_data


@pytest.mark.parametrize("states_only", [False, True])
def test_resample_model_slds_style(key, states_only):
    data, states, params, hypparams, arhmm_data = _slds_model(key)
    seed = jr.PRNGKey(3)
    before = _snapshot((data, states, params, hypparams))
    before_keys = jtu.tree_structure((data, states, params, hypparams))
    out = compat.resample_model(data, seed, states, params, hypparams, states_only)
    # inputs are not mutated
    assert jtu.tree_structure((data, states, params, hypparams)) == before_keys
    assert _tree_equal(_snapshot((data, states, params, hypparams)), before)
    # every given key kept
    assert set(out) == {"seed", "states", "params", "hypparams"}
    assert set(out["states"]) == set(states)
    assert set(out["params"]) == set(params)
    assert _tree_equal(out["hypparams"], hypparams)
    for k in ("x", "v"):
        assert out["states"][k] is states[k] or np.array_equal(out["states"][k], states[k])
    for k in ("sigmasq", "Cd"):
        np.testing.assert_array_equal(np.asarray(out["params"][k]), np.asarray(params[k]))
    assert not np.array_equal(np.asarray(out["states"]["z"]), np.asarray(states["z"]))
    if states_only:
        for k in params:
            a, b = np.asarray(out["params"][k]), np.asarray(params[k])
            assert a.dtype == b.dtype and np.array_equal(a, b), k
    else:
        assert not np.array_equal(np.asarray(out["params"]["Ab"]), np.asarray(params["Ab"]))
    # `x` read from `states` gives exactly what the AR-HMM layout (x in data) gives
    plain = compat.resample_model(
        arhmm_data, seed, {"z": states["z"]}, {k: params[k] for k in ("Ab", "Q", "pi", "betas")},
        {k: hypparams[k] for k in ("trans_hypparams", "ar_hypparams")}, states_only,
    )
    assert _tree_equal(plain["states"]["z"], out["states"]["z"])
    for k in ("Ab", "Q", "pi", "betas"):
        assert _tree_equal(plain["params"][k], out["params"][k])
    assert _tree_equal(plain["seed"], out["seed"])


def test_state_cross_likelihoods_x_in_states(key):
    """Against a direct scipy computation (full mask): C[j, k] = (sum over frames in j of
    log N(x_t | Ab_k u_t, Q_k) - log N(x_t | Ab_j u_t, Q_j)) / (changepoints into j + eps)."""
    data, states, params, hypparams, _ = _slds_model(key)
    mask = jnp.ones_like(data["mask"])
    states = dict(states, z=compat.init_states(jr.PRNGKey(5), states["x"], mask, params)["z"])
    C = np.asarray(compat.state_cross_likelihoods(params, states, mask))
    K, L = K_, L_
    assert C.shape == (K, K)
    x = np.asarray(states["x"], np.float64)
    z = np.asarray(states["z"])
    Ab, Q = np.asarray(params["Ab"], np.float64), np.asarray(params["Q"], np.float64)
    summed = np.zeros((K, K))
    for n in range(x.shape[0]):
        for i, t in enumerate(range(L, x.shape[1])):
            u = np.concatenate([x[n, t - L : t].reshape(-1), [1.0]])
            j = z[n, i]
            for k in range(K):
                summed[j, k] += scipy.stats.multivariate_normal(Ab[k] @ u, Q[k]).logpdf(x[n, t])
    # the reference's count: changepoints of the sequences laid end to end (the first run not counted)
    z_all = z.reshape(-1)
    runs = np.bincount(z_all[np.flatnonzero(np.diff(z_all)) + 1], minlength=K)
    expected = (summed - np.diag(summed)[:, None]) / (runs[:, None] + 1e-6)
    np.testing.assert_allclose(np.diag(C), 0.0, atol=1e-3)
    scale = np.abs(summed).max()
    np.testing.assert_allclose(C, expected, rtol=1e-4, atol=1e-5 * scale)


def test_other_compat_shapes(key):
    K, D, L, N, T = K_, D_, L_, N_, T_
    trans, ar = _hyper_dicts(K, D, L)
    data = _data(key, N, T, D)
    m = compat.init_model(data, seed=1, trans_hypparams=trans, ar_hypparams=ar)
    p, z = m["params"], m["states"]["z"]
    x, mask = data["x"], data["mask"]
    z2 = compat.resample_discrete_stateseqs(jr.PRNGKey(2), x, mask, p["Ab"], p["Q"], p["pi"])
    assert z2.shape == (N, T - L) and jnp.issubdtype(z2.dtype, jnp.integer)
    marg = compat.stateseq_marginals(x, mask, p["Ab"], p["Q"], p["pi"])
    assert marg.shape == (N, T - L, K)
    np.testing.assert_allclose(np.asarray(marg).sum(-1), 1.0, rtol=1e-5)
    hyp_ar = m["hypparams"]["ar_hypparams"]
    Ab, Q = compat.resample_ar_params(jr.PRNGKey(3), mask=mask, x=x, z=z, **hyp_ar)
    assert Ab.shape == (K, D, D * L + 1) and Q.shape == (K, D, D)
    assert compat.discrete_stateseq_log_prob(z, p["pi"]).shape == (N, T - L - 1)
    assert compat.continuous_stateseq_log_prob(x, z, p["Ab"], p["Q"]).shape == (N, T - L)
    ll = compat.log_joint_likelihood(x, mask, z, p["pi"], p["Ab"], p["Q"])
    assert set(ll) == {"x", "z"} and ll["x"].shape == () and ll["z"].shape == ()
    ml = compat.model_likelihood(data, m["states"], p, m["hypparams"])
    assert _tree_equal(ml, ll)
    assert compat.marginal_log_likelihood(mask, x, p["Ab"], p["Q"], p["pi"]).shape == ()
    zs, xs = compat.generate_states(jr.PRNGKey(4), p["pi"], p["Ab"], p["Q"], 17)
    assert zs.shape == (17,) and xs.shape == (17, D)
    zs, xs = compat.generate_states(4, p["pi"], p["Ab"], p["Q"], 9, init_state=(1, jnp.zeros((L, D))))
    assert zs.shape == (9,) and xs.shape == (9, D)
    assert all(math.isfinite(float(v)) for v in ll.values())


# ---------------------------------------------------------------- conversion round trips


def test_dict_model_round_trip(key):
    trans, ar = _hyper_dicts()
    data = _data(key)
    d = compat.init_model(data, seed=11, trans_hypparams=trans, ar_hypparams=ar)
    model = compat.model_from_dict(d)
    assert isinstance(model, ae.ARHMM)
    assert _tree_equal(model.params, ae.Params(**{k: d["params"][k] for k in ("Ab", "Q", "pi", "betas")}))
    np.testing.assert_array_equal(np.asarray(model.states.z), np.asarray(d["states"]["z"]))
    d2 = compat.model_to_dict(model, seed=d["seed"])
    # same nested keys; equal leaves, up to the rounding of Python floats to the stored float32
    # (model_to_dict hands scalar hyperparameters back as Python scalars, as init_model does)
    assert jtu.tree_structure(jtu.tree_map(lambda v: 0, d)) == jtu.tree_structure(jtu.tree_map(lambda v: 0, d2))
    for a, b in zip(jtu.tree_leaves(d), jtu.tree_leaves(d2)):
        a, b = np.asarray(a), np.asarray(b)
        if b.ndim == 0 and np.issubdtype(b.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=1e-7)
        else:
            np.testing.assert_array_equal(np.asarray(a, dtype=b.dtype), b)
    # and a second trip is exact, leaf by leaf
    assert _tree_equal(compat.model_to_dict(compat.model_from_dict(d2), seed=d2["seed"]), d2)


def test_arhmm_dict_arhmm_round_trip(key):
    hp = ae.Hyperparams.from_scales(4, 2, 2, kappa=30.0, S_0_scale=0.05, K_0_scale=3.0)
    data = _data(key)
    model = ae.ARHMM.from_prior(hp, data["x"], data["mask"], key=jr.key(0))
    back = compat.model_from_dict(compat.model_to_dict(model, jr.PRNGKey(0)))
    assert jtu.tree_structure(back) == jtu.tree_structure(model)
    assert _tree_equal(back, model)
