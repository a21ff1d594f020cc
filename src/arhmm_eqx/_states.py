"""`States`: the discrete state sequences of the AR-HMM."""

import equinox as eqx

from ._custom_types import Array, Float, Int


class States(eqx.Module):
    """Discrete states `z` `(N, T - nlags)` of frames `nlags .. T-1`; and `tau` `(N, T - nlags)`, the
    per-frame noise precisions of a robust model (None for Gaussian noise)."""

    z: Int[Array, "N Tz"]
    tau: Float[Array, "N Tz"] | None = None

    def __check_init__(self):
        if self.z.ndim != 2:
            raise ValueError(f"`z` must have shape (N, T - nlags); got {self.z.shape}.")
        if self.tau is not None and self.tau.shape != self.z.shape:
            raise ValueError(f"`tau` must have the shape of `z`, {self.z.shape}; got {self.tau.shape}.")
