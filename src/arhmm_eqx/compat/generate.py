"""Compatible with `jax_moseq.models.arhmm.generate` (`generate_states`)."""

import equinox as _eqx
import jax.numpy as _jnp

from .. import _generate
from . import _convert


def generate_states(seed, pi, Ab, Q, n_steps, init_state=None):
    """Compatible with `jax_moseq.models.arhmm.generate.generate_states`.

    **Returns:** `(zs, xs)` of shapes `(n_steps,)` and `(n_steps, latent_dim)`; `zs` has the
    default integer dtype.

    !!! info
        Without `init_state`, the first state is uniform (model.md, "Simulation"); the
        reference draws it from the stationary distribution of `pi`.
    """
    if init_state is not None:
        init_state = tuple(_convert.host_scalar(v) for v in init_state)
    return _generate_jit(_convert.canonicalize_key(seed), pi, Ab, Q, int(n_steps), init_state)


@_eqx.filter_jit
def _generate_jit(key, pi, Ab, Q, n_steps, init_state):
    Ab = _jnp.asarray(Ab)
    if init_state is not None:
        z0, xlags = init_state
        init_state = (_jnp.asarray(z0).astype(_jnp.int32), _jnp.asarray(xlags, Ab.dtype))
    zs, xs = _generate.generate_states(key, _jnp.asarray(pi), Ab, _jnp.asarray(Q), n_steps, init_state)
    return zs.astype(_convert.default_int()), xs
