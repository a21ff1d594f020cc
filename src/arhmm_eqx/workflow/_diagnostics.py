"""Diagnostics across chains: split R-hat, effective sample size, segmentation agreement, EML scores.

R-hat, ESS and the agreement indices work on small host-side arrays (traces, state labels)
and use NumPy in float64 and exact integer counts. The marginal-likelihood score matrix needs
the forward filter of every chain, so it is one vmapped, jitted JAX computation.
"""


import equinox as eqx
import jax
import numpy as np

from .._checks import check_data
from .._custom_types import ArrayLike, Real, Shaped
from .._group_transitions import sequence_pi
from .._inference import marginal_log_likelihood
from .._model import ARHMM


def _chains_by_draws(traces, name: str, min_draws: int) -> np.ndarray:
    t = np.asarray(traces, dtype=np.float64)
    if t.ndim < 2 or t.shape[1] < min_draws:
        raise ValueError(
            f"`{name}` must have shape (chains, draws, ...) with at least {min_draws} draws; got {t.shape}. "
            "For one chain pass `trace[None]`."
        )
    return t


def split_rhat(traces) -> np.ndarray:
    """Split R-hat (Gelman et al., *Bayesian Data Analysis*, 3rd ed., §11.4) of scalar traces.

    Each chain is cut into halves (the middle draw is dropped when the length is odd), and
    `R = sqrt(((n - 1) / n * W + B / n) / W)` with `n` the half length, `W` the mean of the
    half-chains' variances and `B / n` the variance of their means. Near 1 when the chains
    mix over one distribution; large when they sit apart or drift.

    **Arguments:** `traces`: shape `(C, S)` or `(C, S, ...)` (chains, draws, then any scalars).

    **Returns:** R-hat, shape `traces.shape[2:]` (1 where every draw is equal; inf where each
    half-chain is constant but they differ).
    """
    t = _chains_by_draws(traces, "traces", 4)
    n = t.shape[1] // 2
    halves = np.concatenate([t[:, :n], t[:, t.shape[1] - n :]], axis=0)
    W = halves.var(axis=1, ddof=1).mean(axis=0)
    B_over_n = halves.mean(axis=1).var(axis=0, ddof=1)
    var_plus = (n - 1) / n * W + B_over_n
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = np.sqrt(var_plus / W)
    return np.where(var_plus == 0, 1.0, np.where(W == 0, np.inf, rhat))


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Biased autocovariances `(1/S) sum_t (x_t - m)(x_{t+k} - m)` of each row, by FFT."""
    S = x.shape[-1]
    size = 1 << (2 * S - 1).bit_length()
    f = np.fft.rfft(x - x.mean(axis=-1, keepdims=True), n=size)
    return np.fft.irfft(f * np.conj(f), n=size)[..., :S] / S


def _ess_one(t: np.ndarray) -> float:
    M, S = t.shape
    acov = _autocovariance(t)
    W = acov[:, 0].mean() * S / (S - 1)
    var_plus = W * (S - 1) / S + (t.mean(axis=1).var(ddof=1) if M > 1 else 0.0)
    if var_plus == 0:
        return float(M * S)
    rho = 1.0 - (W - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    pairs = rho[: 2 * (S // 2)].reshape(-1, 2).sum(axis=1)
    stop = np.argmax(pairs <= 0) if np.any(pairs <= 0) else pairs.size
    pairs = np.minimum.accumulate(pairs[:stop])  # Geyer's initial monotone sequence
    tau = max(-1.0 + 2.0 * pairs.sum(), 1.0 / np.log10(M * S))
    return float(M * S / tau)


def effective_sample_size(traces) -> np.ndarray:
    """Effective sample size of scalar traces over all chains together.

    The autocorrelations are combined across chains with the between- and within-chain
    variances (BDA3 §11.5) and summed with Geyer's (1992) initial monotone sequence
    estimator: `ESS = C * S / tau`, `tau = -1 + 2 * sum_k P_k`, `P_k = rho_{2k} + rho_{2k+1}`
    kept while positive and made non-increasing. `tau` is floored at `1 / log10(C S)`.

    **Arguments:** `traces`: shape `(C, S)` or `(C, S, ...)`, at least 4 draws.

    **Returns:** ESS, shape `traces.shape[2:]`.
    """
    t = _chains_by_draws(traces, "traces", 4)
    flat = np.moveaxis(t.reshape(t.shape[:2] + (-1,)), -1, 0)
    return np.asarray([_ess_one(f) for f in flat]).reshape(t.shape[2:])


def _contingency(z_a, z_b, valid) -> np.ndarray:
    a, b = np.asarray(z_a), np.asarray(z_b)
    if a.shape != b.shape:
        raise ValueError(f"`z_a` and `z_b` must have the same shape; got {a.shape} and {b.shape}.")
    keep = np.ones(a.shape, bool) if valid is None else np.asarray(valid).astype(bool)
    if keep.shape != a.shape:
        raise ValueError(f"`valid` must have the shape of `z_a`, {a.shape}; got {keep.shape}. "
                         "For states from a model use `mask[:, nlags:] > 0`.")
    _, ia = np.unique(a[keep], return_inverse=True)
    _, ib = np.unique(b[keep], return_inverse=True)
    nb = int(ib.max(initial=-1)) + 1
    counts = np.bincount(ia * nb + ib, minlength=(int(ia.max(initial=-1)) + 1) * nb)
    return counts.reshape(-1, max(nb, 1)).astype(np.int64)


def _pairs(n):
    return n * (n - 1) / 2.0


def adjusted_rand_index(z_a, z_b, valid=None) -> float:
    """Adjusted Rand index (Hubert and Arabie 1985) of two labelings of the same frames.

    Invariant to relabeling: 1 for the same segmentation up to a permutation of labels,
    about 0 for unrelated ones. `valid` (same shape, bool) selects the frames compared.
    """
    n_ij = _contingency(z_a, z_b, valid)
    index = _pairs(n_ij).sum()
    sum_a, sum_b = _pairs(n_ij.sum(axis=1)).sum(), _pairs(n_ij.sum(axis=0)).sum()
    expected = sum_a * sum_b / _pairs(n_ij.sum()) if n_ij.sum() > 1 else 0.0
    top = 0.5 * (sum_a + sum_b)
    return 1.0 if top == expected else float((index - expected) / (top - expected))


def variation_of_information(z_a, z_b, valid=None) -> float:
    """Variation of information (Meila 2007), in nats: `H(A) + H(B) - 2 I(A; B)`.

    A metric on segmentations, invariant to relabeling: 0 for the same one.
    """
    n_ij = _contingency(z_a, z_b, valid).astype(np.float64)
    p = n_ij / n_ij.sum()
    p_a, p_b = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    mutual = np.sum(p[nz] * np.log(p[nz] / np.outer(p_a, p_b)[nz]))
    entropy = lambda q: -np.sum(q[q > 0] * np.log(q[q > 0]))
    return float(max(entropy(p_a) + entropy(p_b) - 2.0 * mutual, 0.0))


def segmentation_agreement(z, valid=None, *, metric: str = "ari") -> np.ndarray:
    """Pairwise agreement between the segmentations of `C` chains.

    **Arguments:** `z` `(C, N, Tz)` (e.g. `models.states.z` of batched models); `valid`
    `(N, Tz)` bool, the frames to compare (`mask[:, nlags:] > 0`); `metric`: `"ari"`
    (adjusted Rand index) or `"vi"` (variation of information).

    **Returns:** the symmetric `(C, C)` matrix.
    """
    fn = {"ari": adjusted_rand_index, "vi": variation_of_information}.get(metric)
    if fn is None:
        raise ValueError(f"`metric` must be 'ari' or 'vi'; got {metric!r}.")
    z = np.asarray(z)
    if z.ndim != 3:
        raise ValueError(f"`z` must hold one segmentation per chain, shape (C, N, Tz); got shape {z.shape}. "
                         "For one sequence per chain use `z[:, None]`.")
    C = z.shape[0]
    out = np.zeros((C, C))
    for i in range(C):
        for j in range(i, C):
            out[i, j] = out[j, i] = fn(z[i], z[j], valid)
    return out


class EMLScores(eqx.Module):
    """`matrix[i, j]`: `log p(x_j | params_i)`; `scores[i]`: its mean over `j != i` (the
    diagonal when `C = 1`); `ranking`: chains from the best score to the worst."""

    matrix: np.ndarray
    scores: np.ndarray
    ranking: np.ndarray


@eqx.filter_jit
def _marginals(models, x, mask, per_chain_data: bool):
    def ll(m, x_j, mask_j):
        p = m.params
        return marginal_log_likelihood(x_j, mask_j, p.Ab, p.Q, sequence_pi(p.pi, m.states.groups))  # groups: own pi

    if not per_chain_data:
        return eqx.filter_vmap(lambda m: ll(m, x, mask))(models)
    over_data = lambda m: jax.vmap(lambda xj, mj: ll(m, xj, mj))(x, mask)
    return eqx.filter_vmap(over_data)(models)


def expected_marginal_likelihoods(
    models: ARHMM, x: Real[ArrayLike, "*C N T D"], mask: Shaped[ArrayLike, "*C N T"]
) -> EMLScores:
    """Score restarts by the marginal likelihood of the data under each chain's parameters.

    MoSeq users rank restarts by an "expected marginal likelihood": for chains `i` and `j`,
    `log p(x_j | params_i)` with the states integrated out, averaged over `j != i`. In
    keypoint-MoSeq each chain has its own inferred trajectories `x_j`. An AR-HMM fitted to
    fixed data shares one `x`: then every column is the same and `scores[i]` is simply
    `log p(x | params_i)`. Pass per-chain trajectories `(C, N, T, D)` to get the full cross
    matrix, computed as one nested `vmap` (no Python double loop).

    **Arguments:** `models`: batched `ARHMM` (`C` chains); `x` `(N, T, D)` shared or
    `(C, N, T, D)` per chain; `mask` `(N, T)` or `(C, N, T)` to match.

    **Returns:** an `EMLScores` (NumPy arrays, float64 scores).
    """
    C = int(models.hyperparams.kappa.shape[0]) if models.hyperparams.kappa.ndim == 1 else None
    if C is None:
        raise ValueError("`models` must be batched (a leading chain axis, from `init_chains` or `run_chains`).")
    hp = models.hyperparams
    per_chain = getattr(x, "ndim", np.ndim(x)) == 4
    if per_chain:
        if x.shape[0] != C or np.shape(mask)[:1] != (C,):
            raise ValueError(f"per-chain `x` and `mask` need a leading axis of {C} chains; got {x.shape}, "
                             f"{np.shape(mask)}.")
        checked = [check_data(x[j], mask[j], nlags=hp.nlags, latent_dim=hp.latent_dim) for j in range(C)]
        x, mask = (np.stack([np.asarray(c[k]) for c in checked]) for k in (0, 1))
    else:
        x, mask = check_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)
    dtype = models.params.Ab.dtype
    lls = np.asarray(_marginals(models, x.astype(dtype), mask.astype(dtype), per_chain), dtype=np.float64)
    matrix = lls if per_chain else np.broadcast_to(lls[:, None], (C, C)).copy()
    if C == 1:
        scores = np.diag(matrix).copy()
    else:
        scores = (matrix.sum(axis=1) - np.diag(matrix)) / (C - 1)
    return EMLScores(matrix, scores, np.argsort(-scores, kind="stable"))
