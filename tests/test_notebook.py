"""examples/notebook.ipynb runs in a real kernel, and its outputs hold the run and every view."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("nbclient") is None or importlib.util.find_spec("ipykernel") is None,
                       reason="needs nbclient and ipykernel (the test extras)"),
]

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.ipynb"


def _plotly(output):
    return output.get("data", {}).get("application/vnd.plotly.v1+json")


def test_notebook_executes_and_shows_every_view(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("FLOWCALLBACK_NOTEBOOK_DIR", str(tmp_path / "run"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(NOTEBOOK.parent)}}
    NotebookClient(nb, timeout=600, kernel_name="python3", resources=resources).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    by_source = {c.source.strip().splitlines()[-1]: c.get("outputs", []) for c in code}
    fit_outputs = by_source["sorted(callback.pages)"]
    assert "[0, 1, 2, 3]" in fit_outputs[-1]["data"]["text/plain"]
    # the snapshots' progress: one display updated in place (its last state), no line in Keras's output
    html_outputs = [o.get("data", {}).get("text/html", "") for o in fit_outputs]
    bars = [text for text in html_outputs if "flowcallback-progress" in text]
    assert len(bars) == 1 and "4 snapshot(s) written" in bars[0] and "<progress" not in bars[0], bars
    keras_text = "".join(o.get("text", "") for o in fit_outputs if o.get("output_type") == "stream")
    assert "Epoch 3/3" in keras_text and "FlowCallback" not in keras_text
    summary = by_source["run"][-1]["data"]["text/html"]
    assert "flowcallback run" in summary and "lenet5_digits" in summary and summary.count("<tr>") == 1 + 4
    kinds = {}
    for line, outputs in by_source.items():
        figs = [_plotly(o) for o in outputs if _plotly(o)]
        if line.startswith("run.show("):
            assert len(figs) == 1, line
            kinds[line] = sorted({t["type"] for t in figs[0]["data"]})
    assert kinds == {
        'run.show("epoch", epoch=1)': ["sankey", "scatter"],  # scatter: the class legend
        'run.show("across", column="Prediction")': ["sankey"],
        'run.show("across", column="dense84", changed_only=True)': ["sankey"],
        'run.show("confusion")': ["scatter"],
        'run.show("scores")': ["scatter"],
        'run.show("class_means", epoch=3, layer="dense84")': ["heatmap"],
        'run.show("class_means", epoch=3, layer="dense84", difference=(3, 8))': ["bar", "heatmap"],
        'run.show("projection", layer="dense84")': ["scatter"],
    }
    frames = [_plotly(o) for o in by_source['run.show("projection", layer="dense84")'] if _plotly(o)][0]["frames"]
    assert len(frames) == 4  # one per snapshot: 0, 1, 2, 3
    graph_html = by_source["g"][-1]["data"]["text/html"]
    assert "FlowGraph(epoch=3" in graph_html and graph_html.count("<tr>") == 1 + 7 + 2  # 7 layers, the 2 label columns
    sankey = [_plotly(o) for o in by_source["run.figure(3)"] if _plotly(o)]
    assert len(sankey) == 1 and "sankey" in {t["type"] for t in sankey[0]["data"]}
    assert (tmp_path / "run" / "index.html").exists()
    assert os.path.getsize(tmp_path / "run" / "epoch_003.html") > 0
