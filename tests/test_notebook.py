"""experiments/notebooks/quickstart.ipynb: committed without outputs, and executed end to end
(nbclient) at the seconds-long test budget (GENIE_JAX_NOTEBOOK_TINY=1); the minutes-long default
budget is the slow variant.

The kernel is a python3 kernel of this interpreter (a subprocess): nbclient cannot drive
ipykernel's InProcessKernelManager (its client has no async wait_for_ready(timeout=...))."""
import json
import os
import time

import pytest

from tests.conftest import REPO

NOTEBOOK = os.path.join(REPO, "experiments", "notebooks", "quickstart.ipynb")


def test_committed_notebook_has_no_outputs():
    with open(NOTEBOOK) as f:
        nb = json.load(f)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    for c in code:
        assert c["outputs"] == [] and c["execution_count"] is None, "".join(c["source"])[:80]
    first = "".join(code[0]["source"])
    assert 'find_spec("genie_jax") is None' in first and "pip" in first  # install unless importable


def _execute(tmp_path, monkeypatch, tiny: bool, timeout: int):
    import nbclient  # the `test` extra (setup.cfg)
    import nbformat
    monkeypatch.setenv("GENIE_JAX_NOTEBOOK_TINY", "1" if tiny else "0")
    monkeypatch.setenv("GENIE_JAX_NOTEBOOK_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": REPO}}).execute()
    return nb, time.perf_counter() - t0


def _check(nb, root):
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [k for o in outputs for k in o.get("data", {}) if k.startswith("image/")]
    assert images.count("image/png") == 3 and images.count("image/gif") == 1  # strip, plot, gallery
    text = "".join(o.get("text", "") for o in outputs)
    for expected in ("world built in", "PSNR per step", "genie-jax play --workdir="):
        assert expected in text
    assert os.path.exists(os.path.join(root, "dyn", "action_map.json"))
    assert os.path.getsize(os.path.join(root, "rollout.gif")) > 0
    return text


def test_notebook_runs_end_to_end_tiny(tmp_path, monkeypatch):
    nb, seconds = _execute(tmp_path, monkeypatch, tiny=True, timeout=600)
    text = _check(nb, str(tmp_path / "runs"))
    assert "size=test" in text
    print(f"notebook run time at the test budget: {seconds:.0f} s")  # a figure, not a limit


@pytest.mark.slow
def test_notebook_runs_end_to_end_default_budget(tmp_path, monkeypatch):
    nb, _ = _execute(tmp_path, monkeypatch, tiny=False, timeout=1800)
    assert "size=tiny" in _check(nb, str(tmp_path / "runs"))
