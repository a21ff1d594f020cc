"""Property-based tests (hypothesis): every public function returns finite outputs of the documented
shape and dtype over random shapes, masks, NaN padding and hyperparameters, and every invalid
input raises `ValueError`/`TypeError` naming the argument.

Each new shape compiles every function again (~20-30 s per shape on 2 CPU cores), so the default run draws
values (masks, NaN padding, data scale, hyperparameters, keys) at the shape the rest of the suite
compiles, and the `slow` test draws the shapes themselves. Invalid inputs are rejected before
anything is compiled, so that test draws shapes freely.
"""

import contextlib
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import jaxtyping
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import arhmm_eqx as ae
from arhmm_eqx import compat


# The sizes shared with the other test files (compiled functions are reused).
SHARED = (3, 40, 2, 2, 4, "float32")  # N, T, D, L, K, dtype
VALUE_EXAMPLES = 25
SHAPE_EXAMPLES = 1  # plus the explicit smallest problem
INVALID_EXAMPLES = 5  # per invalid case, each example through every entry point


@st.composite
def shapes(draw):
    """(N, T, D, L, K, dtype) over the whole documented range of small problems."""
    L = draw(st.integers(1, 3))
    return (
        draw(st.integers(1, 3)), draw(st.integers(L + 1, 12)), draw(st.integers(1, 3)), L,
        draw(st.integers(1, 4)), draw(st.sampled_from(["float32", "float64"])),
    )


@st.composite
def problems(draw, shape_strategy):
    """A shape, data `x` with NaN/inf possibly in masked frames, a 0/1 mask with at least one
    valid frame after the lags (int or float), hyperparameters and a key seed."""
    N, T, D, L, K, dtype = draw(shape_strategy)
    valid = draw(hnp.arrays(np.bool_, (N, T), elements=st.booleans()))
    if not valid[:, L:].any():
        valid[draw(st.integers(0, N - 1)), draw(st.integers(L, T - 1))] = True
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    walk = draw(st.booleans())
    x = scale * rng.normal(size=(N, T, D))
    if walk:
        x = np.cumsum(x, axis=1) / math.sqrt(T)
    # Non-finite values in masked frames are allowed (missing data). Finite values there are kept
    # as the lags of the valid frames after them (`_checks.check_data`), so they are data: no
    # huge finite fill here.
    fill = draw(st.sampled_from([None, np.nan, np.inf, -np.inf]))
    if fill is not None:
        x = np.where(valid[..., None], x, fill)
    # (boolean masks: `test_bool_mask`, kept apart so that its failure does not hide others)
    mask_dtype = draw(st.sampled_from(["int32", "float"]))
    mask = valid.astype(dtype if mask_dtype == "float" else mask_dtype)
    hyper = {
        "alpha": draw(st.sampled_from([0.5, 5.7, 50.0])),
        "gamma": draw(st.sampled_from([1.0, 1e3])),
        "kappa": draw(st.sampled_from([1e-2, 1.0, 1e4, 1e8])),
        "S_0_scale": draw(st.sampled_from([0.01, 1.0])),
        "K_0_scale": draw(st.sampled_from([0.1, 10.0])),
    }
    return dict(N=N, T=T, D=D, L=L, K=K, dtype=dtype, x=x.astype(dtype), mask=mask, valid=valid, hyper=hyper,
                seed=seed % 2**31)


def _eps(dtype) -> float:
    return float(np.finfo(dtype).eps)


def _check_finite(a, shape, dtype, what):
    a = np.asarray(a)
    assert a.shape == shape, f"{what}: shape {a.shape} != {shape}"
    assert a.dtype == np.dtype(dtype), f"{what}: dtype {a.dtype} != {dtype}"
    assert np.all(np.isfinite(a)), f"{what}: not finite: {a}"


def _check_states(z, N, Tz, K, what, dtype=np.int32):
    z = np.asarray(z)
    assert z.shape == (N, Tz) and z.dtype == dtype, f"{what}: {z.shape} {z.dtype}"
    assert z.min() >= 0 and z.max() < K, f"{what}: states outside [0, {K})"


def _max_spectral_radius(Ab, D, L):
    """Largest spectral radius over states of the AR companion matrices (lags oldest first)."""
    radii = []
    for A in Ab:
        C = np.zeros((D * L, D * L))
        C[: D * (L - 1), D:] = np.eye(D * (L - 1))
        C[D * (L - 1) :, :] = A[:, : D * L]
        radii.append(np.max(np.abs(np.linalg.eigvals(C))))
    return max(radii)


def _check_params(Ab, Q, pi, betas, K, D, L, dtype, what):
    A = D * L + 1
    for name, a, shape in (("Ab", Ab, (K, D, A)), ("Q", Q, (K, D, D)), ("pi", pi, (K, K)), ("betas", betas, (K,))):
        _check_finite(a, shape, dtype, f"{what}.{name}")
    eps = _eps(dtype)
    pi, betas, Q = np.asarray(pi, np.float64), np.asarray(betas, np.float64), np.asarray(Q)
    # rows renormalised then floored at `tiny`: off by a few rounding errors per entry
    assert np.all(np.abs(pi.sum(-1) - 1) <= 4 * K * eps), f"{what}: pi rows sum to {pi.sum(-1)}"
    assert np.all(pi > 0), f"{what}: pi has zero entries"
    assert abs(betas.sum() - 1) <= 4 * K * eps and np.all(betas >= 0), f"{what}: betas {betas}"
    assert np.allclose(Q, np.swapaxes(Q, -1, -2), rtol=4 * eps, atol=0), f"{what}: Q not symmetric"
    assert np.all(np.isfinite(np.asarray(jnp.linalg.cholesky(jnp.asarray(Q))))), f"{what}: Q fails Cholesky ({dtype})"
    np.linalg.cholesky(Q.astype(np.float64))  # raises LinAlgError if not positive definite


def _check_public_api(p):
    """Every native and compat function on one problem."""
    N, T, D, L, K, dtype = p["N"], p["T"], p["D"], p["L"], p["K"], p["dtype"]
    Tz = T - L
    h = p["hyper"]
    # The native API is annotated with JAX arrays for `x`; compat (below) also takes NumPy ones.
    x, mask = jnp.asarray(p["x"]), jnp.asarray(p["mask"])
    key = jr.key(p["seed"])
    k_prior, k_sweep, k_states, k_sim = jr.split(key, 4)
    hp = ae.Hyperparams.from_scales(K, D, L, **h)

    model = ae.ARHMM.from_prior(hp, x, mask, key=k_prior)
    models = {"from_prior": model, "resample": model.resample(x, mask, key=k_sweep)}
    models["resample(states_only)"] = models["resample"].resample(x, mask, key=k_states, states_only=True)
    for what, m in models.items():
        q = m.params
        _check_params(q.Ab, q.Q, q.pi, q.betas, K, D, L, dtype, what)
        _check_states(m.states.z, N, Tz, K, what)
    for name in ("Ab", "Q", "pi", "betas"):  # states_only leaves the parameters alone
        np.testing.assert_array_equal(getattr(models["resample(states_only)"].params, name),
                                      getattr(models["resample"].params, name))

    m = models["resample"]
    lj = m.log_joint_likelihood(x, mask)
    assert set(lj) == {"x", "z"}
    for k, v in lj.items():
        _check_finite(v, (), dtype, f"log_joint_likelihood[{k}]")
    assert float(lj["z"]) <= 0.0
    ml = m.marginal_log_likelihood(x, mask)
    _check_finite(ml, (), dtype, "marginal_log_likelihood")
    # log p(x) sums p(x, z) over every path z, so it is at least log p(x, z) for the model's own
    # z: uniform first state, every transition counted (masked frames carry no emission but the
    # chain runs through them), emissions of the valid frames. Tolerance: worst-case rounding of
    # sums of N*T terms, 10 N T eps times the magnitudes involved.
    z, pi64 = np.asarray(m.states.z), np.asarray(m.params.pi, np.float64)
    log_pz = np.log(pi64[z[:, :-1], z[:, 1:]]).sum() - N * math.log(K)
    joint, ml = float(lj["x"]) + log_pz, float(ml)
    tol = 10 * N * T * _eps(dtype) * (abs(float(lj["x"])) + abs(log_pz) + abs(ml) + 1)
    assert ml >= joint - tol, f"marginal_log_likelihood {ml} < log p(x, z) {joint}"
    marg = np.asarray(m.stateseq_marginals(x, mask))
    _check_finite(marg, (N, Tz, K), dtype, "stateseq_marginals")
    assert np.all(marg >= 0) and np.all(np.abs(marg.sum(-1) - 1) <= 4 * K * _eps(dtype))
    cross = np.asarray(m.state_cross_likelihoods(x, mask))
    _check_finite(cross, (K, K), dtype, "state_cross_likelihoods")
    np.testing.assert_array_equal(np.diagonal(cross), 0.0)  # own dynamics minus own dynamics
    zs, xs = m.simulate(2, T, key=k_sim)
    _check_states(zs, 2, Tz, K, "simulate")
    assert np.asarray(xs).shape == (2, T, D) and np.asarray(xs).dtype == np.dtype(dtype)
    # Simulating from unstable dynamics (a companion matrix with spectral radius above 1, which a
    # posterior draw from few frames can have) diverges by design; stable dynamics must stay finite.
    if _max_spectral_radius(np.asarray(m.params.Ab, np.float64), D, L) < 0.99:
        assert np.all(np.isfinite(np.asarray(xs)))

    # compat
    trans = {"num_states": K, "alpha": h["alpha"], "gamma": h["gamma"], "kappa": h["kappa"]}
    ar = {"latent_dim": D, "nlags": L, "S_0_scale": h["S_0_scale"], "K_0_scale": h["K_0_scale"]}
    x, mask = p["x"], p["mask"]
    data = {"x": x, "mask": mask}
    d = compat.init_model(data, seed=p["seed"], trans_hypparams=trans, ar_hypparams=ar)
    d = compat.resample_model(data, **d)
    q, z = d["params"], d["states"]["z"]
    _check_params(q["Ab"], q["Q"], q["pi"], q["betas"], K, D, L, dtype, "compat.resample_model")
    _check_states(z, N, Tz, K, "compat.resample_model", dtype=jnp.zeros(0, int).dtype)  # the default int
    cm = np.asarray(compat.stateseq_marginals(x, mask, q["Ab"], q["Q"], q["pi"]))
    _check_finite(cm, (N, Tz, K), dtype, "compat.stateseq_marginals")
    assert np.all(np.abs(cm.sum(-1) - 1) <= 4 * K * _eps(dtype))
    clj = compat.log_joint_likelihood(x, mask, z, q["pi"], q["Ab"], q["Q"])
    assert set(clj) == {"x", "z"}
    for k, v in clj.items():
        _check_finite(v, (), dtype, f"compat.log_joint_likelihood[{k}]")
    _check_finite(compat.marginal_log_likelihood(mask, x, q["Ab"], q["Q"], q["pi"]), (), dtype,
                  "compat.marginal_log_likelihood")
    gz, gx = compat.generate_states(p["seed"], q["pi"], q["Ab"], q["Q"], 5)
    assert np.asarray(gz).shape == (5,) and np.asarray(gz).dtype == jnp.zeros(0, int).dtype
    assert np.all((np.asarray(gz) >= 0) & (np.asarray(gz) < K))
    assert np.asarray(gx).shape == (5, D) and np.asarray(gx).dtype == np.dtype(dtype)


def _run_public_api(p):
    with jax.enable_x64(p["dtype"] == "float64"):
        _check_public_api(p)


@settings(max_examples=VALUE_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(st.just(SHARED)))
@pytest.mark.extended
def test_public_api_over_masks_and_values(p):
    _run_public_api(p)


def _edge_problem():
    """The smallest problem of all: one sequence of `nlags + 1` frames (a single state-carrying
    frame, so no transition at all), one dimension, one state, in float64."""
    hyper = dict(alpha=5.7, gamma=1e3, kappa=1e4, S_0_scale=0.01, K_0_scale=10.0)
    return dict(N=1, T=2, D=1, L=1, K=1, dtype="float64", x=np.array([[[0.3], [-1.2]]]), mask=np.ones((1, 2)),
                valid=np.ones((1, 2), bool), hyper=hyper, seed=5)


@pytest.mark.slow  # every example compiles every function for a new shape (~20-30 s each)
@pytest.mark.extended
@settings(max_examples=SHAPE_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(p=_edge_problem())
@given(problems(shapes()))
def test_public_api_over_shapes(p):
    """Random shapes (a new draw at every run; hypothesis prints any failing example) plus the
    smallest one."""
    _run_public_api(p)


@pytest.mark.parametrize("kind", ["jax", "numpy"])
def test_bool_mask(kind):
    """`mask` may be boolean (`MaskLike = Real | Bool`), as a JAX or a NumPy array, also under
    `jax_numpy_dtype_promotion = "strict"` (set by tests/conftest.py), and means the same as the
    0/1 float mask."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 40, 2)), jnp.float32)
    valid = np.ones((3, 40), bool)
    valid[1, 33:] = False
    mask = jnp.asarray(valid) if kind == "jax" else valid
    float_mask = jnp.asarray(valid, jnp.float32)
    hp = ae.Hyperparams.from_scales(4, 2, 2)
    model = ae.ARHMM.from_prior(hp, x, mask, key=jr.key(0))
    np.testing.assert_array_equal(model.states.z, ae.ARHMM.from_prior(hp, x, float_mask, key=jr.key(0)).states.z)
    np.testing.assert_array_equal(model.resample(x, mask, key=jr.key(1)).params.pi,
                                  model.resample(x, float_mask, key=jr.key(1)).params.pi)
    np.testing.assert_array_equal(ae.run_chain(jr.key(2), model, x, mask, 2)[1].log_joint_x,
                                  ae.run_chain(jr.key(2), model, x, float_mask, 2)[1].log_joint_x)
    assert float(model.marginal_log_likelihood(x, mask)) == float(model.marginal_log_likelihood(x, float_mask))


# ---------------------------------------------------------------- invalid input

INVALID = {
    # case: (exception type, argument names of which the message must mention one)
    "x_2d": (ValueError, ["`x`"]),
    "mask_shape": (ValueError, ["`mask`"]),
    "int_x": (TypeError, ["`x`"]),
    "nan_in_valid_frame": (ValueError, ["`x`"]),
    "inf_in_valid_frame": (ValueError, ["`x`"]),
    "too_short": (ValueError, ["`nlags`"]),
    "all_zero_mask": (ValueError, ["`mask`"]),
    "mask_not_0_1": (ValueError, ["`mask`"]),
    "wrong_latent_dim": (ValueError, ["`latent_dim`"]),
}


def _corrupt(case, x, mask, L, draw):
    N, T, D = x.shape
    if case == "x_2d":
        return x[0], mask
    if case == "mask_shape":
        return x, draw(st.sampled_from([mask[:, :-1], mask[:1].repeat(N + 1, 0), mask[..., None], mask[0]]))
    if case == "int_x":
        return x.astype(draw(st.sampled_from(["int32", "bool"]))), mask
    if case in ("nan_in_valid_frame", "inf_in_valid_frame"):
        n, t = draw(st.sampled_from([tuple(v) for v in np.argwhere(mask > 0)]))  # any valid frame, lags included
        x = x.copy()
        x[n, t, draw(st.integers(0, D - 1))] = np.nan if case == "nan_in_valid_frame" else -np.inf
        return x, mask
    if case == "too_short":
        t = draw(st.integers(1, L))
        return x[:, :t], mask[:, :t]
    if case == "all_zero_mask":
        mask = mask.copy()
        mask[:, L:] = 0  # valid lag frames alone give nothing to fit
        return x, mask
    if case == "mask_not_0_1":
        mask = mask.astype(x.dtype)
        n, t = draw(st.integers(0, N - 1)), draw(st.integers(0, T - 1))
        mask[n, t] = draw(st.sampled_from([0.5, 2.0, -1.0, np.nan]))
        return x, mask
    if case == "wrong_latent_dim":
        return np.concatenate([x, x[..., :1]], axis=-1), mask
    raise AssertionError(case)


ENTRY_POINTS = [
    "ARHMM.from_prior", "ARHMM.resample", "ARHMM.resample(states_only)", "ARHMM.log_joint_likelihood",
    "ARHMM.marginal_log_likelihood", "ARHMM.stateseq_marginals", "ARHMM.state_cross_likelihoods",
    "run_chain", "compat.init_model", "compat.resample_model", "compat.stateseq_marginals",
    "compat.log_joint_likelihood", "compat.marginal_log_likelihood",
]


def _call(entry, x, mask, K, D, L, dtype):
    """Call one entry point on (possibly bad) data with a well-formed model. No model is
    drawn: the parameters are fixed arrays, so nothing is compiled before the checks run."""
    A = D * L + 1
    params = ae.Params(
        Ab=jnp.zeros((K, D, A), dtype), Q=jnp.broadcast_to(jnp.eye(D, dtype=dtype), (K, D, D)),
        pi=jnp.full((K, K), 1.0 / K, dtype), betas=jnp.full((K,), 1.0 / K, dtype),
    )
    hp = ae.Hyperparams.from_scales(K, D, L)
    N, T = np.shape(mask)[0], max(np.shape(x)[1] if np.ndim(x) > 1 else L + 1, L + 1)
    model = ae.ARHMM(hp, params, ae.States(z=jnp.zeros((max(N, 1), T - L), jnp.int32)))
    p = {"Ab": params.Ab, "Q": params.Q, "pi": params.pi, "betas": params.betas}
    trans = {"num_states": K, "alpha": 5.7, "gamma": 1e3, "kappa": 1e4}
    ar = {"latent_dim": D, "nlags": L, "S_0_scale": 0.01, "K_0_scale": 10.0}
    key = jr.key(0)
    if entry.startswith("compat."):
        x, mask = np.asarray(x), np.asarray(mask)
    else:
        x, mask = jnp.asarray(x), jnp.asarray(mask)
    if entry == "ARHMM.from_prior":
        return ae.ARHMM.from_prior(hp, x, mask, key=key)
    if entry == "ARHMM.resample":
        return model.resample(x, mask, key=key)
    if entry == "ARHMM.resample(states_only)":
        return model.resample(x, mask, key=key, states_only=True)
    if entry == "run_chain":
        return ae.run_chain(key, model, x, mask, 1)
    if entry.startswith("ARHMM."):
        return getattr(model, entry.split(".")[1])(x, mask)
    if entry == "compat.init_model":
        return compat.init_model({"x": x, "mask": mask}, seed=0, trans_hypparams=trans, ar_hypparams=ar)
    if entry == "compat.resample_model":
        hyp = compat.init_hyperparams(trans, ar)
        return compat.resample_model({"x": x, "mask": mask}, jr.PRNGKey(0), {"z": model.states.z}, p, hyp)
    if entry == "compat.stateseq_marginals":
        return compat.stateseq_marginals(x, mask, params.Ab, params.Q, params.pi)
    if entry == "compat.log_joint_likelihood":
        return compat.log_joint_likelihood(x, mask, model.states.z, params.pi, params.Ab, params.Q)
    if entry == "compat.marginal_log_likelihood":
        return compat.marginal_log_likelihood(mask, x, params.Ab, params.Q, params.pi)
    raise AssertionError(entry)


@contextlib.contextmanager
def _without_jaxtyping_hook():
    """What a user sees: the library's own checks, with the suite's jaxtyping import hook off
    (with it on, jaxtyping may reject a bad `x` first; tests/test_checks.py covers that)."""
    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", before)


@pytest.mark.parametrize("case", sorted(INVALID))
@settings(max_examples=INVALID_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_invalid_input_raises_naming_the_argument(case, data):
    """Every entry point, on every drawn shape, raises the documented error type for `case`,
    with a message naming the offending argument."""
    draw = data.draw
    N, T, D, L, K, dtype = draw(shapes())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=(N, T, D)).astype(dtype)
    mask = np.ones((N, T), dtype)
    error, names = INVALID[case]
    with jax.enable_x64(dtype == "float64"), _without_jaxtyping_hook():
        bad_x, bad_mask = _corrupt(case, x, mask, L, draw)
        for entry in ENTRY_POINTS:
            with pytest.raises((ValueError, TypeError)) as info:
                _call(entry, bad_x, bad_mask, K, D, L, dtype)
            assert info.type is error, f"{entry}: {info.type.__name__} ({info.value}), wanted {error.__name__}"
            assert any(name in str(info.value) for name in names), f"{entry}: message {str(info.value)!r}"
