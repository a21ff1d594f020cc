"""Importing the package has no side effects: no plotting, progress-bar, HDF5 or optimiser
library is loaded and no process-wide listener is installed; the workflow names load on use."""

import subprocess
import sys

import pytest

import arhmm_eqx as ae


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def test_import_loads_no_workflow_library():
    code = (
        "import sys, arhmm_eqx, arhmm_eqx.compat; "
        "print(sorted(m for m in ('matplotlib', 'tqdm', 'h5py', 'optax', 'arhmm_eqx.workflow._compiler_memory', "
        "'arhmm_eqx.workflow._plots', 'arhmm_eqx.workflow._fit') if m in sys.modules))"
    )
    assert _run(code) == "[]"


def test_compat_imports_without_matplotlib_installed():
    """A client that only replaces the reference's AR-HMM module needs jax, equinox and friends:
    with matplotlib, tqdm, h5py and optax made unimportable, compat still imports and runs."""
    code = (
        "import sys\n"
        "for m in ('matplotlib', 'tqdm', 'h5py', 'optax'): sys.modules[m] = None\n"
        "import jax.numpy as jnp, jax.random as jr\n"
        "from arhmm_eqx.compat import initialize, gibbs, log_prob\n"
        "hyp = initialize.init_hyperparams(trans_hypparams=dict(num_states=3, alpha=5.0, gamma=10.0, kappa=10.0),"
        " ar_hypparams=dict(latent_dim=2, nlags=1, S_0_scale=0.1, K_0_scale=10.0))\n"
        "x = jr.normal(jr.key(0), (2, 20, 2)); data = dict(x=x, mask=jnp.ones((2, 20)))\n"
        "model = initialize.init_model(data, hypparams=hyp, seed=0)\n"
        "model = gibbs.resample_model(data, **model)\n"
        "print(model['states']['z'].shape)\n"
    )
    assert _run(code) == "(2, 19)"


def test_workflow_names_load_on_first_use():
    import arhmm_eqx.workflow as wf

    assert "fit" in dir(wf) and "plot_usages" in dir(wf) and "workflow" in dir(ae)
    assert callable(wf.fit) and callable(wf.plot_usages) and callable(wf.load_recordings)
    from arhmm_eqx.workflow import Dataset, save_checkpoint  # from-imports resolve through the same hook

    assert Dataset is ae.workflow.Dataset and callable(save_checkpoint)
    for module in (ae, wf):
        with pytest.raises(AttributeError, match="no_such_name"):
            module.no_such_name  # noqa: B018


def test_old_top_level_workflow_names_warn_and_resolve():
    """In 0.1 the workflow's names were top-level; they still work for one release."""
    with pytest.warns(DeprecationWarning, match="arhmm_eqx.workflow.fit"):
        old = ae.fit
    assert old is ae.workflow.fit
    with pytest.warns(DeprecationWarning, match="arhmm_eqx.workflow.Dataset"):
        from arhmm_eqx import Dataset
    assert Dataset is ae.workflow.Dataset


def test_top_level_holds_the_model_and_its_drivers():
    public = {n for n in dir(ae) if not n.startswith("_")}
    assert {"ARHMM", "Hyperparams", "Params", "States", "gibbs_step", "run_chain", "run_chains", "init_chains",
            "kappa_scan", "fit_em", "fit_gradient", "estimate_memory", "compat", "workflow"} <= public
    assert not public & {"fit", "plot_usages", "summarize", "runs", "whiten", "transition_matrix", "state_colors"}
