"""arhmm_eqx: autoregressive HMMs with a sticky HDP prior, fitted by Gibbs sampling in JAX.

The model and its drivers are imported with the package; the workflow (data files, the fit
loop and checkpoints, results, diagnostics, plots, gradient fitting, the demo) is imported on
first use of one of its names, so that `import arhmm_eqx` (and `arhmm_eqx.compat`) loads
neither matplotlib, tqdm, h5py nor optax and changes nothing process-wide.
"""

import importlib
import importlib.metadata

from ._chains import (
    KappaScan as KappaScan,
    hyperparams_grid as hyperparams_grid,
    init_chains as init_chains,
    kappa_scan as kappa_scan,
    run_chains as run_chains,
)
from ._em import (
    EMInfo as EMInfo,
    fit_em as fit_em,
)
from ._gibbs import GibbsInfo as GibbsInfo
from ._hyperparams import Hyperparams as Hyperparams
from ._memory import (
    MemoryEstimate as MemoryEstimate,
    available_memory as available_memory,
    check_memory_fits as check_memory_fits,
    estimate_memory as estimate_memory,
)
from ._model import ARHMM as ARHMM
from ._params import Params as Params
from ._run import (
    gibbs_step as gibbs_step,
    run_chain as run_chain,
)
from ._sharding import chain_mesh as chain_mesh
from ._states import States as States


# name -> (module, attribute), imported on first access (PEP 562).
_LAZY = {
    "CheckpointError": ("_checkpoint", "CheckpointError"),
    "latest_checkpoint": ("_checkpoint", "latest_checkpoint"),
    "load_checkpoint": ("_checkpoint", "load_checkpoint"),
    "load_moseq_model": ("_checkpoint", "load_moseq_model"),
    "save_checkpoint": ("_checkpoint", "save_checkpoint"),
    "save_moseq_model": ("_checkpoint", "save_moseq_model"),
    "default_cache_dir": ("_compile_cache", "default_cache_dir"),
    "use_compilation_cache": ("_compile_cache", "use_compilation_cache"),
    "release_memory_after_compile": ("_compiler_memory", "release_memory_after_compile"),
    "Dataset": ("_data", "Dataset"),
    "Standardizer": ("_data", "Standardizer"),
    "load_recordings": ("_data", "load_recordings"),
    "prepare_recordings": ("_data", "prepare_recordings"),
    "standardize": ("_data", "standardize"),
    "whiten": ("_data", "whiten"),
    "example_model": ("_demo", "example_model"),
    "matched_accuracy": ("_demo", "matched_accuracy"),
    "simulate_recordings": ("_demo", "simulate_recordings"),
    "states_accuracy": ("_demo", "states_accuracy"),
    "EMLScores": ("_diagnostics", "EMLScores"),
    "adjusted_rand_index": ("_diagnostics", "adjusted_rand_index"),
    "effective_sample_size": ("_diagnostics", "effective_sample_size"),
    "expected_marginal_likelihoods": ("_diagnostics", "expected_marginal_likelihoods"),
    "segmentation_agreement": ("_diagnostics", "segmentation_agreement"),
    "split_rhat": ("_diagnostics", "split_rhat"),
    "variation_of_information": ("_diagnostics", "variation_of_information"),
    "FitResult": ("_fit", "FitResult"),
    "fit": ("_fit", "fit"),
    "resume": ("_fit", "resume"),
    "UnconstrainedParams": ("_gradient", "UnconstrainedParams"),
    "fit_gradient": ("_gradient", "fit_gradient"),
    "plot_durations": ("_plots", "plot_durations"),
    "plot_kappa_scan": ("_plots", "plot_kappa_scan"),
    "plot_state_raster": ("_plots", "plot_state_raster"),
    "plot_traces": ("_plots", "plot_traces"),
    "plot_transition_matrix": ("_plots", "plot_transition_matrix"),
    "plot_usages": ("_plots", "plot_usages"),
    "save_figures": ("_plots", "save_figures"),
    "state_colors": ("_plots", "state_colors"),
    "Results": ("_results", "Results"),
    "average_marginals": ("_results", "average_marginals"),
    "relabel_by_usage": ("_results", "relabel_by_usage"),
    "runs": ("_results", "runs"),
    "save_results": ("_results", "save_results"),
    "state_durations": ("_results", "state_durations"),
    "state_usages": ("_results", "state_usages"),
    "summarize": ("_results", "summarize"),
    "transition_matrix": ("_results", "transition_matrix"),
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attribute)
        globals()[name] = value  # later accesses are plain lookups
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


try:
    __version__ = importlib.metadata.version("arhmm_eqx")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"
