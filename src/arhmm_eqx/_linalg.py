"""Small linear-algebra helpers (no randomness)."""

import jax.numpy as jnp

from ._custom_types import Array, Float


def symmetrize(A: Float[Array, "*batch n n"]) -> Float[Array, "*batch n n"]:
    """`(A + A^T) / 2`."""
    return 0.5 * (A + jnp.swapaxes(A, -1, -2))


def psd_cholesky(A: Float[Array, "*batch n n"]) -> Float[Array, "*batch n n"]:
    """Lower Cholesky factor of a symmetric positive definite matrix (symmetrised first)."""
    return jnp.linalg.cholesky(symmetrize(A))
