"""report.json from hand-computed cases: per-class metrics, zero division, calibration error,
mistakes, predicted shares, sources; and the table people read."""

import json

import pytest
import torch

from training.report.metrics import build_report, class_recalls, format_class_table

LABELS = ["a", "b", "c", "d"]
# (true, predicted) pairs of the confusion matrix below; d is never predicted
#        predicted: a  b  c  d
#   true a        [ 2, 1, 0, 0 ]
#   true b        [ 0, 2, 0, 0 ]
#   true c        [ 1, 0, 1, 0 ]
#   true d        [ 0, 0, 1, 0 ]
PAIRS = [(0, 0), (0, 0), (0, 1), (1, 1), (1, 1), (2, 0), (2, 2), (3, 2)]


def probabilities_for(predicted: list[int], scores: list[float], classes: int) -> torch.Tensor:
    """Rows whose top-1 is ``predicted`` with probability ``score``, the rest spread evenly."""
    rows = []
    for index, score in zip(predicted, scores, strict=True):
        row = torch.full((classes,), (1.0 - score) / (classes - 1), dtype=torch.float64)
        row[index] = score
        rows.append(row)
    return torch.stack(rows)


def hand_report(**kwargs) -> dict:
    labels = torch.tensor([t for t, _ in PAIRS])
    probabilities = probabilities_for([p for _, p in PAIRS], [0.7] * len(PAIRS), len(LABELS))
    return build_report(probabilities, labels, LABELS, **kwargs)


def test_per_class_metrics_match_the_hand_computed_confusion_matrix():
    report = hand_report()
    assert report["confusion"] == {"labels": LABELS, "matrix": [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0],
                                                                [0, 0, 1, 0]]}
    expected = {  # precision = TP / column sum, recall = TP / row sum
        "a": (2 / 3, 2 / 3, 2 / 3, 3),
        "b": (2 / 3, 1.0, 0.8, 2),
        "c": (1 / 2, 1 / 2, 1 / 2, 2),
        "d": (0.0, 0.0, 0.0, 1),
    }
    assert list(report["classes"]) == LABELS  # index order kept
    for label, (precision, recall, f1, support) in expected.items():
        row = report["classes"][label]
        assert row["precision"] == pytest.approx(precision, abs=1e-6), label
        assert row["recall"] == pytest.approx(recall, abs=1e-6), label
        assert row["f1"] == pytest.approx(f1, abs=1e-6), label
        assert row["support"] == support, label
    assert report["samples"] == 8 and report["accuracy"] == pytest.approx(5 / 8)
    assert report["macro"]["precision"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2 + 0) / 4, abs=1e-6)
    assert report["macro"]["recall"] == pytest.approx((2 / 3 + 1 + 1 / 2 + 0) / 4, abs=1e-6)
    assert report["macro"]["f1"] == pytest.approx((2 / 3 + 0.8 + 0.5 + 0) / 4, abs=1e-6)
    assert class_recalls(report) == {"a": 0.666667, "b": 1.0, "c": 0.5, "d": 0.0}


def test_a_class_never_predicted_nor_present_scores_zero_not_nan():
    """scikit-learn's zero_division=0: no predictions -> precision 0, no samples -> recall 0."""
    labels = torch.tensor([0, 0, 1])
    report = build_report(probabilities_for([0, 1, 1], [0.9, 0.9, 0.9], 3), labels, ["x", "y", "z"])
    assert report["classes"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["classes"]["x"] == {"precision": 1.0, "recall": 0.5, "f1": 0.666667, "support": 2}
    assert report["classes"]["y"]["precision"] == 0.5 and report["classes"]["y"]["recall"] == 1.0
    assert "NaN" not in json.dumps(report)


def test_metrics_agree_with_a_counting_reference_on_random_data():
    generator = torch.Generator().manual_seed(3)
    classes, count = 7, 500
    probabilities = torch.rand(count, classes, generator=generator).softmax(dim=1)
    labels = torch.randint(0, classes, (count,), generator=generator)
    report = build_report(probabilities, labels, [f"c{i}" for i in range(classes)])
    pairs = list(zip(labels.tolist(), probabilities.argmax(dim=1).tolist(), strict=True))  # (true, predicted)
    for k in range(classes):
        tp = pairs.count((k, k))
        predicted_k, true_k = sum(p == k for _, p in pairs), sum(t == k for t, _ in pairs)
        row = report["classes"][f"c{k}"]
        assert row["precision"] == pytest.approx(tp / predicted_k if predicted_k else 0.0, abs=1e-6)
        assert row["recall"] == pytest.approx(tp / true_k if true_k else 0.0, abs=1e-6)
        assert report["confusion"]["matrix"][k] == [pairs.count((k, j)) for j in range(classes)]
    assert sum(map(sum, report["confusion"]["matrix"])) == count


def test_perfectly_calibrated_predictions_have_zero_ece():
    # 20 predictions at confidence 0.75, 3 of every 4 right: accuracy 0.75
    labels = torch.tensor([0, 0, 0, 1] * 5)
    probabilities = probabilities_for([0] * 20, [0.75] * 20, 2)
    calibration = build_report(probabilities, labels, ["x", "y"], bins=10)["calibration"]
    assert calibration["ece"] == pytest.approx(0.0, abs=1e-6)
    (filled,) = [b for b in calibration["bins"] if b["count"]]
    assert filled == {"lower": 0.7, "upper": 0.8, "count": 20, "confidence": 0.75, "accuracy": 0.75}


def test_overconfident_predictions_have_the_gap_as_ece_weighted_by_bin_count():
    # 4 at 0.85 with 2 right (gap 0.35) and 6 at 0.65 with 3 right (gap 0.15):
    # ECE = 0.4 * 0.35 + 0.6 * 0.15 = 0.23
    predicted = [0] * 10
    scores = [0.85] * 4 + [0.65] * 6
    labels = torch.tensor([0, 0, 1, 1] + [0, 0, 0, 1, 1, 1])
    calibration = build_report(probabilities_for(predicted, scores, 2), labels, ["x", "y"], bins=10)["calibration"]
    assert calibration["ece"] == pytest.approx(0.23, abs=1e-6)
    assert len(calibration["bins"]) == 10
    filled = {b["lower"]: (b["count"], b["accuracy"]) for b in calibration["bins"] if b["count"]}
    assert filled == {0.6: (6, 0.5), 0.8: (4, 0.5)}
    empty = calibration["bins"][0]
    assert empty["count"] == 0 and empty["confidence"] is None and empty["accuracy"] is None


def test_calibration_bins_include_their_upper_edge():
    probabilities = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    bins = build_report(probabilities, torch.tensor([0, 0]), ["x", "y"], bins=2)["calibration"]["bins"]
    assert [(b["lower"], b["upper"], b["count"]) for b in bins] == [(0.0, 0.5, 1), (0.5, 1.0, 1)]


def test_mistakes_are_the_most_confident_wrong_predictions_ties_by_index():
    labels = torch.tensor([0, 0, 1, 0, 1, 0, 1])
    predicted = [0, 1, 1, 1, 1, 1, 0]  # wrong: 1 (0.6), 3 (0.9), 5 (0.9), 6 (0.8)
    scores = [0.99, 0.6, 0.95, 0.9, 0.7, 0.9, 0.8]
    report = build_report(probabilities_for(predicted, scores, 2), labels, ["x", "y"], mistakes=3)
    assert report["mistakes"] == [
        {"index": 3, "true": "x", "predicted": "y", "score": 0.9},
        {"index": 5, "true": "x", "predicted": "y", "score": 0.9},
        {"index": 6, "true": "y", "predicted": "x", "score": 0.8},
    ]
    assert build_report(probabilities_for(predicted, scores, 2), labels, ["x", "y"], mistakes=0)["mistakes"] == []


def test_predicted_share_is_the_share_of_top1_predictions_and_sums_to_one():
    report = hand_report()
    assert report["predicted_share"] == {"a": 0.375, "b": 0.375, "c": 0.25, "d": 0.0}
    generator = torch.Generator().manual_seed(0)
    shares = build_report(torch.rand(301, 9, generator=generator).softmax(1),
                          torch.randint(0, 9, (301,), generator=generator),
                          [str(i) for i in range(9)])["predicted_share"]
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)


def test_sources_get_their_own_accuracy_only_when_given():
    assert "sources" not in hand_report()
    sources = ["fashion-mnist"] * 5 + ["feedback"] * 3  # pairs 0-4: 4 right; pairs 5-7: 1 right
    assert hand_report(sources=sources)["sources"] == {"fashion-mnist": {"samples": 5, "accuracy": 0.8},
                                                       "feedback": {"samples": 3, "accuracy": 0.333333}}


def test_report_is_plain_json_with_floats_rounded_to_six_digits():
    generator = torch.Generator().manual_seed(1)
    report = build_report(torch.rand(97, 5, generator=generator).softmax(1),
                          torch.randint(0, 5, (97,), generator=generator), list("vwxyz"),
                          sources=["s"] * 97)
    assert json.loads(json.dumps(report, allow_nan=False)) == report

    def floats(value):
        if isinstance(value, float):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from floats(item)
        elif isinstance(value, list):
            for item in value:
                yield from floats(item)

    assert all(round(x, 6) == x for x in floats(report))
    assert isinstance(report["samples"], int) and isinstance(report["confusion"]["matrix"][0][0], int)


@pytest.mark.parametrize(("probabilities", "labels", "class_labels", "kwargs", "message"), [
    (torch.rand(4, 3), torch.tensor([0, 1, 2]), ["a", "b", "c"], {}, "labels"),
    (torch.rand(3, 3), torch.tensor([0, 1, 2]), ["a", "b"], {}, "class labels"),
    (torch.rand(3, 3), torch.tensor([0, 1, 2]), ["a", "a", "b"], {}, "distinct"),
    (torch.rand(3, 3), torch.tensor([0, 1, 3]), ["a", "b", "c"], {}, "0..2"),
    (torch.rand(0, 3), torch.tensor([], dtype=torch.int64), ["a", "b", "c"], {}, "empty"),
    (torch.rand(3, 3), torch.tensor([0, 1, 2]), ["a", "b", "c"], {"sources": ["s"]}, "sources"),
    (torch.rand(3, 3), torch.tensor([0, 1, 2]), ["a", "b", "c"], {"bins": 0}, "bins"),
])
def test_inputs_that_do_not_fit_together_are_refused(probabilities, labels, class_labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_report(probabilities, labels, class_labels, **kwargs)


def test_class_table_shows_every_class_and_the_summary_lines():
    table = format_class_table(hand_report(sources=["fashion-mnist"] * 5 + ["feedback"] * 3))
    lines = table.splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "F1", "support"]
    assert lines[1].split() == ["a", "0.6667", "0.6667", "0.6667", "3"]
    assert lines[2].split() == ["b", "0.6667", "1.0000", "0.8000", "2"]
    assert lines[4].split() == ["d", "0.0000", "0.0000", "0.0000", "1"]
    assert "accuracy" in table and "0.6250" in table
    assert any(line.split()[:2] == ["macro", "avg"] for line in lines)
    assert any(line.startswith("ECE") for line in lines)
    assert "source feedback: accuracy 0.3333 on 3 samples" in table
    widths = {len(line) for line in lines[:5]}
    assert len(widths) == 1, "the class rows line up"
