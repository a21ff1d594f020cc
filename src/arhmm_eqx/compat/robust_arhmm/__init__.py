"""The reference's robust (Student-t) AR-HMM API (`jax_moseq.models.robust_arhmm`), on the native robust model.

Module names map one to one: `jax_moseq.models.robust_arhmm.gibbs` -> `arhmm_eqx.compat.robust_arhmm.gibbs`.
`separate_trans` (one transition matrix per group) is a module of its own, as in the reference.
"""

from .gibbs import (
    resample_ar_params as resample_ar_params,
    resample_discrete_stateseqs as resample_discrete_stateseqs,
    resample_model as resample_model,
    resample_nu as resample_nu,
    resample_tau as resample_tau,
    stateseq_marginals as stateseq_marginals,
    stateseq_mode as stateseq_mode,
)
from .initialize import (
    init_model as init_model,
    init_nu as init_nu,
    init_params as init_params,
    init_robust_hyperparams as init_robust_hyperparams,
    init_states as init_states,
)
from .log_prob import (
    continuous_stateseq_log_prob as continuous_stateseq_log_prob,
    log_joint_likelihood as log_joint_likelihood,
    marginal_log_likelihood as marginal_log_likelihood,
    model_likelihood as model_likelihood,
    nu_log_posterior as nu_log_posterior,
    robust_ar_log_likelihood as robust_ar_log_likelihood,
    state_cross_likelihoods as state_cross_likelihoods,
    tau_posterior_params as tau_posterior_params,
)
