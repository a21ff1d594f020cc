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
`log2(n)`, not with `n`. All cells run in one `lax.while_loop` over rounds (one
exponential per cell per round), so it runs under `jit` and `vmap` with no host
callback; the result is exact in distribution up to the rounding of the log-gamma
differences.

Differences of `h` at large arguments (`kappa` up to 1e8 and beyond) cannot be taken
as differences of `lgamma` values in float32, so `h(x + d) - h(x)` is computed as
a direct `lgamma` difference below a threshold `X0(a)` and, above it, with the
asymptotic expansion (Bernoulli polynomials `B_n`)

    lgamma(x + a) - lgamma(x) ~ a log x + sum_{n>=2} (-1)^n (B_n(a) - B_n(0)) / (n (n - 1) x^(n-1)),

whose differences are written with `log1p` and `d / (x (x + d))` so that nothing
large cancels.
"""

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


def sample_cells(key: PRNGKeyArray, n: Float[Array, " M"], a: Float[Array, " M"], s: Float[Array, " M"]):
    """Number of successes among `Bernoulli(a / (a + s + k))`, `k = 0 .. n - 1`, for every cell.

    One loop over the whole (flat) array: every round draws one `Exponential(1)` per cell
    (a single random-bits call for all cells), jumps each unfinished cell to its next
    success by a bisection run on all cells at once, and stops when every cell is done.
    A cell that is done ignores later rounds, so each cell's draw is the one its own
    sequence of exponentials gives, whatever the other cells do.
    """
    dtype = jnp.result_type(n, a, s)
    n, a, s = (jnp.asarray(v, dtype) for v in (n, a, s))
    # With s == 0 the first customer always sits at a new table (probability a / a);
    # starting after it keeps every argument of lgamma positive.
    forced = (s <= 0) & (n > 0)
    k0 = jnp.where(forced, 1.0, 0.0).astype(dtype)
    a_pos = jnp.maximum(a, 0.0)

    def cond(carry):
        _, _, _, done = carry
        return ~jnp.all(done)

    def body(carry):
        k, count, i, done = carry
        x = s + k
        E = -jnp.log1p(-jr.uniform(jr.fold_in(key, i), n.shape, dtype))  # as jax.random.exponential
        d_max = jnp.where(done, 0.0, n - k)
        hit = (log_survival_gap(x, d_max, a_pos) > E) & ~done

        def bis_cond(lohi):
            lo, hi = lohi
            return jnp.any(hi - lo > 1)

        def bis_body(lohi):
            lo, hi = lohi
            active = hi - lo > 1
            mid = jnp.floor(0.5 * (lo + hi))
            big = log_survival_gap(x, mid, a_pos) > E
            return jnp.where(active & ~big, mid, lo), jnp.where(active & big, mid, hi)

        _, d = lax.while_loop(bis_cond, bis_body, (jnp.zeros_like(n), jnp.where(hit, d_max, 0.0)))
        k_new = jnp.where(done, k, jnp.where(hit, k + d, n))
        count = count + hit.astype(dtype)
        return k_new, count, i + 1, done | (k_new >= n)

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
    flat = sample_cells(key, counts.reshape(-1), a.reshape(-1), s.reshape(-1))
    return flat.reshape(K, K)

