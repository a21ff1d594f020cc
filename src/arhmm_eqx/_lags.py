"""Regressor construction: lag layout `[x[t-L], ..., x[t-1], 1]` (model.md, "Lag layout")."""

import jax.numpy as jnp

from ._custom_types import Array, Float


def ar_dim(latent_dim: int, nlags: int) -> int:
    """Length of a regressor: `latent_dim * nlags + 1`."""
    return latent_dim * nlags + 1


def get_lags(x: Float[Array, "*batch T D"], nlags: int) -> Float[Array, "*batch Tz DL"]:
    """Stack the `nlags` previous frames of every frame `t >= nlags`, oldest lag first."""
    T = x.shape[-2]
    return jnp.concatenate([x[..., i : T - nlags + i, :] for i in range(nlags)], axis=-1)


def pad_affine(u: Float[Array, "*batch n"]) -> Float[Array, "*batch n+1"]:
    """Append a trailing 1 (the bias column of `Ab`)."""
    return jnp.concatenate([u, jnp.ones(u.shape[:-1] + (1,), u.dtype)], axis=-1)


def augmented_regressors(x: Float[Array, "*batch T D"], nlags: int) -> Float[Array, "*batch Tz AD"]:
    """`v_t = [x[t-L], ..., x[t-1], 1, x[t]]` for every frame `t >= nlags`.

    Both the AR log-likelihood (one matrix product against whitened `[-Ab, I]`) and
    the AR sufficient statistics (`sum v v^T`) are written in terms of `v_t`.
    """
    return jnp.concatenate([pad_affine(get_lags(x, nlags)), x[..., nlags:, :]], axis=-1)
