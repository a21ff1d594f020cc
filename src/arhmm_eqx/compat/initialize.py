"""Compatible with `jax_moseq.models.arhmm.initialize`.

Each function checks its arguments on the host, then runs as one compiled call.
"""

import equinox as _eqx
import jax as _jax
import jax.numpy as _jnp
import jax.random as _jr
import numpy as _np

from .._ar import init_ar_params as _init_ar_params_kernel
from .._checks import check_data as _check_data
from .._inference import sample_stateseqs as _resample_z_kernel
from .._initialize import init_params as _init_params_kernel
from . import _convert
from .gibbs import resample_discrete_stateseqs as resample_discrete_stateseqs  # as the reference module does


def init_ar_params(seed, *, num_states, nu_0, S_0, M_0, K_0, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.initialize.init_ar_params`.

    Draw `(Ab, Q)` for each of `num_states` states from `MNIW(nu_0, S_0, M_0, K_0)`, in the
    floating dtype of `S_0` (the default float dtype if `S_0` is not floating).

    **Returns:** `(Ab, Q)` of shapes `(num_states, latent_dim, ar_dim)` and `(num_states, latent_dim, latent_dim)`.
    """
    floating = hasattr(S_0, "dtype") and _jnp.issubdtype(S_0.dtype, _jnp.floating)
    dtype = S_0.dtype if floating else _jnp.result_type(float)
    nu_0, S_0, M_0, K_0 = (_convert.host_scalar(v) for v in (nu_0, S_0, M_0, K_0))
    return _init_ar_params_jit(
        _convert.canonicalize_key(seed), nu_0, S_0, M_0, K_0, num_states=int(num_states), dtype=_np.dtype(dtype)
    )


def init_states(seed, x, mask, params, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.initialize.init_states`.

    Draw `z` from its conditional given `x` and `params`. **Returns:** `{"z": z}`, `z` of the
    default integer dtype.
    """
    Ab, Q, pi = _convert.require(params, ("Ab", "Q", "pi"), "`params`")
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return {"z": _init_states_jit(_convert.canonicalize_key(seed), x, mask, Ab, Q, pi)}


def init_params(seed, trans_hypparams, ar_hypparams, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.initialize.init_params`.

    **Returns:** `{"Ab", "Q", "betas", "pi"}` drawn from the prior (model.md, "Initialisation").
    """
    hp = _convert.hyperparams_from_dict({"trans_hypparams": trans_hypparams, "ar_hypparams": ar_hypparams})
    return _init_model_jit(_convert.canonicalize_key(seed), hp, None, None, None)["params"]


def init_hyperparams(trans_hypparams, ar_hypparams, **kwargs):
    """Compatible with `jax_moseq.models.arhmm.initialize.init_hyperparams`.

    Copies both dicts, keeping every key and value as given, and adds to `ar_hypparams`
    `S_0 = S_0_scale * I_D`, `K_0 = K_0_scale * I_A`, the random-walk `M_0` (arrays of the
    default float dtype), `num_states` (from `trans_hypparams`) and `nu_0 = latent_dim + 2`
    (a Python int, as in the reference). The values are checked (positive concentrations and
    scales, sizes >= 1). **Returns:** `{"trans_hypparams", "ar_hypparams"}`.
    """
    trans_hypparams, ar_hypparams = dict(trans_hypparams), dict(ar_hypparams)
    (num_states,) = _convert.require(trans_hypparams, ("num_states",), "`trans_hypparams`")
    d, nlags, S_0_scale, K_0_scale = _convert.require(
        ar_hypparams, ("latent_dim", "nlags", "S_0_scale", "K_0_scale"), "`ar_hypparams`"
    )
    # the checks of `Hyperparams` (sizes, positive scales and concentrations), on the host
    _convert.hyperparams_from_dict({"trans_hypparams": trans_hypparams, "ar_hypparams": ar_hypparams})
    dtype = _jnp.result_type(float)
    D, L = int(d), int(nlags)
    S_0 = _np.asarray(S_0_scale) * _np.eye(D)
    K_0 = _np.asarray(K_0_scale) * _np.eye(D * L + 1)
    M_0 = _np.zeros((D, D * L + 1))
    M_0[:, (L - 1) * D : L * D] = _np.eye(D)
    ar_hypparams.update(
        S_0=_jax.device_put(S_0.astype(dtype)),
        K_0=_jax.device_put(K_0.astype(dtype)),
        M_0=_jax.device_put(M_0.astype(dtype)),
        num_states=num_states,
        nu_0=d + 2,
    )
    return {"trans_hypparams": trans_hypparams, "ar_hypparams": ar_hypparams}


def init_model(
    data=None,
    states=None,
    params=None,
    hypparams=None,
    seed=_convert.DEFAULT_SEED,
    trans_hypparams=None,
    ar_hypparams=None,
    verbose=False,
    **kwargs,
):
    """Compatible with `jax_moseq.models.arhmm.initialize.init_model`.

    As in the reference, a given `hypparams` is returned with its 0-d entries as Python
    scalars and its other entries as arrays, and given `params` and `states` are put on the
    device. Missing parameters are drawn from the prior and missing states from their
    conditional given `data` (one compiled call). **Returns:** `{"seed", "states", "params",
    "hypparams"}`.

    !!! info
        Parameters and states are drawn from independent subkeys of `seed` (the
        reference reuses one key); the result is equal in distribution, not bit for bit.
    """
    if not (data or states):
        raise ValueError("init_model needs `data` (with `x` and `mask`) or `states`.")
    if hypparams is None:
        if not (trans_hypparams and ar_hypparams):
            raise ValueError(
                "Pass either `hypparams` or both `trans_hypparams` and `ar_hypparams` to init_model."
            )
        if verbose:
            print("ARHMM: Initializing hyperparameters")
        hypparams = init_hyperparams(trans_hypparams, ar_hypparams)
    else:
        hypparams = _convert.hypparams_as_scalars(hypparams)
    seed = _convert.canonicalize_key(seed)
    hp = _convert.hyperparams_from_dict(hypparams)
    x = mask = None
    if states is None:
        x, mask = _convert.find_x(data, None, kwargs), _convert.find_mask(data)
        x, mask = _convert.host_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)  # before any drawing
    if params is not None:
        params = _jax.device_put(params)
    if states is not None:
        states = _jax.device_put(states)
    if params is None or states is None:
        if verbose:
            drawn_names = [name for name, given in (("parameters", params), ("states", states)) if given is None]
            print("ARHMM: Initializing " + " and ".join(drawn_names))
        drawn = _init_model_jit(seed, hp, params, x, mask)
        params = drawn["params"] if params is None else params
        states = {"z": drawn["z"]} if states is None else states
    return {"seed": seed, "states": states, "params": params, "hypparams": hypparams}


def _as_default_int(z):
    return z.astype(_convert.default_int())


@_eqx.filter_jit
def _init_ar_params_jit(key, nu_0, S_0, M_0, K_0, *, num_states, dtype):
    nu_0, S_0, M_0, K_0 = (_jnp.asarray(v, dtype) for v in (nu_0, S_0, M_0, K_0))
    return _init_ar_params_kernel(key, nu_0=nu_0, S_0=S_0, M_0=M_0, K_0=K_0, num_states=num_states)


@_eqx.filter_jit
def _init_states_jit(key, x, mask, Ab, Q, pi):
    x, mask = _check_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _as_default_int(_resample_z_kernel(key, x.astype(Ab.dtype), mask.astype(Ab.dtype), Ab, Q, pi)[0])


@_eqx.filter_jit
def _init_model_jit(key, hp, params, x, mask):
    """Parameters from the prior unless given, then `z` given `x` when `x` is given."""
    key_params, key_states = _jr.split(key)
    out = {}
    if params is None:
        Ab, Q, betas, pi = _init_params_kernel(
            key_params, alpha=hp.alpha, gamma=hp.gamma, kappa=hp.kappa, nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0,
            K_0=hp.K_0, num_states=hp.num_states,
        )
        out["params"] = {"Ab": Ab, "Q": Q, "betas": betas, "pi": pi}
    else:
        Ab, Q, pi = params["Ab"], params["Q"], params["pi"]
    if x is not None:
        x, mask = _check_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)
        z = _resample_z_kernel(key_states, x.astype(Ab.dtype), mask.astype(Ab.dtype), Ab, Q, pi)[0]
        out["z"] = _as_default_int(z)
    return out
