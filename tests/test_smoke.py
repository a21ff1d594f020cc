import jax.numpy as jnp
import jax.random as jr

import arhmm_eqx as ae


def test_sweep_runs(getkey):
    hp = ae.Hyperparams.from_scales(4, 2, 2, kappa=100.0)
    x = jr.normal(getkey(), (3, 60, 2))
    mask = jnp.ones((3, 60))
    m = ae.ARHMM.from_prior(hp, x, mask, key=getkey())
    m = m.resample(x, mask, key=getkey())
    assert m.states.z.shape == (3, 58)
    assert jnp.allclose(m.params.pi.sum(1), 1.0, atol=1e-5)
