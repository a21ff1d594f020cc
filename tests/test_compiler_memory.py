"""The malloc trim after each XLA compilation: wired to JAX's compile event, and switchable."""

import jax
import jax.numpy as jnp
import pytest

import arhmm_eqx._compiler_memory as cm
from arhmm_eqx import release_memory_after_compile


def test_listener_trims_after_each_compilation(monkeypatch):
    before = cm._enabled[0]
    calls = []
    monkeypatch.setattr(cm, "_MALLOC_TRIM", lambda pad: calls.append(pad) or 1)
    a = jnp.arange(7.0)
    assert release_memory_after_compile(True)
    jax.jit(lambda a: a * 3.0 + 1.0).lower(a).compile()
    assert calls and set(calls) == {0}, "JAX's backend-compile event did not reach the listener; has its name changed?"
    seen = len(calls)
    release_memory_after_compile(False)
    jax.jit(lambda a: a * 5.0 - 2.0).lower(a).compile()
    assert len(calls) == seen
    release_memory_after_compile(before)  # leave the process as it was (off by default)


@pytest.mark.skipif(cm._MALLOC_TRIM is None, reason="needs glibc")
def test_real_trim_runs():
    assert cm._MALLOC_TRIM(0) in (0, 1)
