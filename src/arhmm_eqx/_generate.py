"""Simulation of state paths and trajectories from the generative model (model.md, "Simulation")."""

import jax
import jax.numpy as jnp
import jax.random as jr
from jax import lax

from ._custom_types import Array, Float, Int, PRNGKeyArray
from ._lags import pad_affine
from ._linalg import psd_cholesky
from ._robust import sample_tau_prior


def _simulate(key, pi, Ab, Q, n_steps: int, z_prev, xlags, first_uniform: bool, nu=None):
    K, D, _ = Ab.shape
    key_first, key_z, key_x = jr.split(key, 3)
    # Robust noise: a precision tau ~ Gamma(nu/2, nu/2) per frame, from keys of its own (so
    # the Gaussian model's draws do not change).
    tau_keys = jr.split(jr.fold_in(key_x, 1), n_steps) if nu is not None else None
    z_first = jr.randint(key_first, (), 0, K, dtype=jnp.int32)
    L_Q = psd_cholesky(Q)
    log_pi = jnp.log(pi)
    z_keys = jr.split(key_z, n_steps)
    noise = jr.normal(key_x, (n_steps, D), dtype=Ab.dtype)

    def step(carry, inputs):
        z_prev, xlags = carry
        k, eps, t = inputs[:3]
        z_new = jr.categorical(k, log_pi[z_prev]).astype(jnp.int32)
        if first_uniform:
            z_new = jnp.where(t == 0, z_first, z_new)
        if nu is not None:
            eps = eps * lax.rsqrt(sample_tau_prior(inputs[3], nu[z_new]))
        x_new = Ab[z_new] @ pad_affine(xlags.reshape(-1)) + L_Q[z_new] @ eps
        xlags = jnp.concatenate([xlags[1:], x_new[None]], axis=0)
        return (z_new, xlags), (z_new, x_new)

    init = (jnp.asarray(z_prev, jnp.int32), xlags)
    inputs = (z_keys, noise, jnp.arange(n_steps)) + ((tau_keys,) if nu is not None else ())
    _, (zs, xs) = lax.scan(step, init, inputs)
    return zs, xs


def generate_states(
    key: PRNGKeyArray,
    pi: Float[Array, "K K"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    n_steps: int,
    init_state: tuple | None = None,
) -> tuple[Int[Array, " n_steps"], Float[Array, "n_steps D"]]:
    """Draw `n_steps` states and frames from the AR-HMM.

    Without `init_state`, the first state is uniform over the `K` states and the `L`
    initial lags are standard normal. With `init_state = (z_prev, xlags)`, `z_prev` is
    the state before the first generated one (which is drawn from `pi[z_prev]`) and
    `xlags`, shape `(L, D)`, are the frames before the first generated one, oldest first.

    **Returns:** `(z, x)` of shapes `(n_steps,)` and `(n_steps, D)`; the lags are not included.
    """
    K, D, A = Ab.shape
    nlags = (A - 1) // D
    key_lags, key_path = jr.split(key)
    if init_state is None:
        xlags = jr.normal(key_lags, (nlags, D), dtype=Ab.dtype)
        return _simulate(key_path, pi, Ab, Q, n_steps, 0, xlags, first_uniform=True)
    z_prev, xlags = init_state
    return _simulate(key_path, pi, Ab, Q, n_steps, z_prev, jnp.asarray(xlags, Ab.dtype), first_uniform=False)


def simulate_dataset(
    key: PRNGKeyArray,
    pi: Float[Array, "K K"] | Float[Array, "N K K"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    num_sequences: int,
    num_frames: int,
    nu: Float[Array, " K"] | None = None,
) -> tuple[Int[Array, "N Tz"], Float[Array, "N T D"]]:
    """`num_sequences` sequences of `num_frames` frames: `x` includes its `L` standard-normal
    initial lags and `z` covers frames `L..T-1` (first state uniform), as the model's `z` does.
    With `nu`, the noise is Student-t (a robust model)."""
    K, D, A = Ab.shape
    nlags = (A - 1) // D

    def one(k):
        key_lags, key_path = jr.split(k)
        xlags = jr.normal(key_lags, (nlags, D), dtype=Ab.dtype)
        zs, xs = _simulate(key_path, pi, Ab, Q, num_frames - nlags, 0, xlags, first_uniform=True, nu=nu)
        return zs, jnp.concatenate([xlags, xs], axis=0)

    if pi.ndim == 3:  # (N, K, K): each sequence's own pi (per-group transitions)
        def one_own(k, pi_n):
            key_lags, key_path = jr.split(k)
            xlags = jr.normal(key_lags, (nlags, D), dtype=Ab.dtype)
            zs, xs = _simulate(key_path, pi_n, Ab, Q, num_frames - nlags, 0, xlags, first_uniform=True)
            return zs, jnp.concatenate([xlags, xs], axis=0)

        return jax.vmap(one_own)(jr.split(key, num_sequences), pi)
    return jax.vmap(one)(jr.split(key, num_sequences))
