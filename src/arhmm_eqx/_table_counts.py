"""Exact sampler of the (override-corrected) table counts of the sticky HDP-HMM (model.md §1).

For every cell `(i, j)` the library needs

    mbar[i, j] = sum_{k=0}^{n-1} Bernoulli(a / (a + s + k)),
    a = alpha * betas[j],  s = kappa * [i == j],  n = n[i, j],

which is the number of tables of a Chinese restaurant with concentration `a` after
`s` "sticky" pseudo-customers, with the override thinning of the diagonal already
folded in. `n` reaches millions on real data, so the sampler jumps from one success
to the next instead of visiting every customer: from customer `k`, the probability
that customers `k, ..., k + d - 1` all fail is

    S_k(d) = prod_{i=k}^{k+d-1} (s + i) / (a + s + i) = exp(-(h(s + k + d) - h(s + k))),
    h(x) = lgamma(x + a) - lgamma(x),

so with `E ~ Exponential(1)` the next success is at `k + d - 1` for the smallest `d`
with `h(s + k + d) - h(s + k) > E` (inverse-CDF sampling, since `-log U ~ Exp(1)`),
found by integer bisection. The work grows with the number of tables (tens) times
`log2(n)`, not with `n`. Everything is `lax.while_loop`, so it runs under `jit` and
`vmap` with no host callback; the result is exact in distribution up to the
rounding of the log-gamma differences.

Differences of `h` at large arguments (`kappa` up to 1e8 and beyond) cannot be taken
as differences of `lgamma` values in float32, so `h(x + d) - h(x)` is computed as
a direct `lgamma` difference below a threshold `X0(a)` and, above it, with the
asymptotic expansion (Bernoulli polynomials `B_n`)

    lgamma(x + a) - lgamma(x) ~ a log x + sum_{n>=2} (-1)^n (B_n(a) - B_n(0)) / (n (n - 1) x^(n-1)),

whose differences are written with `log1p` and `d / (x (x + d))` so that nothing
large cancels.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
from jax import lax
from jax.scipy.special import gammaln

from ._custom_types import Array, Float, PRNGKeyArray


def _threshold(a):
    # Below X0 the direct lgamma difference is used. With X0 = 10 (1 + a) the first
    # dropped term of the expansion, about a^6 / (30 x^5), is below 1e-6 for a <= 6
    # (typical alpha * beta) and stays small relative to the direct float32 error above.
    return 10.0 * (1.0 + a)


def _h_direct(x, a):
    return gammaln(x + a) - gammaln(x)


def _h_asymptotic_diff(x, d, a):
    """`h(x + d) - h(x)` for `x >= X0(a)` by the asymptotic expansion (terms to `x^-4`)."""
    y = x + d
    c2 = (a * a - a) / 2.0
    c3 = -(a**3 - 1.5 * a**2 + 0.5 * a) / 6.0
    c4 = (a**4 - 2.0 * a**3 + a**2) / 12.0
    c5 = -(a**5 - 2.5 * a**4 + (5.0 / 3.0) * a**3 - a / 6.0) / 20.0
    inv_x, inv_y = 1.0 / x, 1.0 / y
    d1 = -d * inv_x * inv_y  # 1/y - 1/x without cancellation
    d2 = d1 * (inv_x + inv_y)  # 1/y^2 - 1/x^2
    d3 = d1 * (inv_x**2 + inv_x * inv_y + inv_y**2)
    d4 = d2 * (inv_x**2 + inv_y**2)
    return a * jnp.log1p(d * inv_x) + c2 * d1 + c3 * d2 + c4 * d3 + c5 * d4


def log_survival_gap(x, d, a):
    """`h(x + d) - h(x)` for `x > 0`, `d >= 0`: minus the log-probability of `d` failures in a row."""
    X0 = _threshold(a)
    x2 = x + d
    below = x < X0
    # Direct part, from x up to min(x2, X0), only when x < X0.
    hi = jnp.where(below, jnp.minimum(x2, X0), x)
    lo = jnp.minimum(x, X0)
    hi = jnp.minimum(hi, X0)
    direct = jnp.where(below, _h_direct(hi, a) - _h_direct(lo, a), 0.0)
    # Asymptotic part, from max(x, X0) up to x2, only when x2 > X0.
    start = jnp.where(below, X0, x)
    dd = jnp.where(below, jnp.maximum(x2 - X0, 0.0), d)
    asym = _h_asymptotic_diff(start, dd, a)
    return direct + asym


def sample_table_count(key: PRNGKeyArray, n, a, s):
    """Number of successes among `Bernoulli(a / (a + s + k))`, `k = 0 .. n - 1`."""
    dtype = jnp.result_type(n, a, s)
    n = jnp.asarray(n, dtype)
    # With s == 0 the first customer always sits at a new table (probability a / a);
    # starting after it keeps every argument of lgamma positive.
    forced = (s <= 0) & (n > 0)
    k0 = jnp.where(forced, 1.0, 0.0).astype(dtype)
    a_pos = jnp.maximum(a, 0.0)

    def cond(carry):
        _, _, _, done = carry
        return ~done

    def body(carry):
        k, count, i, _ = carry
        x = s + k
        E = jr.exponential(jr.fold_in(key, i), dtype=dtype)
        d_max = n - k
        hit = log_survival_gap(x, d_max, a_pos) > E

        def bis_cond(lohi):
            lo, hi = lohi
            return hi - lo > 1

        def bis_body(lohi):
            lo, hi = lohi
            mid = jnp.floor(0.5 * (lo + hi))
            big = log_survival_gap(x, mid, a_pos) > E
            return jnp.where(big, lo, mid), jnp.where(big, mid, hi)

        _, d = lax.while_loop(bis_cond, bis_body, (jnp.zeros((), dtype), jnp.where(hit, d_max, 0.0)))
        k_new = jnp.where(hit, k + d, n)
        count = count + hit.astype(dtype)
        done = k_new >= n
        return k_new, count, i + 1, done

    init = (k0, k0, jnp.zeros((), jnp.int32), k0 >= n)
    _, count, _, _ = lax.while_loop(cond, body, init)
    return count


def sample_override_table_counts(
    key: PRNGKeyArray,
    counts: Float[Array, "K K"],
    betas: Float[Array, " K"],
    alpha: Float[Array, ""],
    kappa: Float[Array, ""],
) -> Float[Array, "K K"]:
    """Draw `mbar` (model.md §1) for every cell of the transition counts, exactly.

    **Arguments:**

    - `key`: a `jax.random.key`.
    - `counts`: masked transition counts `n[i, j]`, shape `(K, K)` (float, integer-valued).
    - `betas`: global state weights, shape `(K,)`.
    - `alpha`, `kappa`: concentration and stickiness, 0-d arrays.

    **Returns:**

    `mbar`, shape `(K, K)`, with the diagonal override thinning already applied.
    """
    K = counts.shape[0]
    dtype = counts.dtype
    a = jnp.broadcast_to(alpha * betas, (K, K)).astype(dtype)
    s = (kappa * jnp.eye(K, dtype=dtype)).astype(dtype)
    keys = jr.split(key, K * K)
    flat = jax.vmap(sample_table_count)(keys, counts.reshape(-1), a.reshape(-1), s.reshape(-1))
    return flat.reshape(K, K)
