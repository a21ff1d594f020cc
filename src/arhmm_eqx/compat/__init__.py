"""The reference (jax_moseq) AR-HMM API, as a thin layer over the native Modules and kernels.

Module names map one to one: `jax_moseq.models.arhmm.gibbs` -> `arhmm_eqx.compat.gibbs`
(and `jax_moseq.models.arhmm.separate_trans` -> `arhmm_eqx.compat.separate_trans`, whose
names stay in that module: its `resample_model` and `init_model` are the grouped ones).
"""

from ._convert import model_from_dict as model_from_dict, model_to_dict as model_to_dict
from .generate import generate_states as generate_states
from .gibbs import (
    resample_ar_params as resample_ar_params,
    resample_discrete_stateseqs as resample_discrete_stateseqs,
    resample_hdp_transitions as resample_hdp_transitions,
    resample_model as resample_model,
    stateseq_marginals as stateseq_marginals,
    stateseq_mode as stateseq_mode,
)
from .initialize import (
    init_ar_params as init_ar_params,
    init_hyperparams as init_hyperparams,
    init_model as init_model,
    init_params as init_params,
    init_states as init_states,
)
from .log_prob import (
    continuous_stateseq_log_prob as continuous_stateseq_log_prob,
    discrete_stateseq_log_prob as discrete_stateseq_log_prob,
    log_joint_likelihood as log_joint_likelihood,
    marginal_log_likelihood as marginal_log_likelihood,
    model_likelihood as model_likelihood,
    state_cross_likelihoods as state_cross_likelihoods,
)
