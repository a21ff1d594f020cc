"""Bad input raises a clear error naming the argument, before any sampling, through every entry point."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import jaxtyping
import numpy as np
import pytest
from helpers import SMALL_SIZES, small_walk

import arhmm_eqx as ae
import arhmm_eqx._model
import arhmm_eqx._run
import arhmm_eqx.compat.initialize
from arhmm_eqx import compat


# The sizes shared with the other test files, so compiled functions are reused.
K, D, L, N, T = SMALL_SIZES
TRANS = {"num_states": K, "alpha": 5.7, "gamma": 1e3, "kappa": 50.0}
AR = {"latent_dim": D, "nlags": L, "S_0_scale": 0.01, "K_0_scale": 10.0}


def _data():
    return small_walk()


def _snapshot(tree):
    return jtu.tree_map(lambda v: np.array(v, copy=True), tree)


def _leaf_equal(u, v):
    u, v = np.asarray(u), np.asarray(v)
    nan_ok = np.issubdtype(u.dtype, np.inexact) and np.issubdtype(v.dtype, np.inexact)
    return u.dtype == v.dtype and np.array_equal(u, v, equal_nan=nan_ok)


def _tree_equal(a, b):
    la, ta = jtu.tree_flatten(a)
    lb, tb = jtu.tree_flatten(b)
    return ta == tb and all(_leaf_equal(u, v) for u, v in zip(la, lb))


@pytest.fixture(scope="module")
def good():
    x, mask = _data()
    hp = ae.Hyperparams.from_moseq_dicts(TRANS, AR)
    model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(1))
    return hp, model, x, mask


def _no_sampling(monkeypatch, params_too=True):
    """Replace every sampling routine behind the entry points by one that fails the test.

    With `params_too=False`, `init_model` may still draw its parameters from the prior
    (they do not depend on the data); `test_init_model_checks_data_before_drawing_params`
    covers that ordering on its own."""

    def fail(*args, **kwargs):
        raise AssertionError("sampling started before the input was checked")

    monkeypatch.setattr(arhmm_eqx._model, "draw_from_prior", fail)
    monkeypatch.setattr(arhmm_eqx._model, "draw_given_params", fail)
    monkeypatch.setattr(arhmm_eqx._run, "gibbs_step", fail)
    monkeypatch.setattr(arhmm_eqx._run, "scan_chain_compiled", fail)
    monkeypatch.setattr(arhmm_eqx._model, "sweep_compiled", fail)
    monkeypatch.setattr(arhmm_eqx.compat.initialize, "_init_states_jit", fail)
    monkeypatch.setattr(arhmm_eqx.compat.initialize, "_resample_z_kernel", fail)
    monkeypatch.setattr(arhmm_eqx.compat.gibbs, "_resample_stateseqs_jit", fail)
    if params_too:
        monkeypatch.setattr(arhmm_eqx.compat.initialize, "_init_model_jit", fail)
        monkeypatch.setattr(arhmm_eqx.compat.initialize, "_init_ar_params_jit", fail)


def _bad_data_cases():
    x, mask = _data()
    nan = jnp.asarray(jnp.nan, x.dtype)
    inf = jnp.asarray(jnp.inf, x.dtype)
    only_lags = jnp.zeros((N, T)).at[:, :L].set(1.0)
    return {
        "x_2d": (x[0], mask[0], ValueError, r"`x` must have shape \(N, T, D\)"),
        "x_4d": (x[None], mask[None], ValueError, r"`x` must have shape \(N, T, D\)"),
        "mask_short": (x, mask[:, :-1], ValueError, r"`mask` must have shape \(N, T\)"),
        "mask_N": (x, mask[:-1], ValueError, r"`mask` must have shape \(N, T\)"),
        "mask_3d": (x, mask[..., None], ValueError, r"`mask` must have shape \(N, T\)"),
        "x_int": (jnp.round(x).astype(jnp.int32), mask, TypeError, r"`x` must be a floating"),
        "nan": (x.at[0, 5, 0].set(nan), mask, ValueError, r"`x` has NaN or inf"),
        "inf": (x.at[2, T - 1, 1].set(-inf), mask, ValueError, r"`x` has NaN or inf"),
        "nan_in_lag": (x.at[0, 0, 1].set(nan), mask, ValueError, r"`x` has NaN or inf"),
        "T_eq_nlags": (x[:, :L], mask[:, :L], ValueError, r"longer than `nlags`"),
        "T_lt_nlags": (x[:, :1], mask[:, :1], ValueError, r"longer than `nlags`"),
        "mask_empty": (x, jnp.zeros((N, T)), ValueError, r"`mask` has no valid frame"),
        "mask_only_lags": (x, only_lags, ValueError, r"`mask` has no valid frame"),
        "mask_values": (x, 0.5 * mask, ValueError, r"`mask` must contain only 0"),
        "latent_dim": (jnp.concatenate([x, x[..., :1]], -1), mask, ValueError, r"latent_dim"),
    }


BAD_DATA = _bad_data_cases()


def _model_dict(model):
    return compat.model_to_dict(model, seed=jr.PRNGKey(5))


ENTRY_POINTS = {
    "from_prior": lambda hp, model, x, mask: ae.ARHMM.from_prior(hp, x, mask, key=jr.key(2)),
    "from_params": lambda hp, model, x, mask: ae.ARHMM.from_params(hp, model.params, x, mask, key=jr.key(2)),
    "resample": lambda hp, model, x, mask: model.resample(x, mask, key=jr.key(2)),
    "resample_states_only": lambda hp, model, x, mask: model.resample(x, mask, key=jr.key(2), states_only=True),
    "run_chain": lambda hp, model, x, mask: ae.run_chain(jr.key(2), model, x, mask, 3),
    "init_model": lambda hp, model, x, mask: compat.init_model(
        {"x": x, "mask": mask}, seed=0, trans_hypparams=dict(TRANS), ar_hypparams=dict(AR)
    ),
    "resample_model": lambda hp, model, x, mask: compat.resample_model({"x": x, "mask": mask}, **_model_dict(model)),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_raises_before_sampling(good, monkeypatch, entry, case):
    """What a user sees: the library's own checks (the jaxtyping import hook of the test
    suite is switched off for this call, as it is off in user code)."""
    hp, model, _, _ = good
    x, mask, exc, match = BAD_DATA[case]
    before = _snapshot(model)
    _no_sampling(monkeypatch, params_too=False)
    monkeypatch.setattr(jaxtyping.config, "jaxtyping_disable", True)
    with pytest.raises(exc, match=match):
        ENTRY_POINTS[entry](hp, model, x, mask)
    assert _tree_equal(_snapshot(model), before)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("case", ["x_2d", "x_int", "mask_short", "nan", "latent_dim"])
def test_bad_data_with_jaxtyping_hook(good, monkeypatch, entry, case):
    """With the import hook on, an annotated entry point may reject `x` first: then the
    error is jaxtyping's, which also names the argument."""
    hp, model, _, _ = good
    x, mask, exc, match = BAD_DATA[case]
    _no_sampling(monkeypatch, params_too=False)
    with pytest.raises((exc, jaxtyping.TypeCheckError), match=rf"{match}|typechecking parameter '(x|mask)'"):
        ENTRY_POINTS[entry](hp, model, x, mask)


@pytest.mark.parametrize("case", ["x_2d", "nan", "mask_empty"])
def test_init_model_checks_data_before_drawing_params(monkeypatch, case):
    """`init_model` with bad `data` should fail before it draws anything, parameters included."""
    x, mask, exc, match = BAD_DATA[case]
    _no_sampling(monkeypatch, params_too=True)
    with pytest.raises(exc, match=match):
        compat.init_model({"x": x, "mask": mask}, seed=0, trans_hypparams=dict(TRANS), ar_hypparams=dict(AR))


def test_resample_model_failure_leaves_dicts_untouched(good):
    hp, model, _, _ = good
    x, mask, _, _ = BAD_DATA["nan"]
    d = _model_dict(model)
    data = {"x": x, "mask": mask}
    before = _snapshot((data, d))
    structure = jtu.tree_structure((data, d))
    with pytest.raises(ValueError, match="NaN or inf"):
        compat.resample_model(data, **d)
    assert jtu.tree_structure((data, d)) == structure
    assert _tree_equal(_snapshot((data, d)), before)


def test_nan_in_masked_frame_is_fine(good):
    """Positive control: NaN where `mask` is 0 is missing data, not an error, and does not leak."""
    hp, model, x, mask = good
    assert float(mask[1, T - 1]) == 0.0
    x_nan = x.at[1, T - 1, :].set(jnp.nan)
    new, info = ae.run_chain(jr.key(3), model, x_nan, mask, 2)  # 2 sweeps, as in test_vmap_jit (one compile)
    clean, _ = ae.run_chain(jr.key(3), model, x, mask, 2)
    assert _tree_equal(new, clean)
    assert bool(jnp.all(jnp.isfinite(new.params.Ab))) and bool(info.ok.all())


# ---------------------------------------------------------------- hyperparameters


SCALE_NAMES = ["alpha", "gamma", "kappa", "S_0_scale", "K_0_scale"]
BAD_VALUES = [0.0, -1.0, float("nan"), float("inf")]


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("name", SCALE_NAMES)
def test_non_positive_hyperparameter(monkeypatch, name, value):
    _no_sampling(monkeypatch)
    with pytest.raises(ValueError, match=f"`{name}`"):
        ae.Hyperparams.from_scales(K, D, L, **{name: value})
    trans, ar = dict(TRANS), dict(AR)
    (trans if name in trans else ar)[name] = value
    with pytest.raises(ValueError, match=f"`{name}`"):
        ae.Hyperparams.from_moseq_dicts(trans, ar)
    x, mask = _data()
    with pytest.raises(ValueError, match=f"`{name}`"):
        compat.init_model({"x": x, "mask": mask}, trans_hypparams=trans, ar_hypparams=ar)
    with pytest.raises(ValueError, match=f"`{name}`"):
        compat.init_hyperparams(trans, ar)


@pytest.mark.parametrize("name, value", [("num_states", 0), ("num_states", -2), ("nlags", 0), ("nlags", -1),
                                         ("latent_dim", 0)])
def test_bad_sizes(monkeypatch, name, value):
    _no_sampling(monkeypatch)
    sizes = {"num_states": K, "latent_dim": D, "nlags": L, name: value}
    with pytest.raises(ValueError, match=f"`{name}`"):
        ae.Hyperparams.from_scales(sizes["num_states"], sizes["latent_dim"], sizes["nlags"])
    trans, ar = dict(TRANS), dict(AR)
    (trans if name in trans else ar)[name] = value
    with pytest.raises(ValueError, match=f"`{name}`"):
        ae.Hyperparams.from_moseq_dicts(trans, ar)
    x, mask = _data()
    with pytest.raises(ValueError, match=f"`{name}`"):
        compat.init_model({"x": x, "mask": mask}, trans_hypparams=trans, ar_hypparams=ar)


def test_init_model_needs_data_or_states(monkeypatch):
    with pytest.raises(ValueError, match="`data`"):
        compat.init_model(trans_hypparams=dict(TRANS), ar_hypparams=dict(AR))
    _no_sampling(monkeypatch)
    with pytest.raises(ValueError, match="`hypparams`"):
        compat.init_model({"x": _data()[0], "mask": _data()[1]})


# ---------------------------------------------------------------- traced values


def _runtime_error_types():
    types = [eqx.EquinoxRuntimeError] if hasattr(eqx, "EquinoxRuntimeError") else []
    types.append(getattr(jax.errors, "JaxRuntimeError", RuntimeError))
    return tuple(types) + (RuntimeError,)


@eqx.filter_jit
def _jitted_resample(m, x, mask, key):
    return m.resample(x, mask, key=key)


@eqx.filter_jit
def _jitted_from_prior(hp, x, mask, key):
    return ae.ARHMM.from_prior(hp, x, mask, key=key)


TRACED_CASES = [("nan", "has NaN or inf"), ("mask_empty", "has no valid frame"), ("mask_values", "only 0")]


_jitted_gibbs_step = eqx.filter_jit(ae.gibbs_step)


@pytest.mark.parametrize("case, text", TRACED_CASES)
def test_traced_values_raise_at_run_time(good, case, text):
    """`gibbs_step` under a `jit` checks its data there: values go through `eqx.error_if`
    (called directly, it raises `ValueError` at once, as every entry point does)."""
    hp, model, x_ok, mask_ok = good
    x, mask, _, _ = BAD_DATA[case]
    before = _snapshot(model)
    with pytest.raises(ValueError, match=text):
        ae.gibbs_step(jr.key(4), model, x, mask, states_only=False)
    with pytest.raises(_runtime_error_types(), match=text):
        jax.block_until_ready(_jitted_gibbs_step(jr.key(4), model, x, mask, states_only=False))
    assert _tree_equal(_snapshot(model), before)
    # the same compiled function runs on good data: the error is the data's, not the tracing's
    new, info = _jitted_gibbs_step(jr.key(4), model, x_ok, mask_ok, states_only=False)
    assert bool(info.ok) and bool(jnp.all(jnp.isfinite(new.params.Ab)))


@pytest.mark.slow  # two whole-program compilations
@pytest.mark.parametrize("case, text", TRACED_CASES)
def test_traced_values_raise_under_user_jit(good, case, text):
    """A user's own `jit` around `resample` / `from_prior`: the same messages at run time."""
    hp, model, x_ok, mask_ok = good
    x, mask, _, _ = BAD_DATA[case]
    before = _snapshot(model)
    with pytest.raises(_runtime_error_types(), match=text):
        jax.block_until_ready(_jitted_resample(model, x, mask, jr.key(4)))
    with pytest.raises(_runtime_error_types(), match=text):
        jax.block_until_ready(_jitted_from_prior(hp, x, mask, jr.key(4)))
    assert _tree_equal(_snapshot(model), before)
    assert bool(jnp.all(jnp.isfinite(_jitted_resample(model, x_ok, mask_ok, jr.key(4)).params.Ab)))
    assert bool(jnp.all(jnp.isfinite(_jitted_from_prior(hp, x_ok, mask_ok, jr.key(4)).params.Ab)))


def test_static_checks_also_under_jit(good, library_checks):
    hp, model, _, _ = good
    x, mask, _, _ = BAD_DATA["mask_short"]
    with pytest.raises(ValueError, match=r"`mask` must have shape \(N, T\)"):
        ae.gibbs_step(jr.key(4), model, x, mask, states_only=False)
    with pytest.raises(ValueError, match=r"`mask` must have shape \(N, T\)"):
        _jitted_resample(model, x, mask, jr.key(4))  # fails while tracing: nothing is compiled
