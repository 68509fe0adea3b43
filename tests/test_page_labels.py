"""A deep model's 24 columns have legible labels in a real browser: no two overlap, none is cut by the
page or covered by the analysis buttons, and the full name, type and cluster count show on hover."""
from __future__ import annotations

import numpy as np
import pytest

from browser import chromium_path, open_page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed (make test installs it)"),
]

#: Each label's corners on the screen: its text box in its own (rotated) frame, mapped by its matrix.
_CORNERS = """els => els.map(e => {
  const t = e.querySelector('text') || e; const b = t.getBBox(); const m = t.getScreenCTM();
  const pt = (x, y) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f];
  return {text: t.textContent, corners: [pt(b.x, b.y), pt(b.x + b.width, b.y), pt(b.x + b.width, b.y + b.height),
                                         pt(b.x, b.y + b.height)]};
})"""


def _separated(p, q) -> bool:
    """Whether two convex polygons do not overlap (separating axis theorem)."""
    for poly in (p, q):
        for i in range(len(poly)):
            (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % len(poly)]
            axis = np.array([y1 - y2, x2 - x1])
            a = [float(np.dot(axis, c)) for c in p]
            b = [float(np.dot(axis, c)) for c in q]
            if max(a) <= min(b) or max(b) <= min(a):
                return True
    return False


def _deep_graphs():
    from flowcallback.core import flows

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 30)
    names = [f"conv{2 + j // 6}_block{j % 6 + 1}_out" if j % 3 else f"conv{2 + j // 6}_block{j}_concat_projection"
             for j in range(24)]
    layers = [(n, "Add", rng.integers(0, 3 + j % 5, size=len(y))) for j, n in enumerate(names)]
    graphs = {a: flows.build_flow_graph(layers, y, y, epoch=3, analysis=a) for a in ("activations", "lrp")}
    return names, graphs


@pytest.mark.parametrize("width", [1280, 1000])
def test_twenty_four_columns_have_labels_that_do_not_overlap(tmp_path, width):
    from flowcallback.core import render

    names, graphs = _deep_graphs()
    path = tmp_path / "epoch_003.html"
    render.write_epoch_page(path, graphs)
    with open_page(path.resolve().as_uri(), width=width, height=900) as (page, errors, blocked):
        labels = page.eval_on_selector_all(".annotation[data-index]", _CORNERS)
        columns = labels[:26]  # the columns' labels come first, then the notes
        assert columns[-2]["text"].startswith("Prediction") and columns[-1]["text"].startswith("Ground truth")
        for a, b in zip(columns, columns[1:]):
            assert _separated(a["corners"], b["corners"]), (a["text"], b["text"])
        buttons = page.eval_on_selector_all(".updatemenu-button", _CORNERS)
        assert len(buttons) == 2
        for label in columns:
            assert all(_separated(label["corners"], b["corners"]) for b in buttons), label["text"]
            xs = [c[0] for c in label["corners"]]
            ys = [c[1] for c in label["corners"]]
            assert min(xs) >= 0 and max(xs) <= width and min(ys) >= 0, (label["text"], label["corners"])
        # the full name, layer type and cluster count on hover
        long_name = names[0]
        target = page.query_selector_all(".annotation[data-index]")[0]
        target.hover(force=True)
        page.wait_for_timeout(300)
        hover = page.eval_on_selector(".hoverlayer", "e => e.textContent")
        assert long_name in hover and "Add" in hover and "clusters" in hover, hover
        assert errors == [] and blocked == []


def test_small_models_keep_their_full_labels():
    from flowcallback.core import flows, render

    y = np.repeat(np.arange(3), 10)
    g = flows.build_flow_graph([("conv1", "Conv2D", y), ("dense84", "Dense", y)], y, y, epoch=1)
    fig = render.figure({"activations": g})
    texts = [a.text for a in fig.layout.annotations]
    assert any(t.startswith("<b>conv1</b><br>Conv2D") for t in texts)
    assert all(a.textangle is None for a in fig.layout.annotations)
