"""`fit` keeps compiled programs on disk: a second process fitting the same shapes compiles nothing."""

import json
import os
import subprocess
import sys

import jax
import pytest

import arhmm_eqx as ae
from arhmm_eqx.workflow import _compile_cache


_FIT = """
import json, os, jax, jax.numpy as jnp, jax.random as jr
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # cache every program
counts = {"compiles": 0, "hits": 0}  # compile requests, and those served from the cache
def on_duration(event, duration, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
        counts["compiles"] += 1
def on_event(event, **kw):
    if event == "/jax/compilation_cache/cache_hits":
        counts["hits"] += 1
jax.monitoring.register_event_duration_secs_listener(on_duration)
jax.monitoring.register_event_listener(on_event)
import arhmm_eqx as ae
x = jr.normal(jr.key(0), (2, 30, 2)); mask = jnp.ones((2, 30))
model = ae.ARHMM.from_prior(ae.Hyperparams.from_scales(3, 2, 1), x, mask, key=jr.key(1))
before = dict(counts)  # from_prior may run before the cache is on: count the fit alone
result = ae.workflow.fit(model, x, mask, key=jr.key(2), num_iters=4, progress=False)
jax.block_until_ready(result.model)
print(json.dumps({k: counts[k] - before[k] for k in counts} | {"dir": jax.config.jax_compilation_cache_dir}))
"""


def _fit_in_fresh_process(env):
    out = subprocess.run([sys.executable, "-c", _FIT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two fresh processes, each compiling a sweep
def test_second_fit_compiles_nothing(tmp_path):
    env = dict(os.environ, ARHMM_EQX_COMPILE_CACHE=str(tmp_path / "cache"))
    first = _fit_in_fresh_process(env)
    second = _fit_in_fresh_process(env)
    assert first["dir"] == str(tmp_path / "cache") and first["compiles"] >= 1
    assert any((tmp_path / "cache").iterdir())
    # Every program the first fit wrote to the cache is loaded from it by the second (JAX keeps
    # no single eager operation there, so those still compile: milliseconds each).
    written = len([f for f in (tmp_path / "cache").iterdir() if f.name.endswith("-cache")])
    assert first["hits"] == 0 and written >= 1
    assert second["hits"] == written, (first, second, written)


def test_cache_folder_and_opt_out(monkeypatch, tmp_path):
    monkeypatch.setenv("ARHMM_EQX_COMPILE_CACHE", "0")
    assert _compile_cache.default_cache_dir() is None
    assert ae.workflow.use_compilation_cache() is None  # off: nothing changes
    assert not jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("ARHMM_EQX_COMPILE_CACHE", str(tmp_path / "c"))
    assert _compile_cache.default_cache_dir() == str(tmp_path / "c")
    monkeypatch.delenv("ARHMM_EQX_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _compile_cache.default_cache_dir() == str(tmp_path / "xdg" / "arhmm_eqx" / "jax")
