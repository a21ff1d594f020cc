"""Random draws used by the conditionals: gamma, Dirichlet, inverse Wishart, matrix normal, MNIW."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
from jax import lax

from ._custom_types import Array, Float, PRNGKeyArray
from ._linalg import psd_cholesky, solve_lower, solve_lower_transposed, spd_inverse, symmetrize


def _flat_normal(key: PRNGKeyArray, shape: tuple[int, ...], dtype) -> Array:
    """`jax.random.normal` of `shape`, drawn as one flat vector and reshaped.

    Same distribution; a flat draw compiles to a much smaller program on CPU than one whose
    last dimension is short (the random-bits kernel of a `(K, 10)` shape takes several times
    longer to compile than that of a `(10 K,)` one).
    """
    return jr.normal(key, (math.prod(shape),), dtype).reshape(shape)


def _log1p_remainder(t: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """`log1p(t) - t + t^2/2 - t^3/3` for `t > -1`, without the cancellation near 0.

    For `|t| < 0.1` the Taylor series `sum_{n>=4} (-1)^(n+1) t^n / n` to `n = 12` (the
    first dropped term is below `1e-9` of the first kept one); elsewhere the direct formula.
    """
    horner = jnp.zeros_like(t)
    for n in range(12, 3, -1):  # Horner's rule for sum_{n=4}^{12} (-1)^(n+1) t^(n-4) / n
        horner = (-1) ** (n + 1) / n + t * horner
    series = t**4 * horner
    direct = jnp.log1p(t) - t * (1.0 - t * (0.5 - t / 3.0))
    return jnp.where(jnp.abs(t) < 0.1, series, direct)


def sample_log_gamma(key: PRNGKeyArray, conc: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """`log G` with `G ~ Gamma(conc, 1)` for every element of `conc`, independently.

    Marsaglia and Tsang (2000), run as one rejection loop over the whole array: every
    round draws a proposal for every element and keeps the first accepted one of each,
    until all are accepted (a round accepts each element with probability above 0.95).
    For `a = conc >= 1`, with `d = a - 1/3`, `c = 1 / sqrt(9 d)`, `t = c x`, `x ~ N(0, 1)`,
    `u ~ U(0, 1)`, the proposal `d (1 + t)^3` is accepted when `t > -1` and

        log u < x^2/2 + d (1 - v + log v) = 3 d (log1p(t) - t + t^2/2 - t^3/3),  v = (1 + t)^3,

    the right-hand form (using `x^2 = 9 d t^2`) having no large terms that cancel, so the
    test stays exact in float32 when `a` is in the millions. For `conc < 1` the draw for
    `conc + 1` is boosted in log space, `log G = log G' - E / conc` with `E ~ Exponential(1)`,
    so tiny concentrations give very negative logs instead of underflowing to 0.

    One uniform draw per round (a single random-bits call in the loop body, which keeps the
    compiled program small) gives `x` (by the inverse normal CDF, as `jax.random.normal`),
    `u`, and in the first round `E` (as `jax.random.exponential`).

    `conc = 0` gives `-inf`, `conc = inf` gives `inf`, a negative or NaN `conc` gives NaN.
    The loop runs on the flattened array (see `_flat_normal`).
    """
    shape = conc.shape
    conc = conc.reshape(-1)
    dtype = conc.dtype
    n = conc.shape[0]
    boost = conc < 1.0
    regular = jnp.isfinite(conc) & (conc > 0)
    d = jnp.where(regular, jnp.where(boost, conc + 1.0, conc) - 1.0 / 3.0, 1.0)
    c = lax.rsqrt(9.0 * d)

    def cond(state):
        _, done, _, _ = state
        return ~jnp.all(done)

    def body(state):
        i, done, log_v, exp_draw = state
        u = jr.uniform(jr.fold_in(key, i), (3, n), dtype)
        x = jnp.sqrt(2.0).astype(dtype) * lax.erf_inv(2.0 * u[0] - 1.0)  # -inf for u = 0: rejected below
        t = c * x
        accept = (t > -1.0) & (jnp.log(u[1]) < 3.0 * d * _log1p_remainder(t))
        log_v = jnp.where(accept & ~done, 3.0 * jnp.log1p(t), log_v)
        exp_draw = jnp.where(i == 0, -jnp.log1p(-u[2]), exp_draw)
        return i + 1, done | accept, log_v, exp_draw

    zeros = jnp.zeros((n,), dtype)
    _, _, log_v, exp_draw = lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), ~regular, zeros, zeros))
    log_g = jnp.log(d) + log_v
    log_g = jnp.where(boost, log_g - exp_draw / jnp.where(regular, conc, 1.0), log_g)
    special = jnp.where(conc == 0, -jnp.inf, jnp.where(conc == jnp.inf, jnp.inf, jnp.nan)).astype(dtype)
    return jnp.where(regular, log_g, special).reshape(shape)


def sample_gamma(key: PRNGKeyArray, conc: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """`G ~ Gamma(conc, 1)` elementwise (`exp` of `sample_log_gamma`)."""
    return jnp.exp(sample_log_gamma(key, conc))


def sample_dirichlet(key: PRNGKeyArray, conc: Float[Array, "*batch K"]) -> Float[Array, "*batch K"]:
    """Dirichlet draw through log-gamma variates, so tiny concentrations do not underflow."""
    return jax.nn.softmax(sample_log_gamma(key, conc), axis=-1)


def sample_inv_wishart_chol(
    key: PRNGKeyArray, nu: Float[Array, "*batch"], S_chol: Float[Array, "*batch D D"]
) -> Float[Array, "*batch D D"]:
    """Draw `Q ~ InvWishart(nu, S)` given the lower Cholesky factor of `S` (independently per batch entry).

    Bartlett decomposition: with `A` lower triangular, `A_ii = sqrt(chi2(nu - i))` and
    standard normal entries below the diagonal, `A A^T ~ Wishart(nu, I)`, so
    `Q = (S_chol A^{-T}) (S_chol A^{-T})^T ~ InvWishart(nu, S)`.
    """
    D = S_chol.shape[-1]
    dtype = S_chol.dtype
    batch = S_chol.shape[:-2]
    key_chi, key_norm = jr.split(key)
    ones = (1,) * len(batch)
    dof = jnp.broadcast_to(jnp.asarray(nu, dtype), batch)[..., None] - jnp.arange(D, dtype=dtype).reshape(ones + (D,))
    diag = jnp.sqrt(2.0 * sample_gamma(key_chi, dof / 2.0))
    lower = jnp.tril(_flat_normal(key_norm, batch + (D, D), dtype), k=-1)
    A = lower + diag[..., None] * jnp.eye(D, dtype=dtype).reshape(ones + (D, D))
    F_T = solve_lower(A, jnp.swapaxes(S_chol, -1, -2))  # A^{-1} S_chol^T
    return symmetrize(jnp.swapaxes(F_T, -1, -2) @ F_T)


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
    key: PRNGKeyArray, G: Float[Array, "*batch AD AD"], nu: Float[Array, "*batch"], latent_dim: int
) -> tuple[Float[Array, "*batch D A"], Float[Array, "*batch D D"]]:
    """Draw `(Ab, Q)` from the MNIW whose parameters are packed in one joint matrix
    (independently per batch entry: one draw for every state of a model at once).

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
    batch = G.shape[:-2]
    key_q, key_ab = jr.split(key)
    L = psd_cholesky(G)
    L_P, B, L_S = L[..., :A, :A], L[..., A:, :A], L[..., A:, A:]
    Q = sample_inv_wishart_chol(key_q, nu, L_S)
    L_Q = psd_cholesky(Q)
    Z = _flat_normal(key_ab, batch + (D, A), G.dtype)
    # Ab L_P = B + L_Q Z  <=>  L_P^T Ab^T = (B + L_Q Z)^T
    Ab = jnp.swapaxes(solve_lower_transposed(L_P, jnp.swapaxes(B + L_Q @ Z, -1, -2)), -1, -2)
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
