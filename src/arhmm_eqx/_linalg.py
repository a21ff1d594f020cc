"""Small linear-algebra helpers (no randomness), in plain JAX.

The factorisations and triangular solves here are loops over rows or columns of small
matrices (`D x D`, `(A + D) x (A + D)`), batched over states, instead of LAPACK calls. On
CPU, jaxlib 0.10's LAPACK kernels split a large batch (for example the `(K, A + D, A + D)`
factors of a sweep with `K = 400`) over XLA's intra-op thread pool and block until the
pieces are done; two such calls that XLA runs side by side can hold every thread of a
two-core pool and wait for each other forever (seen: a warm `K = 400` sweep that never
returned). Plain JAX has no such path, gives the same results to rounding, runs on every
backend, and is differentiable.
"""

import jax.numpy as jnp
from jax import lax

from ._custom_types import Array, Float


PRECISION = lax.Precision.HIGHEST  # every matmul of the library: full float32 on accelerators too


def symmetrize(A: Float[Array, "*batch n n"]) -> Float[Array, "*batch n n"]:
    """`(A + A^T) / 2`."""
    return 0.5 * (A + jnp.swapaxes(A, -1, -2))


def cholesky(A: Float[Array, "*batch n n"]) -> Float[Array, "*batch n n"]:
    """Lower Cholesky factor of symmetric positive definite matrices (the lower triangle is read).

    Column by column (`L[:, j] = (A[:, j] - L L[j]^T) / L[j, j]`); NaN where a matrix is not
    positive definite, as `jnp.linalg.cholesky` gives.
    """
    n = A.shape[-1]
    rows = jnp.arange(n, dtype=jnp.int32)

    def column(j, L):
        v = A[..., :, j] - jnp.einsum("...ik,...k->...i", L, L[..., j, :], precision=PRECISION)
        d = jnp.sqrt(v[..., j])
        col = jnp.where(rows > j, v / d[..., None], jnp.where(rows == j, d[..., None], 0.0))
        return L.at[..., :, j].set(col)

    L = lax.fori_loop(0, n, column, jnp.zeros_like(A))
    failed = ~jnp.all(jnp.diagonal(L, axis1=-2, axis2=-1) > 0, axis=-1)
    return jnp.where(failed[..., None, None], jnp.nan, L)


def psd_cholesky(A: Float[Array, "*batch n n"]) -> Float[Array, "*batch n n"]:
    """Lower Cholesky factor of a symmetric positive definite matrix (symmetrised first)."""
    return cholesky(symmetrize(A))


def _broadcast_batch(L, B):
    """`L` and `B` with their batch dimensions broadcast to one shape."""
    batch = jnp.broadcast_shapes(L.shape[:-2], B.shape[:-2])
    return jnp.broadcast_to(L, batch + L.shape[-2:]), jnp.broadcast_to(B, batch + B.shape[-2:])


def solve_lower(L: Float[Array, "*batch_l n n"], B: Float[Array, "*batch_b n m"]) -> Float[Array, "... n m"]:
    """`L^{-1} B` for lower-triangular `L`, by forward substitution (batch dimensions broadcast)."""
    L, B = _broadcast_batch(L, B)

    def row(i, X):
        r = B[..., i, :] - jnp.einsum("...k,...km->...m", L[..., i, :], X, precision=PRECISION)
        return X.at[..., i, :].set(r / L[..., i, i][..., None])

    return lax.fori_loop(0, L.shape[-1], row, jnp.zeros_like(B))


def solve_lower_transposed(
    L: Float[Array, "*batch_l n n"], B: Float[Array, "*batch_b n m"]
) -> Float[Array, "... n m"]:
    """`L^{-T} B` for lower-triangular `L`, by back substitution (batch dimensions broadcast)."""
    L, B = _broadcast_batch(L, B)
    n = L.shape[-1]

    def row(k, X):
        i = n - 1 - k
        r = B[..., i, :] - jnp.einsum("...k,...km->...m", L[..., :, i], X, precision=PRECISION)
        return X.at[..., i, :].set(r / L[..., i, i][..., None])

    return lax.fori_loop(0, n, row, jnp.zeros_like(B))


def spd_inverse(A: Float[Array, "*batch n n"]) -> Float[Array, "*batch n n"]:
    """Inverse of a symmetric positive definite matrix through its Cholesky factor (symmetric result)."""
    L = psd_cholesky(A)
    eye = jnp.broadcast_to(jnp.eye(A.shape[-1], dtype=A.dtype), A.shape)
    return symmetrize(solve_lower_transposed(L, solve_lower(L, eye)))
