"""Matching clusters across epochs: identities kept, splits and merges found."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcallback.core.match import match_clusters, relabel


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=60), st.permutations(range(7)))
def test_identical_clusterings_keep_every_id(labels, perm):
    a = np.array(labels)
    b = np.array(perm)[a]  # the same partition under other ids
    new, mapping = relabel(a, b)
    np.testing.assert_array_equal(new, a)
    m = match_clusters(a, b)
    assert all(v == 1.0 for v in m.jaccard.values())
    assert m.splits == {} and m.merges == {}


def test_crafted_split_and_merge_are_detected():
    earlier = np.array([0] * 10 + [1] * 10 + [2] * 10)
    later = np.array([5] * 5 + [6] * 5 + [7] * 20)  # 0 splits into 5 and 6; 1 and 2 merge into 7
    m = match_clusters(earlier, later)
    assert m.splits == {0: [5, 6]}
    assert m.merges == {7: [1, 2]}
    new, mapping = relabel(earlier, later)
    # 7 keeps one of the merged ids, one half of the split keeps 0, the other half gets a fresh id
    assert mapping[7] in (1, 2) and sorted([mapping[5], mapping[6]])[0] == 0
    assert max(mapping.values()) >= 3  # fresh ids never reuse an earlier id


def test_new_cluster_gets_a_fresh_id():
    new, mapping = relabel([0, 0, 1, 1], [1, 1, 0, 2])
    assert new.tolist() == [0, 0, 1, 2]
