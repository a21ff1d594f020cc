"""The compat modules expose only the reference's names: no internal kernel under a reference name.

`REFERENCE_NAMES` lists, per module of `jax_moseq.models.arhmm` (0.3.7), the public callables
its namespace holds: the functions it defines and the jax_moseq functions it imports
(third-party imports such as `partial` or dynamax's filters are left out). A public callable
of a compat module must carry one of those names and be either defined there under that
name or the very same object as the compat function of that name in another compat module.
"""

import inspect

import pytest

from arhmm_eqx import compat
from arhmm_eqx.compat import generate, gibbs, initialize, log_prob, separate_trans


REFERENCE_NAMES = {
    "initialize": {
        # defined
        "init_ar_params", "init_states", "init_params", "init_hyperparams", "init_model",
        # imported from jax_moseq
        "device_put_as_scalar", "check_precision", "init_hdp_transitions", "sample_mniw",
        "resample_discrete_stateseqs",
    },
    "gibbs": {
        "resample_discrete_stateseqs", "stateseq_marginals", "stateseq_mode", "resample_ar_params", "resample_model",
        "pad_affine", "psd_solve", "psd_inv", "nan_check", "mixed_map", "convert_data_precision", "sample_mniw",
        "sample_hmm_stateseq", "get_lags", "get_nlags", "ar_log_likelihood", "resample_hdp_transitions",
    },
    "log_prob": {
        "discrete_stateseq_log_prob", "continuous_stateseq_log_prob", "log_joint_likelihood", "model_likelihood",
        "state_cross_likelihoods", "marginal_log_likelihood",
        "get_nlags", "ar_log_likelihood", "mixed_map",
    },
    "generate": {
        "generate_initial_state", "generate_next_state", "generate_next_state_fast", "generate_states",
        "pad_affine",
    },
    "separate_trans": {
        "resample_discrete_stateseqs", "resample_model", "init_model",
        "device_put_as_scalar", "ar_log_likelihood", "get_nlags", "sample_hmm_stateseq",
        "init_hdp_transitions_by_group", "resample_hdp_transitions_by_group", "resample_ar_params",
        "init_ar_params", "init_hyperparams",
        # from jax_moseq.utils.transitions, the helper the two above call (not imported by the reference)
        "count_transitions_by_group",
    },
}
MODULES = {"initialize": initialize, "gibbs": gibbs, "log_prob": log_prob, "generate": generate}
# Not re-exported by the package: its `resample_model` and `init_model` are the grouped ones.
SUBMODULES = {"separate_trans": separate_trans}
# Additions of ours in the package namespace (not in any reference module, so they shadow nothing).
PACKAGE_EXTRAS = {"model_from_dict", "model_to_dict"}


def _public_callables(module):
    return {
        name: obj for name, obj in vars(module).items()
        if not name.startswith("_") and callable(obj) and not inspect.ismodule(obj)
    }


def _defining_module(obj):
    """The compat module that defines `obj` (a plain function), or None."""
    module = getattr(obj, "__module__", "")
    for short, mod in {**MODULES, **SUBMODULES}.items():
        if module == mod.__name__:
            return short
    return None


@pytest.mark.parametrize("short", sorted(MODULES) + sorted(SUBMODULES))
def test_compat_module_exposes_only_reference_names(short):
    module = {**MODULES, **SUBMODULES}[short]
    for name, obj in _public_callables(module).items():
        assert name in REFERENCE_NAMES[short], (
            f"arhmm_eqx.compat.{short}.{name} is not a name of jax_moseq.models.arhmm.{short}; "
            "give internal helpers an underscore name or import them under a private alias"
        )
        home = _defining_module(obj)
        assert home is not None and inspect.isfunction(obj), f"compat.{short}.{name} is not a compat function"
        assert obj.__name__ == name, f"compat.{short}.{name} is the function {obj.__name__}"
        if home != short:
            assert name in REFERENCE_NAMES[home] and getattr(MODULES[home], name) is obj


def test_initialize_reexports_the_compat_sampler_of_states():
    """The reference's initialize module imports gibbs.resample_discrete_stateseqs; ours too."""
    assert initialize.resample_discrete_stateseqs is gibbs.resample_discrete_stateseqs


def test_package_namespace():
    all_reference = set().union(*REFERENCE_NAMES.values())
    for name, obj in _public_callables(compat).items():
        if name in PACKAGE_EXTRAS:
            assert name not in all_reference
            continue
        homes = [short for short, mod in MODULES.items() if getattr(mod, name, None) is obj]
        assert homes and name in REFERENCE_NAMES[homes[0]], f"compat.{name} is not a re-export of a compat function"
    for short, module in MODULES.items():
        for name in _public_callables(module):
            assert getattr(compat, name) is getattr(module, name), f"compat.{name} should re-export {short}.{name}"
