"""Compatible with `jax_moseq.models.robust_arhmm.log_prob` (Student-t AR noise, model.md "Robust noise")."""

import equinox as _eqx
import jax as _jax
import jax.numpy as _jnp
import numpy as _np

from ... import _log_prob, _robust
from ..._ar import ar_log_likelihoods as _ar_log_likelihoods
from ..._checks import check_data as _check_data
from ..._inference import marginal_log_likelihood as _marginal
from .. import _convert
from ..log_prob import (
    _changepoint_counts,
    discrete_stateseq_log_prob as discrete_stateseq_log_prob,  # as the reference imports it
)


def robust_ar_log_likelihood(x, params):
    """Compatible with `jax_moseq.models.robust_arhmm.log_prob.robust_ar_log_likelihood`.

    `params = (Ab, Q, nu)` of one state: `Ab` `(D, A)`, `Q` `(D, D)`, `nu` a scalar.

    **Returns:** the multivariate-t log-density of every frame `t >= nlags`, shape `(..., T - nlags)`.
    """
    Ab, Q, nu = params
    x = _jnp.asarray(x)
    Ab = _jnp.asarray(Ab)
    batch = x.shape[:-2]
    x3 = x.reshape((-1,) + x.shape[-2:])
    z = _jnp.zeros((x3.shape[0], x3.shape[1] - _convert.nlags_of(Ab[None])), _jnp.int32)
    out = _log_prob.continuous_stateseq_log_prob(x3, z, Ab[None], _jnp.asarray(Q)[None],
                                                 _jnp.asarray(nu, Ab.dtype).reshape(1))
    return out.reshape(batch + out.shape[-1:])


def tau_posterior_params(x, z, Ab, Q, nu, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.log_prob.tau_posterior_params`.

    **Returns:** `(a, b)`, shape `(N, T - nlags)` each: `tau | ... ~ Gamma(a, rate b)`.
    """
    return _tau_params_jit(_jnp.asarray(x), _jnp.asarray(z).astype(_jnp.int32), Ab, Q, nu)


@_eqx.filter_jit
def _tau_params_jit(x, z, Ab, Q, nu):
    return _robust.tau_conditional(x.astype(Ab.dtype), z, Ab, Q, nu)


def nu_log_posterior(nu, n_obs, mean_tau, mean_log_tau, alpha=1.0):
    """Compatible with `jax_moseq.models.robust_arhmm.log_prob.nu_log_posterior`: the log density
    of `nu` given `n_obs` precisions with the given means, under the prior `Gamma(alpha, rate alpha)`
    (up to a constant)."""
    nu = _jnp.asarray(nu)
    dtype = nu.dtype if _jnp.issubdtype(nu.dtype, _jnp.floating) else _jnp.result_type(float)
    nu = nu.astype(dtype)
    n = _jnp.broadcast_to(_jnp.asarray(n_obs, dtype), nu.shape)
    mt, mlt = (_jnp.broadcast_to(_jnp.asarray(v, dtype), nu.shape) for v in (mean_tau, mean_log_tau))
    return _robust.nu_log_target(nu, n, n * mt, n * mlt, nu_shape=_jnp.asarray(alpha, dtype),
                                 nu_rate=_jnp.asarray(alpha, dtype))


def continuous_stateseq_log_prob(x, z, Ab, Q, nu, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.log_prob.continuous_stateseq_log_prob`.

    **Returns:** `log StudentT(x[t] | nu[z], Ab[z] u_t, Q[z])`, shape `(..., T - nlags)` (`tau` integrated out).
    """
    return _log_prob.continuous_stateseq_log_prob(_jnp.asarray(x), _jnp.asarray(z).astype(_jnp.int32), Ab, Q,
                                                  _jnp.asarray(nu))


def log_joint_likelihood(x, mask, z, pi, Ab, Q, nu, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.log_prob.log_joint_likelihood`.

    **Returns:** `{"z": ..., "x": ...}` with the masking of model.md (the Gaussian compat
    function's counting of transitions; see [Compatibility](compat.md)).
    """
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _joint_jit(x, mask, _jnp.asarray(z).astype(_jnp.int32), pi, Ab, Q, nu)


def _prepare(x, mask, Ab):
    x, mask = _check_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return x.astype(Ab.dtype), mask.astype(Ab.dtype)


@_eqx.filter_jit
def _joint_jit(x, mask, z, pi, Ab, Q, nu):
    return _log_prob.log_joint_likelihood(*_prepare(x, mask, Ab), z, pi, Ab, Q, _jnp.asarray(nu, Ab.dtype))


def model_likelihood(data, states, params, hypparams=None, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.log_prob.model_likelihood` (`tau` in `states` is ignored)."""
    x = _convert.find_x(data, states, kwargs)
    return log_joint_likelihood(x, _convert.find_mask(data), states["z"], params["pi"], params["Ab"], params["Q"],
                                params["nu"])


def state_cross_likelihoods(params, states, mask, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.log_prob.state_cross_likelihoods` (Student-t
    log-likelihoods; runs counted as the reference does, see the Gaussian compat function)."""
    x, z = states["x"], states["z"]
    Ab, Q, nu = params["Ab"], params["Q"], params["nu"]
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _np.asarray(_cross_jit(x, mask, _jnp.asarray(z).astype(_jnp.int32), Ab, Q, nu), dtype=_np.float64)


@_eqx.filter_jit
def _cross_jit(x, mask, z, Ab, Q, nu, epsilon=1e-6):
    x, mask = _prepare(x, mask, Ab)
    K = Ab.shape[0]
    ll = _ar_log_likelihoods(x, mask, Ab, Q, _jnp.asarray(nu, Ab.dtype))  # (N, Tz, K); masked rows are zero
    summed = _jax.ops.segment_sum(ll.reshape(-1, K), z.reshape(-1), num_segments=K)
    counts = _changepoint_counts(z, mask[:, _convert.nlags_of(Ab):] > 0, K).astype(summed.dtype)
    return (summed - _jnp.diagonal(summed)[:, None]) / (counts[:, None] + epsilon)


def marginal_log_likelihood(mask, x, Ab, Q, pi, nu, **kwargs):
    """Compatible with `jax_moseq.models.robust_arhmm.log_prob.marginal_log_likelihood`: `log p(x | Ab, Q, nu, pi)`."""
    x, mask = _convert.host_data(x, mask, nlags=_convert.nlags_of(Ab), latent_dim=Ab.shape[1])
    return _marginal_jit(x, mask, Ab, Q, pi, nu)


@_eqx.filter_jit
def _marginal_jit(x, mask, Ab, Q, pi, nu):
    return _marginal(*_prepare(x, mask, Ab), Ab, Q, pi, nu=_jnp.asarray(nu, Ab.dtype))
