"""The Gibbs sweep, in the fixed order of model.md: transitions -> AR parameters -> states.

A robust model (`hyperparams.robust` set) adds `nu` after the AR parameters and `tau` after
the states (model.md, "Robust noise").

The one file that knows the order of the blocks. It works on `Hyperparams`, `Params` and
`States` (not on `ARHMM`, which builds on it), so the model and its drivers import it and it
imports neither.
"""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

from ._ar import resample_ar_params
from ._checks import check_int
from ._concentrations import resample_hdp_with_concentrations
from ._custom_types import Array, Bool, Float, Int, PRNGKeyArray
from ._group_transitions import resample_group_transitions, sequence_pi
from ._hyperparams import Hyperparams
from ._inference import sample_stateseqs
from ._log_prob import discrete_stateseq_log_prob
from ._params import Params
from ._robust import resample_nu, resample_tau, robust_subkeys
from ._states import States
from ._summaries import median_duration, num_states_used
from ._transitions import resample_hdp_transitions, transition_weights


class SweepOptions(eqx.Module):
    """How a sweep runs; static, so each combination compiles once and none changes the chain's law.

    - `states_only`: resample only the states (parameters fixed). The key is split the same
      way either way, so the state step's randomness does not shift.
    - `sequence_chunk`: filter and sample the states this many sequences at a time, which
      bounds the memory of the state step (same samples).
    - `parallel`: parallel-in-time filter and sampler (same samples, logarithmic depth, `K`
      times the memory of the sequential filter), meant for accelerators.
    """

    states_only: bool = eqx.field(default=False, static=True)
    sequence_chunk: int | None = eqx.field(default=None, static=True)
    parallel: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        for name in ("states_only", "parallel"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be True or False; got {getattr(self, name)!r}.")
        check_int("sequence_chunk", self.sequence_chunk, allow_none=True)


class GibbsInfo(eqx.Module):
    """Per-sweep diagnostics, all of the model after the sweep.

    - `log_joint_x`, `log_joint_z`: `log p(x | z, Ab, Q)` and `log p(z | pi)`.
    - `num_states_used`: states that label at least one valid frame.
    - `median_duration`: median run length of the states, in frames.
    - `ok`: False when any parameter or likelihood is not finite.
    - `alpha`, `gamma`, `kappa`: the concentrations after the sweep, only when the model
      learns them (`Hyperparams.concentrations`); `None` otherwise.
    """

    log_joint_x: Float[Array, ""]
    log_joint_z: Float[Array, ""]
    num_states_used: Int[Array, ""]
    median_duration: Float[Array, ""]
    ok: Bool[Array, ""]
    alpha: Float[Array, ""] | None = None
    gamma: Float[Array, ""] | None = None
    kappa: Float[Array, ""] | None = None


def gibbs_sweep(
    key: PRNGKeyArray,
    hyperparams: Hyperparams,
    params: Params,
    states: States,
    x: Float[Array, "N T D"],
    mask: Float[Array, "N T"],
    options: SweepOptions = SweepOptions(),
) -> tuple[Params, States, GibbsInfo]:
    """One sweep: new `(params, states)` and the sweep's `GibbsInfo`.

    `x` and `mask` must already be checked and cleaned (`_checks.clean_data`), in the dtype
    of `params`. The key is split into three named subkeys whether or not
    `options.states_only` is set. With `hyperparams.num_groups`, the transition block is
    the per-group one (`_group_transitions`) and each sequence's states are drawn with its
    group's `pi[states.groups[n]]`. With `hyperparams.concentrations` set, the transition
    block also learns the concentrations (`_concentrations.resample_hdp_with_concentrations`)
    and `GibbsInfo.alpha`, `gamma`, `kappa` hold their new values (`_model.sweep` puts them
    into the new model's hyperparameters).

    A robust model (`hyperparams.robust` set) runs, in order: transitions | z; `(Ab, Q)` |
    x, z, tau (precision-weighted); `nu` | tau, z (Metropolis-Hastings, when
    `robust.resample_nu`); `z` | x, Ab, Q, nu, pi with `tau` integrated out (Student-t
    emissions); `tau` | x, z, Ab, Q, nu. The last two are one draw of `(z, tau)` from their
    joint conditional; with `states_only` only they run. Its two extra subkeys,
    `key_nu, key_tau`, come from `fold_in(key, ROBUST_KEY_TAG)`, so the three above are
    those of the Gaussian sweep.
    """
    hp, p = hyperparams, params
    K, L = hp.num_states, hp.nlags
    key_trans, key_ar, key_z = jr.split(key, 3)
    z, Ab, Q, pi, betas = states.z, p.Ab, p.Q, p.pi, p.betas
    x = x.astype(Ab.dtype)
    mask = mask.astype(Ab.dtype)
    groups = states.groups
    conc = hp.concentrations
    alpha, gamma, kappa = hp.alpha, hp.gamma, hp.kappa
    robust, nu, tau = hp.robust, p.nu, states.tau
    if robust is not None:
        key_nu, key_tau = robust_subkeys(key)
    if not options.states_only and conc is not None:  # with one pi per group when num_groups is set
        betas, pi, alpha, gamma, kappa = resample_hdp_with_concentrations(
            key_trans, z, mask, betas, alpha=alpha, kappa=kappa, gamma=gamma, prior=conc, num_states=K, nlags=L,
            groups=groups, num_groups=hp.num_groups,
        )
    elif not options.states_only and hp.num_groups is not None:  # one pi per group, shared betas
        betas, pi = resample_group_transitions(
            key_trans, z, mask, groups, betas, alpha=hp.alpha, kappa=hp.kappa, gamma=hp.gamma, num_states=K,
            num_groups=hp.num_groups, nlags=L,
        )
    elif not options.states_only:
        betas, pi = resample_hdp_transitions(
            key_trans, z, mask, betas, alpha=hp.alpha, kappa=hp.kappa, gamma=hp.gamma, num_states=K, nlags=L
        )
    if not options.states_only:  # `tau` is None (unweighted statistics) without robust noise
        Ab, Q = resample_ar_params(key_ar, x, mask, z, nu_0=hp.nu_0, S_0=hp.S_0, M_0=hp.M_0, K_0=hp.K_0,
                                   num_states=K, nlags=L, tau=tau)
        if robust is not None and robust.resample_nu:
            nu = resample_nu(key_nu, tau, mask, z, nu, nu_shape=robust.nu_shape, nu_rate=robust.nu_rate,
                             num_steps=robust.nu_mh_steps, step_size=robust.nu_step_size)
    pi_z = pi if hp.num_groups is None else sequence_pi(pi, groups)  # (N, K, K) with groups
    z, log_joint_x, log_marginal = sample_stateseqs(  # Student-t emissions when `nu` is set
        key_z, x, mask, Ab, Q, pi_z, sequence_chunk=options.sequence_chunk, parallel=options.parallel, nu=nu
    )
    if robust is not None:
        tau = resample_tau(key_tau, x, mask, z, Ab, Q, nu)
    log_pz = discrete_stateseq_log_prob(z, pi_z)
    log_joint_z = jnp.sum(jnp.where(transition_weights(mask, L) > 0, log_pz, 0.0))
    ok = (
        jnp.isfinite(log_joint_x) & jnp.isfinite(log_joint_z) & jnp.isfinite(log_marginal)
        & jnp.all(jnp.isfinite(Ab)) & jnp.all(jnp.isfinite(Q))
    )
    learned = {}
    if conc is not None:
        learned = {k: jnp.asarray(v, Ab.dtype) for k, v in (("alpha", alpha), ("gamma", gamma), ("kappa", kappa))}
        ok = ok & jnp.all(jnp.isfinite(jnp.stack(list(learned.values()))))
    if robust is not None:
        ok = ok & jnp.all(jnp.isfinite(nu)) & jnp.all(jnp.isfinite(tau))
    valid = mask[:, L:] > 0
    info = GibbsInfo(
        log_joint_x=log_joint_x,
        log_joint_z=log_joint_z,
        num_states_used=num_states_used(z, valid, K),
        median_duration=median_duration(z, valid).astype(Ab.dtype),
        ok=ok,
        **learned,
    )
    return Params(Ab=Ab, Q=Q, pi=pi, betas=betas, nu=nu), States(z=z, groups=groups, tau=tau), info
