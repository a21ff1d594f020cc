"""The Modules `Hyperparams`, `Params`, `States`, `ARHMM`: fields, defaults, shape checks, serialisation."""

import dataclasses
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import pytest

import arhmm_eqx as ae


# The sizes shared with the other test files, so compiled functions are reused.
K, D, L, N, T = 4, 2, 2, 3, 40
A = D * L + 1


def _data(key):
    x = jnp.cumsum(0.3 * jr.normal(key, (N, T, D)), axis=1)
    mask = jnp.ones((N, T)).at[1, T - 7 :].set(0.0)
    return x, mask


def _tree_equal(a, b):
    la, ta = jtu.tree_flatten(a)
    lb, tb = jtu.tree_flatten(b)
    return ta == tb and all(
        np.asarray(u).dtype == np.asarray(v).dtype and np.array_equal(np.asarray(u), np.asarray(v))
        for u, v in zip(la, lb)
    )


def _snapshot(tree):
    return jtu.tree_map(lambda v: np.array(v, copy=True), tree)


@pytest.fixture(scope="module")
def model_and_data():
    x, mask = _data(jr.key(0))
    hp = ae.Hyperparams.from_scales(K, D, L, kappa=50.0)
    return ae.ARHMM.from_prior(hp, x, mask, key=jr.key(1)), x, mask


# ---------------------------------------------------------------- fields


def test_static_fields():
    static = {f.name for f in dataclasses.fields(ae.Hyperparams) if f.metadata.get("static", False)}
    assert static == {"num_states", "latent_dim", "nlags", "num_groups"}
    for cls in (ae.Params, ae.States, ae.ARHMM):
        assert not [f.name for f in dataclasses.fields(cls) if f.metadata.get("static", False)], cls


def test_every_leaf_is_an_array(model_and_data):
    model, _, _ = model_and_data
    leaves = jtu.tree_leaves(model)
    # 7 continuous hyperparameters + Ab, Q, pi, betas + z: the sizes live in the treedef only
    assert len(leaves) == 7 + 4 + 1
    assert all(isinstance(v, jax.Array) for v in leaves)
    assert model.hyperparams.num_states == K and model.hyperparams.latent_dim == D and model.hyperparams.nlags == L
    assert model.hyperparams.ar_dim == A
    assert model.params.num_states == K and model.params.latent_dim == D and model.params.nlags == L
    assert model.params.Ab.shape == (K, D, A)
    assert model.states.z.shape == (N, T - L) and jnp.issubdtype(model.states.z.dtype, jnp.integer)


def test_continuous_hyperparams_are_0d_arrays():
    hp = ae.Hyperparams(
        num_states=K, latent_dim=D, nlags=L, alpha=5.7, gamma=1000, kappa=100, nu_0=D + 2,
        S_0=np.eye(D), M_0=np.zeros((D, A)), K_0=np.eye(A),
    )
    for name in ("alpha", "gamma", "kappa", "nu_0"):
        v = getattr(hp, name)
        assert isinstance(v, jax.Array), name
        assert v.shape == (), name
        assert jnp.issubdtype(v.dtype, jnp.floating), name  # ints become floats
    for name in ("S_0", "M_0", "K_0"):
        assert isinstance(getattr(hp, name), jax.Array) and jnp.issubdtype(getattr(hp, name).dtype, jnp.floating)
    np.testing.assert_allclose(float(hp.alpha), 5.7, rtol=1e-6)
    assert float(hp.kappa) == 100.0


def _expected_M_0(D, L):
    return np.concatenate([np.zeros((D, D * (L - 1))), np.eye(D), np.zeros((D, 1))], axis=1)


def test_from_scales_follows_model_md():
    hp = ae.Hyperparams.from_scales(K, 3, 2, alpha=2.0, gamma=7.0, kappa=1e4, S_0_scale=0.5, K_0_scale=4.0)
    np.testing.assert_allclose(np.asarray(hp.S_0), 0.5 * np.eye(3), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(hp.K_0), 4.0 * np.eye(7), rtol=1e-6)
    assert float(hp.nu_0) == 3 + 2
    np.testing.assert_array_equal(np.asarray(hp.M_0), _expected_M_0(3, 2))
    # explicit M_0 for D = 2, L = 3: identity on the most recent lag (columns 4, 5), zero bias
    hp3 = ae.Hyperparams.from_scales(K, 2, 3)
    np.testing.assert_array_equal(
        np.asarray(hp3.M_0), np.array([[0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1, 0]], dtype=float)
    )
    assert (float(hp.alpha), float(hp.gamma), float(hp.kappa)) == (2.0, 7.0, 1e4)


def test_from_scales_defaults_are_the_typical_values():
    hp = ae.Hyperparams.from_scales(K, D, L)
    # model.md: alpha = 5.7, gamma = 1e3, S_0_scale = 0.01, K_0_scale = 10, kappa in [1e3, 1e8]
    np.testing.assert_allclose(float(hp.alpha), 5.7, rtol=1e-6)
    np.testing.assert_allclose(float(hp.gamma), 1e3, rtol=1e-6)
    assert 1e3 <= float(hp.kappa) <= 1e8
    np.testing.assert_allclose(np.asarray(hp.S_0), 0.01 * np.eye(D), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(hp.K_0), 10.0 * np.eye(A), rtol=1e-6)
    assert float(hp.nu_0) == D + 2
    np.testing.assert_array_equal(np.asarray(hp.M_0), _expected_M_0(D, L))


def test_from_moseq_dicts_equals_from_scales():
    trans = {"num_states": K, "alpha": 3.0, "gamma": 50.0, "kappa": 1e5}
    ar = {"latent_dim": D, "nlags": L, "S_0_scale": 0.2, "K_0_scale": 5.0}
    a = ae.Hyperparams.from_moseq_dicts(trans, ar)
    b = ae.Hyperparams.from_scales(K, D, L, alpha=3.0, gamma=50.0, kappa=1e5, S_0_scale=0.2, K_0_scale=5.0)
    assert _tree_equal(a, b)
    # and the dicts written back (as init_hyperparams lays them out) give the same Module
    back = a.to_moseq_dicts()
    assert _tree_equal(ae.Hyperparams.from_moseq_dicts(back["trans_hypparams"], back["ar_hypparams"]), a)


# ---------------------------------------------------------------- __check_init__


def _hp_fields(**overrides):
    hp = ae.Hyperparams.from_scales(K, D, L)
    fields = dict(num_states=K, latent_dim=D, nlags=L, alpha=hp.alpha, gamma=hp.gamma, kappa=hp.kappa,
                  nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0, K_0=hp.K_0)
    fields.update(overrides)
    return fields


@pytest.mark.parametrize(
    "name, value",
    [
        ("M_0", np.zeros((D, A - 1))),
        ("M_0", np.zeros((A, D))),
        ("S_0", np.eye(D + 1)),
        ("K_0", np.eye(A + 1)),
        ("alpha", np.ones(2)),
        ("kappa", np.ones((1,))),
    ],
)
def test_hyperparams_bad_shape_message(name, value):
    with pytest.raises(ValueError, match=f"`{name}` must have shape"):
        ae.Hyperparams(**_hp_fields(**{name: value}))


def test_hyperparams_bad_M_0_message_gives_expected_shape():
    with pytest.raises(ValueError, match=rf"`M_0` must have shape \({D}, {A}\).*got \({D}, {A - 1}\)"):
        ae.Hyperparams(**_hp_fields(M_0=np.zeros((D, A - 1))))


def _params(k, d=D, a=A):
    return ae.Params(
        Ab=jnp.zeros((k, d, a)), Q=jnp.broadcast_to(jnp.eye(d), (k, d, d)),
        pi=jnp.full((k, k), 1.0 / k), betas=jnp.full((k,), 1.0 / k),
    )


@pytest.mark.parametrize(
    "sizes", [(K + 1, D, A), (K, D + 1, (D + 1) * L + 1), (K, D, D + 1)], ids=["num_states", "latent_dim", "ar_dim"]
)
def test_arhmm_mismatched_parts_message(sizes):
    params = _params(*sizes)
    hp = ae.Hyperparams.from_scales(K, D, L)
    states = ae.States(z=jnp.zeros((N, T - L), jnp.int32))
    with pytest.raises(ValueError, match=r"`params` have \(num_states, latent_dim, ar_dim\).*`hyperparams`"):
        ae.ARHMM(hp, params, states)


@pytest.mark.parametrize("name, shape", [("Q", (K + 1, D, D)), ("Q", (K, D, D + 1)), ("pi", (K, K + 1)),
                                         ("betas", (K + 1,))])
def test_params_bad_shape_message(name, shape):
    fields = {f: getattr(_params(K), f) for f in ("Ab", "Q", "pi", "betas")}
    fields[name] = jnp.ones(shape)
    # through the constructor: the jaxtyping hook (tests only) or __check_init__ names the field
    with pytest.raises((ValueError, TypeError), match=name):
        ae.Params(**fields)
    # __check_init__ itself, as a user without the hook meets it
    with pytest.raises(ValueError, match=rf"`{name}` must have shape"):
        ae.Params.__check_init__(types.SimpleNamespace(**fields))


def test_states_bad_shape_message():
    with pytest.raises((ValueError, TypeError), match="z"):
        ae.States(z=jnp.zeros((T,), jnp.int32))
    with pytest.raises(ValueError, match=r"`z` must have shape \(N, T - nlags\)"):
        ae.States.__check_init__(types.SimpleNamespace(z=jnp.zeros((T,), jnp.int32)))


# ---------------------------------------------------------------- serialisation and immutability


def test_serialise_round_trip(model_and_data, tmp_path):
    model, x, mask = model_and_data
    path = tmp_path / "model.eqx"
    eqx.tree_serialise_leaves(path, model)
    # a skeleton with the same structure but other values
    like = ae.ARHMM(
        ae.Hyperparams.from_scales(K, D, L, kappa=1.0),
        _params(K),
        ae.States(z=jnp.zeros((N, T - L), jnp.int32)),
    )
    assert not _tree_equal(like, model)
    loaded = eqx.tree_deserialise_leaves(path, like)
    assert isinstance(loaded, ae.ARHMM)
    assert _tree_equal(loaded, model)


def test_methods_return_new_modules(model_and_data):
    model, x, mask = model_and_data
    before = _snapshot(model)
    new = model.resample(x, mask, key=jr.key(2))
    assert isinstance(new, ae.ARHMM) and new is not model
    assert _tree_equal(_snapshot(model), before)  # the old model is unchanged
    assert jtu.tree_structure(new) == jtu.tree_structure(model)
    assert not np.array_equal(np.asarray(new.params.Ab), np.asarray(model.params.Ab))
    assert _tree_equal(new.hyperparams, model.hyperparams)
    only = model.resample(x, mask, key=jr.key(3), states_only=True)
    assert _tree_equal(_snapshot(model), before)
    assert _tree_equal(only.params, model.params)
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.params = new.params


def test_simulate_shapes(model_and_data, getkey):
    model, _, _ = model_and_data
    z, x = model.simulate(N, T, key=getkey())
    assert z.shape == (N, T - L) and jnp.issubdtype(z.dtype, jnp.integer)
    assert x.shape == (N, T, D) and x.dtype == model.params.Ab.dtype
    assert int(z.min()) >= 0 and int(z.max()) < K
    assert bool(jnp.all(jnp.isfinite(x)))
    with pytest.raises(ValueError, match="num_frames"):
        model.simulate(N, L, key=getkey())
