"""Robust (Student-t) AR noise: the prior of `nu`, the `tau` and `nu` blocks and the t log-density.

model.md, "Robust noise": `x[t] | z, tau ~ Normal(Ab[z] u_t, Q[z] / tau[t])` with
`tau[t] | z ~ Gamma(nu[z] / 2, rate nu[z] / 2)`, so that `x[t] | z ~ StudentT(nu[z], Ab[z] u_t, Q[z])`.
Kernels here take the key first and hold no state; `RobustPrior` is the `Hyperparams.robust` field.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax import lax
from jax.scipy.special import gammaln

from ._checks import check_int, check_positive
from ._custom_types import Array, ArrayLike, Float, Int, PRNGKeyArray
from ._distributions import sample_log_gamma
from ._lags import augmented_regressors
from ._linalg import PRECISION, psd_cholesky, solve_lower


# The sweep's robust subkeys come from `fold_in(key, ROBUST_KEY_TAG)`, not from the split
# of the Gaussian sweep's key into three, so a Gaussian model's draws do not change.
ROBUST_KEY_TAG = 0x7A0


def _as_float_array(x: ArrayLike) -> Array:
    arr = jnp.asarray(x)
    dtype = arr.dtype if jnp.issubdtype(arr.dtype, jnp.floating) else jnp.result_type(float)
    return jnp.asarray(arr, dtype=dtype)


class RobustPrior(eqx.Module):
    """Student-t AR noise (model.md, "Robust noise"): how `nu` starts, its prior and its sampler.

    **Fields:**

    - `nu_init`: the start value of every state's degrees of freedom `nu` (`ARHMM.from_prior`),
      and its value for good when `resample_nu` is False.
    - `nu_shape`, `nu_rate`: the prior `nu_k ~ Gamma(nu_shape, rate nu_rate)`, independent per
      state (used only when `resample_nu`).
    - `resample_nu` (static): draw `nu` in the sweep by Metropolis-Hastings (True) or keep it fixed.
    - `nu_mh_steps` (static): Metropolis-Hastings steps per sweep and state.
    - `nu_step_size` (static): standard deviation of the random walk on `log nu`.

    The defaults (`nu_shape = 2`, `nu_rate = 0.2`: prior mean 10, mode 5) put most weight on
    the heavy tails that outliers need while allowing nearly Gaussian states.
    """

    nu_init: Float[Array, ""] = eqx.field(converter=_as_float_array, default=4.0)
    nu_shape: Float[Array, ""] = eqx.field(converter=_as_float_array, default=2.0)
    nu_rate: Float[Array, ""] = eqx.field(converter=_as_float_array, default=0.2)
    resample_nu: bool = eqx.field(static=True, default=True)
    nu_mh_steps: int = eqx.field(static=True, default=10)
    nu_step_size: float = eqx.field(static=True, default=0.5)

    def __check_init__(self):
        for name in ("nu_init", "nu_shape", "nu_rate"):
            if getattr(self, name).shape != ():
                raise ValueError(f"`RobustPrior.{name}` must be a scalar; got shape {getattr(self, name).shape}.")
            check_positive(f"RobustPrior.{name}", getattr(self, name))
        if not isinstance(self.resample_nu, bool):
            raise TypeError(f"`RobustPrior.resample_nu` must be True or False; got {self.resample_nu!r}.")
        check_int("RobustPrior.nu_mh_steps", self.nu_mh_steps)
        if not isinstance(self.nu_step_size, (int, float)) or not self.nu_step_size > 0:
            raise ValueError(f"`RobustPrior.nu_step_size` must be a positive float; got {self.nu_step_size!r}.")

    def astype(self, dtype) -> "RobustPrior":
        """The same prior with its array leaves in `dtype` (itself when they are)."""
        names = ("nu_init", "nu_shape", "nu_rate")
        if all(getattr(self, k).dtype == dtype for k in names):
            return self
        return eqx.tree_at(lambda r: [getattr(r, k) for k in names], self,
                           [getattr(self, k).astype(dtype) for k in names])


def student_t_log_density(
    sq: Float[Array, "*batch"], log_norm: Float[Array, "*#batch"], nu: Float[Array, "*#batch"], latent_dim: int
) -> Float[Array, "*batch"]:
    """`log StudentT(x | nu_k, mean, Q_k)` from the whitened squared residual `sq` (e.g. `(..., K)`
    against `(K,)` per-state `log_norm` and `nu`, or per frame; they broadcast).

    `log_norm = -log det chol(Q_k) - D/2 log(2 pi)` is the Gaussian normaliser of
    `_ar.whitened_transforms`; the t density is

        log_norm + lgamma((nu + D)/2) - lgamma(nu/2) - D/2 log(nu/2) - (nu + D)/2 log1p(sq / nu).
    """
    D = latent_dim
    half = 0.5 * nu
    const = gammaln(half + 0.5 * D) - gammaln(half) - 0.5 * D * jnp.log(half)
    return log_norm + const - (half + 0.5 * D) * jnp.log1p(sq / nu)


def assigned_squared_residuals(
    x: Float[Array, "N T D"], z: Int[Array, "N Tz"], Ab: Float[Array, "K D A"], Q: Float[Array, "K D D"]
) -> Float[Array, "N Tz"]:
    """`r' Q[z]^{-1} r` with `r = x[t] - Ab[z[t]] u_t`, for every frame `t >= nlags` under its own state.

    One small product per frame against its state's whitened transform `[-L^{-1} Ab, L^{-1}]`
    (`L = chol(Q)`), in chunks of frames, so nothing of size `frames x K` is formed.
    """
    K, D, A = Ab.shape
    nlags = (A - 1) // D
    N, T, _ = x.shape
    Tz = T - nlags
    L = psd_cholesky(Q)
    L_inv = solve_lower(L, jnp.broadcast_to(jnp.eye(D, dtype=Q.dtype), (K, D, D)))
    W = jnp.concatenate([-jnp.matmul(L_inv, Ab, precision=PRECISION), L_inv], axis=-1)  # (K, D, A + D)
    v = augmented_regressors(x, nlags).reshape(N * Tz, A + D)

    def one(args):
        v_t, z_t = args
        r = jnp.matmul(W[z_t], v_t, precision=PRECISION)
        return jnp.sum(r * r)

    batch = max(1, min(N * Tz, 2**20 // ((A + D) * D)))
    return lax.map(one, (v, z.reshape(-1)), batch_size=batch).reshape(N, Tz)


def tau_conditional(
    x: Float[Array, "N T D"],
    z: Int[Array, "N Tz"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    nu: Float[Array, " K"],
) -> tuple[Float[Array, "N Tz"], Float[Array, "N Tz"]]:
    """`(shape, rate)` of `tau[t] | x, z, Ab, Q, nu ~ Gamma((nu + D)/2, rate (nu + r2)/2)`, `nu = nu[z[t]]`."""
    D = Ab.shape[1]
    r2 = assigned_squared_residuals(x, z, Ab, Q)
    nu_z = nu[z]
    return 0.5 * (nu_z + D), 0.5 * (nu_z + r2)


def resample_tau(
    key: PRNGKeyArray,
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    z: Int[Array, "N Tz"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    nu: Float[Array, " K"],
) -> Float[Array, "N Tz"]:
    """Draw every valid frame's precision from its Gamma conditional (`tau_conditional`); masked frames get 1.

    A masked frame's `tau` touches nothing (its frame is outside the AR statistics and the
    `nu` statistics), so it is marginalised; 1 is a placeholder.
    """
    D = Ab.shape[1]
    nlags = (Ab.shape[2] - 1) // D
    shape, rate = tau_conditional(x, z, Ab, Q, nu)
    tau = jnp.exp(sample_log_gamma(key, shape) - jnp.log(rate))
    return jnp.where(mask[:, nlags:] > 0, tau, jnp.ones((), tau.dtype))


def init_tau(mask: Float[Array, "N T"], nlags: int, dtype) -> Float[Array, "N Tz"]:
    """Ones: the precisions before any draw (a placeholder that a draw replaces)."""
    return jnp.ones(mask[:, nlags:].shape, dtype)


def tau_statistics(
    tau: Float[Array, "N Tz"], mask: Float[Array, "N T"], z: Int[Array, "N Tz"], *, num_states: int
) -> tuple[Float[Array, " K"], Float[Array, " K"], Float[Array, " K"]]:
    """Per state, over its valid frames: the count, `sum tau` and `sum log tau`."""
    nlags = mask.shape[1] - z.shape[1]
    K = num_states
    valid = mask[:, nlags:] > 0
    seg = jnp.where(valid, z, K).reshape(-1)
    tau = jnp.where(valid, tau, jnp.ones((), tau.dtype)).reshape(-1)
    ones = jnp.ones_like(tau)
    total = lambda v: jax.ops.segment_sum(v, seg, num_segments=K + 1)[:K]
    return total(ones), total(tau), total(jnp.log(tau))


def nu_log_target(
    nu: Float[Array, " K"],
    count: Float[Array, " K"],
    sum_tau: Float[Array, " K"],
    sum_log_tau: Float[Array, " K"],
    *,
    nu_shape: Float[Array, ""],
    nu_rate: Float[Array, ""],
) -> Float[Array, " K"]:
    """`log p(nu_k | tau, z)` up to a constant: the Gamma prior times the Gamma(nu/2, nu/2)
    densities of the state's precisions."""
    half = 0.5 * nu
    log_prior = (nu_shape - 1.0) * jnp.log(nu) - nu_rate * nu
    log_lik = count * (half * jnp.log(half) - gammaln(half)) + (half - 1.0) * sum_log_tau - half * sum_tau
    return log_prior + log_lik


def resample_nu(
    key: PRNGKeyArray,
    tau: Float[Array, "N Tz"],
    mask: Float[Array, "N T"],
    z: Int[Array, "N Tz"],
    nu: Float[Array, " K"],
    *,
    nu_shape: Float[Array, ""],
    nu_rate: Float[Array, ""],
    num_steps: int,
    step_size: float,
) -> Float[Array, " K"]:
    """`num_steps` Metropolis-Hastings steps per state, leaving `p(nu | tau, z)` invariant.

    A Gaussian random walk on `log nu` (symmetric there), accepted with probability
    `min(1, p(nu') nu' / (p(nu) nu))`: the factor `nu'/nu` is the Jacobian of `nu = exp(eta)`,
    so the walk targets the conditional of `nu` exactly, needs no boundary at 0, and a state
    with no frames walks on its prior. States are independent given `(tau, z)`: one vector step.
    """
    K = nu.shape[0]
    dtype = nu.dtype
    count, sum_tau, sum_log_tau = tau_statistics(tau, mask, z, num_states=K)
    target = lambda v: nu_log_target(v, count, sum_tau, sum_log_tau, nu_shape=nu_shape, nu_rate=nu_rate) + jnp.log(v)

    def step(carry, k):
        current, lp = carry
        key_prop, key_acc = jr.split(k)
        proposal = current * jnp.exp(step_size * jr.normal(key_prop, (K,), dtype))
        lp_prop = target(proposal)
        accept = jnp.log(jr.uniform(key_acc, (K,), dtype)) < lp_prop - lp
        return (jnp.where(accept, proposal, current), jnp.where(accept, lp_prop, lp)), None

    (nu, _), _ = lax.scan(step, (nu, target(nu)), jr.split(key, num_steps))
    return nu


def sample_nu_prior(key: PRNGKeyArray, prior: RobustPrior, num_states: int, dtype) -> Float[Array, " K"]:
    """`nu_k ~ Gamma(nu_shape, rate nu_rate)` for every state (the prior of the Geweke tests)."""
    conc = jnp.broadcast_to(jnp.asarray(prior.nu_shape, dtype), (num_states,))
    return jnp.exp(sample_log_gamma(key, conc)) / jnp.asarray(prior.nu_rate, dtype)


def sample_tau_prior(key: PRNGKeyArray, nu_z: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """`tau ~ Gamma(nu / 2, rate nu / 2)` elementwise, for simulation."""
    return jnp.exp(sample_log_gamma(key, 0.5 * nu_z) - jnp.log(0.5 * nu_z))


def robust_subkeys(key: PRNGKeyArray) -> tuple[PRNGKeyArray, PRNGKeyArray]:
    """`(key_nu, key_tau)` of a sweep: two subkeys of `fold_in(key, ROBUST_KEY_TAG)`."""
    key_nu, key_tau = jr.split(jr.fold_in(key, ROBUST_KEY_TAG))
    return key_nu, key_tau


def check_nu_values(nu, name: str = "params.nu") -> None:
    """`nu` finite and > 0 on concrete values (skipped for traced ones)."""
    check_positive(name, nu, "Degrees of freedom must be positive, e.g. `jnp.full((K,), 4.0)`.")

