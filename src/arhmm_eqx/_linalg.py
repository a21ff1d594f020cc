"""Small linear-algebra helpers (no randomness)."""

import jax.numpy as jnp
import jax.scipy.linalg as jsl

from ._custom_types import Array, Float


def symmetrize(A: Float[Array, "*batch n n"]) -> Float[Array, "*batch n n"]:
    """`(A + A^T) / 2`."""
    return 0.5 * (A + jnp.swapaxes(A, -1, -2))


def psd_cholesky(A: Float[Array, "*batch n n"]) -> Float[Array, "*batch n n"]:
    """Lower Cholesky factor of a symmetric positive definite matrix (symmetrised first)."""
    return jnp.linalg.cholesky(symmetrize(A))


def lower_inverse(L: Float[Array, "n n"]) -> Float[Array, "n n"]:
    """Inverse of a lower-triangular matrix."""
    return jsl.solve_triangular(L, jnp.eye(L.shape[-1], dtype=L.dtype), lower=True)


def psd_inv(A: Float[Array, "n n"]) -> Float[Array, "n n"]:
    """Inverse of a symmetric positive definite matrix, through its Cholesky factor."""
    return jsl.cho_solve((psd_cholesky(A), True), jnp.eye(A.shape[-1], dtype=A.dtype))
