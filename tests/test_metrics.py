"""Metrics: hand-computed values, empty-structure conventions, confusion matrix, pooling, MONAI agreement."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spineseg.labels import SPINE, SPINE_CLASSES, ClassInfo
from spineseg.metrics import case_metrics, confusion_matrix, lookup, pool_metrics, structure_rows, unexpected_values

NAN = float("nan")
V, D, C = (c.name for c in SPINE_CLASSES)

# gt:   0 1 1 2 2 0 3
# pred: 0 1 2 2 0 1 0
GT = np.array([0, 1, 1, 2, 2, 0, 3])
PRED = np.array([0, 1, 2, 2, 0, 1, 0])


def _eq(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def test_confusion_matrix_rows_are_ground_truth() -> None:
    cm = confusion_matrix(PRED, GT, [0, 1, 2, 3])
    expected = np.array([[1, 1, 0, 0],   # gt 0: pred 0 once, pred 1 once
                         [0, 1, 1, 0],   # gt 1: pred 1, pred 2
                         [1, 0, 1, 0],   # gt 2: pred 0, pred 2
                         [1, 0, 0, 0]])  # gt 3: pred 0
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == GT.size
    # label order is respected
    np.testing.assert_array_equal(confusion_matrix(PRED, GT, [3, 2, 1, 0]), expected[::-1, ::-1])


def test_confusion_matrix_matches_brute_force_and_accepts_dtypes() -> None:
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 4, (3, 17, 11))
    pred = rng.integers(0, 4, (3, 17, 11))
    brute = np.zeros((4, 4), dtype=int)
    for g, p in zip(gt.ravel(), pred.ravel()):
        brute[g, p] += 1
    for dtype in (np.uint8, np.int16, np.int64, np.float32):
        np.testing.assert_array_equal(confusion_matrix(pred.astype(dtype), gt.astype(dtype), [0, 1, 2, 3]), brute)
    # negative and large label values take the general path
    lut = np.array([0, -5, 70000, 9])
    np.testing.assert_array_equal(confusion_matrix(lut[pred], lut[gt], [0, -5, 70000, 9]), brute)


def test_confusion_matrix_refuses_unknown_values_and_shapes() -> None:
    with pytest.raises(ValueError, match=r"ground truth has label values \[7\]"):
        confusion_matrix(PRED, np.where(GT == 3, 7, GT), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="prediction"):
        confusion_matrix(np.where(PRED == 2, 5, PRED), GT, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(PRED[:-1], GT, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="non-integer"):
        confusion_matrix(PRED + 0.5, GT, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="distinct"):
        confusion_matrix(PRED, GT, [0, 1, 1])
    assert unexpected_values(np.array([0, 1, 4, 4, 9]), [0, 1, 2]) == [4, 9]


def test_case_metrics_hand_computed() -> None:
    m = case_metrics(PRED, GT, SPINE_CLASSES)
    v, d, c, u = m["classes"][V], m["classes"][D], m["classes"][C], m["union"]
    assert (v["tp"], v["fp"], v["fn"]) == (1, 1, 1)
    assert v["dsc"] == pytest.approx(0.5) and v["ppv"] == pytest.approx(0.5) and v["sensitivity"] == pytest.approx(0.5)
    assert (d["tp"], d["fp"], d["fn"]) == (1, 1, 1)
    # canal: present in gt, never predicted -> DSC 0, sensitivity 0, PPV undefined
    assert (c["tp"], c["fp"], c["fn"]) == (0, 0, 1)
    assert c["dsc"] == 0.0 and c["sensitivity"] == 0.0 and math.isnan(c["ppv"])
    # union: foreground gt {1,2,3,4,6}, foreground pred {1,2,3,5}: tp 3 fp 1 fn 2
    assert (u["tp"], u["fp"], u["fn"]) == (3, 1, 2)
    assert u["dsc"] == pytest.approx(6 / 9) and u["ppv"] == pytest.approx(0.75) and u["sensitivity"] == pytest.approx(0.6)
    # class mean skips the undefined PPV
    assert m["mean_dsc"] == pytest.approx(1 / 3)
    assert m["mean"]["ppv"] == pytest.approx(0.5)
    assert m["confusion_matrix"]["names"] == ["background", V, D, C]


def test_empty_structure_conventions() -> None:
    gt = np.array([0, 0, 1, 1])
    both_empty = case_metrics(np.array([0, 0, 1, 1]), gt, SPINE_CLASSES)["classes"][D]
    assert all(math.isnan(both_empty[k]) for k in ("dsc", "ppv", "sensitivity"))
    only_pred = case_metrics(np.array([2, 0, 1, 1]), gt, SPINE_CLASSES)["classes"][D]
    assert only_pred["dsc"] == 0.0 and only_pred["ppv"] == 0.0 and math.isnan(only_pred["sensitivity"])
    only_gt = case_metrics(np.array([0, 0, 0, 0]), gt, SPINE_CLASSES)
    assert only_gt["classes"][V]["dsc"] == 0.0 and only_gt["classes"][V]["sensitivity"] == 0.0
    assert math.isnan(only_gt["classes"][V]["ppv"])
    # all structures absent everywhere: every class metric and the mean are undefined
    empty = case_metrics(np.zeros(5, int), np.zeros(5, int), SPINE_CLASSES)
    assert math.isnan(empty["mean_dsc"]) and math.isnan(empty["union"]["dsc"])
    perfect = case_metrics(GT, GT, SPINE_CLASSES)
    assert perfect["mean_dsc"] == 1.0 and perfect["union"]["dsc"] == 1.0


def test_binary_single_class() -> None:
    gt = np.array([0, 1, 1, 1, 0])
    pred = np.array([1, 1, 1, 0, 0])
    m = case_metrics(pred, gt, [SPINE])
    assert m["classes"]["spine"]["dsc"] == pytest.approx(4 / 6)
    assert m["union"]["dsc"] == m["classes"]["spine"]["dsc"]
    assert [label for _, label in structure_rows([SPINE])] == ["spine"]


def test_matches_monai() -> None:
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 4, (2, 9, 13))
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 4, gt.shape))
    ours = case_metrics(pred, gt, SPINE_CLASSES)

    def onehot(a):
        return torch.nn.functional.one_hot(torch.from_numpy(a), 4).permute(3, 0, 1, 2)[None].float()

    dice = monai_metrics.compute_dice(onehot(pred), onehot(gt), include_background=False)[0].numpy()
    cm = monai_metrics.get_confusion_matrix(onehot(pred), onehot(gt), include_background=False)[0].numpy()
    ppv = monai_metrics.compute_confusion_matrix_metric("precision", torch.from_numpy(cm)).numpy()
    sens = monai_metrics.compute_confusion_matrix_metric("sensitivity", torch.from_numpy(cm)).numpy()
    for i, c in enumerate(SPINE_CLASSES):
        r = ours["classes"][c.name]
        assert r["dsc"] == pytest.approx(float(dice[i]), abs=1e-6)
        assert r["ppv"] == pytest.approx(float(ppv[i]), abs=1e-6)
        assert r["sensitivity"] == pytest.approx(float(sens[i]), abs=1e-6)
        assert (r["tp"], r["fp"], r["fn"]) == tuple(int(x) for x in cm[i, [0, 1, 3]])


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.integers(1, 60), elements=st.integers(0, 3)),
       arrays(np.uint8, st.integers(1, 60), elements=st.integers(0, 3)))
def test_swapping_prediction_and_truth_swaps_ppv_and_sensitivity(a: np.ndarray, b: np.ndarray) -> None:
    n = min(a.size, b.size)
    a, b = a[:n], b[:n]
    ab = case_metrics(a, b, SPINE_CLASSES)
    ba = case_metrics(b, a, SPINE_CLASSES)
    np.testing.assert_array_equal(np.array(ab["confusion_matrix"]["matrix"]),
                                  np.array(ba["confusion_matrix"]["matrix"]).T)
    for key in [("classes", c.name) for c in SPINE_CLASSES] + [("union",)]:
        x, y = lookup(ab, key), lookup(ba, key)
        assert _eq(x["dsc"], y["dsc"])
        assert _eq(x["ppv"], y["sensitivity"]) and _eq(x["sensitivity"], y["ppv"])
        for k in ("dsc", "ppv", "sensitivity"):
            assert math.isnan(x[k]) or 0.0 <= x[k] <= 1.0


def test_pool_metrics_counts_means_and_json_round_trip() -> None:
    cases = {
        "a": case_metrics(PRED, GT, SPINE_CLASSES),  # vertebra DSC 0.5, canal DSC 0 (PPV NaN)
        "b": case_metrics(GT, GT, SPINE_CLASSES),  # perfect
        "c": case_metrics(np.array([0, 1, 1, 0]), np.array([0, 1, 1, 0]), SPINE_CLASSES),  # disc, canal absent
    }
    pool = pool_metrics(cases, SPINE_CLASSES)
    assert pool["n_cases"] == 3 and pool["cases"] == ["a", "b", "c"]
    v = pool["classes"][V]
    # pooled from summed counts: tp 1+2+2, fp 1, fn 1
    assert (v["pooled"]["tp"], v["pooled"]["fp"], v["pooled"]["fn"]) == (5, 1, 1)
    assert v["pooled"]["dsc"] == pytest.approx(10 / 12)
    assert v["mean"]["dsc"] == pytest.approx(2.5 / 3) and v["n"]["dsc"] == 3
    assert v["std"]["dsc"] == pytest.approx(np.std([0.5, 1, 1], ddof=1))
    canal = pool["classes"][C]
    assert canal["n"]["dsc"] == 2 and canal["mean"]["dsc"] == pytest.approx(0.5)  # case c has no canal: skipped
    assert canal["n"]["ppv"] == 1 and canal["mean"]["ppv"] == 1.0 and math.isnan(canal["std"]["ppv"])
    np.testing.assert_array_equal(
        np.array(pool["confusion_matrix"]["matrix"]),
        sum(np.array(c["confusion_matrix"]["matrix"]) for c in cases.values()))
    assert pool["class_mean"]["mean"]["dsc"] == pytest.approx(np.mean([1 / 3, 1.0, 1.0]))
    # metrics.json stores NaN as null: pooling what was read back gives the same numbers
    text = json.dumps(cases).replace("NaN", "null")
    again = pool_metrics(json.loads(text), SPINE_CLASSES)
    assert again["classes"][C]["mean"]["ppv"] == 1.0 and again["mean_dsc"] == pytest.approx(pool["mean_dsc"])


def test_pool_metrics_refuses_mixed_labels() -> None:
    a = case_metrics(GT, GT, SPINE_CLASSES)
    b = case_metrics(np.array([0, 1]), np.array([0, 1]), [ClassInfo(1, V, (1, 2, 3))])
    with pytest.raises(ValueError, match="labels"):
        pool_metrics({"a": a, "b": b}, SPINE_CLASSES)
    with pytest.raises(ValueError):
        pool_metrics({}, SPINE_CLASSES)
