"""The analysis notebook executes end to end (nbclient) on a sweep the tests produced."""

from pathlib import Path

import pytest

from tests.test_sweep import tiny_sweep  # noqa: F401  (session fixture: the real 4-point sweep)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.slow
def test_sweep_analysis_notebook_runs_on_a_real_sweep(tiny_sweep, monkeypatch):  # noqa: F811
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    sweep, _ = tiny_sweep
    monkeypatch.setenv("XMOD_SWEEP_DIR", str(sweep))  # the kernel inherits the environment
    notebook = nbformat.read(NOTEBOOKS / "sweep_analysis.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert f"{sweep}: 4 runs, metric acc" in text
    assert "did not finish: {'3':" in text  # the failed sweep point is named
    assert "reduction_factor=2" in text and "zero-shot avg" in text and "best by average acc" in text
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 2  # heatmap and zero-shot bar chart
