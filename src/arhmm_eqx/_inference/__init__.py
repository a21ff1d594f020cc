"""HMM inference over `(N, T)`: the one place where messages are passed (model.md §3).

The rest of the package imports from here, never from the modules:

- `blocked.py`: the forward filter, backward sampler, smoother and marginal likelihood
  of the sampler, blocked in time with the emission likelihoods fused in.
  `marginal_log_likelihood` is the model's `log p(x | Ab, Q, pi)`, the number that
  `ARHMM.marginal_log_likelihood`, the compat layer and the diagnostics report (and that
  `sample_stateseqs` returns with its draw).
- `parallel.py`: the parallel-in-time filter and backward sampler (associative scans),
  for accelerators: `sample_stateseqs(..., parallel=True)`.
- `logspace.py`: the log-space filter of the point estimates, differentiable and finite
  for parameters far from the data (`stable_marginal_log_likelihood`, the same quantity
  as `marginal_log_likelihood` up to rounding where both are finite, inside
  `log_posterior` and gradient fitting), and EM's forward-backward with expected
  transition counts (`forward_backward`).
- `viterbi.py`: the most likely state paths (`viterbi_paths`).
"""

import jax.numpy as jnp
import jax.random as jr

from .._custom_types import Array, Float, Int, PRNGKeyArray
from .blocked import (
    DEFAULT_BLOCK as DEFAULT_BLOCK,
    map_sequence_chunks,
    marginal_log_likelihood as marginal_log_likelihood,
    sample_given_uniforms as sample_blocked,
    smoothed_marginals as smoothed_marginals,
)
from .logspace import (
    forward_backward as forward_backward,
    stable_marginal_log_likelihood as stable_marginal_log_likelihood,
)
from .parallel import sample_given_uniforms as sample_parallel
from .viterbi import viterbi_paths as viterbi_paths


def sample_stateseqs(
    key: PRNGKeyArray,
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    Ab: Float[Array, "K D A"],
    Q: Float[Array, "K D D"],
    pi: Float[Array, "K K"] | Float[Array, "N K K"],
    *,
    block: int = DEFAULT_BLOCK,
    sequence_chunk: int | None = None,
    parallel: bool = False,
    nu: Float[Array, " K"] | None = None,
) -> tuple[Int[Array, "N Tz"], Float[Array, ""], Float[Array, ""]]:
    """Draw `z ~ p(z | x, Ab, Q, pi)` for every sequence by forward filtering / backward sampling.

    The pass is blocked in time (`blocked.py`, `block` frames at a time); `parallel=True`
    filters and samples each chunk with the parallel-in-time scans of `parallel.py` instead
    (same uniforms, so the same states up to rounding). `pi` is `(K, K)`, or `(N, K, K)`
    with each sequence's own matrix (per-group transitions).

    `sequence_chunk` is the memory knob: the filtered messages, `Tz x N x K` numbers,
    are the largest thing a sweep holds; with `sequence_chunk = C` sequences are filtered
    and sampled `C` at a time (one `lax.map` over chunks), so only `Tz x C x K` are held.
    The uniforms are drawn for all sequences at once, so the samples are the same
    whatever the chunking (up to the rounding of the products).

    `nu`: the degrees of freedom of a robust model's Student-t emissions (`tau` integrated
    out); None for Gaussian emissions.

    **Returns:** `(z, log_joint_x, log_marginal)`: the states; `log p(x | z, Ab, Q)` of the
    sampled states over valid frames; and `log p(x | Ab, Q, pi)` summed over sequences.
    """
    K, D, A = Ab.shape
    nlags = (A - 1) // D
    N, T, _ = x.shape
    uniforms = jr.uniform(key, (N, T - nlags), dtype=x.dtype)

    def sample(u, x_c, m_c, pi_c=pi):
        if parallel:
            return sample_parallel(u, x_c, m_c, Ab, Q, pi_c, nu)
        return sample_blocked(u, x_c, m_c, Ab, Q, pi_c, block=block, nu=nu)

    if sequence_chunk is None or sequence_chunk >= N:
        return sample(uniforms, x, mask)
    per_sequence = (pi,) if pi.ndim == 3 else ()  # each sequence's own pi goes with its chunk
    (z, ll_x, log_marg), unchunk = map_sequence_chunks(sample, sequence_chunk, uniforms, x, mask, *per_sequence)
    return unchunk(z), jnp.sum(ll_x), jnp.sum(log_marg)
