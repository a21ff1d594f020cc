"""Univariate slice sampling (Neal 2003), stepping out then shrinkage, in pure JAX loops (jit- and vmap-safe)."""

import jax.numpy as jnp
import jax.random as jr
from jax import lax

from ._custom_types import PRNGKeyArray


_MAX_STEPS_OUT = 32  # stepping-out bound m of Neal (2003, fig. 3): the interval reaches up to m widths
_MAX_SHRINK = 200  # the shrinking interval reaches the current point (always accepted) well before


def slice_step(key: PRNGKeyArray, x0, log_density, width):
    """One univariate slice-sampling update (Neal 2003, stepping out then shrinkage); it leaves
    the density `exp(log_density)` invariant. Pure JAX loops: jit- and vmap-safe."""
    key_y, key_u, key_j, key_s = jr.split(key, 4)
    dtype = x0.dtype
    log_y = log_density(x0) - jr.exponential(key_y, (), dtype)
    left = x0 - width * jr.uniform(key_u, (), dtype)
    right = left + width
    j = jnp.floor(_MAX_STEPS_OUT * jr.uniform(key_j, (), dtype))
    k = _MAX_STEPS_OUT - 1 - j

    def out_left(c):
        left, j = c
        return left - width, j - 1

    def out_right(c):
        right, k = c
        return right + width, k - 1

    left, _ = lax.while_loop(lambda c: (c[1] > 0) & (log_density(c[0]) > log_y), out_left, (left, j))
    right, _ = lax.while_loop(lambda c: (c[1] > 0) & (log_density(c[0]) > log_y), out_right, (right, k))

    def shrink_cond(c):
        _, _, _, done, i = c
        return ~done & (i < _MAX_SHRINK)

    def shrink_body(c):
        left, right, x, _, i = c
        x1 = left + (right - left) * jr.uniform(jr.fold_in(key_s, i), (), dtype)
        ok = log_density(x1) > log_y
        left = jnp.where(~ok & (x1 < x0), x1, left)
        right = jnp.where(~ok & (x1 >= x0), x1, right)
        return left, right, jnp.where(ok, x1, x), ok, i + 1

    _, _, x, _, _ = lax.while_loop(shrink_cond, shrink_body, (left, right, x0, jnp.zeros((), bool), 0))
    return x
