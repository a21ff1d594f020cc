"""The compat layer driven as keypoint-moseq drives `jax_moseq.models.arhmm`, in 64-bit mode.

The client loop: `init_hyperparams` from the two config groups, `init_model` (from the
groups, from `hypparams`, and again from a fitted model's states and params), sweeps of
`resample_model(data, **model)` with extra keys in the dicts, `model_likelihood`, a change of
`kappa` in the dict between sweeps the way keypoint-moseq's `update_hypparams` does it (only
for scalar entries, keeping the type), and `stateseq_mode` to label data with a fitted
model. 64-bit mode is switched on with `jax.enable_x64` for each test and is off again after.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from arhmm_eqx import compat
from arhmm_eqx.compat import generate, gibbs, initialize, log_prob


N, T, D, L, K = 3, 40, 2, 2, 4


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        assert jnp.zeros(0, int).dtype == jnp.int64
        yield


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = 0.3 * np.cumsum(rng.normal(size=(N, T, D)), axis=1)  # float64, as keypoint-moseq's data in x64 mode
    mask = np.ones((N, T))
    mask[2, T - 7 :] = 0.0  # trailing padding
    mask[0, 15:18] = 0.0  # an interior gap
    return {"x": x, "mask": mask}


def _config():
    trans = {"num_states": K, "alpha": 5.7, "gamma": 1e3, "kappa": 1e2}
    ar = {"latent_dim": D, "nlags": L, "S_0_scale": 0.01, "K_0_scale": 10.0}
    return trans, ar


def update_hypparams(model: dict, **updates) -> dict:
    """What keypoint-moseq's `update_hypparams` does: set scalar hyperparameters in place,
    keeping their type, and refuse to update a non-scalar one."""
    for name, value in updates.items():
        groups = [g for g, group in model["hypparams"].items() if name in group]
        assert groups, f"{name} is not a hyperparameter"
        for g in groups:
            old = model["hypparams"][g][name]
            if not np.isscalar(old):
                raise TypeError(f"{name} is not a scalar: {type(old)}")
            model["hypparams"][g][name] = type(old)(value)
    return model


def _default_int(a):
    return np.dtype(a.dtype) == np.dtype(jnp.zeros(0, int).dtype)


def test_hyperparams_keep_python_scalars():
    trans, ar = _config()
    hyp = initialize.init_hyperparams(trans, ar)
    assert hyp["trans_hypparams"] == trans and hyp["trans_hypparams"] is not trans
    a = hyp["ar_hypparams"]
    assert type(a["nu_0"]) is int and a["nu_0"] == D + 2
    assert type(a["num_states"]) is int and a["num_states"] == K
    for k in ("latent_dim", "nlags", "S_0_scale", "K_0_scale"):
        assert a[k] is ar[k]
    for k, shape in (("S_0", (D, D)), ("K_0", (D * L + 1, D * L + 1)), ("M_0", (D, D * L + 1))):
        assert isinstance(a[k], jax.Array) and a[k].shape == shape and a[k].dtype == jnp.float64
    np.testing.assert_array_equal(a["M_0"][:, (L - 1) * D : L * D], np.eye(D))
    # every scalar entry can be updated the keypoint-moseq way
    model = initialize.init_model(_data(), hypparams=hyp, seed=jr.PRNGKey(0))
    for group in model["hypparams"].values():
        for name, value in group.items():
            if np.ndim(value) == 0:
                assert np.isscalar(value), (name, type(value))
    update_hypparams(model, kappa=5e3, nu_0=D + 3, alpha=2.0)
    with pytest.raises(TypeError, match="not a scalar"):
        update_hypparams(model, S_0=1.0)


def test_fitting_loop():
    data = _data()
    trans, ar = _config()
    model = initialize.init_model(data, seed=jr.PRNGKey(1), trans_hypparams=trans, ar_hypparams=ar)
    assert set(model) == {"seed", "states", "params", "hypparams"}
    z = model["states"]["z"]
    assert z.shape == (N, T - L) and _default_int(z)
    for k in ("Ab", "Q", "pi", "betas"):
        assert model["params"][k].dtype == jnp.float64
    # extra keys, in the model dict and inside its groups, survive the sweeps
    model["states"]["extra_state"] = np.arange(3)
    model["params"]["extra_param"] = 1.5
    model["noise_prior"] = 0.1
    lls = []
    for it in range(4):
        if it == 2:
            update_hypparams(model, kappa=1e4)
        model = gibbs.resample_model(data, **model)
        assert set(model) == {"seed", "states", "params", "hypparams"}  # keys beyond these go to **kwargs
        assert model["states"]["extra_state"].tolist() == [0, 1, 2] and model["params"]["extra_param"] == 1.5
        assert _default_int(model["states"]["z"])
        assert model["hypparams"]["trans_hypparams"]["kappa"] == (1e4 if it >= 2 else 1e2)
        ll = log_prob.model_likelihood(data, **model)
        assert set(ll) == {"z", "x"} and all(v.dtype == jnp.float64 for v in ll.values())
        lls.append(float(ll["x"] + ll["z"]))
    assert np.all(np.isfinite(lls))
    # positional calls, as in the reference's own code
    seed, states, params, hypparams = model["seed"], model["states"], model["params"], model["hypparams"]
    again = gibbs.resample_model(data, seed, states, params, hypparams, True, False)
    np.testing.assert_array_equal(again["params"]["Ab"], params["Ab"])  # states_only
    ll_pos = log_prob.model_likelihood(data, states, params, hypparams)
    ll_kw = log_prob.model_likelihood(data=data, states=states, params=params, hypparams=hypparams)
    assert float(ll_pos["x"]) == float(ll_kw["x"])

    # re-initialise from the fitted model (as keypoint-moseq does to resume or to apply a model)
    resumed = initialize.init_model(data, states=model["states"], params=model["params"], hypparams=model["hypparams"])
    np.testing.assert_array_equal(resumed["states"]["z"], model["states"]["z"])
    np.testing.assert_array_equal(resumed["params"]["pi"], model["params"]["pi"])
    for group in resumed["hypparams"].values():
        for value in group.values():
            assert np.ndim(value) > 0 or np.isscalar(value)
    applied = initialize.init_model(data, params=model["params"], hypparams=model["hypparams"], seed=jr.PRNGKey(3))
    assert _default_int(applied["states"]["z"])
    np.testing.assert_array_equal(applied["params"]["Ab"], model["params"]["Ab"])
    applied = gibbs.resample_model(data, **applied, states_only=True)
    assert _default_int(applied["states"]["z"])

    # labelling: the most likely states, deterministic
    mode = gibbs.stateseq_mode(**data, **model["params"])
    assert mode.shape == (N, T - L) and _default_int(mode)
    np.testing.assert_array_equal(mode, compat.stateseq_mode(data["x"], data["mask"], **model["params"]))
    marg = gibbs.stateseq_marginals(**data, **model["params"])
    assert marg.shape == (N, T - L, K) and marg.dtype == jnp.float64


def test_every_integer_output_has_the_default_integer_dtype():
    data = _data()
    trans, ar = _config()
    hyp = initialize.init_hyperparams(trans, ar)
    seed = jr.PRNGKey(2)
    params = initialize.init_params(seed, **hyp)
    outs = {
        "init_states": initialize.init_states(seed, data["x"], data["mask"], params)["z"],
        "init_model": initialize.init_model(data, hypparams=hyp, seed=seed)["states"]["z"],
        "resample_discrete_stateseqs": gibbs.resample_discrete_stateseqs(seed, **data, **params),
        "stateseq_mode": gibbs.stateseq_mode(**data, **params),
        "generate_states": generate.generate_states(seed, params["pi"], params["Ab"], params["Q"], 20)[0],
        "generate_states/init": generate.generate_states(
            seed, params["pi"], params["Ab"], params["Q"], 20, init_state=(jnp.asarray(1), data["x"][0, :L])
        )[0],
        "resample_model": gibbs.resample_model(
            data, seed, {"z": initialize.init_states(seed, data["x"], data["mask"], params)["z"]}, params, hyp
        )["states"]["z"],
        "model_to_dict": compat.model_to_dict(compat.model_from_dict(initialize.init_model(data, hypparams=hyp)), seed)[
            "states"
        ]["z"],
    }
    for name, z in outs.items():
        assert _default_int(z), (name, z.dtype)
    with jax.enable_x64(False):
        z = gibbs.stateseq_mode(**{k: v.astype(np.float32) for k, v in data.items()},
                                **{k: v.astype(jnp.float32) for k, v in params.items()})
        assert z.dtype == jnp.int32


def test_resample_hdp_transitions_takes_num_states_from_betas():
    data = _data()
    trans, ar = _config()
    hyp = initialize.init_hyperparams(trans, ar)
    model = initialize.init_model(data, hypparams=hyp, seed=jr.PRNGKey(4))
    z, betas = model["states"]["z"], model["params"]["betas"]
    b1, pi1 = gibbs.resample_hdp_transitions(jr.PRNGKey(5), z, data["mask"], betas, 5.7, 1e2, 1e3)
    assert b1.shape == (K,) and pi1.shape == (K, K)
    b2, pi2 = gibbs.resample_hdp_transitions(
        jr.PRNGKey(5), z=z, mask=data["mask"], betas=betas, alpha=5.7, kappa=1e2, gamma=1e3, num_states=K
    )
    np.testing.assert_array_equal(pi1, pi2)


@pytest.mark.parametrize(
    "call",
    [
        lambda d, h, m: initialize.init_model(d, hypparams=h),
        lambda d, h, m: gibbs.resample_model(d, **m),
        lambda d, h, m: log_prob.model_likelihood(d, **m),
    ],
    ids=["init_model", "resample_model", "model_likelihood"],
)
def test_data_without_mask_names_mask(call):
    data = _data()
    trans, ar = _config()
    hyp = initialize.init_hyperparams(trans, ar)
    model = initialize.init_model(data, hypparams=hyp, seed=jr.PRNGKey(0))
    with pytest.raises(ValueError, match="`mask`"):
        call({"x": data["x"]}, hyp, model)
