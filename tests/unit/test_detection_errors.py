"""Confusion matrix, per-class precision/recall/F1 and TIDE's error types on constructed detections whose
answers are known, scored through pycocotools' COCOeval exactly as `evaluate` scores a checkpoint."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO

from detr.engine.coco_matching import coco_matching
from detr.engine.confusion import confusion_matrix
from detr.engine.evaluate import accumulated_cocoeval, per_class_ap, summary_stats
from detr.engine.precision_recall import best_f1_points, pr_curves, score_thresholds
from detr.engine.tide import ERROR_TYPES, ap50, error_costs
from detrdoctor.predictions.error_types import judge_errors

SIDE = 40.0
# IoU of two SIDE×SIDE squares offset by d along x is (SIDE - d) / (SIDE + d): 0.3 at d = SIDE·0.7/1.3.
SHIFT_TO_IOU_03 = SIDE * 0.7 / 1.3


def make_coco(images: int = 12, empty_images: int = 0, categories: int = 3) -> COCO:
    """`images` 100×100 images with two SIDE×SIDE objects each that do not overlap, classes in turn, then
    `empty_images` without objects."""
    annotations = []
    for image_id in range(1, images + 1):
        for x in (5.0, 55.0):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": len(annotations) % categories + 1,
                    "bbox": [x, 30.0, SIDE, SIDE],
                    "area": SIDE * SIDE,
                    "iscrowd": 0,
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "width": 100, "height": 100} for i in range(1, images + empty_images + 1)],
        "annotations": annotations,
        "categories": [{"id": c, "name": f"class{c}"} for c in range(1, categories + 1)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def truth_rows(coco: COCO, first_score: float = 1.0, last_score: float = 0.5) -> np.ndarray:
    """One detection exactly at each object, scores spread from first_score to last_score (all distinct)."""
    anns = coco.dataset["annotations"]
    scores = np.linspace(first_score, last_score, len(anns))
    return np.array([[a["image_id"], *a["bbox"], s, a["category_id"]] for a, s in zip(anns, scores)])


def analyse(coco: COCO, rows: np.ndarray) -> dict:
    """What `evaluate` computes: the headline COCOeval, its matching at 0.5, and from them the three reports."""
    image_ids = sorted(coco.getImgIds())
    coco_eval = accumulated_cocoeval(coco, rows, image_ids)
    stats = summary_stats(coco_eval)
    matching = coco_matching(coco_eval, 0.5)
    points = best_f1_points(matching)
    thresholds = score_thresholds(points)
    errors = error_costs(coco, rows, image_ids, matching, stats["AP50"] or 0.0)
    return {
        "stats": stats,
        "points": points,
        "confusion": np.array(confusion_matrix(coco, rows, matching, thresholds)["matrix"]),
        "errors": errors,
        "findings": judge_errors(errors),
        "coco_eval": coco_eval,
    }


def dominant(result: dict) -> str:
    return max(ERROR_TYPES, key=lambda kind: result["errors"][kind]["dAP50"])


def test_perfect_detections_have_no_error_and_a_diagonal_matrix():
    coco = make_coco()
    result = analyse(coco, truth_rows(coco))
    assert result["stats"]["AP50"] == pytest.approx(1.0)
    assert all(e == {"count": 0, "dAP50": 0.0} for e in result["errors"].values())
    confusion = result["confusion"]
    assert (confusion == np.diag(np.diag(confusion))).all() and np.diag(confusion)[:3].tolist() == [8, 8, 8]
    assert all(p["precision"] == p["recall"] == p["f1"] == 1.0 for p in result["points"].values())
    assert [f["status"] for f in result["findings"]] == ["ok"]


def test_boxes_shifted_to_iou_03_are_localisation_errors():
    coco = make_coco()
    rows = truth_rows(coco)
    rows[:, 1] += SHIFT_TO_IOU_03
    result = analyse(coco, rows)
    assert result["stats"]["AP50"] == pytest.approx(0.0)
    assert result["errors"]["localisation"] == {"count": 24, "dAP50": pytest.approx(1.0)}
    assert result["errors"]["missed"]["count"] == 0  # every object has its mislocalised box
    assert dominant(result) == "localisation" and result["findings"][0]["check"] == "localisation"
    assert result["confusion"][:3, 3].tolist() == [8, 8, 8] and result["confusion"][3, :3].tolist() == [8, 8, 8]


def test_labels_swapped_between_two_classes_fill_their_two_cells():
    coco = make_coco()
    rows = truth_rows(coco)
    rows[:, 6] = np.select([rows[:, 6] == 1, rows[:, 6] == 2], [2, 1], rows[:, 6])
    result = analyse(coco, rows)
    confusion = result["confusion"]
    assert confusion[0, 1] == confusion[1, 0] == 8 and confusion[2, 2] == 8
    assert confusion.sum() == 24  # nothing else: no background cell
    assert result["errors"]["classification"] == {"count": 16, "dAP50": pytest.approx(2 / 3)}
    assert dominant(result) == "classification"
    assert sum(e["count"] for e in result["errors"].values()) == 16


def test_each_prediction_repeated_is_duplicates():
    coco = make_coco()
    rows = truth_rows(coco)
    repeats = rows.copy()
    repeats[:, 1] += 1.0  # IoU 39/41 with its object, which the original already found
    repeats[:, 5] -= 0.001  # each right below its original, so the ranking interleaves them
    result = analyse(coco, np.concatenate([rows, repeats]))
    assert result["errors"]["duplicate"]["count"] == 24
    assert result["stats"]["AP50"] + result["errors"]["duplicate"]["dAP50"] == pytest.approx(1.0)
    assert dominant(result) == "duplicate"
    others = [k for k in ERROR_TYPES if k != "duplicate"]
    assert all(result["errors"][k]["count"] == 0 for k in others)


def test_extra_boxes_on_empty_images_are_background():
    coco = make_coco(empty_images=6)
    extras = np.array([[image_id, 30.0, 30.0, SIDE, SIDE, 0.9, 1 + image_id % 3] for image_id in range(13, 19)])
    result = analyse(coco, np.concatenate([truth_rows(coco), extras]))
    assert result["errors"]["background"]["count"] == 6
    assert result["stats"]["AP50"] < 1 and result["stats"]["AP50"] + result["errors"]["background"][
        "dAP50"
    ] == pytest.approx(1.0)
    assert dominant(result) == "background"
    assert result["confusion"][3, :3].sum() == 6 and result["confusion"][:3, 3].sum() == 0


def test_half_the_objects_dropped_are_missed():
    coco = make_coco()
    result = analyse(coco, truth_rows(coco)[::2])
    assert result["errors"]["missed"]["count"] == 12
    assert result["stats"]["AP50"] + result["errors"]["missed"]["dAP50"] == pytest.approx(1.0)
    assert dominant(result) == "missed"
    assert result["confusion"][:3, 3].sum() == 12 and result["confusion"][3].sum() == 0
    assert all(p["recall"] == 0.5 and p["precision"] == 1.0 for p in result["points"].values())


def test_known_pycocotools_numbers_on_one_class():
    """4 objects; ranked boxes: hit, duplicate, hit, background. pycocotools gives AP50 (26 + 25·2/3)/101: the
    interpolated precision is 1 up to recall 0.25 and 2/3 up to 0.5 on its 101 recall points."""
    coco = make_coco(images=2, categories=1)
    truth = truth_rows(coco)
    rows = np.array(
        [
            [*truth[0, :5], 0.9, 1],
            [truth[0, 0], truth[0, 1] + 1, *truth[0, 2:5], 0.8, 1],  # the first object again
            [*truth[2, :5], 0.7, 1],
            [1, 30.0, 75.0, 20.0, 20.0, 0.6, 1],  # nowhere near an object
        ]
    )
    result = analyse(coco, rows)
    assert result["stats"]["AP50"] == pytest.approx((26 + 25 * 2 / 3) / 101)
    assert ap50(coco, rows, sorted(coco.getImgIds())) == pytest.approx(result["stats"]["AP50"], abs=1e-12)
    assert result["points"][1] == {"precision": 2 / 3, "recall": 0.5, "f1": pytest.approx(4 / 7), "threshold": 0.7}
    errors = result["errors"]
    assert errors["duplicate"] == {"count": 1, "dAP50": pytest.approx(51 / 101 - result["stats"]["AP50"])}
    assert errors["background"] == {"count": 1, "dAP50": pytest.approx(0.0)}  # ranked below every hit
    # Fixing the 2 missed objects leaves 2: hit, duplicate, hit, background reaches recall 1 at precision 2/3.
    assert errors["missed"] == {"count": 2, "dAP50": pytest.approx((51 + 50 * 2 / 3) / 101 - result["stats"]["AP50"])}
    assert result["confusion"].tolist() == [[2, 2], [1, 0]]  # threshold 0.7: the duplicate at 0.8 counts


def test_per_class_rows_and_curves_are_the_headline_evaluation():
    coco = make_coco()
    rows = truth_rows(coco)
    rows[rows[:, 6] == 2, 1] += SHIFT_TO_IOU_03  # class 2 all mislocalised
    result = analyse(coco, rows)
    per_class = {r["id"]: r for r in per_class_ap(result["coco_eval"], {})}
    curves = pr_curves(result["coco_eval"])
    assert curves["categories"] == [1, 2, 3] and len(curves["recall"]) == 101
    for k, category_id in enumerate(curves["categories"]):
        curve = curves["precision"][k]
        assert curve is not None and np.mean(curve) == pytest.approx(per_class[category_id]["AP50"])
    assert per_class[2]["AP50"] == 0.0 and result["points"][2] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "threshold": None,
    }
    assert result["points"][1]["f1"] == 1.0 and result["points"][1]["threshold"] == pytest.approx(rows[-3, 5])
