"""`arhmm_eqx.workflow`: from recordings on disk to results on disk.

The model and its samplers live in `arhmm_eqx`; this subpackage holds what an analysis
needs around them: reading and preparing recordings, the fit loop with checkpoints and
resume, MoSeq-compatible model files, results tables, diagnostics across chains, plots,
the simulated demo and the command line (`arhmm-eqx`, `python -m arhmm_eqx`).

Every name is imported on first use (PEP 562), so `import arhmm_eqx.workflow` loads
neither matplotlib, tqdm nor h5py; each is imported by the functions that need it.
"""

import importlib


# name -> module of this subpackage, imported on first access.
_NAMES = {
    "_checkpoint": (
        "CheckpointError", "latest_checkpoint", "load_checkpoint", "load_moseq_model", "save_checkpoint",
        "save_moseq_model",
    ),
    "_compile_cache": ("default_cache_dir", "use_compilation_cache"),
    "_compiler_memory": ("release_memory_after_compile",),
    "_data": ("Dataset", "Standardizer", "load_recordings", "prepare_recordings", "standardize", "whiten"),
    "_demo": ("example_model", "matched_accuracy", "simulate_recordings", "states_accuracy"),
    "_diagnostics": (
        "EMLScores", "adjusted_rand_index", "effective_sample_size", "expected_marginal_likelihoods",
        "segmentation_agreement", "split_rhat", "variation_of_information",
    ),
    "_distributed": ("init_distributed",),
    "_fit": ("FitResult", "fit", "resume"),
    "_plots": (
        "plot_durations", "plot_kappa_scan", "plot_state_raster", "plot_traces", "plot_transition_matrix",
        "plot_usages", "save_figures", "state_colors",
    ),
    "_results": (
        "Results", "average_marginals", "relabel_by_usage", "runs", "save_results", "state_durations",
        "state_usages", "summarize", "transition_matrix",
    ),
    "_cli": ("cli", "main"),
}
_LAZY = {name: module for module, names in _NAMES.items() for name in names}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later accesses are plain lookups
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
