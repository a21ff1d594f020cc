"""arhmm_eqx: autoregressive HMMs with a sticky HDP prior, fitted by Gibbs sampling in JAX.

The package holds the model and its drivers: the Modules `Hyperparams`, `Params`, `States`
and `ARHMM`, the Gibbs sweep (`gibbs_step`, `run_chain`), many chains (`init_chains`,
`run_chains`, `kappa_scan`), point estimates (`fit_em`, `fit_gradient`) and memory planning.
Two subpackages sit beside it: `arhmm_eqx.workflow` (recordings, the fit loop and
checkpoints, results, diagnostics, plots, the command line) and `arhmm_eqx.compat` (the
reference implementation's dict API). `import arhmm_eqx` loads neither matplotlib, tqdm,
h5py nor optax, and changes one thing process-wide: if JAX has not started yet and no CPU
device count was chosen, it asks JAX for one CPU device per core, over which large calls
split their sequences (`ARHMM_EQX_CPU_DEVICES=1` turns that off).
"""

import importlib
import importlib.metadata
import warnings

from ._cores import request_cpu_devices as _request_cpu_devices


_request_cpu_devices()  # before any JAX operation: one CPU device per core (see `_cores`)

from ._chains import (
    KappaScan as KappaScan,
    hyperparams_grid as hyperparams_grid,
    init_chains as init_chains,
    kappa_scan as kappa_scan,
    run_chains as run_chains,
)
from ._concentrations import ConcentrationPrior as ConcentrationPrior
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
from ._robust import RobustPrior as RobustPrior
from ._run import (
    gibbs_step as gibbs_step,
    run_chain as run_chain,
)
from ._sharding import (
    chain_mesh as chain_mesh,
    process_sequences as process_sequences,
    shard_sequences as shard_sequences,
)
from ._states import States as States
from .workflow import __all__ as _workflow_all


# Imported on first access (PEP 562): gradient fitting needs optax, which the rest does not.
_LAZY = {
    "UnconstrainedParams": "._gradient",
    "fit_gradient": "._gradient",
}
_SUBPACKAGES = ("compat", "workflow")
# The workflow's names were top-level in 0.1; they still resolve here, with a warning.
_MOVED_TO_WORKFLOW = frozenset(_workflow_all) - {"cli", "main", "init_distributed"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _MOVED_TO_WORKFLOW:
        warnings.warn(
            f"`arhmm_eqx.{name}` moved to `arhmm_eqx.workflow.{name}`; the old name will be removed in 0.2.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(".workflow", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later accesses are plain lookups
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))


try:
    __version__ = importlib.metadata.version("arhmm_eqx")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"
