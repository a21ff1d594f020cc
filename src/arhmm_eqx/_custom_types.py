"""jaxtyping aliases and the axis glossary used across the library.

Axis letters follow `model.md`:

- `N`: number of sequences;
- `T`: frames per (padded) sequence;
- `D`: `latent_dim`, the dimension of `x`;
- `L`: `nlags`, the autoregressive order;
- `K`: `num_states`, the truncation level of the HDP;
- `A`: `ar_dim = D * L + 1`, the length of a regressor `[x[t-L], ..., x[t-1], 1]`;
- `Tz`: `T - L`, the number of frames that carry a discrete state.
"""

from typing import TYPE_CHECKING

import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, Real, Shaped


if TYPE_CHECKING:
    ScalarLike = float | int | Array | np.ndarray
else:
    ScalarLike = float | int | ArrayLike

MaskLike = Real[Array, "N T"] | Bool[Array, "N T"]

# The data at the public boundary: JAX or NumPy arrays. `x` is real (cast to the model's
# dtype); `mask` may be float, int or bool (its values are checked: 0 or 1).
DataArray = Real[ArrayLike, "N T D"]
MaskArray = Shaped[ArrayLike, "N T"]

__all__ = [
    "Array",
    "ArrayLike",
    "Bool",
    "DataArray",
    "Float",
    "Int",
    "MaskArray",
    "MaskLike",
    "PRNGKeyArray",
    "Real",
    "ScalarLike",
    "Shaped",
]
