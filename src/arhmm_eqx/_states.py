"""`States`: the discrete state sequences of the AR-HMM."""

import equinox as eqx
import jax.numpy as jnp

from ._custom_types import Array, Float, Int


class States(eqx.Module):
    """Discrete states `z` `(N, T - nlags)` of frames `nlags .. T-1`; and `tau` `(N, T - nlags)`, the
    per-frame noise precisions of a robust model (None for Gaussian noise).

    `groups` `(N,)`: the group of each sequence when the model has per-group transition
    matrices (`Hyperparams.num_groups`), else None. Like the data, the labels are fixed:
    the sweep carries them along and never resamples them.
    """

    z: Int[Array, "N Tz"]
    groups: Int[Array, " N"] | None = eqx.field(default=None, converter=lambda g: _as_groups(g))
    tau: Float[Array, "N Tz"] | None = None

    def __check_init__(self):
        if self.z.ndim != 2:
            raise ValueError(f"`z` must have shape (N, T - nlags); got {self.z.shape}.")
        if self.tau is not None and self.tau.shape != self.z.shape:
            raise ValueError(f"`tau` must have the shape of `z`, {self.z.shape}; got {self.tau.shape}.")
        if self.groups is not None and tuple(self.groups.shape) != (self.z.shape[0],):
            raise ValueError(
                f"`groups` must have shape (N,) = ({self.z.shape[0]},), one group per sequence of `z`; "
                f"got {tuple(self.groups.shape)}."
            )


def _as_groups(groups):
    """None, or the labels as an integer array (a list of ints becomes int32)."""
    if groups is None:
        return None
    arr = jnp.asarray(groups)
    return arr if jnp.issubdtype(arr.dtype, jnp.integer) else arr.astype(jnp.int32)
