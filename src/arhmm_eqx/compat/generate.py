"""Compatible with `jax_moseq.models.arhmm.generate`."""

import equinox as eqx
import jax.numpy as jnp

from .. import _generate
from ._convert import canonicalize_key


def generate_states(seed, pi, Ab, Q, n_steps, init_state=None):
    """Compatible with `jax_moseq.models.arhmm.generate.generate_states`.

    **Returns:** `(zs, xs)` of shapes `(n_steps,)` and `(n_steps, latent_dim)`.

    !!! info
        Without `init_state`, the first state is uniform (model.md, "Simulation"); the
        reference draws it from the stationary distribution of `pi`.
    """
    if init_state is not None:
        z0, xlags = init_state
        init_state = (jnp.asarray(z0, jnp.int32), jnp.asarray(xlags))
    return _generate_jit(canonicalize_key(seed), jnp.asarray(pi), jnp.asarray(Ab), jnp.asarray(Q), int(n_steps),
                         init_state)


_generate_jit = eqx.filter_jit(_generate.generate_states)
