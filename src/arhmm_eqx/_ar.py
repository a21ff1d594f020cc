"""AR emissions: sufficient statistics, the MNIW conditional of `(Ab, Q)` and log-likelihoods (model.md §2)."""

import math

import jax
import jax.numpy as jnp
from jax import lax

from ._custom_types import Array, Float, Int, PRNGKeyArray
from ._distributions import mniw_prior_joint, sample_mniw_from_joint
from ._lags import augmented_regressors
from ._linalg import PRECISION, psd_cholesky, solve_lower
from ._robust import student_t_log_density


# Full float32 accuracy for the likelihood products: on GPUs the default precision of a
# float32 matmul is TF32 (about 1e-3 relative), which shifts log-likelihoods visibly.

# Frames per chunk are chosen so that one chunk of outer products holds about 2**22
# numbers (16 MiB in float32), whatever D and L are.
_CHUNK_ELEMENTS = 2**22


def chunk_size(width: int, total: int) -> int:
    return max(1, min(total, _CHUNK_ELEMENTS // max(1, width)))


# Frames per block of the sorted sufficient statistics (see `ar_sufficient_stats`). Each
# state's frames are padded to a multiple of this, so the padding is at most K * (block - 1)
# frames; 256 keeps that a few percent of a typical dataset while the per-block products
# stay large enough for an efficient batched matrix product.
STATS_BLOCK = 256
# Blocks gathered and multiplied per step of the scan: 32 blocks of 256 frames are 8192
# regressors at a time, a few MiB, whatever the size of the dataset.
STATS_BLOCKS_PER_STEP = 32


def _stable_argsort_small_keys(keys: Int[Array, " M"], num_keys: int) -> Int[Array, " M"]:
    """`argsort(keys, stable=True)` for keys in `[0, num_keys)`, as int32.

    When `key * 2^b + index` fits in an int32 (`2^b >= M`), one sort of those packed numbers
    gives the same order about three times faster on CPU than a stable sort of (key, index)
    pairs (0.03 against 0.10 s for 720,000 frames).
    """
    M = keys.shape[0]
    bits = max(1, (M - 1).bit_length())
    if (num_keys - 1).bit_length() + bits <= 31:
        packed = jnp.sort(keys.astype(jnp.int32) * (1 << bits) + jnp.arange(M, dtype=jnp.int32))
        return packed & ((1 << bits) - 1)
    return jnp.argsort(keys, stable=True).astype(jnp.int32)


def ar_sufficient_stats(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    z: Int[Array, "N Tz"],
    *,
    num_states: int,
    nlags: int,
    weights: Float[Array, "N Tz"] | None = None,
) -> Float[Array, "K AD AD"]:
    """`sum_t w_t v_t v_t^T` per state, with `v_t = [lags, 1, x[t]]` and `w_t` the frame's mask
    (times `weights[t]`, the precisions `tau` of a robust model, when given).

    The block `[:A, :A]` is `S_uu`, `[A:, :A]` is `S_yu`, `[A:, A:]` is `S_yy`, and
    entry `[A-1, A-1]` is the number of valid frames of the state.

    No `K x frames` one-hot and no per-frame scatter of outer products: valid frames are
    sorted by state and assigned slots so that each state's frames fill whole blocks of
    `STATS_BLOCK` slots (empty slots pad a state's last block). A scan then gathers the
    regressors of a few blocks at a time straight from `x`, one batched product gives
    every block's `V_b^T V_b`, and a segment sum over blocks gives the states'. Beyond `x`,
    memory is a few integers per frame plus one `(A + D)^2` matrix per block.
    """
    K, C, G = num_states, STATS_BLOCK, STATS_BLOCKS_PER_STEP
    N, T, D = x.shape
    Tz = T - nlags
    M = N * Tz
    dtype = x.dtype
    # Masked frames go to an extra state K, whose slots come after every real state's.
    valid = mask[:, nlags:] > 0
    zf = jnp.where(valid, z, K).reshape(-1).astype(jnp.int32)
    counts = jnp.bincount(zf, length=K + 1).astype(jnp.int32)
    block_counts = (counts + C - 1) // C
    padded_start = jnp.cumsum(block_counts * C, dtype=jnp.int32) - block_counts * C
    start = jnp.cumsum(counts, dtype=jnp.int32) - counts
    order = _stable_argsort_small_keys(zf, K + 1)
    z_sorted = zf[order]
    dest = padded_start[z_sorted] + jnp.arange(M, dtype=jnp.int32) - start[z_sorted]
    num_blocks = -(-(-(-M // C) + K) // G) * G  # >= sum_k ceil(n_k / C), a multiple of G
    # Slots of the masked frames' state lie past the real states' blocks: dropped.
    source = jnp.full((num_blocks * C,), -1, jnp.int32).at[dest].set(order, mode="drop")
    x_flat = x.reshape(N * T, D)
    ones = jnp.ones((G * C, 1), dtype)
    w_flat = None if weights is None else weights.reshape(-1).astype(dtype)

    def step(_, slots):
        f = jnp.maximum(slots, 0)
        row = (f // Tz) * T + f % Tz  # first lag of frame f in x_flat
        frames = x_flat[row[:, None] + jnp.arange(nlags + 1, dtype=jnp.int32)[None, :]]  # (G*C, L+1, D)
        v = jnp.concatenate([frames[:, :nlags].reshape(-1, nlags * D), ones, frames[:, nlags]], axis=1)
        v = jnp.where((slots >= 0)[:, None], v, jnp.zeros((), dtype)).reshape(G, C, -1)
        if w_flat is not None:  # robust model: precision-weighted statistics
            return None, jnp.einsum("bci,bcj->bij", v * w_flat[f].reshape(G, C, 1), v, precision=PRECISION)
        return None, jnp.einsum("bci,bcj->bij", v, v, precision=PRECISION)

    _, block_stats = lax.scan(step, None, source.reshape(-1, G * C))
    block_stats = block_stats.reshape(num_blocks, *block_stats.shape[2:])
    block_state = jnp.searchsorted(padded_start, jnp.arange(num_blocks, dtype=jnp.int32) * C, side="right") - 1
    return jax.ops.segment_sum(block_stats, block_state, num_segments=K)


def mniw_posterior_joint(
    stats: Float[Array, "K AD AD"],
    *,
    nu_0: Float[Array, ""],
    S_0: Float[Array, "D D"],
    M_0: Float[Array, "D A"],
    K_0: Float[Array, "A A"],
    counts: Float[Array, " K"] | None = None,
) -> tuple[Float[Array, "K AD AD"], Float[Array, " K"]]:
    """Posterior MNIW parameters per state, packed as the joint matrix `G_k` and `nu_n`.

    `nu_n = nu_0 + n_k` with `n_k` the number of frames: read from the statistics
    (`[A-1, A-1]`, the sum of the frames' weights), or `counts` when given (precision-weighted
    statistics of a robust model, whose frames each add one to the degrees of freedom).

    `G_k = prior joint + stats_k`; its blocks are `K_n^{-1}`, `M_n K_n^{-1}` and
    `S_n + M_n K_n^{-1} M_n^T` (see `_distributions.sample_mniw_from_joint`), which is
    the update of model.md §2. A state with no frames keeps the prior.
    """
    A = M_0.shape[-1]
    G0 = mniw_prior_joint(nu_0, S_0, M_0, K_0)
    n_k = stats[:, A - 1, A - 1] if counts is None else counts
    return G0[None] + stats, nu_0 + n_k


def resample_ar_params(
    key: PRNGKeyArray,
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    z: Int[Array, "N Tz"],
    *,
    nu_0: Float[Array, ""],
    S_0: Float[Array, "D D"],
    M_0: Float[Array, "D A"],
    K_0: Float[Array, "A A"],
    num_states: int,
    nlags: int,
    tau: Float[Array, "N Tz"] | None = None,
) -> tuple[Float[Array, "K D A"], Float[Array, "K D D"]]:
    """Draw `(Ab, Q)` from their conjugate MNIW conditional, independently per state (one batched draw).

    With `tau` (a robust model), given the precisions: each frame's statistics are weighted
    by its `tau`, and its count in `nu_n` is still 1 (model.md, "Robust noise").
    """
    dtype = x.dtype
    nu_0, S_0, M_0, K_0 = (jnp.asarray(v, dtype) for v in (nu_0, S_0, M_0, K_0))
    if tau is None:
        stats = ar_sufficient_stats(x, mask, z, num_states=num_states, nlags=nlags)
        G, nu_n = mniw_posterior_joint(stats, nu_0=nu_0, S_0=S_0, M_0=M_0, K_0=K_0)
    else:
        stats = ar_sufficient_stats(x, mask, z, num_states=num_states, nlags=nlags, weights=tau)
        valid = mask[:, nlags:] > 0
        counts = jnp.bincount(jnp.where(valid, z, num_states).reshape(-1), length=num_states + 1)[:num_states]
        G, nu_n = mniw_posterior_joint(stats, nu_0=nu_0, S_0=S_0, M_0=M_0, K_0=K_0, counts=counts.astype(dtype))
    return sample_mniw_from_joint(key, G, nu_n, x.shape[-1])


def init_ar_params(
    key: PRNGKeyArray,
    *,
    nu_0: Float[Array, ""],
    S_0: Float[Array, "D D"],
    M_0: Float[Array, "D A"],
    K_0: Float[Array, "A A"],
    num_states: int,
) -> tuple[Float[Array, "K D A"], Float[Array, "K D D"]]:
    """Draw `(Ab, Q)` for every state from the MNIW prior."""
    D = S_0.shape[-1]
    G0 = mniw_prior_joint(nu_0, S_0, M_0, K_0)
    K = num_states
    nu = jnp.broadcast_to(jnp.asarray(nu_0, G0.dtype), (K,))
    return sample_mniw_from_joint(key, jnp.broadcast_to(G0, (K,) + G0.shape), nu, D)


def whitened_transforms(
    Ab: Float[Array, "K D A"], Q: Float[Array, "K D D"]
) -> tuple[Float[Array, "AD DK"], Float[Array, " K"]]:
    """`W` with `(v_t @ W)[d * K + k] = (L_k^{-1} (x_t - Ab_k u_t))[d]`, and the per-state
    log-normalisers `-log det L_k - D/2 log(2 pi)`.

    With `L_k` the Cholesky factor of `Q_k`, the residual of every state is one product
    against `[-L_k^{-1} Ab_k, L_k^{-1}]`, so all states share a single matrix product.
    Columns are ordered dimension-major (`d * K + k`), so that summing the squared
    residuals over `d` adds whole contiguous `K`-vectors.
    """
    K, D, A = Ab.shape
    L = psd_cholesky(Q)
    eye = jnp.broadcast_to(jnp.eye(D, dtype=Q.dtype), (K, D, D))
    L_inv = solve_lower(L, eye)
    W = jnp.concatenate([-jnp.matmul(L_inv, Ab, precision=PRECISION), L_inv], axis=-1)  # (K, D, A + D)
    W = jnp.transpose(W, (2, 1, 0)).reshape(A + D, D * K)
    log_norm = -jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)).sum(-1) - 0.5 * D * math.log(2 * math.pi)
    return W, log_norm


def squared_residual_norms(r: Float[Array, "*batch DK"], num_states: int) -> Float[Array, "*batch K"]:
    """Sum over `d` of the squared whitened residuals laid out as by `whitened_transforms`."""
    r = r.reshape(r.shape[:-1] + (-1, num_states))
    return jnp.sum(r * r, axis=-2)


def emission_log_likelihoods(
    sq: Float[Array, "*batch K"], log_norm: Float[Array, " K"], nu: Float[Array, " K"] | None, latent_dim: int
) -> Float[Array, "*batch K"]:
    """Per-state emission log-densities from the whitened squared residuals `sq`: Gaussian
    (`log_norm - sq / 2`) when `nu` is None, else Student-t with `nu` degrees of freedom."""
    if nu is None:
        return log_norm - 0.5 * sq
    lead = (1,) * (sq.ndim - 1)
    return student_t_log_density(sq, log_norm.reshape(lead + (-1,)), nu.reshape(lead + (-1,)), latent_dim)


def ar_log_likelihoods(
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    nu: Float[Array, " K"] | None = None,
) -> Float[Array, "N Tz K"]:
    """`ll[n, t, k] = log Normal(x[n, t+L] | Ab[k] u_t, Q[k])` on valid frames, 0 on masked ones (model.md §3).

    With `nu`, the Student-t density of a robust model instead (`tau` integrated out).

    Computed in chunks of frames (one matrix product per chunk against all states),
    so the `frames x K x D` residuals never exist all at once.
    """
    K, D, A = Ab.shape
    nlags = (A - 1) // D
    N, T, _ = x.shape
    Tz = T - nlags
    W, log_norm = whitened_transforms(Ab, Q)
    v = augmented_regressors(x, nlags).reshape(N * Tz, A + D)

    def one_frame(v_t):
        return emission_log_likelihoods(squared_residual_norms(jnp.matmul(v_t, W, precision=PRECISION), K),
                                        log_norm, nu, D)

    ll = lax.map(one_frame, v, batch_size=chunk_size(K * D, N * Tz))
    # Select, not multiply: a masked frame's row is 0 even when its lags made it inf or NaN.
    return jnp.where(mask[:, nlags:, None] > 0, ll.reshape(N, Tz, K), jnp.zeros((), ll.dtype))
