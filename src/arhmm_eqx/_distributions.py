"""Random draws used by the conditionals: Dirichlet, inverse Wishart, matrix normal, MNIW."""

import jax
import jax.numpy as jnp
import jax.random as jr

from ._custom_types import Array, Float, PRNGKeyArray
from ._linalg import psd_cholesky, solve_lower, solve_lower_transposed, spd_inverse, symmetrize


def sample_dirichlet(key: PRNGKeyArray, conc: Float[Array, "*batch K"]) -> Float[Array, "*batch K"]:
    """Dirichlet draw through log-gamma variates, so tiny concentrations do not underflow."""
    return jax.nn.softmax(jr.loggamma(key, conc, dtype=conc.dtype), axis=-1)


def sample_inv_wishart_chol(
    key: PRNGKeyArray, nu: Float[Array, ""], S_chol: Float[Array, "D D"]
) -> Float[Array, "D D"]:
    """Draw `Q ~ InvWishart(nu, S)` given the lower Cholesky factor of `S`.

    Bartlett decomposition: with `A` lower triangular, `A_ii = sqrt(chi2(nu - i))` and
    standard normal entries below the diagonal, `A A^T ~ Wishart(nu, I)`, so
    `Q = (S_chol A^{-T}) (S_chol A^{-T})^T ~ InvWishart(nu, S)`.
    """
    D = S_chol.shape[-1]
    dtype = S_chol.dtype
    key_chi, key_norm = jr.split(key)
    dof = nu - jnp.arange(D, dtype=dtype)
    diag = jnp.sqrt(2.0 * jr.gamma(key_chi, dof / 2.0, dtype=dtype))
    lower = jnp.tril(jr.normal(key_norm, (D, D), dtype=dtype), k=-1)
    A = lower + jnp.diag(diag)
    F_T = solve_lower(A, S_chol.T)  # A^{-1} S_chol^T
    return symmetrize(F_T.T @ F_T)


def sample_inv_wishart(key: PRNGKeyArray, nu: Float[Array, ""], S: Float[Array, "D D"]) -> Float[Array, "D D"]:
    """Draw `Q ~ InvWishart(nu, S)` (mean `S / (nu - D - 1)`)."""
    return sample_inv_wishart_chol(key, nu, psd_cholesky(S))


def sample_matrix_normal(
    key: PRNGKeyArray,
    M: Float[Array, "D A"],
    row_chol: Float[Array, "D D"],
    col_chol: Float[Array, "A A"],
) -> Float[Array, "D A"]:
    """Draw `X ~ MatrixNormal(M, U, V)` with `U = row_chol row_chol^T`, `V = col_chol col_chol^T`."""
    Z = jr.normal(key, M.shape, dtype=M.dtype)
    return M + row_chol @ Z @ col_chol.T


def sample_mniw_from_joint(
    key: PRNGKeyArray, G: Float[Array, "AD AD"], nu: Float[Array, ""], latent_dim: int
) -> tuple[Float[Array, "D A"], Float[Array, "D D"]]:
    """Draw `(Ab, Q)` from the MNIW whose parameters are packed in one joint matrix.

    `G = [[P, R^T], [R, C]]` with `P = K^{-1}` (precision of the columns), `R = M P`
    and `C - R P^{-1} R^T = S`. One Cholesky factor of `G` gives every quantity the
    draw needs, and gives `chol(S)` without forming the difference `C - R P^{-1} R^T`
    (which loses precision in float32 when many frames are summed):
    `chol(G) = [[L_P, 0], [B, L_S]]` with `B = R L_P^{-T}`, `M = B L_P^{-1}`.
    Then `Q ~ InvWishart(nu, L_S L_S^T)` and `Ab = (B + L_Q Z) L_P^{-1}` with `Z`
    standard normal, which is `MatrixNormal(M, Q, P^{-1})`.
    """
    D = latent_dim
    A = G.shape[-1] - D
    key_q, key_ab = jr.split(key)
    L = psd_cholesky(G)
    L_P, B, L_S = L[:A, :A], L[A:, :A], L[A:, A:]
    Q = sample_inv_wishart_chol(key_q, nu, L_S)
    L_Q = psd_cholesky(Q)
    Z = jr.normal(key_ab, (D, A), dtype=G.dtype)
    # Ab L_P = B + L_Q Z  <=>  L_P^T Ab^T = (B + L_Q Z)^T
    Ab = solve_lower_transposed(L_P, (B + L_Q @ Z).T).T
    return Ab, Q


def mniw_prior_joint(
    nu_0: Float[Array, ""], S_0: Float[Array, "D D"], M_0: Float[Array, "D A"], K_0: Float[Array, "A A"]
) -> Float[Array, "AD AD"]:
    """The joint matrix `G` (see `sample_mniw_from_joint`) of the prior `MNIW(nu_0, S_0, M_0, K_0)`."""
    del nu_0
    K_0_inv = spd_inverse(K_0)
    R = M_0 @ K_0_inv
    top = jnp.concatenate([K_0_inv, R.T], axis=1)
    bottom = jnp.concatenate([R, S_0 + R @ M_0.T], axis=1)
    return symmetrize(jnp.concatenate([top, bottom], axis=0))


def sample_mniw(
    key: PRNGKeyArray,
    nu: Float[Array, ""],
    S: Float[Array, "D D"],
    M: Float[Array, "D A"],
    K: Float[Array, "A A"],
) -> tuple[Float[Array, "D A"], Float[Array, "D D"]]:
    """Draw `Q ~ InvWishart(nu, S)`, then `Ab | Q ~ MatrixNormal(M, Q, K)`."""
    return sample_mniw_from_joint(key, mniw_prior_joint(nu, S, M, K), nu, S.shape[-1])
