"""`ARHMM.check`: models edited with `eqx.tree_at` (which skips `__check_init__`) stay valid or
fail loudly at every entry point; keys, states and masked values are checked too."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import arhmm_eqx as ae
from arhmm_eqx._checks import check_key


# The sizes of test_modules.py, so compiled functions are shared within a run.
K, D, L, N, T = 4, 2, 2, 3, 40


def _data(dtype=jnp.float32):
    x = jnp.cumsum(0.3 * jr.normal(jr.key(0), (N, T, D), dtype), axis=1)
    mask = jnp.ones((N, T), dtype).at[1, T - 7 :].set(0.0)
    return x, mask


@pytest.fixture(scope="module")
def model():
    x, mask = _data()
    hp = ae.Hyperparams.from_scales(K, D, L, kappa=10.0)
    return ae.ARHMM.from_prior(hp, x, mask, key=jr.key(1))


def _entry_points(model, x, mask):
    """Every entry point that takes a model and data, as a zero-argument call."""
    return {
        "resample": lambda: model.resample(x, mask, key=jr.key(2)),
        "gibbs_step": lambda: ae.gibbs_step(jr.key(2), model, x, mask),
        "run_chain": lambda: ae.run_chain(jr.key(2), model, x, mask, 2),
        "marginal_log_likelihood": lambda: model.marginal_log_likelihood(x, mask),
        "log_joint_likelihood": lambda: model.log_joint_likelihood(x, mask),
        "stateseq_marginals": lambda: model.stateseq_marginals(x, mask),
        "most_likely_states": lambda: model.most_likely_states(x, mask),
        "log_posterior": lambda: model.log_posterior(x, mask),
    }


def test_check_passes_on_built_models(model):
    assert model.check() is model
    x, mask = _data()
    chains = ae.init_chains(model.hyperparams, x, mask, key=jr.key(3), num_chains=2)
    assert chains.check() is chains  # batched models too


@pytest.mark.parametrize("entry", ["resample", "gibbs_step", "run_chain", "marginal_log_likelihood"])
def test_negative_kappa_set_with_tree_at_raises(model, entry):
    x, mask = _data()
    bad = eqx.tree_at(lambda m: m.hyperparams.kappa, model, jnp.asarray(-5.0, jnp.float32))
    with pytest.raises(ValueError, match=r"`hyperparams.kappa` must be finite and > 0"):
        _entry_points(bad, x, mask)[entry]()
    with pytest.raises(ValueError, match="kappa"):
        bad.check()


@pytest.mark.parametrize("entry", ["resample", "gibbs_step", "run_chain", "stateseq_marginals"])
def test_params_with_other_number_of_states_raise(model, entry):
    """Before, `resample` silently threw the edit away and returned a K-state `Ab`."""
    x, mask = _data()
    Ab = jnp.zeros((K + 1, D, D * L + 1), jnp.float32)
    Q = jnp.tile(jnp.eye(D, dtype=jnp.float32), (K + 1, 1, 1))
    bad = eqx.tree_at(lambda m: (m.params.Ab, m.params.Q), model, (Ab, Q))
    with pytest.raises(ValueError, match=r"`params.Ab` has shape \(5, 2, 5\) but .* need \(4, 2, 5\)"):
        _entry_points(bad, x, mask)[entry]()


def test_hyperparameter_of_another_dtype_raises():
    with jax.enable_x64(True):
        x, mask = _data(jnp.float64)
        hp = ae.Hyperparams.from_scales(K, D, L, kappa=10.0)
        m = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(1))
        assert m.params.Ab.dtype == jnp.float64 and m.hyperparams.kappa.dtype == jnp.float64
        bad = eqx.tree_at(lambda m: m.hyperparams.kappa, m, jnp.float32(10.0))
        with pytest.raises(TypeError, match=r"`hyperparams.kappa` is float32 but the parameters are float64"):
            bad.resample(x, mask, key=jr.key(2))
        # A model built from float32 hyperparameters and float64 data is of one precision.
        hp32 = jax.tree.map(lambda a: a.astype(jnp.float32), hp)
        m32 = ae.ARHMM.from_prior(hp32, x, mask, key=jr.key(1))
        assert {leaf.dtype for leaf in jax.tree.leaves((m32.params, m32.hyperparams))} == {jnp.dtype("float64")}
        assert m32.check() is m32


def test_other_edits_raise(model):
    x, mask = _data()
    cases = {
        "nu_0": (lambda m: m.hyperparams.nu_0, jnp.asarray(0.5, jnp.float32), ValueError, r"`hyperparams.nu_0`"),
        "pi dtype": (lambda m: m.params.pi, model.params.pi.astype(jnp.float16), TypeError, r"`params.pi` is float16"),
        "z float": (lambda m: m.states.z, model.states.z.astype(jnp.float32), TypeError, r"`states.z` must be an int"),
        "z range": (lambda m: m.states.z, model.states.z.at[0, 0].set(K), ValueError, r"`states.z` must hold states"),
        "z negative": (lambda m: m.states.z, model.states.z.at[0, 0].set(-1), ValueError, r"found -1"),
    }
    for name, (where, value, error, text) in cases.items():
        bad = eqx.tree_at(where, model, value)
        with pytest.raises(error, match=text):
            bad.resample(x, mask, key=jr.key(2))


@pytest.mark.parametrize("entry", ["resample", "gibbs_step", "run_chain", "log_joint_likelihood"])
@pytest.mark.parametrize("shape", [(N - 1, T), (N, T + 5)])
def test_data_of_other_shape_than_the_states_raise(model, entry, shape):
    """Before: "Incompatible types for broadcasting"."""
    x = jnp.zeros(shape + (D,), jnp.float32)
    mask = jnp.ones(shape, jnp.float32)
    with pytest.raises(ValueError, match=r"the model's states `z` have shape \(3, 38\) but `x` of shape"):
        _entry_points(model, x, mask)[entry]()


@pytest.mark.parametrize("bad_key", [0, np.int64(3), None, "seed"])
def test_native_entry_points_ask_for_a_jax_key(model, bad_key):
    x, mask = _data()
    calls = {
        "resample": lambda: model.resample(x, mask, key=bad_key),
        "gibbs_step": lambda: ae.gibbs_step(bad_key, model, x, mask),
        "run_chain": lambda: ae.run_chain(bad_key, model, x, mask, 2),
        "from_prior": lambda: ae.ARHMM.from_prior(model.hyperparams, x, mask, key=bad_key),
        "simulate": lambda: model.simulate(2, 10, key=bad_key),
        "init_chains": lambda: ae.init_chains(model.hyperparams, x, mask, key=bad_key, num_chains=2),
    }
    # Without the test run's jaxtyping hook the library's own message comes (checked below);
    # with it, the hook's TypeError names the parameter `key` first.
    for name, call in calls.items():
        with pytest.raises(TypeError, match=r"`key` must be a JAX random key such as|parameter 'key'"):
            call()
    with pytest.raises(TypeError, match=r"`key` must be a JAX random key such as `jax.random.key\(0\)`"):
        check_key(bad_key)
    check_key(jr.key(0))
    check_key(jr.PRNGKey(0))
    check_key(jr.split(jr.key(0), 3))


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e20, np.finfo(np.float32).max])
def test_values_in_masked_frames_never_matter(model, value):
    """Trailing padding and the inside of a gap (frames that are no lag of a valid frame) hold
    a sentinel: every result equals the one with zeros there, and nothing turns NaN."""
    x, mask = _data()
    mask = mask.at[0, 10:20].set(0.0)  # an interior gap; frames 10..17 are lags of no valid frame
    hidden = jnp.zeros((N, T), bool).at[1, T - 7 :].set(True).at[0, 10:18].set(True)
    x_bad = jnp.where(hidden[..., None], jnp.asarray(value, jnp.float32), x)
    x_zero = jnp.where(hidden[..., None], 0.0, x)
    for entry in ("stateseq_marginals", "marginal_log_likelihood", "log_joint_likelihood", "most_likely_states",
                  "log_posterior"):
        got = _entry_points(model, x_bad, mask)[entry]()
        want = _entry_points(model, x_zero, mask)[entry]()
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert np.all(np.isfinite(np.asarray(g, np.float64))), entry
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=entry)
    new_bad, info = ae.run_chain(jr.key(4), model, x_bad, mask, 3)
    new_zero, _ = ae.run_chain(jr.key(4), model, x_zero, mask, 3)
    assert bool(info.ok.all())
    np.testing.assert_array_equal(np.asarray(new_bad.states.z), np.asarray(new_zero.states.z))
    np.testing.assert_array_equal(np.asarray(new_bad.params.Ab), np.asarray(new_zero.params.Ab))
