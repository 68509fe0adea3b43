"""Render: the figure matches the graph, colours stay distinct, names stay text."""
from __future__ import annotations

import html
import re

import numpy as np

from flowcallback.core import flows, render
from flowcallback.core._notes import problem


def graph(class_names=("a", "b", "c"), analysis="activations", n=80, seed=0, notes=()):
    rng = np.random.default_rng(seed)
    k = len(class_names)
    y = rng.integers(0, k, n)
    return flows.build_flow_graph(
        [("conv", "Conv2D", rng.integers(0, 5, n)), ("dense", "Dense", rng.integers(0, 3, n))],
        y, y, class_names=class_names, epoch=2, analysis=analysis, metrics={"accuracy": 1.0, "loss": 0.1},
        graph_notes=notes,
    )


def test_sankey_nodes_and_links_match_the_graph():
    g = graph()
    tr = render.sankey_trace(g)
    assert len(tr.node.x) == sum(len(c.order) for c in g.columns)
    assert len(tr.link.value) == len(g.flows)
    assert sum(tr.link.value) == g.n_samples * (len(g.columns) - 1)
    # one x per column, increasing with the column index
    xs = sorted(set(tr.node.x))
    assert len(xs) == len(g.columns)


def test_nodes_are_stacked_in_the_computed_order():
    g = graph()
    tr = render.sankey_trace(g)
    start = 0
    for col in g.columns:
        ys = list(tr.node.y[start : start + len(col.order)])
        assert ys == sorted(ys)
        start += len(col.order)


def test_figure_has_a_switch_and_a_legend():
    g1, g2 = graph(), graph(analysis="lrp", seed=1)
    fig = render.figure({"activations": g1, "lrp": g2})
    kinds = [t.type for t in fig.data]
    assert kinds.count("sankey") == 2 and kinds.count("scatter") == 3
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels == ["Activations", "LRP relevance"]
    assert "Epoch 2" in fig.layout.title.text and "accuracy 1.000" in fig.layout.title.text


def test_names_are_escaped():
    evil = "<img src=x onerror=alert(1)>"
    g = graph(class_names=(evil, "b", "c"))
    html = render.page_html({"activations": g})
    assert evil not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_page_loads_plotly_from_its_directory(tmp_path):
    path = render.write_epoch_page(tmp_path / "epoch_002.html", {"activations": graph()})
    text = open(path).read()
    assert re.search(r'<script[^>]*\ssrc="plotly\.min\.js"', text)  # a script tag, whatever its other attributes
    assert "cdn" not in text.lower()
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000


def test_class_colors_are_distinct():
    for n in (2, 10, 11, 20, 21, 100):
        c = render.class_colors(n)
        assert len(c) == n and len(set(c)) == n


def test_information_notes_are_grey_and_problems_red():
    """How LRP is computed is information, not an error: only what failed is drawn in red."""
    info = ("LRP relevance (lrp.epsilon) is computed by native for each sample's predicted class, so the LRP flows "
            "sort by prediction from the first layer on: not a sign that early layers separate the classes")
    problems = [problem(t) for t in ["LRP failed for this epoch: the worker died",
                                     "Activations: layer l2 left out of this epoch (boom)",
                                     "LRP stopped: the LRP worker died and could not be restarted (x)",
                                     "LRP skipped for the whole model, activation flows only: a Lambda layer"]]
    others = ["Branching model (branches split at the input; join at add (Add)). Columns follow ...",
              "loss not shown: the model was compiled without a loss", "a plain string that says 'failed'"]
    # the kind decides, not the words: a plain string is information, whatever it says
    assert not render.note_is_problem(info) and not any(render.note_is_problem(n) for n in others)
    assert all(render.note_is_problem(n) for n in problems)
    fig = render.figure({"lrp": graph(analysis="lrp", notes=[info, problems[0]])})
    (ann,) = [a for a in fig.layout.annotations if a.name == "notes"]
    assert ann.font.color == render.INFO_NOTE_COLOR != render.PROBLEM_NOTE_COLOR
    lines = ann.text.split("<br>")  # the information note takes two lines (wrap_note)
    assert lines[0].startswith("LRP relevance") and render.PROBLEM_NOTE_COLOR not in lines[0] + lines[1]
    red = render.PROBLEM_NOTE_COLOR
    assert lines[2:] == [f'<span style="color:{red}">LRP failed for this epoch: the worker died</span>']


def test_trace_customdata_names_each_links_class_and_each_nodes_colour():
    """The run page's class filter recolours the Sankey from its customdata."""
    names = [f"c{i}" for i in range(30)]
    g = graph(class_names=names, n=300)
    shown = render.top_classes(g)
    tr = render.sankey_trace(g, shown=shown)
    index = render._node_indices(g)
    assert len(index) == len(tr.node.x) and sorted(index.values()) == list(range(len(index)))
    classes = [c[3] for c in tr.link.customdata]
    assert set(classes) - {-1} <= set(shown) and -1 in classes
    assert all(c[0].startswith("other (") for c in tr.link.customdata if c[3] == -1)
    for (j, cid), k in index.items():
        custom = tr.node.customdata[k]
        assert custom[1] == cid and custom[6] == int(g.columns[j].kind != "layer")
        if custom[6]:
            assert custom[4] == cid and custom[5] == 1.0


def _note_lines(fig):
    (ann,) = [a for a in fig.layout.annotations if a.name == "notes"]
    return [html.unescape(re.sub(r"<[^>]+>", "", line)) for line in ann.text.split("<br>")]


def test_long_notes_wrap_between_words_and_the_margin_makes_room():
    """A note of 1,500 characters (a branching model's layers, say) is drawn on lines of at most
    140 characters broken between words, and the bottom margin grows by a line height per line."""
    words = [f"conv{i}_block{j}_concat" for i in range(2, 6) for j in range(1, 20)]
    long_note = "Branching model (join at " + ", ".join(words) + ")."
    long_note = (long_note + " " + long_note)[:1500]
    failed = problem("LRP failed for this epoch: " + "<b>" + "y" * 300 + "</b>")  # one word longer than a line
    notes = ["loss not shown: the model was compiled without a loss", long_note, failed]
    fig = render.figure({"activations": graph(notes=notes)})
    lines = _note_lines(fig)
    assert all(len(line) <= render.NOTE_LINE_CHARS for line in lines)
    assert lines[0] == notes[0]
    n_long = len(render.wrap_note(long_note))
    assert 11 <= n_long <= 13 and " ".join(lines[1 : 1 + n_long]) == long_note  # every word, none cut
    assert "".join(lines[1 + n_long :]) == failed  # the long word is cut where the lines end, and kept whole
    assert fig.layout.margin.b == 60 + render.NOTE_LINE_HEIGHT * len(lines)
    (ann,) = [a for a in fig.layout.annotations if a.name == "notes"]
    assert ann.align == "left" and ann.xanchor == "left"  # lines start under the diagram's left edge
    red = f'<span style="color:{render.PROBLEM_NOTE_COLOR}">'
    assert ann.text.count(red) == len(lines) - 1 - n_long and "<b>" not in ann.text  # each red line in red, escaped


def test_short_notes_are_drawn_as_before():
    fig = render.figure({"activations": graph(notes=[problem("LRP skipped for the whole model: a Lambda layer")])})
    (ann,) = [a for a in fig.layout.annotations if a.name == "notes"]
    assert ann.text == f'<span style="color:{render.PROBLEM_NOTE_COLOR}">LRP skipped for the whole model: a Lambda ' \
                       'layer</span>'
    assert fig.layout.margin.b == 74
    assert render.figure({"activations": graph()}).layout.margin.b == 60


def test_a_column_of_many_small_clusters_is_drawn_with_at_most_the_cap_of_nodes():
    # an early LRP column of a large network after one epoch: 79 clusters of 300 samples
    rng = np.random.default_rng(3)
    n, y = 300, rng.integers(0, 10, 300)
    early = np.r_[np.repeat(np.arange(10), 12), np.arange(10, 79), rng.integers(10, 79, n - 120 - 69)]
    g = flows.build_flow_graph([("stem_conv", "Conv2D", early), ("top", "Dense", y)], y, y, analysis="lrp")
    assert len(g.columns[0].order) == 79
    cap = flows.MAX_DRAWN_CLUSTERS
    tr = render.sankey_trace(g)
    x0 = tr.node.x[0]
    first = [k for k, x in enumerate(tr.node.x) if x == x0]
    assert len(first) == cap
    (k,) = [k for k in first if "drawn as one" in tr.node.customdata[k][7]]
    sizes = np.sort(np.bincount(early))[::-1]
    text = f"{79 - (cap - 1)} clusters of ≤ {sizes[cap - 1]} samples each, drawn as one"
    assert tr.node.customdata[k][7] == text and tr.node.label[k] == f"{79 - (cap - 1)} clusters"
    # its own fill, unlike any other node's; one outline for every node (plotly.js reads node.line whole)
    assert tr.node.color[k] == render.GROUP_COLOR and list(tr.node.color).count(render.GROUP_COLOR) == 1
    assert tr.node.customdata[k][8] == 1 and sum(c[8] for c in tr.node.customdata) == 1
    assert tr.node.line.color == render.NODE_LINE and tr.node.line.width == render.NODE_LINE_WIDTH
    assert render.sankey_trace(g, group_labels=False).node.label[k] == ""  # compact labels: on hover only
    assert tr.node.customdata[k][2] == sizes[cap - 1:].sum()
    assert sum(tr.node.customdata[k][2] for k in first) == n  # every sample is in a node
    assert sum(v for s, v in zip(tr.link.source, tr.link.value) if s in first) == n
    # the column says how many clusters it has and how many are drawn as one; the page is no taller
    fig = render.figure(g)
    (ann,) = [a for a in fig.layout.annotations if a.text.startswith("<b>stem_conv")]
    assert f"79 clusters<br>({79 - (cap - 1)} of ≤ {sizes[cap - 1]} samples drawn as one)" in ann.text
    assert ann.xanchor == "left"  # the first column's label extends inwards, not off the page
    assert fig.layout.height == max(render.MIN_HEIGHT, 14 * cap)
    # None draws every cluster
    assert sum(1 for x in render.sankey_trace(g, max_clusters=None).node.x if x == x0) == 79
    tall = render.figure(g, max_clusters=None)
    assert sum(1 for x in tall.data[0].node.x if x == x0) == 79 and tall.layout.height == 14 * 79
    assert not any("drawn as one" in a.text for a in tall.layout.annotations)


def test_nodes_fill_each_column_without_overlapping_at_the_scale_plotly_draws_them():
    # found by an outside probe: a column of 30 nodes ran 22 pixels into the notes under the diagram,
    # its nodes placed for a smaller share of the height than Plotly gives them
    rng = np.random.default_rng(4)
    n, y = 300, rng.integers(0, 10, 300)
    many = np.r_[np.arange(40), rng.integers(0, 40, n - 40)]
    g = flows.build_flow_graph([("a", "Conv2D", many), ("b", "Dense", y % 3)], y, y)
    fig = render.figure(g)
    plot = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    tr = fig.data[0]
    most = max(sum(1 for x in tr.node.x if x == x0) for x0 in set(tr.node.x))
    scale = render.node_scale(most, plot)
    assert 0.5 < scale < 1
    sizes = [c[2] for c in tr.node.customdata]
    for x0 in set(tr.node.x):
        idx = sorted((k for k, x in enumerate(tr.node.x) if x == x0), key=lambda k: tr.node.y[k])
        tops = [tr.node.y[k] - scale * sizes[k] / n / 2 for k in idx]
        bottoms = [tr.node.y[k] + scale * sizes[k] / n / 2 for k in idx]
        assert tops[0] >= -1e-9 and bottoms[-1] <= 1 + 1e-9  # inside the plot
        assert all(b <= t + 1e-9 for b, t in zip(bottoms, tops[1:]))  # no two nodes overlap
        if len(idx) > 1:
            assert tops[0] < 1e-6 and bottoms[-1] > 1 - 1e-6  # the column fills the plot's height


def test_each_analysis_shows_its_own_notes_and_the_buttons_switch_them():
    """An LRP note under the activations diagram would speak of what is not drawn."""
    shared = "Branching model: columns follow the layers' order"
    lrp_only = problem("LRP failed for this epoch: the worker died")
    fig = render.figure({"activations": graph(notes=[shared]),
                         "lrp": graph(analysis="lrp", notes=[shared, lrp_only])})

    def notes_of(annotations):
        (ann,) = [a for a in annotations if a.get("name") == "notes"]
        return [html.unescape(re.sub(r"<[^>]+>", "", line)) for line in ann["text"].split("<br>")]

    shown = [a.to_plotly_json() for a in fig.layout.annotations]
    (act, lrp) = fig.layout.updatemenus[0].buttons
    assert notes_of(shown) == notes_of(act.args[1]["annotations"]) == [shared]
    assert notes_of(lrp.args[1]["annotations"]) == [shared, str(lrp_only)]
    # the margin holds the longer notes whichever is shown: the diagram does not move
    assert fig.layout.margin.b == 60 + render.NOTE_LINE_HEIGHT * 2


def test_a_prefix_every_column_shares_is_left_out_of_the_slanted_labels():
    """ConvNeXt names its layers after the model (``convnext_tiny_stage_1_block_0_...``): cut to 20
    characters, half the label was that prefix ("convnext_t…yernorm_0")."""
    from flowcallback.core import flows

    y = np.repeat(np.arange(3), 10)
    rng = np.random.default_rng(0)
    names = ["convnext_tiny_stem_layernorm"] + [f"add_{j}" for j in range(12)] + [
        f"convnext_tiny_downsampling_layernorm_{j}" for j in range(3)] + ["convnext_tiny_head_dense"]
    types = ["LayerNormalization"] + ["Add"] * 12 + ["LayerNormalization"] * 3 + ["Dense"]
    g = flows.build_flow_graph([(n, t, rng.integers(0, 3, 30)) for n, t in zip(names, types)], y, y, epoch=0)
    anns = render._column_annotations(g, compact=True)[:len(names)]
    shown = [a["text"] for a in anns]
    assert shown[0] == "stem_layernorm" and shown[-1] == "head_dense" and shown[1] == "add_0"
    assert shown[13:16] == [f"downsampli…yernorm_{j}" for j in range(3)]
    assert len(set(shown)) == len(shown) and not any("convnext" in s for s in shown)
    assert all(f"<b>{n}</b>" in a["hovertext"] for n, a in zip(names, anns))  # the full name on hover


def test_keras_automatic_names_keep_their_class_name_in_the_slanted_labels():
    """An outside probe: with the prefix rule above, ``batch_normalization_1`` read "1"."""
    from flowcallback.core import flows

    y = np.repeat(np.arange(3), 10)
    rng = np.random.default_rng(0)
    layers = []
    for j in range(4):
        layers += [("dense" + (f"_{j}" if j else ""), "Dense"),
                   ("batch_normalization" + (f"_{j}" if j else ""), "BatchNormalization")]
    layers += [(f"layer_normalization_{j}", "LayerNormalization") for j in range(1, 12)]
    g = flows.build_flow_graph([(n, t, rng.integers(0, 3, 30)) for n, t in layers], y, y, epoch=0)
    shown = [a["text"] for a in render._column_annotations(g, compact=True)[:len(layers)]]
    assert shown[3] == "batch_norm…ization_1" and shown[-1] == "layer_norm…zation_11"
    assert all(s.startswith(("dense", "batch_norm", "layer_norm")) for s in shown)
    assert len(set(shown)) == len(shown)


def test_leaving_out_a_prefix_never_gives_two_columns_one_label_nor_a_class_name():
    """An outside probe: stripping "global_" made global_max_pooling1d_1 read max_pooling1d_1, the
    name of another column, and every snapshot of that model failed (min() of an empty list)."""
    from flowcallback.core import flows

    y = np.repeat(np.arange(3), 10)
    rng = np.random.default_rng(0)
    layers = [("conv1d", "Conv1D"), ("max_pooling1d", "MaxPooling1D"), ("conv1d_1", "Conv1D"),
              ("max_pooling1d_1", "MaxPooling1D"), ("global_average_pooling1d", "GlobalAveragePooling1D"),
              ("global_max_pooling1d", "GlobalMaxPooling1D"), ("global_average_pooling1d_1", "GlobalAveragePooling1D"),
              ("global_max_pooling1d_1", "GlobalMaxPooling1D"), ("concatenate", "Concatenate"), ("dense", "Dense")]
    g = flows.build_flow_graph([(n, t, rng.integers(0, 3, 30)) for n, t in layers], y, y, epoch=0)
    shown = [a["text"] for a in render._column_annotations(g, compact=True)[:len(layers)]]
    assert len(set(shown)) == len(shown) and all(s.startswith("global") for s in shown[4:8])
    names = ["convnext_tiny_head_dense_layer", "head_dense_layer", "convnext_tiny_stem_layernorm",
             "convnext_tiny_downsampling_conv_0"]
    shown = render._short_labels(names, types=["Dense", "Dense", "LayerNormalization", "Conv2D"])
    assert len(set(shown)) == 4
    render.figure({"activations": g})  # the whole figure, as a snapshot draws it
