"""Shared fixtures: a fixed-seed `key` for statistical tests and a random-seed `getkey` for shape tests."""

import os
import random


# jaxlib 0.10 splits large batched LAPACK calls over its own thread pool, and each piece calls
# scipy's OpenBLAS, which may start threads of its own; reports tie this nesting to heap
# corruption on many-core hosts. One OpenBLAS thread per call removes the nesting; it must be
# set before OpenBLAS is loaded.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# `fit` keeps compiled programs on disk by default; the tests stay hermetic (test_compile_cache
# turns it on in fresh processes with a temporary folder).
os.environ["ARHMM_EQX_COMPILE_CACHE"] = "0"

import jax
import jax.random as jr
import pytest


# `run_tests.py` gives its test files one persistent compilation cache for the run, so a
# program compiled by one file is loaded by the next (only programs that take over a second
# to compile are kept, JAX's default).
if os.environ.get("ARHMM_EQX_TEST_JAX_CACHE"):
    jax.config.update("jax_compilation_cache_dir", os.environ["ARHMM_EQX_TEST_JAX_CACHE"])

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


class _GetKey:
    """A new key at every call (fold_in of one seed), for tests of shapes and structure."""

    def __init__(self, seed: int):
        self.seed = seed
        self.key = jr.key(seed)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return jr.fold_in(self.key, self.calls)


@pytest.fixture(scope="module", autouse=True)
def _free_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Each compiled program holds memory mappings while it is cached; one process running the
    whole suite reached the kernel's cap (`vm.max_map_count`, 65,530) and crashed in a
    compilation. See `arhmm_eqx.workflow._compiler_memory`.
    """
    yield
    jax.clear_caches()


@pytest.fixture
def getkey(request):
    seed = random.randint(0, 2**31 - 1)
    request.node.user_properties.append(("getkey_seed", seed))
    return _GetKey(seed)


@pytest.fixture
def library_checks(monkeypatch):
    """Switch off the test run's jaxtyping hook for one test, as it is off in user code, so that
    the library's own error messages (which the test asserts) are the ones raised."""
    import jaxtyping

    monkeypatch.setattr(jaxtyping.config, "jaxtyping_disable", True)


@pytest.fixture
def key():
    return jr.key(1234)


def pytest_collection_modifyitems(config, items):
    """Tests marked `extended` run only with `ARHMM_EQX_TEST_EXTENDED=1` (README, "Tests")."""
    if os.environ.get("ARHMM_EQX_TEST_EXTENDED"):
        return
    skip = pytest.mark.skip(reason="extended tier: set ARHMM_EQX_TEST_EXTENDED=1 to run it")
    for item in items:
        if "extended" in item.keywords:
            item.add_marker(skip)
