"""Learned concentrations: `ConcentrationPrior` and the conditionals of `alpha`, `gamma`, `kappa`
(model.md, "Learned concentrations").

Everything conditions on the transition counts `n` and, for `alpha` and `gamma`, on the
override-corrected table counts `mbar` of `_table_counts.py`, with `pi` (and for `gamma`
also `betas`) integrated out:

- `alpha` (with `kappa` fixed): `p(alpha | mbar, n) ~ Gamma(a, b)(alpha) alpha^mbar..
  prod_i Gamma(alpha + kappa) / Gamma(alpha + kappa + n_i.)`. With `w_i ~ Beta(alpha + kappa, n_i.)`
  (rows with `n_i. > 0`) the ratio becomes `w_i^(alpha + kappa - 1)`, and
  `alpha | w, mbar ~ Gamma(a + mbar.., b - sum_i log w_i)`.
- `gamma`: `p(gamma | mbar) ~ Gamma(a, b)(gamma) Gamma(gamma) / Gamma(gamma + M)
  prod_j Gamma(gamma / K + M_j) / Gamma(gamma / K)` with `M_j = sum_i mbar[i, j]`. With
  `eta ~ Beta(gamma, M)` and `t_j` the tables of a Chinese restaurant with concentration
  `gamma / K` and `M_j` customers, `gamma | eta, t ~ Gamma(a + sum_j t_j, b - log eta)`.
- `kappa` (with `alpha`): the prior of Fox et al. (2011), `alpha + kappa ~ Gamma(a, b)`,
  `rho = kappa / (alpha + kappa) ~ Beta(c, d)`, and one slice-sampling update (Neal 2003)
  of `log(alpha + kappa)` and then of `logit(rho)` on their conditional given `n` and `betas`
  with `pi` integrated out. (Fox et al. draw `rho` from the override table counts; those are
  as many as the diagonal counts when `kappa` is large, which no bounded-work sampler draws
  exactly, so the update here needs no tables at all.)
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax import lax
from jax.scipy.special import gammaln

from ._checks import check_positive
from ._custom_types import Array, ArrayLike, Float, PRNGKeyArray
from ._distributions import sample_log_gamma
from ._group_transitions import count_group_transitions, sample_group_pi, sample_group_table_counts, sample_shared_betas
from ._slice_sampling import slice_step
from ._table_counts import sample_cells, sample_override_table_counts
from ._transitions import count_transitions, sample_betas, sample_pi


def _as_float_array(x: ArrayLike) -> Array:
    arr = jnp.asarray(x)
    dtype = arr.dtype if jnp.issubdtype(arr.dtype, jnp.floating) else jnp.result_type(float)
    return jnp.asarray(arr, dtype=dtype)


_LEAVES = ("alpha_shape", "alpha_rate", "gamma_shape", "gamma_rate", "rho_a", "rho_b")


class ConcentrationPrior(eqx.Module):
    """Which concentrations a Gibbs sweep learns, and their priors (model.md, "Learned concentrations").

    Set it as `Hyperparams(..., concentrations=ConcentrationPrior(...))`; the learned
    values live in the model's `hyperparams.alpha`, `gamma` and `kappa`, which each sweep
    replaces, and every sweep's values are in the trace (`GibbsInfo.alpha`, ...).

    **Fields:**

    - `alpha_shape`, `alpha_rate`: Gamma prior (shape, rate) of `alpha`, or of
      `alpha + kappa` when `learn_kappa` is set (Fox et al. 2011).
    - `gamma_shape`, `gamma_rate`: Gamma prior of `gamma`.
    - `rho_a`, `rho_b`: Beta prior of `rho = kappa / (alpha + kappa)` (used with `learn_kappa`).
    - `learn_alpha`, `learn_gamma`, `learn_kappa`: static flags; `learn_kappa` needs
      `learn_alpha` (the two are learned together, as `alpha + kappa` and `rho`).

    Every prior value is a 0-d array leaf, so models with different priors vmap together.
    """

    alpha_shape: Float[Array, ""] = eqx.field(converter=_as_float_array, default=1.0)
    alpha_rate: Float[Array, ""] = eqx.field(converter=_as_float_array, default=0.1)
    gamma_shape: Float[Array, ""] = eqx.field(converter=_as_float_array, default=1.0)
    gamma_rate: Float[Array, ""] = eqx.field(converter=_as_float_array, default=1e-3)
    rho_a: Float[Array, ""] = eqx.field(converter=_as_float_array, default=1.0)
    rho_b: Float[Array, ""] = eqx.field(converter=_as_float_array, default=1.0)
    learn_alpha: bool = eqx.field(static=True, default=True)
    learn_gamma: bool = eqx.field(static=True, default=True)
    learn_kappa: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        for name in ("learn_alpha", "learn_gamma", "learn_kappa"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be True or False; got {getattr(self, name)!r}.")
        if self.learn_kappa and not self.learn_alpha:
            raise ValueError(
                "`learn_kappa=True` needs `learn_alpha=True`: `kappa` is learned with `alpha`, through "
                "`alpha + kappa` (Gamma prior `alpha_shape`, `alpha_rate`) and `rho = kappa / (alpha + kappa)` "
                "(Beta prior `rho_a`, `rho_b`). Set `learn_alpha=True` as well."
            )
        for name in _LEAVES:
            if getattr(self, name).shape != ():
                raise ValueError(f"`{name}` must be a scalar (shape ()); got shape {getattr(self, name).shape}.")
            check_positive(name, getattr(self, name))

    @classmethod
    def around(cls, alpha, gamma, kappa=1.0, *, learn_alpha=True, learn_gamma=True, learn_kappa=False,
               shape=1.0) -> "ConcentrationPrior":
        """Gamma priors of shape `shape` with means at the given values (`alpha + kappa` for
        `alpha` with `learn_kappa`), and a uniform prior of `rho`: a weak prior that
        starts where a fixed-concentration model would be."""
        for name, v in (("alpha", alpha), ("gamma", gamma), ("kappa", kappa), ("shape", shape)):
            check_positive(name, v)
        a_mean = alpha + kappa if learn_kappa else alpha
        return cls(alpha_shape=shape, alpha_rate=shape / a_mean, gamma_shape=shape, gamma_rate=shape / gamma,
                   learn_alpha=learn_alpha, learn_gamma=learn_gamma, learn_kappa=learn_kappa)

    @property
    def learns(self) -> tuple[str, ...]:
        """The names of the learned concentrations, e.g. `("alpha", "gamma")`."""
        return tuple(n for n, f in (("alpha", self.learn_alpha), ("gamma", self.learn_gamma),
                                    ("kappa", self.learn_kappa)) if f)

    def astype(self, dtype) -> "ConcentrationPrior":
        if all(getattr(self, k).dtype == dtype for k in _LEAVES):
            return self
        return eqx.tree_at(lambda c: [getattr(c, k) for k in _LEAVES], self,
                           [getattr(self, k).astype(dtype) for k in _LEAVES])


# ---------------------------------------------------------------------------------------
# Conditionals (kernels: key first, arrays, no Modules).


def sample_log_beta(key: PRNGKeyArray, a, b):
    """`log B` with `B ~ Beta(a, b)`, through log-gamma variates (no underflow for tiny `a`)."""
    key_a, key_b = jr.split(key)
    la = sample_log_gamma(key_a, a)
    lb = sample_log_gamma(key_b, b)
    return la - jnp.logaddexp(la, lb)


def sample_alpha(
    key: PRNGKeyArray,
    counts: Float[Array, "*G K K"],
    mbar: Float[Array, "*G K K"],
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
    shape: Float[Array, ""],
    rate: Float[Array, ""],
) -> Float[Array, ""]:
    """`alpha` given the table counts `mbar` and the counts `n` (`kappa` fixed), exactly.

    Draws `w_i ~ Beta(alpha + kappa, n_i.)` for the rows with `n_i. > 0` and then
    `alpha ~ Gamma(shape + sum mbar, rate - sum_i log w_i)` (model.md, "Learned concentrations").
    Leading axes `*G` (e.g. one transition matrix per group, all sharing `betas`) hold more rows.
    """
    dtype = counts.dtype
    key_w, key_a = jr.split(key)
    n_row = counts.sum(axis=-1)
    used = n_row > 0
    ab = jnp.broadcast_to(alpha + kappa, n_row.shape).astype(dtype)
    log_w = jnp.where(used, sample_log_beta(key_w, ab, jnp.where(used, n_row, 1.0)), 0.0)
    log_g = sample_log_gamma(key_a, (shape + mbar.sum()).astype(dtype))
    return jnp.exp(log_g) / (rate - log_w.sum())


def sample_gamma(
    key: PRNGKeyArray,
    mbar: Float[Array, "*G K K"],
    gamma: Float[Array, ""],
    shape: Float[Array, ""],
    rate: Float[Array, ""],
) -> Float[Array, ""]:
    """`gamma` given the table counts `mbar`, with `betas` integrated out, exactly.

    Draws `eta ~ Beta(gamma, M)` (when `M = sum mbar > 0`), the top-level tables
    `t_j = sum_k Bernoulli((gamma / K) / (gamma / K + k))`, `k < M_j`, of every column, then
    `gamma ~ Gamma(shape + sum_j t_j, rate - log eta)` (model.md, "Learned concentrations").
    Leading axes `*G` hold more rows (groups sharing `betas`): their tables add up.
    """
    dtype = mbar.dtype
    K = mbar.shape[-1]
    key_eta, key_t, key_g = jr.split(key, 3)
    col = mbar.reshape(-1, K).sum(axis=0)
    total = col.sum()
    log_eta = jnp.where(total > 0, sample_log_beta(key_eta, gamma.astype(dtype), jnp.maximum(total, 1.0)), 0.0)
    t = sample_cells(key_t, col, jnp.broadcast_to(gamma / K, col.shape).astype(dtype), jnp.zeros_like(col))
    log_g = sample_log_gamma(key_g, (shape + t.sum()).astype(dtype))
    return jnp.exp(log_g) / (rate - log_eta)


def _lgamma_ratio(c, n):
    """`lgamma(c + n) - lgamma(c)` for `c > 0`, `n >= 0`; for `c >= 10` by Stirling's series
    written with `log1p`, so that nothing of size `c log c` cancels."""
    big = c >= 10.0
    cb = jnp.where(big, c, 10.0)
    y = cb + n
    stirling = ((cb - 0.5) * jnp.log1p(n / cb) + n * jnp.log(y) - n
                + (1.0 / y - 1.0 / cb) / 12.0 - (1.0 / y**3 - 1.0 / cb**3) / 360.0)
    cs = jnp.where(big, 1.0, c)
    direct = gammaln(cs + n) - gammaln(cs)
    return jnp.where(n > 0, jnp.where(big, stirling, direct), 0.0)


def collapsed_log_likelihood(
    counts: Float[Array, "*G K K"], betas: Float[Array, " K"], alpha: Float[Array, ""], kappa: Float[Array, ""]
) -> Float[Array, ""]:
    """`log p(n | betas, alpha, kappa)` with `pi` integrated out, up to a constant:
    `sum_i [lgamma(alpha + kappa) - lgamma(alpha + kappa + n_i.)] + sum_ij [lgamma(c_ij + n_ij) - lgamma(c_ij)]`,
    `c_ij = alpha betas_j + kappa [i = j]`."""
    K = counts.shape[-1]
    tiny = jnp.finfo(counts.dtype).tiny
    c = jnp.maximum(alpha * betas[None, :] + kappa * jnp.eye(K, dtype=counts.dtype), tiny)
    c = jnp.broadcast_to(c, counts.shape)
    n_row = counts.sum(axis=-1)
    rows = _lgamma_ratio(jnp.broadcast_to(alpha + kappa, n_row.shape), n_row)
    return jnp.sum(_lgamma_ratio(c, counts)) - jnp.sum(rows)


_SLICE_ROUNDS = 2  # updates of (log(alpha + kappa), logit(rho)) per sweep: cheap (K^2 log-gammas each)


def sample_alpha_kappa(
    key: PRNGKeyArray,
    counts: Float[Array, "*G K K"],
    betas: Float[Array, " K"],
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
    *,
    shape: Float[Array, ""],
    rate: Float[Array, ""],
    rho_a: Float[Array, ""],
    rho_b: Float[Array, ""],
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """`(alpha, kappa)` given `n` and `betas`, `pi` integrated out, under
    `alpha + kappa ~ Gamma(shape, rate)`, `kappa / (alpha + kappa) ~ Beta(rho_a, rho_b)`:
    slice-sampling updates of `u = log(alpha + kappa)` and `v = logit(rho)` in turn."""
    dtype = counts.dtype
    u0 = jnp.log(alpha + kappa).astype(dtype)
    v0 = (jnp.log(kappa) - jnp.log(alpha)).astype(dtype)

    def split(u, v):  # alpha = s (1 - rho), kappa = s rho, with no cancellation near rho = 1
        s = jnp.exp(u)
        return s * jax.nn.sigmoid(-v), s * jax.nn.sigmoid(v)

    def log_u(v):
        return lambda u: shape * u - rate * jnp.exp(u) + collapsed_log_likelihood(counts, betas, *split(u, v))

    def log_v(u):
        return lambda v: (rho_a * jax.nn.log_sigmoid(v) + rho_b * jax.nn.log_sigmoid(-v)
                          + collapsed_log_likelihood(counts, betas, *split(u, v)))

    def one_round(uv, k):
        u, v = uv
        key_u, key_v = jr.split(k)
        u = slice_step(key_u, u, log_u(v), jnp.ones((), dtype))
        v = slice_step(key_v, v, log_v(u), jnp.ones((), dtype))
        return (u, v), None

    (u, v), _ = lax.scan(one_round, (u0, v0), jr.split(key, _SLICE_ROUNDS))
    return split(u, v)


def resample_hdp_with_concentrations(
    key: PRNGKeyArray,
    z,
    mask,
    betas: Float[Array, " K"],
    *,
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
    gamma: Float[Array, ""],
    prior: ConcentrationPrior,
    num_states: int,
    nlags: int,
    groups=None,
    num_groups: int | None = None,
):
    """The transition block with learned concentrations (model.md, "Learned concentrations").

    With `num_groups` (and each sequence's `groups`), the block of per-group transition
    matrices sharing `betas` (model.md, "Groups"): counts and table counts per group, whose
    rows all enter the concentrations' conditionals, pooled tables for `betas`, one `pi[g]`
    per group.

    Order: `(alpha, kappa)` given `n, betas` (with `learn_kappa`); the table counts `mbar`
    given `betas`; `alpha` given `mbar, n` (with `learn_alpha` alone); `gamma` given `mbar`;
    `betas` given `mbar, gamma`; `pi` given `n, betas, alpha, kappa`. The key is split as in
    `resample_hdp_transitions` (tables, betas, pi), plus `fold_in(key, 3)` for the
    concentrations, split into `alpha`, `gamma`, `kappa` subkeys.

    **Returns:** `(betas, pi, alpha, gamma, kappa)`.
    """
    dtype = betas.dtype
    key_tables, key_betas, key_pi = jr.split(key, 3)
    key_alpha, key_gamma, key_kappa = jr.split(jr.fold_in(key, 3), 3)
    alpha, kappa, gamma = (jnp.asarray(v, dtype) for v in (alpha, kappa, gamma))
    pr = prior.astype(dtype)
    if num_groups is None:
        counts = count_transitions(z, mask, num_states=num_states, nlags=nlags).astype(dtype)
        tables, draw_betas, draw_pi = sample_override_table_counts, sample_betas, sample_pi
    else:
        counts = count_group_transitions(z, mask, groups, num_states=num_states, num_groups=num_groups,
                                         nlags=nlags).astype(dtype)
        tables, draw_betas, draw_pi = sample_group_table_counts, sample_shared_betas, sample_group_pi
    if pr.learn_kappa:
        alpha, kappa = sample_alpha_kappa(key_kappa, counts, betas, alpha, kappa, shape=pr.alpha_shape,
                                          rate=pr.alpha_rate, rho_a=pr.rho_a, rho_b=pr.rho_b)
    mbar = tables(key_tables, counts, betas, alpha, kappa)
    if pr.learn_alpha and not pr.learn_kappa:
        alpha = sample_alpha(key_alpha, counts, mbar, alpha, kappa, pr.alpha_shape, pr.alpha_rate)
    if pr.learn_gamma:
        gamma = sample_gamma(key_gamma, mbar, gamma, pr.gamma_shape, pr.gamma_rate)
    betas = draw_betas(key_betas, mbar, gamma)
    pi = draw_pi(key_pi, counts, betas, alpha, kappa)
    return betas, pi, alpha, gamma, kappa
