"""The objective of the point estimates: marginal log-likelihood plus the log prior density of the parameters.

The marginal log-likelihood comes from a forward filter that keeps the predicted
probabilities in log space (`_inference.stable_marginal_log_likelihood`), so it stays
finite for parameters far from the data, such as the prior draws that EM and gradient
fitting often start from.

The prior is the one of model.md ("Generative model") with `betas` held fixed:

- `(Ab[k], Q[k]) ~ MNIW(nu_0, S_0, M_0, K_0)`, with its normalising constant;
- `pi[i] ~ Dirichlet(c_i)` with `c_i = max(alpha * betas + kappa * e_i, 1)` elementwise.

The floor at 1 is the one departure from the sampler's prior. A Dirichlet density with
a concentration below 1 grows without bound as that entry of `pi` goes to 0, so the
posterior has no maximum there (its supremum is infinite) and "the MAP" does not exist.
Raising those concentrations to 1 flattens the prior along the offending directions
(a concentration of 1 is uniform) and leaves every other direction unchanged; with the
typical `alpha = 5.7` and `K = 100`, it makes the prior on the off-diagonal entries flat
and keeps the sticky `kappa` on the diagonal. EM and gradient fitting both maximise
`log_posterior`, so they target the same point.
"""

import math

import jax.numpy as jnp
from jax.scipy.special import gammaln, multigammaln

from ._custom_types import Array, Float
from ._inference import stable_marginal_log_likelihood
from ._linalg import psd_cholesky, solve_lower


def dirichlet_concentrations(
    betas: Float[Array, " K"], alpha: Float[Array, ""], kappa: Float[Array, ""]
) -> Float[Array, "K K"]:
    """Row concentrations `max(alpha * betas + kappa * e_i, 1)` of the prior on `pi` (see module docstring)."""
    K = betas.shape[0]
    conc = alpha * betas[None, :] + kappa * jnp.eye(K, dtype=betas.dtype)
    return jnp.maximum(conc, jnp.ones((), betas.dtype))


def _log_det_chol(L: Float[Array, "*batch n n"]) -> Float[Array, "*batch"]:
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)


def mniw_log_prob(
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    *,
    nu_0: Float[Array, ""],
    S_0: Float[Array, "D D"],
    M_0: Float[Array, "D A"],
    K_0: Float[Array, "A A"],
) -> Float[Array, " K"]:
    """`log InvWishart(Q[k] | nu_0, S_0) + log MatrixNormal(Ab[k] | M_0, Q[k], K_0)` per state."""
    K, D, A = Ab.shape
    L_Q = psd_cholesky(Q)
    L_S = psd_cholesky(S_0)
    L_K = psd_cholesky(K_0)
    log_det_Q = _log_det_chol(L_Q)
    # tr(S_0 Q^{-1}) = |L_Q^{-1} L_S|_F^2 and tr(Q^{-1} E K_0^{-1} E^T) = |L_Q^{-1} E L_K^{-T}|_F^2, E = Ab - M_0.
    white_S = solve_lower(L_Q, jnp.broadcast_to(L_S, L_Q.shape))
    E = Ab - M_0[None]
    E_K = jnp.swapaxes(solve_lower(L_K, jnp.swapaxes(E, -1, -2)), -1, -2)  # E L_K^{-T}
    white_E = solve_lower(L_Q, E_K)
    half_nu = 0.5 * nu_0
    log_iw = (
        half_nu * _log_det_chol(L_S)
        - half_nu * D * math.log(2.0)
        - multigammaln(half_nu, D)
        - 0.5 * (nu_0 + D + 1) * log_det_Q
        - 0.5 * jnp.sum(white_S**2, axis=(-2, -1))
    )
    log_mn = (
        -0.5 * D * A * math.log(2.0 * math.pi)
        - 0.5 * A * log_det_Q
        - 0.5 * D * _log_det_chol(L_K)
        - 0.5 * jnp.sum(white_E**2, axis=(-2, -1))
    )
    return log_iw + log_mn


def dirichlet_log_prob(pi: Float[Array, "*G K K"], conc: Float[Array, "*G K K"]) -> Float[Array, "*G K"]:
    """`log Dirichlet(pi[i] | conc[i])` per row."""
    return gammaln(jnp.sum(conc, axis=-1)) - jnp.sum(gammaln(conc), axis=-1) + jnp.sum((conc - 1) * jnp.log(pi), -1)


def log_prior(
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"] | Float[Array, "G K K"],
    betas: Float[Array, " K"],
    *,
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
    nu_0: Float[Array, ""],
    S_0: Float[Array, "D D"],
    M_0: Float[Array, "D A"],
    K_0: Float[Array, "A A"],
) -> Float[Array, ""]:
    """`log p(Ab, Q, pi | betas)`: the MNIW prior of every state plus the (floored) sticky Dirichlet rows."""
    dtype = Ab.dtype
    alpha, kappa, nu_0, S_0, M_0, K_0 = (jnp.asarray(v, dtype) for v in (alpha, kappa, nu_0, S_0, M_0, K_0))
    conc = dirichlet_concentrations(betas, alpha, kappa)
    lp_ar = mniw_log_prob(Ab, Q, nu_0=nu_0, S_0=S_0, M_0=M_0, K_0=K_0)
    conc = conc[None] if pi.ndim == 3 else conc  # (G, K, K): every group's rows around the shared betas
    return jnp.sum(lp_ar) + jnp.sum(dirichlet_log_prob(pi, conc))


def log_posterior(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"],
    betas: Float[Array, " K"],
    *,
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
    nu_0: Float[Array, ""],
    S_0: Float[Array, "D D"],
    M_0: Float[Array, "D A"],
    K_0: Float[Array, "A A"],
) -> Float[Array, ""]:
    """`log p(x | Ab, Q, pi) + log p(Ab, Q, pi | betas)`: the objective of EM and gradient fitting.

    Differentiable with respect to every array argument (`x` included); the marginal
    log-likelihood is `stable_marginal_log_likelihood`.
    """
    mll = stable_marginal_log_likelihood(x, mask, Ab, Q, pi)
    return mll + log_prior(Ab, Q, pi, betas, alpha=alpha, kappa=kappa, nu_0=nu_0, S_0=S_0, M_0=M_0, K_0=K_0)
