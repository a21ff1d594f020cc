"""Reproducibility: the same key gives the same bits; a chain resumed from a model saved to disk
continues exactly as the uninterrupted chain; chains vmapped over (models, keys) equal chains run alone."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import pytest
from helpers import SMALL_SIZES, small_walk

import arhmm_eqx as ae


# The sizes used elsewhere in the suite (tests/test_vmap_jit.py), so compiled functions are shared.
K, D, L, N, T = SMALL_SIZES
NUM_SWEEPS = 2  # run_chain's length is static: 2 is the length compiled elsewhere in the suite


@pytest.fixture(scope="module")
def data():
    return small_walk()


@pytest.fixture(scope="module")
def model(data):
    x, mask = data
    return ae.ARHMM.from_prior(ae.Hyperparams.from_scales(K, D, L, kappa=1e2), x, mask, key=jr.key(40))


def _assert_bitwise(a, b):
    """Same tree structure, and every leaf with the same dtype, shape and bits."""
    la, ta = jtu.tree_flatten(a)
    lb, tb = jtu.tree_flatten(b)
    assert ta == tb
    assert len(la) > 0
    for u, v in zip(la, lb):
        u, v = np.asarray(u), np.asarray(v)
        assert u.dtype == v.dtype and u.shape == v.shape
        # compare the bytes, so that NaNs compare too
        np.testing.assert_array_equal(u.reshape(-1).view(np.uint8), v.reshape(-1).view(np.uint8))


def _differs(a, b) -> bool:
    return any(not np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(jtu.tree_leaves(a), jtu.tree_leaves(b)))


def test_same_key_same_bits(data, model):
    """Two calls with the same key give identical bits; another key gives other draws."""
    x, mask = data
    hp = model.hyperparams
    key = jr.key(41)
    first = ae.ARHMM.from_prior(hp, x, mask, key=key)
    _assert_bitwise(first, ae.ARHMM.from_prior(hp, x, mask, key=key))
    assert _differs(first, ae.ARHMM.from_prior(hp, x, mask, key=jr.key(42)))
    one = model.resample(x, mask, key=key)
    _assert_bitwise(one, model.resample(x, mask, key=key))
    assert _differs(one, model.resample(x, mask, key=jr.key(42)))
    chain = ae.run_chain(key, model, x, mask, NUM_SWEEPS)
    _assert_bitwise(chain, ae.run_chain(key, model, x, mask, NUM_SWEEPS))
    assert _differs(chain, ae.run_chain(jr.key(42), model, x, mask, NUM_SWEEPS))


@pytest.mark.slow  # three new compilations
def test_same_key_same_bits_under_fresh_jit(data, model):
    """The same computations traced and compiled anew inside an outer `jit` give the same bits.

    The outer `jit` takes every array as an argument: arrays closed over become constants that
    XLA may fold at compile time with its own evaluator, which can differ in the last bit
    (seen for `Ab` and `Q`, through `inv(K_0)`): a property of XLA, not of the library."""
    x, mask = data
    hp = model.hyperparams
    key = jr.key(41)
    fresh = eqx.filter_jit(lambda hp, k, x, mask: ae.ARHMM.from_prior(hp, x, mask, key=k))
    _assert_bitwise(ae.ARHMM.from_prior(hp, x, mask, key=key), fresh(hp, key, x, mask))
    fresh = eqx.filter_jit(lambda m, k, x, mask: m.resample(x, mask, key=k))
    _assert_bitwise(model.resample(x, mask, key=key), fresh(model, key, x, mask))
    fresh = eqx.filter_jit(lambda m, k, x, mask: ae.run_chain(k, m, x, mask, NUM_SWEEPS))
    _assert_bitwise(ae.run_chain(key, model, x, mask, NUM_SWEEPS), fresh(model, key, x, mask))


def test_resume_from_saved_model(data, model, tmp_path):
    """run_chain(a) -> save -> load into a like-shaped model -> run_chain(b, start_iter=a) is
    bit for bit run_chain(a + b), GibbsInfo traces included."""
    x, mask = data
    key = jr.key(43)
    a = b = NUM_SWEEPS
    part_a, info_a = ae.run_chain(key, model, x, mask, a)
    path = tmp_path / "chain.eqx"
    eqx.tree_serialise_leaves(path, part_a)

    # A skeleton with the same static sizes and no values (kappa there would be 1e6, not 1e2).
    like = eqx.filter_eval_shape(
        ae.ARHMM.from_prior, ae.Hyperparams.from_scales(K, D, L), x, mask, key=jr.key(0)
    )
    assert isinstance(like.params.Ab, jax.ShapeDtypeStruct)
    loaded = eqx.tree_deserialise_leaves(path, like)
    _assert_bitwise(loaded, part_a)  # hyperparameters included: kappa comes from the file
    assert float(loaded.hyperparams.kappa) == np.float32(1e2)

    resumed, info_b = ae.run_chain(key, loaded, x, mask, b, start_iter=a)
    whole, info = ae.run_chain(key, model, x, mask, a + b)
    _assert_bitwise(resumed, whole)
    _assert_bitwise(jtu.tree_map(lambda u, v: jnp.concatenate([u, v]), info_a, info_b), info)
    assert info.ok.shape == (a + b,) and bool(info.ok.all())
    # positive controls: the resumed part moved the chain, and resuming at the wrong index differs
    assert _differs(resumed, part_a)
    wrong, _ = ae.run_chain(key, loaded, x, mask, b, start_iter=0)
    assert _differs(wrong, whole)


@pytest.mark.slow  # compiles a batched chain
def test_vmapped_chains_equal_single_chains(data):
    """One `eqx.filter_vmap` over (models, keys), models with different kappa, equals each chain
    run alone: states exactly; the final models' floats to 1e-6 relative (jax.random's gamma
    sampler, batched, can round its last bit differently from the unbatched one). The trace of
    `log_joint_x`, a float32 sum over frames whose reduction XLA orders differently for a batch,
    agrees to 1e-6 relative (8 float32 ulps; seen: up to 4e-7)."""
    x, mask = data
    kappas = (1.0, 1e3, 1e7)
    keys = jr.split(jr.key(44), len(kappas))
    models = [
        ae.ARHMM.from_prior(ae.Hyperparams.from_scales(K, D, L, kappa=kappa), x, mask, key=k)
        for kappa, k in zip(kappas, jr.split(jr.key(45), len(kappas)))
    ]
    stacked = jtu.tree_map(lambda *leaves: jnp.stack(leaves), *models)
    batched = eqx.filter_vmap(lambda m, k: ae.run_chain(k, m, x, mask, NUM_SWEEPS))(stacked, keys)
    for i, (m, k) in enumerate(zip(models, keys)):
        alone_model, alone_info = ae.run_chain(k, m, x, mask, NUM_SWEEPS)
        mine_model, mine_info = jtu.tree_map(lambda v: v[i], batched)
        np.testing.assert_array_equal(np.asarray(mine_model.states.z), np.asarray(alone_model.states.z))
        for u, v in zip(jtu.tree_leaves(mine_model), jtu.tree_leaves(alone_model)):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(mine_info.ok), np.asarray(alone_info.ok))
        np.testing.assert_allclose(np.asarray(mine_info.log_joint_z), np.asarray(alone_info.log_joint_z), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(mine_info.log_joint_x), np.asarray(alone_info.log_joint_x), rtol=1e-6)
    # the chains really differ from each other (keys and kappa were used)
    assert not np.array_equal(np.asarray(batched[0].states.z[0]), np.asarray(batched[0].states.z[1]))
