"""The analysis notebook executes end to end (nbclient) on a sweep the tests produced."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_sweep import seed_sweep, tiny_sweep  # noqa: F401  (session fixtures: real sweeps)
from xmod_lab import report, seeds

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(monkeypatch, tmp_path, sweep: Path) -> tuple[list, str]:
    """Run the notebook started outside the checkout, finding ``sweep`` through XMOD_ROOT (the newest under
    outputs/): its outputs and their text."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.delenv("XMOD_SWEEP_DIR", raising=False)
    monkeypatch.setenv("XMOD_ROOT", str(sweep.parents[2].parent))  # <root>/outputs/<name>/multiruns/<time>
    notebook = nbformat.read(NOTEBOOKS / "sweep_analysis.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs, "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)


@pytest.mark.slow
def test_sweep_analysis_notebook_runs_on_a_real_sweep(tiny_sweep, monkeypatch, tmp_path):  # noqa: F811
    sweep, _ = tiny_sweep
    outputs, text = execute(monkeypatch, tmp_path, sweep)
    assert f"{sweep}: 4 runs, metric acc, chance 33.33" in text
    assert "did not finish: {'3_adapter_reduction_factor-0':" in text  # the failed sweep point is named
    assert "reduction_factor=2" in text and "zero-shot avg" in text and "zs_avg" in text
    assert "best: adapter_reduction_factor=" in text and "(best mean validation val/en/acc (max) = " in text
    # one run per configuration: the sd is undefined, and so is whether the best is ahead of the runner-up
    assert "± n/a" in text and "NOT separated: the spread is unknown with one run" in text
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 2  # heatmap and zero-shot bar chart


@pytest.mark.slow
def test_sweep_analysis_notebook_aggregates_seeds(seed_sweep, monkeypatch, tmp_path):  # noqa: F811
    """The same mean ± sd table and best configuration as xmod-report, from the real seed sweep."""
    sweep, _ = seed_sweep
    _, text = execute(monkeypatch, tmp_path, sweep)
    summary = report.collect_sweep(sweep)
    assert report.format_configs(summary, "loss") in text
    assert f"best: {seeds.best_config(summary['configs'])['best']['label']} (best mean validation" in text


def test_the_dev_environment_can_open_the_notebook():
    """`jupyter lab notebooks/` (README): JupyterLab is in the dev extra, and it sees the notebook as valid."""
    nbformat = pytest.importorskip("nbformat")
    jupyter = Path(sys.executable).with_name("jupyter")
    done = subprocess.run([str(jupyter), "lab", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip().split(".")[0]) >= 4
    nbformat.validate(nbformat.read(NOTEBOOKS / "sweep_analysis.ipynb", as_version=4))
