"""Shared fixtures: a fixed-seed `key` for statistical tests and a random-seed `getkey` for shape tests."""

import os
import random


# jaxlib 0.10 splits large batched LAPACK calls over its own thread pool, and each piece calls
# scipy's OpenBLAS, which may start threads of its own; this nesting has been reported to
# corrupt the heap. Two full runs of this suite crashed (segmentation fault) inside a later,
# unrelated XLA compilation, while the same tests pass alone. One OpenBLAS thread per call
# removes the nesting; it must be set before OpenBLAS is loaded.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax
import jax.random as jr
import pytest


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


@pytest.fixture
def getkey(request):
    seed = random.randint(0, 2**31 - 1)
    request.node.user_properties.append(("getkey_seed", seed))
    return _GetKey(seed)


@pytest.fixture
def key():
    return jr.key(1234)
