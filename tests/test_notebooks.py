"""Execute the notebooks top to bottom (small sizes) so they cannot rot."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient


NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
# the quickstart runs by default; the others in the extended tier (ARHMM_EQX_TEST_EXTENDED=1)
PARAMS = [pytest.param(p, marks=() if p.name.startswith("quickstart") else pytest.mark.extended) for p in NOTEBOOKS]


@pytest.mark.slow
@pytest.mark.parametrize("path", PARAMS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("ARHMM_NB_FRAMES", "600")
    monkeypatch.setenv("ARHMM_NB_ITERS", "60")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if os.environ.get("ARHMM_EQX_TEST_JAX_CACHE"):  # the run's shared compilation cache (run_tests.py)
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", os.environ["ARHMM_EQX_TEST_JAX_CACHE"])
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
