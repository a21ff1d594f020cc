"""Drivers: a BlackJAX-shaped `gibbs_step` and `run_chain`, a `lax.scan` over sweeps."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jax import lax

from ._checks import check_data
from ._custom_types import Array, Float, PRNGKeyArray
from ._gibbs import GibbsInfo, gibbs_sweep
from ._model import ARHMM


_NOT_FINITE_MSG = (
    "A Gibbs sweep produced non-finite values. Check the data scale (standardise `x`), "
    "or set EQX_ON_ERROR=nan to keep going and inspect `GibbsInfo.ok`."
)


@eqx.filter_jit
def gibbs_step(
    key: PRNGKeyArray,
    model: ARHMM,
    x: Float[Array, "N T D"],
    mask,
    *,
    states_only: bool = False,
    sequence_chunk: int | None = None,
    parallel: bool = False,
) -> tuple[ARHMM, GibbsInfo]:
    """One Gibbs sweep of `model` (BlackJAX-shaped: key first, returns `(model, info)`).

    Compiled once per shape: `kappa` and every other hyperparameter are array leaves, so
    it can be vmapped over models with different hyperparameters. Shapes are checked at
    trace time and values through `eqx.error_if`. `sequence_chunk`: filter and sample the
    states this many sequences at a time, to bound memory (same samples). `parallel`:
    filter and sample the states with parallel-in-time scans (for GPUs; same samples,
    `K` times the memory of the sequential filter).
    """
    hp = model.hyperparams
    x, mask = check_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)
    dtype = model.params.Ab.dtype
    return gibbs_sweep(
        key, model, x.astype(dtype), mask.astype(dtype), states_only=states_only, sequence_chunk=sequence_chunk,
        parallel=parallel,
    )


@eqx.filter_jit
def _scan_chain(key, model, x, mask, start, num_iters: int, states_only: bool, sequence_chunk, parallel=False):
    def body(m, i):
        m, info = gibbs_sweep(
            jr.fold_in(key, i), m, x, mask, states_only=states_only, sequence_chunk=sequence_chunk, parallel=parallel
        )
        return m, info

    return lax.scan(body, model, start + jnp.arange(num_iters, dtype=jnp.int32))


def run_chain(
    key: PRNGKeyArray,
    model: ARHMM,
    x: Float[Array, "N T D"],
    mask,
    num_iters: int,
    *,
    start_iter: int = 0,
    states_only: bool = False,
    sequence_chunk: int | None = None,
    parallel: bool = False,
    throw: bool = True,
) -> tuple[ARHMM, GibbsInfo]:
    """Run `num_iters` sweeps as one compiled `lax.scan`.

    Sweep `i` uses the key `fold_in(key, start_iter + i)`, so running `a` sweeps and then
    `b` more with `start_iter=a` gives exactly the chain of `a + b` sweeps at once.

    **Returns:** the final model and the stacked `GibbsInfo` of every sweep. With
    `throw=True`, a sweep with non-finite values raises (through `eqx.error_if`).
    `sequence_chunk` and `parallel` as in `gibbs_step`.
    """
    hp = model.hyperparams
    x, mask = check_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)
    dtype = model.params.Ab.dtype
    start = jnp.asarray(start_iter, jnp.int32)  # an array, so chunks of a chain share one compilation
    model, infos = _scan_chain(
        key, model, x.astype(dtype), mask.astype(dtype), start, num_iters, states_only, sequence_chunk, parallel
    )
    if throw:
        model = eqx.error_if(model, ~infos.ok.all(), _NOT_FINITE_MSG)
    return model, infos
