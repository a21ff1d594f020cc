"""`Params`: the sampled parameters of the AR-HMM."""

import equinox as eqx

from ._custom_types import Array, Float


class Params(eqx.Module):
    """Parameters: `Ab` `(K, D, A)`, `Q` `(K, D, D)`, `pi` `(K, K)`, `betas` `(K,)`; and `nu` `(K,)`,
    the degrees of freedom of a robust model's Student-t noise (None for Gaussian noise).

    With groups (`Hyperparams.num_groups = G`), `pi` is `(G, K, K)`: one matrix per group.
    """

    Ab: Float[Array, "K D A"]
    Q: Float[Array, "K D D"]
    pi: Float[Array, "K K"] | Float[Array, "G K K"]
    betas: Float[Array, " K"]
    nu: Float[Array, " K"] | None = None

    def __check_init__(self):
        K, D, A = self.Ab.shape if self.Ab.ndim == 3 else (None, None, None)
        if self.Ab.ndim != 3:
            raise ValueError(f"`Ab` must have shape (K, D, A); got {self.Ab.shape}.")
        expected = {"Q": (K, D, D), "pi": (K, K), "betas": (K,)}
        if self.pi.ndim == 3:  # one matrix per group
            expected["pi"] = (self.pi.shape[0], K, K)
        if getattr(self, "nu", None) is not None:
            expected["nu"] = (K,)
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"`{name}` must have shape {shape} to match `Ab` {self.Ab.shape}; "
                                 f"got {getattr(self, name).shape}.")
        if (A - 1) % D != 0:
            raise ValueError(f"`Ab` has ar_dim A = {A}, which is not latent_dim * nlags + 1 for D = {D}.")

    @property
    def num_states(self) -> int:
        return self.Ab.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.Ab.shape[1]

    @property
    def nlags(self) -> int:
        return (self.Ab.shape[2] - 1) // self.Ab.shape[1]
