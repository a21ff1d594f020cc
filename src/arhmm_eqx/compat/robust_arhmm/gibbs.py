"""Compatible with `jax_moseq.models.robust_arhmm.gibbs`: the robust sweep's blocks, on the native kernels.

The reference's prior of `nu` is `Gamma(1, rate 1)` and its sampler 100 random-walk steps on
`nu`; here the prior is read from `ar_hypparams` (`nu_shape`, `nu_rate`, default the
reference's) and the walk is on `log nu` (`_robust.resample_nu`): the same conditional is left
invariant, and a state with no frames walks on its prior instead of keeping its `nu`.
"""

import equinox as _eqx
import jax.numpy as _jnp
import jax.random as _jr

from ... import _gibbs, _robust
from ..._ar import resample_ar_params as _resample_ar_kernel
from ..._checks import check_data as _check_data
from ..._inference import (
    sample_stateseqs as _sample_stateseqs,
    smoothed_marginals as _smoothed_marginals,
    viterbi_paths as _viterbi_paths,
)
from ..._params import Params as _Params
from ..._states import States as _States
from .. import _convert


# The reference's settings of the nu sampler and prior, used where `ar_hypparams` does not say.
REFERENCE_NU_PRIOR = _convert.REFERENCE_NU_PRIOR
NU_MH_STEPS = REFERENCE_NU_PRIOR["nu_mh_steps"]


def _prepare(x, mask, Ab):
    x, mask = _check_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return x.astype(Ab.dtype), mask.astype(Ab.dtype)


def _nu(nu, Ab):
    return _jnp.asarray(nu).astype(Ab.dtype)


def resample_discrete_stateseqs(seed, x, mask, Ab, Q, nu, pi, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.gibbs.resample_discrete_stateseqs`: `z` given
    the Student-t emissions (`tau` integrated out). **Returns:** `z` `(N, T - nlags)`."""
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _stateseqs_jit(_convert.canonicalize_key(seed), x, mask, Ab, Q, nu, pi)


@_eqx.filter_jit
def _stateseqs_jit(key, x, mask, Ab, Q, nu, pi):
    z, _, _ = _sample_stateseqs(key, *_prepare(x, mask, Ab), Ab, Q, pi, nu=_nu(nu, Ab))
    return z.astype(_convert.default_int())


def stateseq_marginals(x, mask, Ab, Q, nu, pi, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.gibbs.stateseq_marginals`. **Returns:** `(N, T - nlags, K)`."""
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _marginals_jit(x, mask, Ab, Q, nu, pi)


@_eqx.filter_jit
def _marginals_jit(x, mask, Ab, Q, nu, pi):
    return _smoothed_marginals(*_prepare(x, mask, Ab), Ab, Q, pi, nu=_nu(nu, Ab))


def stateseq_mode(x, mask, Ab, Q, nu, pi, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.gibbs.stateseq_mode` (Viterbi). **Returns:** `z`."""
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _mode_jit(x, mask, Ab, Q, nu, pi)


@_eqx.filter_jit
def _mode_jit(x, mask, Ab, Q, nu, pi):
    z = _viterbi_paths(*_prepare(x, mask, Ab), Ab, Q, pi, fill_value=None, nu=_nu(nu, Ab))
    return z.astype(_convert.default_int())


def resample_tau(seed, x, mask, z, Ab, Q, nu, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.gibbs.resample_tau`: the per-frame precisions
    from their Gamma conditional; masked frames get 1. **Returns:** `tau` `(N, T - nlags)`."""
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _tau_jit(_convert.canonicalize_key(seed), x, mask, _jnp.asarray(z).astype(_jnp.int32), Ab, Q, nu)


@_eqx.filter_jit
def _tau_jit(key, x, mask, z, Ab, Q, nu):
    x, mask = _prepare(x, mask, Ab)
    return _robust.resample_tau(key, x, mask, z, Ab, Q, _nu(nu, Ab))


def resample_ar_params(seed, *, nlags, num_states, mask, x, z, tau, nu_0, S_0, M_0, K_0, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.gibbs.resample_ar_params`: `(Ab, Q)` from the
    precision-weighted MNIW conditional (each frame adds 1 to the degrees of freedom)."""
    x, mask = _convert.host_data(x, mask, nlags=nlags)
    nu_0, S_0, M_0, K_0 = (_convert.host_scalar(v) for v in (nu_0, S_0, M_0, K_0))
    return _ar_jit(_convert.canonicalize_key(seed), x, mask, _jnp.asarray(z).astype(_jnp.int32), tau, nu_0, S_0,
                   M_0, K_0, num_states=int(num_states), nlags=int(nlags))


@_eqx.filter_jit
def _ar_jit(key, x, mask, z, tau, nu_0, S_0, M_0, K_0, *, num_states, nlags):
    x, mask = _check_data(x, mask, nlags=nlags)
    nu_0, S_0, M_0, K_0 = (_jnp.asarray(v).astype(x.dtype) for v in (nu_0, S_0, M_0, K_0))
    return _resample_ar_kernel(key, x, mask, z, nu_0=nu_0, S_0=S_0, M_0=M_0, K_0=K_0, num_states=num_states,
                               nlags=nlags, tau=_jnp.asarray(tau).astype(x.dtype))


def resample_nu(seed, mask, z, tau, nu, num_states, nlags, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.gibbs.resample_nu`: Metropolis-Hastings on
    every state's `nu` given the precisions of its frames (see the module docstring). `kwargs`
    may hold `nu_shape`, `nu_rate`, `nu_mh_steps`, `nu_step_size`. **Returns:** `nu` `(K,)`."""
    s = {k: kwargs.get(k, v) for k, v in REFERENCE_NU_PRIOR.items() if k != "resample_nu"}
    return _nu_jit(_convert.canonicalize_key(seed), _jnp.asarray(mask), _jnp.asarray(z).astype(_jnp.int32),
                   _jnp.asarray(tau), _jnp.asarray(nu), _convert.host_scalar(s["nu_shape"]),
                   _convert.host_scalar(s["nu_rate"]), num_steps=int(s["nu_mh_steps"]),
                   step_size=float(s["nu_step_size"]))


@_eqx.filter_jit
def _nu_jit(key, mask, z, tau, nu, nu_shape, nu_rate, *, num_steps, step_size):
    dtype = nu.dtype
    mask = (mask > 0).astype(dtype)
    return _robust.resample_nu(key, tau.astype(dtype), mask, z, nu, nu_shape=_jnp.asarray(nu_shape, dtype),
                               nu_rate=_jnp.asarray(nu_rate, dtype), num_steps=num_steps, step_size=step_size)


def hyperparams_with_reference_prior(hypparams: dict):
    """Native `Hyperparams` of a robust reference `hypparams` dict, with the reference's prior and
    sampler settings of `nu` where `ar_hypparams` gives none."""
    ar = dict(hypparams["ar_hypparams"])
    ar.setdefault("nu_init", ar.get("nu", 4.0))
    return _convert.hyperparams_from_dict({**hypparams, "ar_hypparams": ar})


def resample_model(data, seed, states, params, hypparams, states_only=False, verbose=False, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.gibbs.resample_model`: one robust Gibbs sweep.

    **Returns:** `{"seed", "states", "params", "hypparams"}` with a fresh `seed`.

    !!! info
        The order is that of the native sweep (model.md, "Robust noise"): transitions, `(Ab, Q)`
        given `tau`, `nu`, then `z` with `tau` integrated out and `tau` given the new `z`, so the
        returned `tau` belongs to the returned `z` (the reference draws `tau` first, given the old
        `z`). Independent subkeys; equal to the reference's chain in distribution, not bit for bit.
    """
    hp = hyperparams_with_reference_prior(hypparams)
    x, mask = _convert.find_x(data, states, kwargs), _convert.find_mask(data)
    x, mask = _convert.host_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)
    Ab, Q, pi, betas, nu = _convert.require(params, ("Ab", "Q", "pi", "betas", "nu"), "`params`")
    (z,) = _convert.require(states, ("z",), "`states`")
    tau = states.get("tau")
    if tau is None:
        tau = _jnp.ones(_jnp.shape(z), _jnp.asarray(Ab).dtype)
    if verbose:
        print("Robust ARHMM: Resampling " + ("states" if states_only else "transitions, AR parameters, nu and states"))
    seed, new = _model_jit(_convert.canonicalize_key(seed), hp, Ab, Q, pi, betas, nu, z, tau, x, mask,
                           states_only=bool(states_only))
    return {"seed": seed, "states": {**states, "z": new["z"], "tau": new["tau"]},
            "params": {**params, **new["params"]}, "hypparams": hypparams}


@_eqx.filter_jit
def _model_jit(seed, hp, Ab, Q, pi, betas, nu, z, tau, x, mask, *, states_only):
    seed, key = _jr.split(seed)
    params = _Params(Ab=Ab, Q=Q, pi=pi, betas=betas, nu=_nu(nu, Ab))
    hp = hp.astype(Ab.dtype)
    states = _States(z=_jnp.asarray(z).astype(_jnp.int32), tau=_jnp.asarray(tau).astype(Ab.dtype))
    p, s, _ = _gibbs.gibbs_sweep(key, hp, params, states, *_prepare(x, mask, Ab),
                                 _gibbs.SweepOptions(states_only=states_only))
    out = {"z": s.z.astype(_convert.default_int()), "tau": s.tau}
    out["params"] = {} if states_only else {"Ab": p.Ab, "Q": p.Q, "pi": p.pi, "betas": p.betas, "nu": p.nu}
    return seed, out
