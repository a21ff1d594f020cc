"""Checks of user input: static facts raise at once, values raise eagerly or through `eqx.error_if`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import Array, Float


_NAN_MSG = (
    "`x` has NaN or inf values in frames that `mask` marks valid. Set `mask` to 0 for "
    "those frames (missing data), or fill them in before fitting."
)
_MASK_VALUES_MSG = "`mask` must contain only 0 (padding) and 1 (valid frame); convert it with `(mask > 0)`."
_MASK_EMPTY_MSG = "`mask` has no valid frame after the first `nlags` frames: there is nothing to fit."


def _is_traced(*arrays) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


def local_values(a) -> np.ndarray:
    """`a` on the host for a value check: the whole array, or, for an array spread over several
    processes, the values of this process's own pieces (flattened; each process checks its own)."""
    if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated:
        return np.concatenate([np.asarray(s.data).ravel() for s in a.addressable_shards])
    return np.asarray(a)


def _local_pairs(x, mask):
    """`(x, mask)` values to check together: the whole arrays, or this process's pieces of both."""
    spread = [isinstance(a, jax.Array) and not a.is_fully_addressable for a in (x, mask)]
    if not any(spread):
        return [(np.asarray(x), np.asarray(mask))]
    where = lambda shard: tuple((i.start, i.stop) for i in shard.index[:2])  # slices are not hashable
    rows = {where(s): np.asarray(s.data) for s in mask.addressable_shards} if all(spread) else {}
    if not all(where(s) in rows for s in x.addressable_shards):
        raise ValueError("`x` and `mask` spread over several processes must be split the same way; build both "
                         "with `shard_sequences`.")
    return [(np.asarray(s.data), rows[where(s)]) for s in x.addressable_shards]


def check_int(name: str, value, *, minimum: int = 1, maximum: int | None = None, allow_none: bool = False):
    """`value` as a Python int, or `ValueError` naming `name`: an `int` or NumPy integer (not a
    bool) in `[minimum, maximum]`; None passes through when `allow_none`."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or value < minimum or (maximum is not None and value > maximum):
        want = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
        raise ValueError(f"`{name}` must be {want}{' or None' if allow_none else ''}; got {value!r}.")
    return int(value)


def check_positive(name: str, value, fix: str = "") -> None:
    """Raise `ValueError` when a concrete hyperparameter is not strictly positive."""
    if _is_traced(value):
        return
    arr = local_values(value)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"`{name}` must be finite and > 0; got {arr.tolist()}. {fix}".rstrip())


def validate_data(x, mask, *, nlags: int, latent_dim: int | None = None) -> tuple:
    """The checks of `check_data` without running any JAX operation, for a caller outside `jit`.

    Static checks always; value checks (NaN/inf in valid frames, mask values, at least one
    valid frame) on concrete arrays, on the host with NumPy. Traced arrays get only the
    static checks here (`check_data` adds `eqx.error_if` checks under `jit`).

    **Returns:** `(x, mask)` as given, except that non-arrays (lists) become NumPy arrays.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    if not hasattr(mask, "shape") or not hasattr(mask, "dtype"):
        mask = np.asarray(mask)
    if x.ndim != 3:
        raise ValueError(
            f"`x` must have shape (N, T, D) = (sequences, frames, latent_dim); got shape {tuple(x.shape)}. "
            "For a single sequence of shape (T, D), pass `x[None]` and `mask[None]`."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`x` must be a floating-point array; got dtype {x.dtype}. Use `x.astype(float)`.")
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"`mask` must have shape (N, T) = {tuple(x.shape[:2])} to match `x`; got shape {tuple(mask.shape)}."
        )
    N, T, D = x.shape
    if T <= nlags:
        raise ValueError(
            f"sequences must be longer than `nlags` = {nlags} frames; `x` has T = {T}. "
            "Use longer sequences or a smaller `nlags`."
        )
    if latent_dim is not None and D != latent_dim:
        raise ValueError(
            f"`x` has latent_dim D = {D} but the model has `latent_dim` = {latent_dim}. "
            "Build the hyperparameters with the dimension of your data."
        )
    if not _is_traced(x, mask):
        pairs = _local_pairs(x, mask)
        if not all(np.all((m == 0) | (m == 1)) for _, m in pairs):
            raise ValueError(_MASK_VALUES_MSG)
        if len(pairs) == 1 and not np.any(pairs[0][1][:, nlags:] > 0):  # one process sees every sequence
            raise ValueError(_MASK_EMPTY_MSG)
        if not all(np.all(np.isfinite(xv[m > 0])) for xv, m in pairs):
            raise ValueError(_NAN_MSG)
    return x, mask


def values_checked(x, mask) -> bool:
    """True when `validate_data` has checked the values of `x` and `mask` (they are concrete):
    the compiled code that follows then needs no `eqx.error_if` for them (`check_data`'s
    `values_checked`)."""
    return not _is_traced(x, mask)


def check_data(
    x, mask, *, nlags: int, latent_dim: int | None = None, values_checked: bool = False
) -> tuple[Float[Array, "N T D"], Float[Array, "N T"]]:
    """Validate `x` and `mask` and return them ready for the kernels.

    Static checks (always, also under `jit`): `x` is a 3-D floating array `(N, T, D)`,
    `mask` has shape `(N, T)`, `T > nlags`, `D == latent_dim`. Value checks (NaN/inf in
    valid frames, mask values, at least one valid frame) raise `ValueError` at once on
    concrete arrays and go through `eqx.error_if` on traced ones. Outside `jit` this runs
    JAX operations one by one; entry points call `validate_data` there and this inside
    their `jit`, with `values_checked=True` when the host has checked the values: the program
    then has no `eqx.error_if` (whose host callback would pin `x` to one device, so that a
    program over sequences split across devices or processes would gather the whole `x`).

    **Returns:** `x` with every masked frame set to 0 except the finite ones that are lags
    of a valid frame (among the `nlags` frames before it), which the model conditions on;
    so no NaN, inf or huge sentinel in a masked frame can leak into any sum or product.
    `mask` comes back as an array of `x`'s dtype.
    """
    x, mask = validate_data(x, mask, nlags=nlags, latent_dim=latent_dim)
    if mask.dtype == bool:
        mask = mask.astype(x.dtype)  # a boolean mask is a valid mask; compare it as numbers
    valid = mask > 0
    if _is_traced(x, mask) and not values_checked:
        x = eqx.error_if(x, jnp.any(valid[..., None] & ~jnp.isfinite(x)), _NAN_MSG)
        mask = eqx.error_if(mask, jnp.any((mask != 0) & (mask != 1)), _MASK_VALUES_MSG)
        mask = eqx.error_if(mask, ~jnp.any(mask[:, nlags:] > 0), _MASK_EMPTY_MSG)
        valid = mask > 0
    return clean_data(x, valid, nlags=nlags)


def check_key(key, name: str = "key") -> None:
    """Raise `TypeError` unless `key` is a JAX PRNG key (`jax.random.key(...)`, or the legacy
    `jax.random.PRNGKey(...)` uint32 pair); batched keys are keys too."""
    if _is_traced(key):
        return
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return
    if dtype == jnp.uint32 and getattr(key, "shape", ())[-1:] == (2,):
        return
    raise TypeError(
        f"`{name}` must be a JAX random key such as `jax.random.key(0)`; got {type(key).__name__} {key!r:.60}. "
        "(Integer seeds are accepted by `arhmm_eqx.compat`, as in the reference API.)"
    )


def check_integer_states(z, num_states: int, name: str = "z") -> None:
    """Raise when concrete states hold a value outside `0 .. num_states - 1`."""
    if _is_traced(z) or not hasattr(z, "shape"):
        return
    zv = local_values(z)
    if zv.size and (zv.min() < 0 or zv.max() >= num_states):
        bad = int(zv.min()) if zv.min() < 0 else int(zv.max())
        raise ValueError(
            f"`{name}` must hold states 0 .. {num_states - 1} (num_states = {num_states}); found {bad}. "
            "Build states with the model's number of states."
        )


def clean_data(x, valid, *, nlags: int):
    """`x` and `mask` as the kernels take them, with no check (`check_data` or `validate_data`
    has run): every masked frame of `x` set to 0 except the finite ones that are lags of a
    valid frame, and the mask (`valid`, boolean or 0/1) as an array of `x`'s dtype. Pure JAX
    with no host callback, so it can sit inside the compiled sweep."""
    x = jnp.asarray(x)
    valid = jnp.asarray(valid)
    valid = valid if valid.dtype == bool else valid > jnp.zeros((), valid.dtype)
    # A masked frame matters only as a lag of a valid frame among the next `nlags`; every
    # other masked frame is set to 0, so that no value there (NaN, inf, a sentinel such as
    # 1e20 or FLT_MAX) enters any arithmetic. A lag that matters keeps its finite value.
    later = jnp.pad(valid, ((0, 0), (0, nlags)))
    lag_of_valid = jnp.zeros_like(valid)
    for lag in range(1, nlags + 1):
        lag_of_valid = lag_of_valid | later[:, lag : lag + valid.shape[1]]
    keep = valid[..., None] | (lag_of_valid[..., None] & jnp.isfinite(x))
    x = jnp.where(keep, x, jnp.zeros((), x.dtype))
    return x, valid.astype(x.dtype)


def check_data_at_entry(x, mask, *, nlags: int, latent_dim: int | None = None):
    """The checks of an entry point that runs compiled code next: on concrete arrays on the host
    (`validate_data`, no JAX operation); under a caller's `jit`, `check_data` (its value checks
    go through `eqx.error_if` in the caller's program). The compiled code then calls `clean_data`."""
    if _is_traced(x, mask):
        return check_data(x, mask, nlags=nlags, latent_dim=latent_dim)
    return validate_data(x, mask, nlags=nlags, latent_dim=latent_dim)
