"""`Hyperparams`: static sizes plus array-valued priors of the sticky HDP AR-HMM."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_int, check_positive, local_values
from ._concentrations import ConcentrationPrior
from ._custom_types import Array, ArrayLike, Float
from ._lags import ar_dim
from ._robust import RobustPrior


def _as_float_array(x: ArrayLike) -> Array:
    """Convert to a JAX array of a floating dtype (keeps an existing floating dtype)."""
    arr = jnp.asarray(x)
    dtype = arr.dtype if jnp.issubdtype(arr.dtype, jnp.floating) else jnp.result_type(float)
    # An explicit dtype drops JAX's weak type, so `kappa=1e4` and `kappa=np.float32(1e4)`
    # give the same leaf type and share one compiled sweep.
    return jnp.asarray(arr, dtype=dtype)


def default_M_0(latent_dim: int, nlags: int) -> np.ndarray:
    """`[0, ..., 0, I_D, 0]`: identity on the most recent lag, zero elsewhere and zero bias."""
    D = latent_dim
    M_0 = np.zeros((D, ar_dim(D, nlags)))
    M_0[:, (nlags - 1) * D : nlags * D] = np.eye(D)
    return M_0


def check_sizes(**sizes) -> None:
    for name, value in sizes.items():
        check_int(name, value)


def check_hyperparam_values(hp: "Hyperparams", prefix: str = "") -> None:
    """`alpha`, `gamma`, `kappa` finite and > 0, `nu_0 > latent_dim - 1`, on concrete leaves
    (batched ones too); traced leaves are skipped. `prefix` goes before the names in errors."""
    check_positive(f"{prefix}alpha", hp.alpha)
    check_positive(f"{prefix}gamma", hp.gamma)
    check_positive(f"{prefix}kappa", hp.kappa, "Use a small positive value (e.g. 1e-6) for no stickiness.")
    D = hp.latent_dim
    if not isinstance(hp.nu_0, jax.core.Tracer) and not np.all(local_values(hp.nu_0) > D - 1):
        got = np.asarray(hp.nu_0).tolist()
        raise ValueError(f"`{prefix}nu_0` must be > latent_dim - 1 = {D - 1}; got {got}.")


class Hyperparams(eqx.Module):
    """Hyperparameters of the sticky HDP AR-HMM (model.md, "Generative model").

    Only the sizes are static; every continuous hyperparameter is an array leaf, so a
    batch of models with different `kappa` (or `alpha`, `S_0`, ...) is one `vmap` and
    one compilation.

    **Fields:**

    - `num_states` (`K`), `latent_dim` (`D`), `nlags` (`L`): Python ints.
    - `alpha`, `gamma`, `kappa`: HDP concentration, top-level concentration, stickiness.
    - `nu_0`, `S_0` `(D, D)`, `M_0` `(D, A)`, `K_0` `(A, A)`: the MNIW prior of `(Ab, Q)`.
    - `num_groups` (`G`, static, default None): with `G`, each group of sequences has its own
      transition matrix, `pi` of shape `(G, K, K)`, sharing `betas`; None is one `pi` `(K, K)`.
    - `concentrations`: `None` (the default: `alpha`, `gamma`, `kappa` fixed) or a
      `ConcentrationPrior`, with which each Gibbs sweep learns them (model.md, "Learned
      concentrations") and returns them in the new model's `hyperparams`.
    - `robust`: None for Gaussian AR noise; a `RobustPrior` for Student-t noise (model.md,
      "Robust noise"), which adds `Params.nu` and `States.tau` to the model.
    """

    num_states: int = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    nlags: int = eqx.field(static=True)
    alpha: Float[Array, ""] = eqx.field(converter=_as_float_array)
    gamma: Float[Array, ""] = eqx.field(converter=_as_float_array)
    kappa: Float[Array, ""] = eqx.field(converter=_as_float_array)
    nu_0: Float[Array, ""] = eqx.field(converter=_as_float_array)
    S_0: Float[Array, "D D"] = eqx.field(converter=_as_float_array)
    M_0: Float[Array, "D A"] = eqx.field(converter=_as_float_array)
    K_0: Float[Array, "A A"] = eqx.field(converter=_as_float_array)
    # Per-group transition matrices (model.md, "Groups"): None is the model with one `pi`
    # `(K, K)`; `G` gives every group of sequences its own `pi[g]` around the shared `betas`.
    num_groups: int | None = eqx.field(default=None, static=True)
    concentrations: ConcentrationPrior | None = None
    robust: RobustPrior | None = None

    @property
    def ar_dim(self) -> int:
        """`A = latent_dim * nlags + 1`."""
        return ar_dim(self.latent_dim, self.nlags)

    def __check_init__(self):
        check_sizes(num_states=self.num_states, latent_dim=self.latent_dim, nlags=self.nlags)
        check_int("num_groups", self.num_groups, allow_none=True)
        D, A = self.latent_dim, self.ar_dim
        for name, shape in (("alpha", ()), ("gamma", ()), ("kappa", ()), ("nu_0", ()),
                            ("S_0", (D, D)), ("M_0", (D, A)), ("K_0", (A, A))):
            if getattr(self, name).shape != shape:
                raise ValueError(
                    f"`{name}` must have shape {shape} (latent_dim = {D}, ar_dim = {A}); "
                    f"got {getattr(self, name).shape}."
                )
        check_hyperparam_values(self)
        if self.concentrations is not None and not isinstance(self.concentrations, ConcentrationPrior):
            raise TypeError("`concentrations` must be None or a `ConcentrationPrior`; "
                            f"got {type(self.concentrations).__name__}.")
        if self.robust is not None and not isinstance(self.robust, RobustPrior):
            raise TypeError(f"`robust` must be a `RobustPrior` or None (Gaussian noise); got {type(self.robust)}.")

    def astype(self, dtype) -> "Hyperparams":
        """The same hyperparameters with every continuous leaf in `dtype` (itself when they are)."""
        names = ("alpha", "gamma", "kappa", "nu_0", "S_0", "M_0", "K_0")
        robust = None if self.robust is None else self.robust.astype(dtype)
        conc = self.concentrations
        if all(getattr(self, k).dtype == dtype for k in names) and robust is self.robust and (
                conc is None or conc.astype(dtype) is conc):
            return self
        out = eqx.tree_at(lambda h: [getattr(h, k) for k in names], self,
                          [getattr(self, k).astype(dtype) for k in names])
        if conc is not None:
            out = eqx.tree_at(lambda h: h.concentrations, out, conc.astype(dtype))
        if robust is not self.robust:  # a robust model's prior of `nu` follows too
            out = eqx.tree_at(lambda h: h.robust, out, robust)
        return out

    def prior_kwargs(self, dtype) -> dict:
        """`{alpha, kappa, nu_0, S_0, M_0, K_0}` in `dtype`: the arguments of the log prior
        (`_log_posterior.log_prior`, `log_posterior`) and of the EM M-step."""
        return {k: jnp.asarray(getattr(self, k), dtype) for k in ("alpha", "kappa", "nu_0", "S_0", "M_0", "K_0")}

    @classmethod
    def from_scales(
        cls,
        num_states: int,
        latent_dim: int,
        nlags: int,
        *,
        alpha=5.7,
        gamma=1e3,
        kappa=1e6,
        S_0_scale=0.01,
        K_0_scale=10.0,
        num_groups: int | None = None,
        concentrations: ConcentrationPrior | None = None,
        robust: RobustPrior | None = None,
    ) -> "Hyperparams":
        """The default prior of model.md: `S_0 = S_0_scale I`, `K_0 = K_0_scale I`,
        `nu_0 = D + 2`, `M_0` the random-walk mean. Defaults are the typical values there.
        `num_groups`: one transition matrix per group of sequences (None: one for all).
        `concentrations`: a `ConcentrationPrior` to learn `alpha`, `gamma` (and `kappa`).
        `robust=RobustPrior(...)` gives Student-t AR noise (model.md, "Robust noise")."""
        check_sizes(num_states=num_states, latent_dim=latent_dim, nlags=nlags)
        check_positive("S_0_scale", S_0_scale)
        check_positive("K_0_scale", K_0_scale)
        D, A = latent_dim, ar_dim(latent_dim, nlags)
        dtype = jnp.result_type(float)
        return cls(
            num_states=num_states,
            latent_dim=latent_dim,
            nlags=nlags,
            alpha=alpha,
            gamma=gamma,
            kappa=kappa,
            nu_0=float(D + 2),
            S_0=jnp.asarray(S_0_scale, dtype) * jnp.eye(D, dtype=dtype),
            M_0=jnp.asarray(default_M_0(D, nlags), dtype),
            K_0=jnp.asarray(K_0_scale, dtype) * jnp.eye(A, dtype=dtype),
            num_groups=num_groups,
            concentrations=concentrations,
            robust=robust,
        )

    @classmethod
    def from_moseq_dicts(cls, trans_hypparams: dict, ar_hypparams: dict) -> "Hyperparams":
        """Build from the reference's `trans_hypparams = {num_states, alpha, gamma, kappa}`
        and `ar_hypparams = {latent_dim, nlags, S_0_scale, K_0_scale}`. Explicit `S_0`,
        `M_0`, `K_0` or `nu_0` in `ar_hypparams` (as `init_hyperparams` writes them) win."""
        for group, d, keys in (
            ("trans_hypparams", trans_hypparams, ("num_states", "alpha", "gamma", "kappa")),
            ("ar_hypparams", ar_hypparams, ("latent_dim", "nlags")),
        ):
            missing = [k for k in keys if k not in d]
            if missing:
                raise ValueError(f"`{group}` is missing the keys {missing}; it needs {list(keys)}.")
        K, D, L = int(trans_hypparams["num_states"]), int(ar_hypparams["latent_dim"]), int(ar_hypparams["nlags"])
        explicit = all(k in ar_hypparams for k in ("S_0", "M_0", "K_0", "nu_0"))
        if not explicit and not all(k in ar_hypparams for k in ("S_0_scale", "K_0_scale")):
            raise ValueError("`ar_hypparams` needs `S_0_scale` and `K_0_scale` (or explicit S_0, M_0, K_0, nu_0).")
        base = cls.from_scales(
            K, D, L,
            alpha=trans_hypparams["alpha"], gamma=trans_hypparams["gamma"], kappa=trans_hypparams["kappa"],
            S_0_scale=ar_hypparams.get("S_0_scale", 1.0), K_0_scale=ar_hypparams.get("K_0_scale", 1.0),
        )
        overrides = {k: ar_hypparams[k] for k in ("S_0", "M_0", "K_0", "nu_0") if k in ar_hypparams}
        if not overrides:
            return base
        fields = {k: getattr(base, k) for k in ("alpha", "gamma", "kappa", "nu_0", "S_0", "M_0", "K_0")}
        fields.update(overrides)
        return cls(num_states=K, latent_dim=D, nlags=L, **fields)

    def to_moseq_dicts(self) -> dict:
        """The reference's `hypparams` dict, as `init_hyperparams` lays it out."""
        trans = {"num_states": self.num_states, "alpha": self.alpha, "gamma": self.gamma, "kappa": self.kappa}
        ar = {
            "latent_dim": self.latent_dim,
            "nlags": self.nlags,
            "S_0_scale": self.S_0[0, 0],
            "K_0_scale": self.K_0[0, 0],
            "S_0": self.S_0,
            "M_0": self.M_0,
            "K_0": self.K_0,
            "nu_0": self.nu_0,
            "num_states": self.num_states,
        }
        return {"trans_hypparams": trans, "ar_hypparams": ar}
