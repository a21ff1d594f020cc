"""Drivers: a BlackJAX-shaped `gibbs_step` and `run_chain`, a `lax.scan` over sweeps."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jax import lax

from ._checks import check_data_at_entry, check_key, clean_data
from ._custom_types import Array, Float, PRNGKeyArray
from ._gibbs import GibbsInfo, gibbs_sweep
from ._model import ARHMM, check_states_fit_data


_NOT_FINITE_MSG = (
    "A Gibbs sweep produced non-finite values. Check the data scale (standardise `x`), "
    "or set EQX_ON_ERROR=nan to keep going and inspect `GibbsInfo.ok`."
)


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
    it can be vmapped over models with different hyperparameters. The model and the data
    are checked first, on the host (`ARHMM.check`, `x`/`mask` values; under an outer `jit`
    the value checks go through `eqx.error_if`), then one compiled program runs.
    `sequence_chunk`: filter and sample the states this many sequences at a time, to bound
    memory (same samples). `parallel`: filter and sample the states with parallel-in-time
    scans (for GPUs; same samples, `K` times the memory of the sequential filter).
    """
    check_key(key)
    model.check()
    hp = model.hyperparams
    x, mask = check_data_at_entry(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)  # on the host when concrete
    check_states_fit_data(model.states.z, x, hp.nlags)
    return checked_gibbs_step(
        key, model, x, mask, states_only=states_only, sequence_chunk=sequence_chunk, parallel=parallel
    )


@eqx.filter_jit
def checked_gibbs_step(key, model: ARHMM, x, mask, *, states_only=False, sequence_chunk=None, parallel=False):
    """`gibbs_step` on a model and data whose host-side checks have run (`ARHMM.resample` runs
    them once); the data are cleaned (`clean_data`: no host callback) inside the compiled program."""
    hp = model.hyperparams
    x, mask = clean_data(x, mask, nlags=hp.nlags)
    dtype = model.params.Ab.dtype
    return gibbs_sweep(
        key, model, x.astype(dtype), mask.astype(dtype), states_only=states_only, sequence_chunk=sequence_chunk,
        parallel=parallel,
    )


def scan_sweeps(key, model, x, mask, start, num_iters: int, states_only: bool, sequence_chunk, parallel=False,
                thin: int | None = None):
    """The sweeps of one chain as a `lax.scan` (not jitted, so it can be vmapped over chains).

    Sweep `i` uses `fold_in(key, start + i)`. With `thin`, the scan is nested (outer steps of
    `thin` sweeps) and the model after every `thin`-th sweep is also returned, stacked.

    **Returns:** `(model, infos)`, or `(model, infos, samples)` when `thin` is given.
    """

    def body(m, i):
        return gibbs_sweep(
            jr.fold_in(key, i), m, x, mask, states_only=states_only, sequence_chunk=sequence_chunk, parallel=parallel
        )

    iters = start + jnp.arange(num_iters, dtype=jnp.int32)
    if thin is None:
        return lax.scan(body, model, iters)

    def outer(m, its):
        m, infos = lax.scan(body, m, its)
        return m, (infos, m)

    model, (infos, samples) = lax.scan(outer, model, iters.reshape(num_iters // thin, thin))
    infos = jtu.tree_map(lambda a: a.reshape((num_iters,) + a.shape[2:]), infos)
    return model, infos, samples


@eqx.filter_jit
def _scan_chain(key, model, x, mask, start, num_iters: int, states_only: bool, sequence_chunk, parallel=False,
                thin=None):
    hp = model.hyperparams
    x, mask = clean_data(x, mask, nlags=hp.nlags)  # checked by the caller; no host callback here
    dtype = model.params.Ab.dtype
    out = scan_sweeps(key, model, x.astype(dtype), mask.astype(dtype), start, num_iters, states_only, sequence_chunk,
                      parallel, thin)
    return out


def check_thin(num_iters: int, thin: int | None) -> None:
    """`thin` must be None or a positive divisor of `num_iters`."""
    if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(f"`num_iters` must be a positive int; got {num_iters!r}.")
    if thin is None:
        return
    if isinstance(thin, bool) or not isinstance(thin, int) or thin < 1 or num_iters % thin:
        raise ValueError(
            f"`thin` must be None or a positive int that divides `num_iters` = {num_iters}; got {thin!r}. "
            f"For example `thin={_divisor_near(num_iters, thin)}`."
        )


def _divisor_near(n: int, d) -> int:
    d = d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else 1
    return min((k for k in range(1, n + 1) if n % k == 0), key=lambda k: abs(k - d))


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
    thin: int | None = None,
) -> tuple[ARHMM, GibbsInfo] | tuple[ARHMM, GibbsInfo, ARHMM]:
    """Run `num_iters` sweeps as one compiled `lax.scan`.

    Sweep `i` uses the key `fold_in(key, start_iter + i)`, so running `a` sweeps and then
    `b` more with `start_iter=a` gives exactly the chain of `a + b` sweeps at once.

    **Arguments:**

    - `key`: a `jax.random.key`; `model`: the starting `ARHMM`; `x` `(N, T, D)`, `mask` `(N, T)`.
    - `num_iters`: number of sweeps (static: each new length compiles once).
    - `start_iter`: index of the first sweep (to resume a chain).
    - `states_only`, `sequence_chunk`, `parallel`: as in `gibbs_step`.
    - `throw`: raise `RuntimeError` (under a caller's `jit`, through `eqx.error_if`) when a
      sweep produced non-finite values;
      with `throw=False` look at `infos.ok` instead.
    - `thin`: also keep the model after every `thin`-th sweep (`thin` must divide `num_iters`).

    **Returns:** the final model and the stacked `GibbsInfo` of every sweep (leading axis
    `num_iters`); with `thin`, also the saved models stacked along a leading axis of
    length `num_iters // thin` (sample `j` is the model after sweep `(j + 1) * thin`).
    """
    check_thin(num_iters, thin)
    check_key(key)
    model.check()
    hp = model.hyperparams
    x, mask = check_data_at_entry(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim)  # on the host when concrete
    check_states_fit_data(model.states.z, x, hp.nlags)
    # an array, so chunks of a chain share one compilation (NumPy for an int: no JAX operation here)
    start = np.asarray(start_iter, np.int32) if isinstance(start_iter, (int, np.integer)) else jnp.asarray(
        start_iter, jnp.int32)
    if thin is None:
        model, infos = _scan_chain(
            key, model, x, mask, start, num_iters, states_only, sequence_chunk, parallel
        )
        samples = None
    else:
        model, infos, samples = _scan_chain(
            key, model, x, mask, start, num_iters, states_only, sequence_chunk, parallel, thin
        )
    if throw:
        if isinstance(infos.ok, jax.core.Tracer):  # under a caller's jit: in the caller's program
            model = eqx.error_if(model, ~infos.ok.all(), _NOT_FINITE_MSG)
        elif not np.all(np.asarray(infos.ok)):  # on the host: no program, no callback in the chain's
            raise RuntimeError(_NOT_FINITE_MSG)
    return (model, infos) if samples is None else (model, infos, samples)
