"""The analysis notebook executes end to end (nbclient) on a sweep the tests produced."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_sweep import tiny_sweep  # noqa: F401  (session fixture: the real 4-point sweep)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.slow
def test_sweep_analysis_notebook_runs_on_a_real_sweep(tiny_sweep, monkeypatch, tmp_path):  # noqa: F811
    """Started outside the checkout, it finds the sweep through XMOD_ROOT (the newest under outputs/)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    sweep, _ = tiny_sweep
    monkeypatch.delenv("XMOD_SWEEP_DIR", raising=False)
    monkeypatch.setenv("XMOD_ROOT", str(sweep.parents[2].parent))  # <root>/outputs/default/multiruns/<time>
    notebook = nbformat.read(NOTEBOOKS / "sweep_analysis.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert f"{sweep}: 4 runs, metric acc, chance 33.33" in text
    assert "did not finish: {'3_adapter_reduction_factor-0':" in text  # the failed sweep point is named
    assert "reduction_factor=2" in text and "zero-shot avg" in text and "zs_avg" in text
    assert "best: adapter_reduction_factor=" in text and "(best on validation val/en/acc (max) = " in text
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 2  # heatmap and zero-shot bar chart


def test_the_dev_environment_can_open_the_notebook():
    """`jupyter lab notebooks/` (README): JupyterLab is in the dev extra, and it sees the notebook as valid."""
    nbformat = pytest.importorskip("nbformat")
    jupyter = Path(sys.executable).with_name("jupyter")
    done = subprocess.run([str(jupyter), "lab", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip().split(".")[0]) >= 4
    nbformat.validate(nbformat.read(NOTEBOOKS / "sweep_analysis.ipynb", as_version=4))
