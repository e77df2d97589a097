"""The example notebook runs headless from top to bottom (nbclient), so it cannot rot."""

from __future__ import annotations

import pytest

from tests.conftest import MINILM, REPO, require

NOTEBOOK = REPO / "examples" / "finetune_and_compare.ipynb"


@pytest.mark.slow
def test_example_notebook_executes(tmp_path, monkeypatch):
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    require(*MINILM)
    monkeypatch.setenv("HFTL_NOTEBOOK_SAMPLES", "300")
    monkeypatch.setenv("HFTL_NOTEBOOK_OUT", str(tmp_path / "runs"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    where = {"metadata": {"path": str(tmp_path)}}
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3", resources=where)
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 6  # the study's five plots and the probe's
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    assert "'label': 'positive'" in text or "'label': 'negative'" in text
    assert "| head_only |" in text and "| lora |" in text
    assert (tmp_path / "runs" / "study" / "report.html").is_file()
    assert "all-minilm-l6-v2 block 6: linear f1" in text and (tmp_path / "runs" / "probe" / "probe.json").is_file()
    assert "'COMPLETE'" in text and (tmp_path / "runs" / "search" / "best.yaml").is_file()
