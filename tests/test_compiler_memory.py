"""What compilations leave behind: the malloc trim after each one (wired to JAX's compile event,
switchable) and the warning near the cap on memory mappings."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import arhmm_eqx.workflow._compiler_memory as cm
from arhmm_eqx.workflow import release_memory_after_compile


def test_listener_trims_after_each_compilation(monkeypatch):
    before = cm._enabled[0]
    calls = []
    monkeypatch.setattr(cm, "_MALLOC_TRIM", lambda pad: calls.append(pad) or 1)
    monkeypatch.setattr(cm, "TRIM_MIN_COMPILE_SECONDS", 0.0)  # these compilations are short
    a = jnp.arange(7.0)
    assert release_memory_after_compile(True)
    jax.jit(lambda a: a * 3.0 + 1.0).lower(a).compile()
    assert calls and set(calls) == {0}, "JAX's backend-compile event did not reach the listener; has its name changed?"
    seen = len(calls)
    release_memory_after_compile(False)
    jax.jit(lambda a: a * 5.0 - 2.0).lower(a).compile()
    assert len(calls) == seen
    release_memory_after_compile(True)
    monkeypatch.setattr(cm, "TRIM_MIN_COMPILE_SECONDS", 1e9)  # short compilations are not trimmed
    jax.jit(lambda a: a * 6.0 - 2.0).lower(a).compile()
    assert len(calls) == seen
    release_memory_after_compile(before)  # leave the process as it was


@pytest.mark.skipif(cm._MALLOC_TRIM is None, reason="needs glibc")
def test_real_trim_runs():
    assert cm._MALLOC_TRIM(0) in (0, 1)


def test_map_count_is_read_on_linux():
    count, limit = cm.map_count(), cm.max_map_count()
    if count is None or limit is None:
        pytest.skip("needs /proc (Linux)")
    assert 0 < count < limit


def test_warns_once_near_the_cap_of_mappings(monkeypatch):
    count = cm.map_count()
    if count is None:
        pytest.skip("needs /proc (Linux)")
    monkeypatch.setattr(cm, "_mappings_warned", [False])
    cm.check_map_count(limit=10 * count)  # far below the cap: silent
    assert cm._mappings_warned == [False]
    a = jnp.arange(11.0)
    monkeypatch.setattr(cm, "max_map_count", lambda: count)  # the cap reached: warn from a compilation
    with pytest.warns(RuntimeWarning, match=r"vm.max_map_count.*jax.clear_caches\(\)"):
        jax.jit(lambda a: a * 7.0 - 3.0).lower(a).compile()
    assert cm._mappings_warned == [True]
    jax.jit(lambda a: a * 9.0 - 4.0).lower(a).compile()  # once per process


def test_trim_is_on_by_default():
    env = {k: v for k, v in os.environ.items() if k != "ARHMM_EQX_MALLOC_TRIM"}
    code = "import arhmm_eqx.workflow._compiler_memory as cm; print(cm._enabled[0])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    env["ARHMM_EQX_MALLOC_TRIM"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
