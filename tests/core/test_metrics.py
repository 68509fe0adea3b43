"""Layer metrics equal scikit-learn's; class profiles follow their definition."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from flowcallback.core.flows import build_flow_graph
from flowcallback.core.metrics import class_profiles, layer_metrics


def test_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, 200))
    l1, l2 = rng.integers(0, 6, 200), y * 2 + rng.integers(0, 2, 200)
    g = build_flow_graph([("a", "Conv2D", l1), ("b", "Dense", l2)], y, p)
    m = layer_metrics([g]).set_index("column")
    for name, lab in (("a", l1), ("b", l2)):
        assert m.loc[name, "nmi_classes"] == pytest.approx(normalized_mutual_info_score(y, lab))
        assert m.loc[name, "ari_classes"] == pytest.approx(adjusted_rand_score(y, lab))
        assert m.loc[name, "ari_predictions"] == pytest.approx(adjusted_rand_score(p, lab))
        assert m.loc[name, "n_clusters"] == len(np.unique(lab))
    # purity of b is 1: each cluster holds one class
    assert m.loc["b", "purity"] == 1.0
    assert m.loc["b", "nmi_gain"] == pytest.approx(m.loc["b", "nmi_classes"] - m.loc["a", "nmi_classes"])
    assert m.loc["a", "nmi_gain"] == 0.0


def test_class_profiles_early_late_unstable_and_never():
    y = np.repeat(np.arange(4), 10)  # classes 0..3, 10 samples each; 3 layers
    l1 = np.where(y == 0, 1, np.where(y == 2, 2, 0))                    # 0 and 2 alone; 1 and 3 mixed
    l2 = np.where(y == 0, 1, np.where(y == 2, 3, 0))                    # same
    l3 = np.where(y == 0, 1, np.where(y == 1, 2, 0))                    # 0 and 1 alone; 2 and 3 mixed
    g = build_flow_graph([("l1", "Dense", l1), ("l2", "Dense", l2), ("l3", "Dense", l3)], y, y)
    prof = class_profiles(g).set_index("class")
    assert prof.loc[0, "status"] == "from l1" and prof.loc[0, "first_layer_index"] == 0   # early
    assert prof.loc[1, "status"] == "from l3" and prof.loc[1, "first_layer"] == "l3"      # late
    assert prof.loc[2, "status"] == "unstable"                                             # lost again
    assert prof.loc[3, "status"] == "not separated"
    assert prof.loc[2, "separated"] == [True, True, False]


def test_a_class_without_held_out_samples_is_said_to_have_none_not_to_be_unseparated():
    """Found by an outside probe: a held-out set without class 7 called class 7 "not separated",
    pointing a user debugging their data at the model instead of at the missing class."""
    y = np.repeat([0, 1, 3], 10)  # class 2 of 4 has no sample
    g = build_flow_graph([("l1", "Dense", y), ("l2", "Dense", np.zeros(30, int))], y, y,
                         class_names=["a", "b", "c", "d"])
    prof = class_profiles(g).set_index("class")
    assert prof.loc[2, "status"] == "no samples" and prof.loc[2, "first_layer"] is None
    assert prof.loc[2, "separated"] == [False, False]
    assert prof.loc[1, "status"] == "unstable" and prof.loc[3, "status"] == "unstable"


def test_class_profiles_bad_thresholds():
    g = build_flow_graph([("l", "Dense", [0, 1])], [0, 1], [0, 1])
    with pytest.raises(ValueError):
        class_profiles(g, purity=1.0)
