"""`ARHMM`: hyperparameters, parameters and states in one immutable Module, with thin methods."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from . import _log_posterior, _log_prob
from ._checks import (
    check_data,
    check_data_at_entry,
    check_integer_states,
    check_key,
    clean_data,
    validate_data,
    values_checked,
)
from ._cores import on_cores, per_sequence_on_cores, splits
from ._custom_types import Array, DataArray, Float, Int, MaskArray, PRNGKeyArray
from ._generate import simulate_dataset
from ._gibbs import GibbsInfo, SweepOptions, gibbs_sweep
from ._group_transitions import init_group_transitions, sequence_pi
from ._hyperparams import Hyperparams, check_hyperparam_values
from ._inference import marginal_log_likelihood, sample_stateseqs, smoothed_marginals, viterbi_paths
from ._initialize import init_params
from ._params import Params
from ._robust import check_nu_values, resample_tau, robust_subkeys
from ._states import States


class ARHMM(eqx.Module):
    """A sticky HDP AR-HMM: `hyperparams`, `params` and `states`.

    Methods never modify the model: `resample` returns a new `ARHMM`. Data (`x` of shape
    `(N, T, D)`, `mask` of shape `(N, T)`) are arguments, never fields, so a `vmap` over
    many models shares one copy of the data. Computations run in the dtype of `params`
    (`x` is cast to it).
    """

    hyperparams: Hyperparams
    params: Params
    states: States

    def __init__(self, hyperparams: Hyperparams, params: Params, states: States):
        # Computations run in the dtype of `params`; the continuous hyperparameters follow it,
        # so that a model is of one precision however it was built.
        self.hyperparams = hyperparams.astype(params.Ab.dtype)
        self.params = params
        self.states = states

    def check(self) -> "ARHMM":
        """Validate the model however it was built and return it unchanged.

        `eqx.tree_at` (the way to edit a Module, e.g. inside a larger model) skips the
        checks of the constructors; every entry point that takes data (the methods here,
        `gibbs_step`, `run_chain`, `run_chains`, `fit`, ...) calls `check()` first. Cheap:
        shapes, dtypes and signs, plus the range of `z`; no scan of the data. Works on
        batched models too (leading chain axes, as from `init_chains`).

        Raises `ValueError` or `TypeError` naming the field: sizes of `Ab`, `Q`, `pi`,
        `betas` that disagree with `hyperparams`; parameters not all of one floating dtype;
        a hyperparameter of another dtype than the parameters; `alpha`, `gamma`, `kappa`
        not finite and > 0; `nu_0 <= latent_dim - 1`; `z` not integer or outside `0 .. K-1`.
        """
        _check_model(self)
        return self

    def __check_init__(self):
        hp, p = self.hyperparams, self.params
        got = (p.num_states, p.latent_dim, p.Ab.shape[2])
        want = (hp.num_states, hp.latent_dim, hp.ar_dim)
        if got != want:
            raise ValueError(
                f"`params` have (num_states, latent_dim, ar_dim) = {got} but `hyperparams` say {want}."
            )

    @classmethod
    def from_prior(
        cls, hyperparams: Hyperparams, x: DataArray, mask: MaskArray, *, key: PRNGKeyArray, groups=None
    ) -> "ARHMM":
        """Draw parameters from the prior, then states from their conditional given `x`.

        `groups` `(N,)`: the group `0 .. G-1` of each sequence, required when
        `hyperparams.num_groups = G` (and only then); the model keeps them in `states.groups`."""
        check_key(key)
        x, mask = validate_data(x, mask, nlags=hyperparams.nlags, latent_dim=hyperparams.latent_dim)
        groups = check_groups(groups, hyperparams.num_groups, x.shape[0])
        return draw_from_prior(hyperparams, x, mask, key, groups, checked=values_checked(x, mask))

    @classmethod
    def from_params(
        cls, hyperparams: Hyperparams, params: Params, x: DataArray, mask: MaskArray, *, key: PRNGKeyArray,
        groups=None,
    ) -> "ARHMM":
        """Keep `params` and draw the states from their conditional given `x` (`groups` as in
        `from_prior`; with a robust model, `z` and then `tau` given `z`; `params.nu` must be set)."""
        check_key(key)
        if (hyperparams.robust is None) != (params.nu is None):
            raise ValueError("`params.nu` must be set exactly when `hyperparams.robust` is (Student-t noise); got "
                             f"robust={'set' if hyperparams.robust is not None else None}, "
                             f"nu={'set' if params.nu is not None else None}.")
        x, mask = validate_data(x, mask, nlags=hyperparams.nlags, latent_dim=hyperparams.latent_dim)
        groups = check_groups(groups, hyperparams.num_groups, x.shape[0])
        return draw_given_params(hyperparams, params, x, mask, key, groups, checked=values_checked(x, mask))

    def _data(self, x, mask, *, uses_states: bool = False):
        """Host-side checks of the model and the data (no JAX operation); the methods' compiled
        functions call `_prepared`. With `uses_states`, the states must be those of these data;
        the other methods apply the model to any data."""
        self.check()
        x, mask = check_data_at_entry(x, mask, nlags=self.hyperparams.nlags, latent_dim=self.hyperparams.latent_dim)
        if uses_states:
            check_states_fit_data(self.states.z, x, self.hyperparams.nlags)
        return x, mask

    def _prepared(self, x, mask):
        """Inside `jit`, after `_data`: `clean_data` (no host callback, which would gather data split
        over devices onto one), then `x` and `mask` in the dtype of the parameters."""
        x, mask = clean_data(x, mask, nlags=self.hyperparams.nlags)
        dtype = self.params.Ab.dtype
        return x.astype(dtype), mask.astype(dtype)

    def resample(
        self,
        x: DataArray,
        mask: MaskArray,
        *,
        key: PRNGKeyArray,
        states_only: bool = False,
        sequence_chunk: int | None = None,
        parallel: bool = False,
    ) -> "ARHMM":
        """One Gibbs sweep (transitions, AR parameters, states; only states if `states_only`).

        `sequence_chunk`: filter and sample states this many sequences at a time, which
        bounds memory for long datasets; the samples are the same. `parallel`: use the
        parallel-in-time filter and sampler (for GPUs; same samples, `K` times the memory).
        """
        options = SweepOptions(states_only=states_only, sequence_chunk=sequence_chunk, parallel=parallel)
        check_key(key)
        x, mask = self._data(x, mask, uses_states=True)  # the host-side checks, once
        model, _ = on_cores(lambda m, x, mask, key: sweep_compiled(key, m, x, mask, options), self, x, mask, key)
        return model

    def log_joint_likelihood(self, x: DataArray, mask: MaskArray) -> dict[str, Float[Array, ""]]:
        """`{"x": log p(x | z, Ab, Q), "z": log p(z | pi)}` with the masking of model.md."""
        return _log_joint_jit(self, *self._data(x, mask, uses_states=True))

    def marginal_log_likelihood(self, x: DataArray, mask: MaskArray, *, groups=None) -> Float[Array, ""]:
        """`log p(x | Ab, Q, pi)`, summed over sequences (states integrated out).

        `groups` (models with `num_groups` only): the group of each sequence of `x`; by
        default the model's own `states.groups` (for the data the model was built on)."""
        return on_cores(_marginal_jit, self, *self._data(x, mask), self._groups_for(x, groups),
                        states_of_x=False)

    def stateseq_marginals(self, x: DataArray, mask: MaskArray, *, groups=None) -> Float[Array, "N Tz K"]:
        """Smoothed `p(z[t] | x)` for frames `nlags .. T-1` (`groups` as in `marginal_log_likelihood`)."""
        return on_cores(_smoother_jit, self, *self._data(x, mask), self._groups_for(x, groups),
                        states_of_x=False)

    def most_likely_states(
        self, x: DataArray, mask: MaskArray, *, fill_value: int | None = -1, groups=None
    ) -> Int[Array, "N Tz"]:
        """The most likely state path of every sequence (Viterbi), int32 of shape `(N, T - nlags)`.

        Masked frames hold `fill_value`; with `fill_value=None` they keep the states of the
        jointly most likely path (the chain runs through them), as a model's `states` do.
        `groups` as in `marginal_log_likelihood`.
        """
        x, mask = self._data(x, mask)
        groups = self._groups_for(x, groups)
        if splits(self):
            # Each device runs the whole Viterbi pass on its own sequences (`shard_map`): split
            # by the partitioner instead, the backward pass's gathers of `log pi` rows by each
            # sequence's state became per-frame communication (1.5x slower than one device).
            paths = per_sequence_on_cores(_viterbi_sequences, x, mask, (self, fill_value))
            if paths is not None:
                return paths
        return _viterbi_jit(self, x, mask, groups, fill_value=fill_value)

    def _groups_for(self, x, groups):
        """The groups of the sequences of `x` (None for a model without groups): `groups` if
        given, else the model's own when they fit `x`."""
        G = self.hyperparams.num_groups
        if G is not None and groups is None:
            own = self.states.groups
            if own is None or own.shape[-1] != x.shape[0]:
                raise ValueError(
                    f"`groups` is needed: the model has {G} groups and its own `states.groups` "
                    f"{None if own is None else tuple(own.shape)} do not fit the {x.shape[0]} sequences of `x`. "
                    "Pass `groups=`, one group 0 .. G-1 per sequence."
                )
            return own
        return check_groups(groups, G, x.shape[0])

    def log_prior(self) -> Float[Array, ""]:
        """`log p(Ab, Q, pi | betas)`: MNIW per state and the sticky Dirichlet rows of `pi`, whose
        concentrations are raised to at least 1 so that a maximum exists (see `fit_em`)."""
        _gaussian_only(self, "log_prior")
        return _log_prior_jit(self.params, self.hyperparams)

    def log_posterior(self, x: DataArray, mask: MaskArray) -> Float[Array, ""]:
        """`marginal_log_likelihood(x, mask) + log_prior()`: what `fit_em` and `fit_gradient` maximise.

        Differentiable with respect to the parameters and to `x`.
        """
        _gaussian_only(self, "log_posterior")
        return _log_posterior_jit(self, *self._data(x, mask))

    def state_cross_likelihoods(self, x: DataArray, mask: MaskArray) -> Float[Array, "K K"]:
        """Cross-likelihoods between states (Wiltschko et al. 2015), each row divided by the number of
        runs of its state counted per sequence (a masked gap ends a run). The reference, and
        `compat.log_prob.state_cross_likelihoods`, count instead the changepoints of the valid
        frames of all sequences laid end to end."""
        return _cross_jit(self, *self._data(x, mask, uses_states=True))

    def simulate(
        self, num_sequences: int, num_frames: int, *, key: PRNGKeyArray, groups=None
    ) -> tuple[Int[Array, "N Tz"], Float[Array, "N T D"]]:
        """Simulate `(z, x)` from the model's parameters: `x` of shape `(N, T, D)` (its first
        `nlags` frames standard normal) and `z` of shape `(N, T - nlags)`.

        With groups, `groups` `(num_sequences,)` says which group's `pi` each sequence follows."""
        if num_frames <= self.hyperparams.nlags:
            raise ValueError(f"`num_frames` must be > nlags = {self.hyperparams.nlags}; got {num_frames}.")
        check_key(key)
        self.check()
        p = self.params
        pi = sequence_pi(p.pi, check_groups(groups, self.hyperparams.num_groups, num_sequences))
        return _simulate_jit(key, pi, p.Ab, p.Q, num_sequences, num_frames, p.nu)


@eqx.filter_jit
def _log_joint_jit(model: ARHMM, x, mask):
    p, s = model.params, model.states
    return _log_prob.log_joint_likelihood(*model._prepared(x, mask), s.z, sequence_pi(p.pi, s.groups), p.Ab, p.Q,
                                          p.nu)


@eqx.filter_jit
def _marginal_jit(model: ARHMM, x, mask, groups=None):
    p = model.params
    return marginal_log_likelihood(*model._prepared(x, mask), p.Ab, p.Q, sequence_pi(p.pi, groups), nu=p.nu)


@eqx.filter_jit
def _smoother_jit(model: ARHMM, x, mask, groups=None):
    p = model.params
    return smoothed_marginals(*model._prepared(x, mask), p.Ab, p.Q, sequence_pi(p.pi, groups), nu=p.nu)


@eqx.filter_jit
def _cross_jit(model: ARHMM, x, mask):
    p = model.params
    return _log_prob.state_cross_likelihoods(*model._prepared(x, mask), model.states.z, p.Ab, p.Q, nu=p.nu)


@eqx.filter_jit
def _viterbi_jit(model: ARHMM, x, mask, groups=None, *, fill_value):
    p = model.params
    return viterbi_paths(*model._prepared(x, mask), p.Ab, p.Q, sequence_pi(p.pi, groups), fill_value=fill_value,
                         nu=p.nu)


def _viterbi_sequences(x, mask, model_and_fill):
    """Viterbi paths of some sequences (no groups), run per device by `per_sequence_on_cores`."""
    model, fill_value = model_and_fill
    p = model.params
    return viterbi_paths(*model._prepared(x, mask), p.Ab, p.Q, p.pi, fill_value=fill_value, nu=p.nu)


_simulate_jit = eqx.filter_jit(simulate_dataset)


@eqx.filter_jit
def _log_prior_jit(p: Params, hp: Hyperparams):
    return _log_posterior.log_prior(p.Ab, p.Q, p.pi, p.betas, **hp.prior_kwargs(p.Ab.dtype))


@eqx.filter_jit
def _log_posterior_jit(model: ARHMM, x, mask):
    p, hp = model.params, model.hyperparams
    x, mask = model._prepared(x, mask)
    pi = sequence_pi(p.pi, model.states.groups)
    mll = _log_posterior.stable_marginal_log_likelihood(x, mask, p.Ab, p.Q, pi)
    return mll + _log_posterior.log_prior(p.Ab, p.Q, p.pi, p.betas, **hp.prior_kwargs(p.Ab.dtype))


def sweep(key: PRNGKeyArray, model: ARHMM, x, mask, options: SweepOptions = SweepOptions()) -> tuple[ARHMM, GibbsInfo]:
    """`gibbs_sweep` on a model (traceable; data checked, cleaned and in the model's dtype)."""
    params, states, info = gibbs_sweep(key, model.hyperparams, model.params, model.states, x, mask, options)
    hp = model.hyperparams
    if hp.concentrations is not None:  # learned concentrations (model.md): the sweep's new values
        hp = eqx.tree_at(lambda h: (h.alpha, h.gamma, h.kappa), hp, (info.alpha, info.gamma, info.kappa))
    return ARHMM(hp, params, states), info


@eqx.filter_jit
def sweep_compiled(key: PRNGKeyArray, model: ARHMM, x, mask, options: SweepOptions) -> tuple[ARHMM, GibbsInfo]:
    """One sweep as one compiled program, on data whose host-side checks have run; the data
    are cleaned (`clean_data`, no host callback) inside the program."""
    x, mask = clean_data(x, mask, nlags=model.hyperparams.nlags)
    dtype = model.params.Ab.dtype
    return sweep(key, model, x.astype(dtype), mask.astype(dtype), options)


@eqx.filter_jit
def draw_given_params(hyperparams: Hyperparams, params: Params, x, mask, key, groups=None, *,
                      checked: bool = False) -> ARHMM:
    x, mask = check_data(x, mask, nlags=hyperparams.nlags, latent_dim=hyperparams.latent_dim, values_checked=checked)
    x, mask = x.astype(params.Ab.dtype), mask.astype(params.Ab.dtype)
    pi = sequence_pi(params.pi, groups)
    if hyperparams.robust is not None:  # (z, tau) from their joint conditional
        z, _, _ = sample_stateseqs(key, x, mask, params.Ab, params.Q, pi, nu=params.nu)
        tau = resample_tau(robust_subkeys(key)[1], x, mask, z, params.Ab, params.Q, params.nu)
        return ARHMM(hyperparams, params, States(z=z, groups=groups, tau=tau))
    z, _, _ = sample_stateseqs(key, x, mask, params.Ab, params.Q, pi)
    return ARHMM(hyperparams, params, States(z=z, groups=groups))


@eqx.filter_jit
def draw_from_prior(hyperparams: Hyperparams, x, mask, key, groups=None, *, checked: bool = False) -> ARHMM:
    """`checked`: the host has checked the values of `x` and `mask` (`values_checked`)."""
    hp = hyperparams
    x, mask = check_data(x, mask, nlags=hp.nlags, latent_dim=hp.latent_dim, values_checked=checked)
    key_params, key_states = jr.split(key)
    Ab, Q, betas, pi = init_params(
        key_params, alpha=hp.alpha, gamma=hp.gamma, kappa=hp.kappa, nu_0=hp.nu_0, S_0=hp.S_0,
        M_0=hp.M_0, K_0=hp.K_0, num_states=hp.num_states, dtype=x.dtype,
    )
    if hp.num_groups is not None:  # the same key for the transitions: one group draws the same pi
        betas, pi = init_group_transitions(
            jr.split(key_params)[1], alpha=hp.alpha, kappa=hp.kappa, gamma=hp.gamma, num_states=hp.num_states,
            num_groups=hp.num_groups, dtype=x.dtype,
        )
    if hp.robust is not None:  # every state's nu starts at `nu_init`; (z, tau) from their conditional
        params = Params(Ab=Ab, Q=Q, pi=pi, betas=betas, nu=jnp.full((hp.num_states,), hp.robust.nu_init, x.dtype))
        return draw_given_params(hyperparams, params, x, mask, key_states, groups, checked=True)
    params = Params(Ab=Ab, Q=Q, pi=pi, betas=betas)
    z, _, _ = sample_stateseqs(key_states, x, mask, Ab, Q, sequence_pi(pi, groups))
    return ARHMM(hyperparams, params, States(z=z, groups=groups))


def check_states_fit_data(z, x, nlags: int) -> None:
    """`z` must have shape `(N, T - nlags)` for `x` of shape `(N, T, D)` (batch axes before)."""
    N, T = x.shape[0], x.shape[1]
    if tuple(z.shape[-2:]) != (N, T - nlags):
        raise ValueError(
            f"the model's states `z` have shape {tuple(z.shape[-2:])} but `x` of shape {tuple(x.shape)} needs "
            f"(N, T - nlags) = {(N, T - nlags)}. Pass the data the model was built on, or build the model "
            "for these data (`ARHMM.from_prior` / `from_params`)."
        )


def check_groups(groups, num_groups: int | None, num_sequences: int):
    """The group labels of `num_sequences` sequences as an int32 array, or None for a model
    without groups; `ValueError` naming `groups` when they do not fit."""
    if num_groups is None:
        if groups is not None:
            raise ValueError(
                "`groups` was given but the model has no groups (`hyperparams.num_groups` is None). "
                "Build `Hyperparams(..., num_groups=G)` for one transition matrix per group."
            )
        return None
    if groups is None:
        raise ValueError(
            f"`groups` is required: the model has num_groups = {num_groups}. Pass one group "
            f"0 .. {num_groups - 1} per sequence, shape ({num_sequences},)."
        )
    arr = groups if isinstance(groups, jax.Array) else np.asarray(groups)
    if arr.ndim != 1 or arr.shape[0] != num_sequences or not jnp.issubdtype(arr.dtype, jnp.integer):
        raise ValueError(
            f"`groups` must be integers of shape ({num_sequences},), one group per sequence; "
            f"got {arr.dtype} of shape {tuple(arr.shape)}."
        )
    check_integer_states(arr, num_groups, "groups")
    return jnp.asarray(arr, jnp.int32)


def _check_model(model: ARHMM) -> None:
    hp, p, z = model.hyperparams, model.params, model.states.z
    K, D, A = hp.num_states, hp.latent_dim, hp.ar_dim
    if p.Ab.ndim < 3:
        raise ValueError(f"`params.Ab` must have shape (K, D, A); got {p.Ab.shape}.")
    batch = tuple(p.Ab.shape[:-3])
    expected = {"Ab": (K, D, A), "Q": (K, D, D), "pi": (K, K), "betas": (K,)}
    if hp.num_groups is not None:  # one transition matrix per group
        expected["pi"] = (hp.num_groups, K, K)
    for name, shape in expected.items():
        got = tuple(getattr(p, name).shape)
        if got != batch + shape:
            raise ValueError(
                f"`params.{name}` has shape {got} but the hyperparameters (num_states={K}, latent_dim={D}, "
                f"nlags={hp.nlags}) need {batch + shape}. To change the number of states or lags, build new "
                "`Hyperparams` and a new model rather than editing the parameters with `eqx.tree_at`."
            )
    dtype = p.Ab.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`params.Ab` must be floating-point; got {dtype}.")
    for name in ("Q", "pi", "betas"):
        if getattr(p, name).dtype != dtype:
            raise TypeError(f"`params.{name}` is {getattr(p, name).dtype} but `params.Ab` is {dtype}: "
                            "every parameter must have one floating dtype.")
    hp_shapes = {"alpha": (), "gamma": (), "kappa": (), "nu_0": (), "S_0": (D, D), "M_0": (D, A), "K_0": (A, A)}
    for name, shape in hp_shapes.items():
        leaf = getattr(hp, name)
        if tuple(leaf.shape) not in (shape, batch + shape):
            raise ValueError(f"`hyperparams.{name}` has shape {tuple(leaf.shape)}; expected {shape}.")
        if leaf.dtype != dtype:
            raise TypeError(
                f"`hyperparams.{name}` is {leaf.dtype} but the parameters are {dtype}: a model computes in one "
                f"precision. Set it as an array of {dtype} (e.g. `jnp.asarray(value, jnp.{dtype})`)."
            )
    check_hyperparam_values(hp, prefix="hyperparams.")
    _check_robust(model, batch, dtype)
    if not jnp.issubdtype(z.dtype, jnp.integer):
        raise TypeError(f"`states.z` must be an integer array; got {z.dtype}.")
    if z.ndim != len(batch) + 2:
        raise ValueError(f"`states.z` must have shape {batch} + (N, T - nlags); got {tuple(z.shape)}.")
    check_integer_states(z, K, "states.z")
    _check_model_groups(model, batch)


def _check_model_groups(model: ARHMM, batch: tuple) -> None:
    """`states.groups`: None without groups; with `num_groups = G`, integers `0 .. G-1`, one per sequence."""
    G, groups, z = model.hyperparams.num_groups, model.states.groups, model.states.z
    if G is None:
        if groups is not None:
            raise ValueError("`states.groups` is set but `hyperparams.num_groups` is None; set both or neither.")
        return
    if groups is None:
        raise ValueError(f"`states.groups` is None but the model has num_groups = {G}: each sequence needs a group.")
    if not jnp.issubdtype(groups.dtype, jnp.integer) or tuple(groups.shape) != tuple(z.shape[:-1]):
        raise ValueError(
            f"`states.groups` must be integers of shape {tuple(z.shape[:-1])} (one per sequence of `z`); "
            f"got {groups.dtype} of shape {tuple(groups.shape)}."
        )
    check_integer_states(groups, G, "states.groups")


def _gaussian_only(model: ARHMM, name: str) -> None:
    if model.hyperparams.robust is not None:
        raise ValueError(f"`{name}` is defined for Gaussian AR noise only; this model has robust (Student-t) "
                         "noise (`hyperparams.robust` is set). Use `marginal_log_likelihood` instead.")


def _check_robust(model: ARHMM, batch: tuple, dtype) -> None:
    """`hyperparams.robust`, `params.nu` and `states.tau` all set (robust) or all None (Gaussian)."""
    robust, nu, tau, z = model.hyperparams.robust, model.params.nu, model.states.tau, model.states.z
    if robust is None:
        if nu is not None or tau is not None:
            raise ValueError("`params.nu` / `states.tau` are set but `hyperparams.robust` is None (Gaussian noise). "
                             "Set `hyperparams.robust = RobustPrior(...)` for Student-t noise, or drop `nu` and `tau`.")
        return
    if nu is None or tau is None:
        missing = [n for n, v in (("params.nu", nu), ("states.tau", tau)) if v is None]
        raise ValueError(f"`hyperparams.robust` is set (Student-t noise) but {missing} are None. Build the model "
                         "with `ARHMM.from_prior` or `ARHMM.from_params` (which draw `tau`), with `nu` of shape (K,).")
    K = model.hyperparams.num_states
    if tuple(nu.shape) != batch + (K,):
        raise ValueError(f"`params.nu` has shape {tuple(nu.shape)}; expected {batch + (K,)} (one per state).")
    if tuple(tau.shape) != tuple(z.shape):
        raise ValueError(f"`states.tau` has shape {tuple(tau.shape)}; expected that of `states.z`, {tuple(z.shape)}.")
    for name, leaf in (("params.nu", nu), ("states.tau", tau), ("hyperparams.robust.nu_init", robust.nu_init),
                       ("hyperparams.robust.nu_shape", robust.nu_shape),
                       ("hyperparams.robust.nu_rate", robust.nu_rate)):
        if leaf.dtype != dtype:
            raise TypeError(f"`{name}` is {leaf.dtype} but the parameters are {dtype}: a model computes in one "
                            f"precision. Set it as an array of {dtype}.")
    check_nu_values(nu)
