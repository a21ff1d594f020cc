"""arhmm_eqx: autoregressive HMMs with a sticky HDP prior, fitted by Gibbs sampling in JAX."""

import importlib.metadata

from ._chains import (
    KappaScan as KappaScan,
    hyperparams_grid as hyperparams_grid,
    init_chains as init_chains,
    kappa_scan as kappa_scan,
    run_chains as run_chains,
)
from ._checkpoint import (
    CheckpointError as CheckpointError,
    latest_checkpoint as latest_checkpoint,
    load_checkpoint as load_checkpoint,
    load_moseq_model as load_moseq_model,
    save_checkpoint as save_checkpoint,
    save_moseq_model as save_moseq_model,
)
from ._compiler_memory import release_memory_after_compile as release_memory_after_compile
from ._data import (
    Dataset as Dataset,
    Standardizer as Standardizer,
    load_recordings as load_recordings,
    prepare_recordings as prepare_recordings,
    standardize as standardize,
    whiten as whiten,
)
from ._demo import (
    example_model as example_model,
    matched_accuracy as matched_accuracy,
    simulate_recordings as simulate_recordings,
    states_accuracy as states_accuracy,
)
from ._diagnostics import (
    EMLScores as EMLScores,
    adjusted_rand_index as adjusted_rand_index,
    effective_sample_size as effective_sample_size,
    expected_marginal_likelihoods as expected_marginal_likelihoods,
    segmentation_agreement as segmentation_agreement,
    split_rhat as split_rhat,
    variation_of_information as variation_of_information,
)
from ._em import EMInfo as EMInfo, fit_em as fit_em
from ._fit import FitResult as FitResult, fit as fit, resume as resume
from ._gibbs import GibbsInfo as GibbsInfo
from ._gradient import UnconstrainedParams as UnconstrainedParams, fit_gradient as fit_gradient
from ._hyperparams import Hyperparams as Hyperparams
from ._memory import (
    MemoryEstimate as MemoryEstimate,
    available_memory as available_memory,
    check_memory_fits as check_memory_fits,
    estimate_memory as estimate_memory,
)
from ._model import ARHMM as ARHMM
from ._params import Params as Params
from ._plots import (
    plot_durations as plot_durations,
    plot_kappa_scan as plot_kappa_scan,
    plot_state_raster as plot_state_raster,
    plot_traces as plot_traces,
    plot_transition_matrix as plot_transition_matrix,
    plot_usages as plot_usages,
    save_figures as save_figures,
    state_colors as state_colors,
)
from ._results import (
    Results as Results,
    average_marginals as average_marginals,
    relabel_by_usage as relabel_by_usage,
    runs as runs,
    save_results as save_results,
    state_durations as state_durations,
    state_usages as state_usages,
    summarize as summarize,
    transition_matrix as transition_matrix,
)
from ._run import gibbs_step as gibbs_step, run_chain as run_chain
from ._sharding import chain_mesh as chain_mesh
from ._states import States as States


try:
    __version__ = importlib.metadata.version("arhmm_eqx")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"
