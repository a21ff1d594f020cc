"""arhmm_eqx: autoregressive HMMs with a sticky HDP prior, fitted by Gibbs sampling in JAX."""

import importlib.metadata

from ._gibbs import GibbsInfo as GibbsInfo
from ._hyperparams import Hyperparams as Hyperparams
from ._memory import MemoryEstimate as MemoryEstimate, estimate_memory as estimate_memory
from ._model import ARHMM as ARHMM
from ._params import Params as Params
from ._run import gibbs_step as gibbs_step, run_chain as run_chain
from ._states import States as States


try:
    __version__ = importlib.metadata.version("arhmm_eqx")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"
