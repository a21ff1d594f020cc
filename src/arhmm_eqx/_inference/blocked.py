"""The HMM filter, backward sampler, smoother and marginal likelihood over `(N, T)`, blocked in time.

This is the sampler's inference: `log p(x | Ab, Q, pi)` here is the model's marginal
likelihood. `pi` is one `(K, K)` matrix for all sequences, or `(N, K, K)`, each sequence's
own (per-group transition matrices, gathered by `_group_transitions.sequence_pi`).
The emission likelihoods are fused in: time is cut into blocks of `block`
frames, each block's likelihoods come from one matrix product against the whitened
transforms of all states (`_ar.whitened_transforms`) and are filtered at once, so only
the filtered messages `(Tz, N, K)` (and one log normaliser per frame) outlive their block;
nothing holds the `(N, Tz, K)` log-likelihoods. The backward pass samples each block and
scores the sampled states from the filter's own quantities (no second product with the
transforms).

Padding frames after the end (emission log-likelihood 0) do not change the filter of
the real frames, and the backward pass starts at the last real frame; padded samples
are dropped. The uniforms are drawn for the whole `(N, Tz)` array at once (by the
caller, `sample_stateseqs` of the package), so the samples do not depend on the block
size (up to the rounding of the products).
"""

import math

import jax
import jax.numpy as jnp
from jax import lax

from .._ar import emission_log_likelihoods, squared_residual_norms, whitened_transforms
from .._custom_types import Array, Float
from .._lags import augmented_regressors
from .._linalg import PRECISION


# Frames per block. The block's residuals, `N * block * K * D` numbers, should stay near
# the CPU caches: 64 frames x 20 sequences x 1000 state-dimensions is 5 MiB in float32.
DEFAULT_BLOCK = 64


def _propagate(filt, pi):
    """`filt @ pi` row by row: one `pi` `(K, K)` for all sequences, or each sequence's own
    `(N, K, K)` (per-group transition matrices, gathered per sequence)."""
    if pi.ndim == 2:
        return jnp.matmul(filt, pi, precision=PRECISION)
    return jnp.einsum("nk,nkj->nj", filt, pi, precision=PRECISION)


def _blocks(x, mask, nlags: int, block: int):
    N, T, D = x.shape
    Tz = T - nlags
    num_blocks = -(-Tz // block)
    pad = num_blocks * block - Tz
    x_pad = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
    m_pad = jnp.pad(mask[:, nlags:], ((0, 0), (0, pad)))
    return x_pad, m_pad, num_blocks


def _block_regressors(x_pad, m_pad, b, nlags: int, block: int):
    xb = lax.dynamic_slice_in_dim(x_pad, b * block, block + nlags, axis=1)
    mb = lax.dynamic_slice_in_dim(m_pad, b * block, block, axis=1)
    return augmented_regressors(xb, nlags), mb  # (N, block, A + D), (N, block)


def _block_log_likelihoods(x_pad, m_pad, b, W, log_norm, nlags: int, block: int, K: int, nu=None):
    """Emission log-likelihoods of one block, `(N, block, K)`; masked and padding rows are 0.

    Gaussian, or Student-t with `nu` degrees of freedom per state (a robust model)."""
    v, mb = _block_regressors(x_pad, m_pad, b, nlags, block)
    sq = squared_residual_norms(jnp.matmul(v, W, precision=PRECISION), K)
    if nu is not None:
        ll = emission_log_likelihoods(sq, log_norm, nu, x_pad.shape[-1])
        return jnp.where(mb[..., None] > 0, ll, jnp.zeros((), sq.dtype))
    return jnp.where(mb[..., None] > 0, log_norm[None, None, :] - 0.5 * sq, jnp.zeros((), sq.dtype))


def forward_filter_blocks(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"] | Float[Array, "N K K"],
    *,
    block: int = DEFAULT_BLOCK,
    keep_filtered: bool = True,
    nu: Float[Array, " K"] | None = None,
):
    """Filter every sequence (Student-t emissions with `nu` per state when `nu` is given).

    **Returns:** `(log_norms, (filtered, log_steps))`: the per-sequence `log p(x_n)` `(N,)`;
    the filtered messages `(num_blocks, block, N, K)`; and each frame's increment of the log
    normaliser, `log c_t + m_t` `(num_blocks, block, N)`, with which
    `ll_t[k] = log_steps[t] + log filtered[t, k] - log pred_t[k]` (`pred_t` the predictive).
    The last two are None when `keep_filtered` is False.
    """
    K, D, A = Ab.shape
    nlags = (A - 1) // D
    N = x.shape[0]
    dtype = x.dtype
    W, log_norm = whitened_transforms(Ab, Q)
    x_pad, m_pad, num_blocks = _blocks(x, mask, nlags, block)
    tiny = jnp.finfo(dtype).tiny

    def filter_step(carry, inputs):
        pred, acc = carry
        lik_t, m_t = inputs  # likelihoods scaled by exp(-m_t), and m_t
        w = pred * lik_t
        c = jnp.sum(w, axis=-1)
        filt = w / c[:, None]
        # Every row of pi is floored at `tiny` (`floor_and_normalize`), so mathematically
        # pred >= tiny; the floor here undoes rounding and flush-to-zero of `filt * tiny`.
        # Without it, a frame explained only by a state reachable through a floored entry
        # gives c = 0 and NaN messages.
        pred = jnp.maximum(_propagate(filt, pi), tiny)
        step = jnp.log(c) + m_t
        return (pred, acc + step), ((filt, step) if keep_filtered else None)

    def block_step(carry, b):
        ll = _block_log_likelihoods(x_pad, m_pad, b, W, log_norm, nlags, block, K, nu)
        # The exponentials are taken for the whole block at once, outside the recursion.
        m = jnp.max(ll, axis=-1)
        lik = jnp.exp(ll - m[..., None])
        return lax.scan(filter_step, carry, (jnp.swapaxes(lik, 0, 1), m.T), unroll=4)

    init = (jnp.full((N, K), 1.0 / K, dtype), jnp.zeros((N,), dtype))
    (_, log_norms), kept = lax.scan(block_step, init, jnp.arange(num_blocks))
    return log_norms, ((None, None) if kept is None else kept)


def _scaled_on_support(filt, v):
    """`v` divided by its largest entry among the states where `filt > 0`.

    The products `filt * v` that the smoother normalises and the sampler draws from do not
    depend on the scale of `v`; this one keeps their largest term near `max(filt)`, so
    entries of `v` at the floor of `pi` (`tiny`) do not flush the products to zero.
    Entries of `v` are positive (rows and columns of a floored `pi`).
    """
    return v / jnp.max(jnp.where(filt > 0, v, 0.0), axis=-1, keepdims=True)


def _group_size(K: int) -> int:
    """States per group of the two-level draw: about `sqrt(K)`."""
    return max(1, math.isqrt(K - 1) + 1) if K > 1 else 1


def _draw(p, u, group: int):
    """Inverse-CDF draw per row of unnormalised probabilities `p` (N, K) with uniforms `u` (N,).

    Two levels, so a draw costs O(K sqrt K) instead of the O(K^2) of one cumulative sum over
    all states: states are cut into groups of `group`; the group is drawn from the cumulative
    sums of the group totals, then the state from the cumulative sums inside the group. This
    is the same inverse CDF (the same state up to rounding at the boundaries). Cumulative sums
    are products with upper-triangular matrices of ones (on CPUs faster than `cumsum`, a
    windowed reduction), whose entries are summed in the same order for every column, so
    a state of probability zero adds exactly nothing and is never drawn; rounding between
    the two levels could overshoot the group's last positive state, so the draw is capped
    there. The group and its entries are picked by one-hot products, not gathers.
    """
    N, K = p.shape
    G = group
    num_groups = -(-K // G)
    dtype = p.dtype
    pg = jnp.pad(p, ((0, 0), (0, num_groups * G - K))).reshape(N, num_groups, G)
    upper_groups = jnp.triu(jnp.ones((num_groups, num_groups), dtype))
    upper_within = jnp.triu(jnp.ones((G, G), dtype))
    cdf = jnp.matmul(jnp.sum(pg, axis=-1), upper_groups, precision=PRECISION)  # (N, groups)
    target = u * cdf[:, -1]
    g = jnp.minimum(jnp.sum(cdf < target[:, None], axis=-1), num_groups - 1)
    pick = jax.nn.one_hot(g, num_groups, dtype=dtype)
    before = jnp.sum(cdf * jax.nn.one_hot(g - 1, num_groups, dtype=dtype), axis=-1)  # 0 for g = 0
    within = jnp.sum(pg * pick[:, :, None], axis=1)  # (N, G)
    cdf_within = jnp.matmul(within, upper_within, precision=PRECISION)
    j = jnp.sum(cdf_within < (target - before)[:, None], axis=-1)
    last_positive = G - 1 - jnp.argmax(within[:, ::-1] > 0, axis=-1)
    return (g * G + jnp.minimum(j, last_positive)).astype(jnp.int32)


def sample_given_uniforms(
    uniforms: Float[Array, "N Tz"],
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"] | Float[Array, "N K K"],
    *,
    block: int = DEFAULT_BLOCK,
    nu: Float[Array, " K"] | None = None,
):
    """Forward-filter backward-sample every sequence with the given uniforms, one per frame.

    **Returns:** `(z, log_joint_x, log_marginal)`: the states `(N, Tz)`; `log p(x | z, Ab, Q)`
    of the sampled states over valid frames; and `log p(x | Ab, Q, pi)` summed over sequences.
    """
    K, D, A = Ab.shape
    nlags = (A - 1) // D
    N, T, _ = x.shape
    Tz = T - nlags
    dtype = x.dtype
    tiny = jnp.finfo(dtype).tiny
    log_norms, (filtered, log_steps) = forward_filter_blocks(x, mask, Ab, Q, pi, block=block, nu=nu)
    num_blocks = filtered.shape[0]
    uniforms = jnp.pad(uniforms, ((0, 0), (0, num_blocks * block - Tz)), constant_values=0.5)
    uniforms = jnp.swapaxes(uniforms.reshape(N, num_blocks, block), 0, 1)  # (blocks, N, block)
    group = _group_size(K)
    # Rows of pi.T are the columns pi[:, j] that the backward pass multiplies by. Each is
    # scaled to a maximum of one (the draw does not depend on the scale), so a column of
    # floored entries does not push `filt * col` below the smallest normal number.
    col_scale = jnp.max(pi, axis=-2)
    pi_T = jnp.swapaxes(pi, -1, -2) / col_scale[..., :, None]
    # Row K (ones, scale one) is what a padding frame passes back: padding frames come after
    # every real frame, so the last real frame then sees the same as without padding, and the
    # real frames are sampled exactly as without padding, whatever the block size.
    per_sequence = pi.ndim == 3  # each sequence's own pi (groups): rows picked per sequence
    lead = pi.shape[:-2]
    pi_T = jnp.concatenate([pi_T, jnp.ones(lead + (1, K), dtype)], axis=-2)
    col_scale = jnp.concatenate([col_scale, jnp.ones(lead + (1,), dtype)], axis=-1)
    rows = jnp.arange(N)

    def sample_step(carry, inputs):
        col, scale = carry  # pi[:, z_{t+1}] / scale, or ones after the last real frame
        filt_t, u_t, real_t = inputs
        p = filt_t * _scaled_on_support(filt_t, col)
        z_t = _draw(p, u_t, group)
        # The predictive of frame t+1 at the state drawn there, sum_j filt_t[j] pi[j, z_{t+1}],
        # floored as in the filter; and the filtered probability of the state drawn at t.
        pred_next = jnp.maximum(jnp.sum(filt_t * col, axis=-1) * scale, tiny)
        filt_z = jnp.sum(jnp.where(jnp.arange(K, dtype=z_t.dtype)[None, :] == z_t[:, None], filt_t, 0.0), axis=-1)
        passed = jnp.where(real_t, z_t, K)
        if per_sequence:
            return (pi_T[rows, passed], col_scale[rows, passed]), (z_t, jnp.log(filt_z), jnp.log(pred_next))
        return (pi_T[passed], col_scale[passed]), (z_t, jnp.log(filt_z), jnp.log(pred_next))

    def block_step(carry, inputs):
        b, filt_b, u_b = inputs
        real = b * block + jnp.arange(block) < Tz
        return lax.scan(sample_step, carry, (filt_b, u_b.T, real), reverse=True, unroll=4)

    init = (jnp.ones((N, K), dtype), jnp.ones((N,), dtype))
    _, (z, log_filt, log_pred_next) = lax.scan(
        block_step, init, (jnp.arange(num_blocks), filtered, uniforms), reverse=True
    )
    frames = lambda a: jnp.swapaxes(a.reshape(num_blocks * block, N), 0, 1)[:, :Tz]  # (N, Tz)
    z, log_filt, log_pred_next = frames(z), frames(log_filt), frames(log_pred_next)
    # The emission log-likelihood of the drawn state, from quantities the filter already has:
    # filt_t[k] = pred_t[k] exp(ll_t[k] - m_t) / c_t, so ll_t[z_t] = log_steps[t] + log
    # filt_t[z_t] - log pred_t[z_t] (pred_0 = 1/K). No second product with the transforms.
    log_pred = jnp.concatenate([jnp.full((N, 1), -jnp.log(jnp.asarray(K, dtype))), log_pred_next[:, :-1]], axis=1)
    valid = mask[:, nlags:] > 0
    ll_z = jnp.where(valid, frames(log_steps) + log_filt - log_pred, 0.0)
    return z, jnp.sum(ll_z), jnp.sum(log_norms)


def map_sequence_chunks(fn, sequence_chunk: int, *arrays):
    """`lax.map` of `fn` over chunks of `sequence_chunk` sequences (axis 0 of every array).

    The last chunk is padded with zeros, i.e. fully masked sequences whose results are
    dropped. **Returns:** `fn`'s outputs stacked over chunks, and `unchunk`, which turns a
    stacked per-sequence output `(num_chunks, C, ...)` back into `(N, ...)`.
    """
    N = arrays[0].shape[0]
    C = int(sequence_chunk)
    if C < 1:
        raise ValueError(f"`sequence_chunk` must be a positive number of sequences or None; got {sequence_chunk}.")
    num_chunks = -(-N // C)
    pad = num_chunks * C - N

    def chunks(a):
        a = jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1))
        return a.reshape((num_chunks, C) + a.shape[1:])

    out = lax.map(lambda args: fn(*args), tuple(chunks(a) for a in arrays))
    return out, lambda a: a.reshape((num_chunks * C,) + a.shape[2:])[:N]


def _smooth_given_filter(x, mask, Ab, Q, pi, block: int, nu=None):
    K, D, A = Ab.shape
    nlags = (A - 1) // D
    N, T, _ = x.shape
    Tz = T - nlags
    _, (filtered, _) = forward_filter_blocks(x, mask, Ab, Q, pi, block=block, nu=nu)
    W, log_norm = whitened_transforms(Ab, Q)
    x_pad, m_pad, num_blocks = _blocks(x, mask, nlags, block)
    pi_T = jnp.swapaxes(pi, -1, -2)

    def frame_step(beta, inputs):
        # beta_t is p(x[t+1:] | z[t]) up to a constant; padding frames have likelihood one
        # and keep beta at ones, so the real frames are smoothed as without padding.
        filt_t, lik_t = inputs
        post = filt_t * _scaled_on_support(filt_t, beta)
        post = post / jnp.sum(post, axis=-1, keepdims=True)
        # Scaled to a maximum of one before the product, so that products with floored
        # entries of pi do not flush to zero (the scale cancels in the normalisation).
        v = lik_t * beta
        beta = _propagate(v / jnp.max(v, axis=-1, keepdims=True), pi_T)
        return beta / jnp.sum(beta, axis=-1, keepdims=True), post

    def block_step(beta, inputs):
        b, filt_b = inputs
        ll = _block_log_likelihoods(x_pad, m_pad, b, W, log_norm, nlags, block, K, nu)
        lik = jnp.swapaxes(jnp.exp(ll - jnp.max(ll, axis=-1, keepdims=True)), 0, 1)  # masked rows: ones
        return lax.scan(frame_step, beta, (filt_b, lik), reverse=True, unroll=4)

    beta0 = jnp.ones((N, K), x.dtype)
    _, post = lax.scan(block_step, beta0, (jnp.arange(num_blocks), filtered), reverse=True)
    post = jnp.transpose(post.reshape(num_blocks * block, N, K), (1, 0, 2))
    return post[:, :Tz]


def smoothed_marginals(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"] | Float[Array, "N K K"],
    *,
    block: int = DEFAULT_BLOCK,
    sequence_chunk: int | None = None,
    nu: Float[Array, " K"] | None = None,
) -> Float[Array, "N Tz K"]:
    """Smoothed `p(z[t] | x)` by forward filtering and a normalised backward pass, in blocks of time.

    Beyond the `(N, Tz, K)` result, only the filtered messages are held (the backward pass
    recomputes each block's likelihoods); with `sequence_chunk`, only a chunk's messages.
    """
    if sequence_chunk is None or sequence_chunk >= x.shape[0]:
        return _smooth_given_filter(x, mask, Ab, Q, pi, block, nu)
    if pi.ndim == 3:  # each sequence's own pi: chunked with the sequences
        smooth = lambda x_c, m_c, pi_c: _smooth_given_filter(x_c, m_c, Ab, Q, pi_c, block, nu)
        post, unchunk = map_sequence_chunks(smooth, sequence_chunk, x, mask, pi)
        return unchunk(post)
    smooth = lambda x_c, m_c: _smooth_given_filter(x_c, m_c, Ab, Q, pi, block, nu)
    post, unchunk = map_sequence_chunks(smooth, sequence_chunk, x, mask)
    return unchunk(post)


def marginal_log_likelihood(x, mask, Ab, Q, pi, *, block: int = DEFAULT_BLOCK, nu=None) -> Float[Array, ""]:
    """`log p(x | Ab, Q, pi)` summed over sequences, without storing any message (Student-t
    emissions with `nu`, `tau` integrated out, for a robust model)."""
    log_norms, _ = forward_filter_blocks(x, mask, Ab, Q, pi, block=block, keep_filtered=False, nu=nu)
    return jnp.sum(log_norms)
