"""`States`: the discrete state sequences of the AR-HMM."""

import equinox as eqx

from ._custom_types import Array, Int


class States(eqx.Module):
    """Discrete states `z` `(N, T - nlags)` of frames `nlags .. T-1`."""

    z: Int[Array, "N Tz"]

    def __check_init__(self):
        if self.z.ndim != 2:
            raise ValueError(f"`z` must have shape (N, T - nlags); got {self.z.shape}.")
