"""Distilled students compared with each other on the same paired runs (``head_to_head``)."""

import math

from pipelines.evaluate.stage import _head_to_head_report, head_to_head


def test_pairs_within_a_task_protocol_and_fraction_only():
    runs = {
        ("window_features", "svm", 0.1): {"comodo": ([80.0, 82.0, 90.0], [95.0, 96.0, 99.0]),
                                          "infonce": ([78.0, 81.0, 85.0], [94.0, 96.0, 97.0]),
                                          "random_teacher": ([70.0, 72.0, 79.0], [90.0, 91.0, 92.0])},
        ("window_features", "linear_probe", 0.1): {"comodo": ([60.0, 70.0], []), "infonce": ([65.0, 69.0], [])},
        ("point_segmentation", "svm", 0.1): {"slidr": ([50.0, 55.0], [])},  # alone in its task: no pair
    }
    pairs = head_to_head(runs, {"window_features": "accuracy", "point_segmentation": "miou"})
    assert [(p["a"], p["b"], p["protocol"]) for p in pairs] == [
        ("comodo", "infonce", "svm"), ("comodo", "random_teacher", "svm"), ("infonce", "random_teacher", "svm"),
        ("comodo", "infonce", "linear_probe")]
    first = pairs[0]
    # differences 2, 1, 5: mean 8/3; a_mean / b_mean are the students' own means
    assert math.isclose(first["difference_mean"], 8 / 3)
    assert math.isclose(first["a_mean"], 84.0) and math.isclose(first["b_mean"], 244 / 3)
    low, high = first["difference_ci95"]
    assert low < 8 / 3 < high and first["n_paired"] == 3 and first["metric"] == "accuracy"
    assert math.isclose(first["top_k"]["difference_mean"], 1.0)
    # comodo vs random_teacher: differences 10, 10, 11, an interval above 0
    assert pairs[1]["differs"] and pairs[1]["difference_ci95"][0] > 0
    assert "top_k" not in pairs[3]
    assert math.isclose(pairs[3]["difference_mean"], -2.0)


def test_report_names_the_better_student_only_outside_the_noise():
    runs = {("window_features", "svm", 0.1): {"a": ([80.0, 82.0, 81.0], []), "b": ([70.0, 71.0, 72.0], []),
                                              "c": ([81.0, 80.0, 83.0], [])}}
    md = _head_to_head_report(head_to_head(runs, {"window_features": "accuracy"}))
    rows = [line for line in md.splitlines() if line.startswith("| a |") or line.startswith("| b |")]
    assert "a better" in rows[0] and "within noise" in rows[1]  # a vs b: +10; a vs c: within noise
    assert "c better" in rows[2]  # b vs c: -10.3, the second student is the better one
    assert _head_to_head_report([]) == ""
