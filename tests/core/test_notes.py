"""Notes are bounded where they are made: names summarised, messages cut at a word, and a graph
whose notes its file could not hold cannot be made (issue 18: what is written can be read)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowcallback.core import flows, stages
from flowcallback.core._notes import MAX_NOTE_LENGTH, MAX_NOTES, first_line, name_list, shorten

SCHEMA = json.loads((Path(flows.__file__).resolve().parent.parent / "schemas" / "flowgraph-1.json").read_text())


def test_the_bounds_are_those_of_the_schema():
    notes = SCHEMA["properties"]["notes"]
    assert MAX_NOTES == notes["maxItems"]  # a note is a string (information) or an object {text, kind}
    assert MAX_NOTE_LENGTH == notes["items"]["maxLength"] == notes["items"]["properties"]["text"]["maxLength"]


def test_a_long_list_of_names_names_the_first_and_counts_the_others():
    names = [f"conv{i}_block{j}_concat" for i in range(2, 6) for j in range(1, 31)]  # 120, as in DenseNet121
    text = name_list(names)
    assert text == ("conv2_block1_concat, conv2_block2_concat, conv2_block3_concat, conv2_block4_concat, "
                    "conv2_block5_concat and 115 more")
    assert name_list(names, first=1) == "conv2_block1_concat and 119 more"
    assert name_list(names[:5]) == ", ".join(names[:5]) and name_list([]) == ""
    assert name_list(iter(["a", "b"])) == "a, b"  # any iterable


@pytest.mark.parametrize("first", [0, -1, 2.0, True, "5"])
def test_name_list_refuses_a_bad_first(first):
    with pytest.raises(ValueError, match=r"^first: expected an integer >= 1, got "):
        name_list(["a"], first=first)


@given(st.lists(st.text(alphabet="abc_0123456789", min_size=1, max_size=30), max_size=400),
       st.integers(min_value=1, max_value=10))
def test_name_list_is_short_whatever_the_number_of_names(names, first):
    text = name_list(names, first)
    assert len(text) <= first * 32 + len(" and  more") + 3
    shown = text.split(" and ")[0].split(", ") if names else []
    assert shown == names[: len(shown)] and len(shown) == min(len(names), first)


def test_a_long_message_is_cut_at_a_word_not_in_the_middle_of_one():
    layers = [f"lambda_{i:03d}" for i in range(100)]
    message = "the native LRP engine cannot analyse layer(s) " + "; ".join(f"{n} (Lambda: no rule)" for n in layers)
    line = first_line(RuntimeError(message + "\nsecond line"))
    assert len(line) <= 400 and line.endswith("…")
    kept = line[:-1]
    assert message.startswith(kept) and message[len(kept)] == " "  # the next character starts a new word
    assert first_line(RuntimeError(message), limit=60) == "the native LRP engine cannot analyse layer(s) lambda_000…"


def test_a_word_longer_than_the_limit_is_cut_where_the_limit_falls():
    assert first_line(OSError("/" + "x" * 500)) == "/" + "x" * 398 + "…"
    assert shorten("ab", 2) == "ab" and shorten("abc", 2) == "a…"


@pytest.mark.parametrize("limit", [1, 0, 3.5, None])
def test_shorten_refuses_a_bad_limit(limit):
    with pytest.raises(ValueError, match=r"^limit: expected an integer >= 2"):
        shorten("text", limit)


@given(st.text(alphabet=st.sampled_from("ab ,;:é\t"), max_size=300), st.integers(min_value=2, max_value=120))
def test_shorten_keeps_within_the_limit_and_keeps_a_prefix(text, limit):
    out = shorten(text, limit)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text
    else:
        assert out.endswith("…") and text.startswith(out[:-1])


def _graph(notes):
    return flows.build_flow_graph([("l1", "Dense", np.array([0, 0, 1, 1]))], [0, 0, 1, 1], [0, 1, 1, 1],
                                  graph_notes=notes)


def test_a_graph_whose_notes_its_file_cannot_hold_cannot_be_made():
    assert _graph(["x" * MAX_NOTE_LENGTH] * MAX_NOTES).notes[0] == "x" * MAX_NOTE_LENGTH  # the bounds themselves
    with pytest.raises(ValueError, match=r"^notes\[1\]: expected at most 2000 characters \(schema flowgraph-1\), "
                                         r"got 2001: 'Branchin\.\.\.'$"):
        _graph(["short", "Branching model " + "x" * 1985])
    with pytest.raises(ValueError, match=r"^notes: expected at most 100 notes \(schema flowgraph-1\), got 101$"):
        _graph(["a note"] * 101)
    g = _graph(["fine"])
    with pytest.raises(ValueError, match=r"notes\[0\]: expected at most 2000"):
        flows.FlowGraph(g.epoch, g.analysis, g.columns, g.assignments, g.labels, g.predictions, g.class_names,
                        notes=("y" * 5000,))


def test_layers_left_out_make_few_notes_however_many_fail():
    failed = [(f"conv{i}_block{j}_1_conv", MemoryError()) for i in range(2, 6) for j in range(1, 31)]
    notes = stages.left_out_notes("LRP relevance", failed)
    assert len(notes) == 6 and all(len(n) < 300 for n in notes)
    assert notes[0] == "LRP relevance: layer conv2_block1_1_conv left out of this epoch (MemoryError)"
    assert re.fullmatch(r"LRP relevance: 115 more layers left out of this epoch \(conv2_block6_1_conv, "
                        r".* and 110 more; the errors are in the epoch's error file\)", notes[-1])
    one_more = stages.left_out_notes("Activations", failed[:6])
    assert one_more[-1].startswith("Activations: 1 more layer left out of this epoch (conv2_block6_1_conv;")
    assert stages.left_out_notes("Activations", []) == []

