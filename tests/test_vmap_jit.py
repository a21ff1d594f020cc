"""Transformations: vmap over restarts equals a loop, chains split and resume exactly, one compilation
across hyperparameter values, determinism in the key, and no host callback in the sweep."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import pytest
from helpers import SMALL_SIZES, small_walk

import arhmm_eqx as ae
import arhmm_eqx._run
from arhmm_eqx._checks import check_data
from arhmm_eqx._gibbs import SweepOptions
from arhmm_eqx._model import sweep as gibbs_sweep


# The sizes shared with the other test files, so compiled functions are reused (`gibbs_step` is
# called with `states_only=` spelled out, as `ARHMM.resample` calls it, for the same reason).
K, D, L, N, T = SMALL_SIZES
KAPPAS = (1.0, 1e2, 1e6)


@pytest.fixture(scope="module")
def data():
    return small_walk()


@pytest.fixture(scope="module")
def models(data):
    """One model per kappa, each from its own key, and the same models stacked along a batch axis."""
    x, mask = data
    keys = jr.split(jr.key(10), len(KAPPAS))
    ms = [
        ae.ARHMM.from_prior(ae.Hyperparams.from_scales(K, D, L, kappa=kappa), x, mask, key=k)
        for kappa, k in zip(KAPPAS, keys)
    ]
    return ms, _stack(ms)


def _stack(trees):
    return jtu.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def _index(tree, i):
    return jtu.tree_map(lambda v: v[i], tree)


def _assert_same(a, b, *, rtol=0.0, atol=0.0):
    """Same structure; integer leaves bitwise equal; floating leaves equal to the given tolerance."""
    la, ta = jtu.tree_flatten(a)
    lb, tb = jtu.tree_flatten(b)
    assert ta == tb
    for u, v in zip(la, lb):
        u, v = np.asarray(u), np.asarray(v)
        assert u.dtype == v.dtype and u.shape == v.shape
        if np.issubdtype(u.dtype, np.floating) and (rtol or atol):
            np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(u, v)


def test_vmap_resample_equals_loop(data, models):
    x, mask = data
    ms, batched = models
    assert batched.hyperparams.kappa.shape == (len(KAPPAS),)
    keys = jr.split(jr.key(11), len(KAPPAS))
    out = eqx.filter_vmap(lambda m, k: m.resample(x, mask, key=k))(batched, keys)
    for i, (m, k) in enumerate(zip(ms, keys)):
        one = m.resample(x, mask, key=k)
        # states exactly; continuous parameters to float32 round-off (vmap may reorder sums)
        np.testing.assert_array_equal(np.asarray(_index(out, i).states.z), np.asarray(one.states.z))
        _assert_same(_index(out, i), one, rtol=1e-6, atol=1e-6)
    # and the batch members really differ (keys and kappa were used)
    assert not np.array_equal(np.asarray(out.states.z[0]), np.asarray(out.states.z[1]))


def test_vmap_from_prior_restarts_equals_loop(data):
    x, mask = data
    hp = ae.Hyperparams.from_scales(K, D, L, kappa=1e2)
    keys = jr.split(jr.key(12), 3)
    restarts = eqx.filter_vmap(lambda k: ae.ARHMM.from_prior(hp, x, mask, key=k))(keys)
    assert restarts.params.Ab.shape == (3, K, D, D * L + 1)
    assert restarts.states.z.shape == (3, N, T - L)
    for i, k in enumerate(keys):
        one = ae.ARHMM.from_prior(hp, x, mask, key=k)
        np.testing.assert_array_equal(np.asarray(restarts.states.z[i]), np.asarray(one.states.z))
        _assert_same(_index(restarts, i), one, rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # compiles chains of 4 sweeps and of 2 sweeps from `start_iter=2`
def test_run_chain_split_equals_one_run(data, models):
    x, mask = data
    model = models[0][1]
    key = jr.key(13)
    a, b = 2, 2  # 2 sweeps as elsewhere in the tests: one compilation shared
    model_a, info_a = ae.run_chain(key, model, x, mask, a)
    model_ab, info_b = ae.run_chain(key, model_a, x, mask, b, start_iter=a)
    whole, info = ae.run_chain(key, model, x, mask, a + b)
    _assert_same(model_ab, whole)  # bitwise
    _assert_same(jtu.tree_map(lambda u, v: jnp.concatenate([u, v]), info_a, info_b), info)
    assert info.ok.shape == (a + b,) and bool(info.ok.all())
    # and the chain moved
    assert not np.array_equal(np.asarray(whole.params.Ab), np.asarray(model.params.Ab))


def _with(model, **hyper):
    """`model` with some hyperparameters replaced by arrays of the same (strong) dtype, which is
    what `Hyperparams.from_scales(kappa=python_float)` stores."""
    for name, value in hyper.items():
        dtype = getattr(model.hyperparams, name).dtype
        model = eqx.tree_at(lambda m: getattr(m.hyperparams, name), model, jnp.asarray(value, dtype))
    return model


def test_no_retrace_across_hyperparameters(data, models):
    x, mask = data
    x, mask = check_data(x, mask, nlags=L, latent_dim=D)
    model = models[0][0]

    def sweep(key, model):
        return gibbs_sweep(key, model, x, mask)

    sweep = eqx.filter_jit(eqx.debug.assert_max_traces(sweep, max_traces=1))
    outs = []
    for i, hyper in enumerate([{}, {"kappa": 1e8}, {"kappa": 1e-3, "alpha": 0.5}, {"gamma": 3.0, "nu_0": 7.0}]):
        m = _with(model, **hyper)
        for name, value in hyper.items():
            assert float(getattr(m.hyperparams, name)) == np.float32(value)
        outs.append(sweep(jr.key(14), m)[0])
    # same key, so only the hyperparameters changed between the calls, and they were used
    assert not np.array_equal(np.asarray(outs[0].params.pi), np.asarray(outs[1].params.pi))
    # rebuilt from scratch with other Python-float hyperparameters: still the same trace
    hp = ae.Hyperparams.from_scales(K, D, L, alpha=1.0, gamma=2.0, kappa=3e7, S_0_scale=0.3, K_0_scale=0.7)
    outs.append(sweep(jr.key(14), ae.ARHMM(hp, model.params, model.states))[0])
    # positive control: a new static size does trigger a second trace, which the guard catches
    K1, A = K + 1, D * L + 1
    params = ae.Params(Ab=jnp.zeros((K1, D, A)), Q=jnp.broadcast_to(jnp.eye(D), (K1, D, D)),
                       pi=jnp.full((K1, K1), 1.0 / K1), betas=jnp.full((K1,), 1.0 / K1))
    other = ae.ARHMM(ae.Hyperparams.from_scales(K1, D, L), params, model.states)
    with pytest.raises(RuntimeError, match="traced"):
        sweep(jr.key(14), other)


def test_public_drivers_trace_once_across_kappa(data, models, count_traces):
    """`gibbs_step` and `run_chain` do not trace the sweep again for new kappa values."""
    x, mask = data
    model = models[0][0]
    ae.gibbs_step(jr.key(15), model, x, mask, states_only=False)  # compiled here or before
    ae.run_chain(jr.key(15), model, x, mask, 2)
    count_traces.clear()
    for kappa in (3.0, 1e4, 1e8):
        ae.gibbs_step(jr.key(15), _with(model, kappa=kappa), x, mask, states_only=False)
        ae.run_chain(jr.key(15), _with(model, kappa=kappa), x, mask, 2)
    assert len(count_traces) == 0


def test_same_key_same_bits_different_keys_differ(data, models):
    x, mask = data
    model = models[0][1]
    first = model.resample(x, mask, key=jr.key(16))
    again = model.resample(x, mask, key=jr.key(16))
    _assert_same(first, again)
    other = model.resample(x, mask, key=jr.key(17))
    assert not np.array_equal(np.asarray(first.states.z), np.asarray(other.states.z))
    assert not np.array_equal(np.asarray(first.params.Ab), np.asarray(other.params.Ab))


def test_sweep_has_no_host_callback(data, models):
    x, mask = data
    x, mask = check_data(x, mask, nlags=L, latent_dim=D)
    model = models[0][0]
    for states_only in (False, True):
        options = SweepOptions(states_only=states_only)
        jaxpr = jax.make_jaxpr(lambda key, m: gibbs_sweep(key, m, x, mask, options))(jr.key(0), model)
        text = str(jaxpr)
        assert "callback" not in text
        assert "scan" in text or "while" in text  # the printed jaxpr includes the nested ones
    scan_chain = arhmm_eqx._run.scan_chain_compiled
    chain = jax.make_jaxpr(lambda key, m: scan_chain(key, m, x, mask, 0, 2, SweepOptions()))(jr.key(0), model)
    assert "callback" not in str(chain)
    # positive control: a host callback does show up in a printed jaxpr, also when nested
    control = jax.make_jaxpr(
        lambda v: jax.lax.scan(lambda c, _: (jax.debug.callback(lambda a: None, c) or c, None), v, None, length=2)[0]
    )(jnp.ones(()))
    assert "callback" in str(control)


@pytest.fixture
def count_traces(monkeypatch):
    """A list that grows by one each time the drivers (`gibbs_step`, `run_chain`) trace the sweep."""
    traces = []
    real = arhmm_eqx._model.gibbs_sweep

    def counting(*args, **kwargs):
        traces.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(arhmm_eqx._model, "gibbs_sweep", counting)
    return traces


def test_no_retrace_float32_kappa(data, models, count_traces):
    """A kappa given as a float32 array (`np.float32(1e4)`, or one read back from a file) must
    reuse the compilation made for a kappa given as a Python float."""
    x, mask = data
    model = models[0][0]
    hp_py = ae.Hyperparams.from_scales(K, D, L, kappa=1e4)
    hp_np = ae.Hyperparams.from_scales(K, D, L, kappa=np.float32(1e4))
    model_py = ae.ARHMM(hp_py, model.params, model.states)
    model_np = ae.ARHMM(hp_np, model.params, model.states)
    ae.gibbs_step(jr.key(18), model_py, x, mask, states_only=False)  # compiled here or before
    count_traces.clear()
    ae.gibbs_step(jr.key(18), model_np, x, mask, states_only=False)
    assert len(count_traces) == 0


def test_run_chain_in_chunks_traces_once(data, models, count_traces):
    """Running a long chain in chunks (`start_iter = 0, c, 2c, ...`) compiles the chunk once."""
    x, mask = data
    model = models[0][0]
    model, _ = ae.run_chain(jr.key(19), model, x, mask, 2, start_iter=2)  # compiled here or before
    count_traces.clear()
    model, _ = ae.run_chain(jr.key(19), model, x, mask, 2, start_iter=4)
    assert len(count_traces) == 0
