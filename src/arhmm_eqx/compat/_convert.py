"""Conversion between the reference dict model and `ARHMM`, and argument handling at the compat boundary.

Everything here runs on the host without dispatching JAX operations (NumPy, `jax.device_put`
and attribute reads only), so that a compat function is one compiled call when warm.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._checks import check_positive, validate_data
from .._hyperparams import Hyperparams, check_sizes, default_M_0
from .._lags import ar_dim
from .._model import ARHMM
from .._params import Params
from .._robust import RobustPrior
from .._states import States


DEFAULT_SEED = jr.PRNGKey(0)  # `init_model`'s default seed, as in the reference


def canonicalize_key(seed):
    """Accept an `int` (as the reference does) or a JAX key (typed or raw `uint32[2]`)."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return jr.PRNGKey(seed)
    if seed is None:
        raise ValueError("`seed` must be an int or a JAX random key; got None.")
    return seed


def default_int():
    """The default integer dtype of the current mode (int64 with `jax_enable_x64`), as the reference returns."""
    return jnp.result_type(int)


def nlags_of(Ab) -> int:
    return (Ab.shape[2] - 1) // Ab.shape[1]


def require(d: dict, keys, where: str):
    """`d[k]` for each of `keys`, with an error naming the missing keys instead of a bare `KeyError`."""
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{where} is missing the key(s) {missing}; it has keys {sorted(d)}.")
    return tuple(d[k] for k in keys)


def host_data(x, mask, *, nlags: int, latent_dim: int | None = None):
    """`validate_data` (host checks) for compat functions; `x` and `mask` go to the `jit` as given."""
    return validate_data(x, mask, nlags=nlags, latent_dim=latent_dim)


def host_scalar(v):
    """Python and NumPy scalars as NumPy arrays, so that `filter_jit` traces them (no recompilation
    when a value changes); arrays are left as they are (cast inside the `jit`)."""
    if isinstance(v, (bool, int, float, np.generic)):
        return np.asarray(v)
    return v


def _float_leaf(v, dtype):
    """A strongly typed JAX array of a floating dtype (the given one if floating, else `dtype`),
    made without running a JAX operation."""
    if isinstance(v, jax.Array) and jnp.issubdtype(v.dtype, jnp.floating):
        return v
    arr = np.asarray(v)
    if not jnp.issubdtype(arr.dtype, jnp.floating) or not isinstance(v, (np.ndarray, jax.Array)):
        arr = arr.astype(dtype)
    return jax.device_put(arr)


def hyperparams_from_dict(hypparams: dict) -> Hyperparams:
    """`Hyperparams` from the reference's `{"trans_hypparams": ..., "ar_hypparams": ...}`.

    Explicit `S_0`, `M_0`, `K_0`, `nu_0` in `ar_hypparams` (as `init_hyperparams` writes them)
    win over `S_0_scale` and `K_0_scale`. Built on the host: no JAX operation is dispatched.
    """
    trans, ar = require(hypparams, ("trans_hypparams", "ar_hypparams"), "`hypparams`")
    K, alpha, gamma, kappa = require(trans, ("num_states", "alpha", "gamma", "kappa"), "`trans_hypparams`")
    D, L = require(ar, ("latent_dim", "nlags"), "`ar_hypparams`")
    K, D, L = int(K), int(D), int(L)
    check_sizes(num_states=K, latent_dim=D, nlags=L)
    A = ar_dim(D, L)
    if all(k in ar for k in ("S_0", "M_0", "K_0", "nu_0")):
        S_0, M_0, K_0, nu_0 = ar["S_0"], ar["M_0"], ar["K_0"], ar["nu_0"]
    else:
        S_scale, K_scale = require(ar, ("S_0_scale", "K_0_scale"), "`ar_hypparams` (or explicit S_0, M_0, K_0, nu_0)")
        check_positive("S_0_scale", S_scale)
        check_positive("K_0_scale", K_scale)
        S_0 = ar.get("S_0", float(np.asarray(S_scale)) * np.eye(D))
        K_0 = ar.get("K_0", float(np.asarray(K_scale)) * np.eye(A))
        M_0 = ar.get("M_0", default_M_0(D, L))
        nu_0 = ar.get("nu_0", D + 2)
    dtype = jnp.result_type(float)
    leaves = {name: _float_leaf(v, dtype) for name, v in
              (("alpha", alpha), ("gamma", gamma), ("kappa", kappa), ("nu_0", nu_0), ("S_0", S_0), ("M_0", M_0),
               ("K_0", K_0))}
    if "nu_init" in ar:  # the reference's robust hyperparameters (`init_robust_hyperparams`)
        leaves["robust"] = robust_prior_from_dict(ar, dtype)
    return Hyperparams(num_states=K, latent_dim=D, nlags=L, **leaves)


# The keys of `ar_hypparams` that hold a robust model's prior of `nu`: the reference's `nu_init`
# (its start value), and this library's prior and sampler settings. A reference dict has none of
# the latter: they then take the reference's values, its prior Gamma(1, rate 1) and 100 steps per
# sweep (here on log nu, of standard deviation 0.1), with nu resampled.
ROBUST_KEYS = ("nu_init", "nu_shape", "nu_rate", "resample_nu", "nu_mh_steps", "nu_step_size")
REFERENCE_NU_PRIOR = {"nu_shape": 1.0, "nu_rate": 1.0, "resample_nu": True, "nu_mh_steps": 100, "nu_step_size": 0.1}


def robust_prior_from_dict(ar: dict, dtype) -> RobustPrior:
    """`RobustPrior` from the robust keys of `ar_hypparams` (missing ones: `REFERENCE_NU_PRIOR`)."""
    get = lambda k: np.asarray(ar.get(k, REFERENCE_NU_PRIOR.get(k)))
    return RobustPrior(nu_init=_float_leaf(get("nu_init"), dtype), nu_shape=_float_leaf(get("nu_shape"), dtype),
                       nu_rate=_float_leaf(get("nu_rate"), dtype), resample_nu=bool(get("resample_nu")),
                       nu_mh_steps=int(get("nu_mh_steps")), nu_step_size=float(get("nu_step_size")))


def robust_prior_to_dict(robust: RobustPrior) -> dict:
    """The robust keys of `ar_hypparams` (`ROBUST_KEYS`) as Python scalars."""
    return {k: (v.item() if hasattr(v, "item") else v) for k in ROBUST_KEYS for v in [getattr(robust, k)]}


def hypparams_as_scalars(hypparams: dict) -> dict:
    """The reference's treatment of a given `hypparams` in `init_model`: 0-d leaves come back
    as Python scalars and the other leaves as device arrays.

    Python scalars are kept as they are (the reference passes them through a device array of
    the default dtype, so a float may come back rounded to float32; the type is the same).
    """
    def convert(leaf):
        if isinstance(leaf, (bool, int, float, complex)):
            return leaf
        arr = jax.device_put(leaf)
        return arr.item() if arr.shape == () else arr

    return jax.tree_util.tree_map(convert, hypparams)


def find_x(data: dict | None, states: dict | None, kwargs: dict | None = None):
    """The trajectory `x`: in `data` for an AR-HMM, in `states` for models built on it (an SLDS)."""
    for source in (states, data, kwargs or {}):
        if source is not None and "x" in source:
            return source["x"]
    raise ValueError("`x` was found neither in `data` nor in `states`; pass the trajectories as `x`.")


def find_mask(data: dict | None, kwargs: dict | None = None):
    """`data["mask"]`, with an error that names `mask` when it is missing."""
    for source in (data or {}, kwargs or {}):
        if "mask" in source:
            return source["mask"]
    keys = sorted(data) if data is not None else []
    raise ValueError(
        f"the data dict must contain `mask` (N, T), 1 for valid frames and 0 for padding; it has keys {keys}. "
        "For unpadded data pass `mask=np.ones(x.shape[:2])`."
    )


def model_from_dict(model: dict, data: dict | None = None) -> ARHMM:
    """`ARHMM` from a reference dict model `{"seed", "states", "params", "hypparams"}`."""
    p, s = model["params"], model["states"]
    params = Params(**{k: jax.device_put(p[k]) for k in ("Ab", "Q", "pi", "betas")})
    z = s["z"]
    if np.dtype(z.dtype) != np.int32:
        z = np.asarray(z).astype(np.int32)
    hp = hyperparams_from_dict(model["hypparams"])
    groups = s.get("groups")
    if groups is not None:  # a model with per-group transition matrices (as `model_to_dict` writes it)
        hp = Hyperparams(num_states=hp.num_states, latent_dim=hp.latent_dim, nlags=hp.nlags, alpha=hp.alpha,
                         gamma=hp.gamma, kappa=hp.kappa, nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0, K_0=hp.K_0,
                         num_groups=int(np.shape(p["pi"])[0]), robust=hp.robust)
        groups = jax.device_put(np.asarray(groups).astype(np.int32))
    tau = None
    if hp.robust is not None:  # a robust model: `nu` and the precisions `tau` (ones if not given)
        params = Params(Ab=params.Ab, Q=params.Q, pi=params.pi, betas=params.betas, nu=jax.device_put(p["nu"]))
        tau = s["tau"] if "tau" in s else np.ones(np.shape(z), np.asarray(params.Ab).dtype)
        tau = jax.device_put(tau)
    return ARHMM(hp, params, States(z=jax.device_put(z), groups=groups, tau=tau))


def model_to_dict(model: ARHMM, seed) -> dict:
    """The reference dict model of an `ARHMM`, with `seed` (a `jax.random.PRNGKey`-style key, or
    a typed key, stored as its raw data) as the key the reference's next `resample_model` uses.

    Scalar hyperparameters are Python scalars (as `init_model` hands them back) and `z`
    has the default integer dtype.
    """
    p, hp = model.params, model.hyperparams
    scalar = lambda a: np.asarray(a).item()
    S_0, K_0 = np.asarray(hp.S_0), np.asarray(hp.K_0)
    trans = {"num_states": hp.num_states, "alpha": scalar(hp.alpha), "gamma": scalar(hp.gamma),
             "kappa": scalar(hp.kappa)}
    ar = {"latent_dim": hp.latent_dim, "nlags": hp.nlags, "S_0_scale": S_0[0, 0].item(),
          "K_0_scale": K_0[0, 0].item(), "S_0": hp.S_0, "M_0": hp.M_0, "K_0": hp.K_0, "nu_0": scalar(hp.nu_0),
          "num_states": hp.num_states}
    z = model.states.z
    if z.dtype != default_int():
        z = jax.device_put(np.asarray(z).astype(default_int()))
    states = {"z": z}
    params = {"Ab": p.Ab, "Q": p.Q, "pi": p.pi, "betas": p.betas}
    if hp.num_groups is not None:  # per-group transition matrices: pi is (G, K, K)
        trans["num_groups"] = hp.num_groups
        states["groups"] = model.states.groups
    if hp.robust is not None:  # a robust model: nu, tau and the prior of nu
        ar.update(robust_prior_to_dict(hp.robust))
        states["tau"] = model.states.tau
        params["nu"] = p.nu
    return {
        "seed": canonicalize_key(seed),
        "states": states,
        "params": params,
        "hypparams": {"trans_hypparams": trans, "ar_hypparams": ar},
    }
