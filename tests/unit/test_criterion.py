import math

import pytest
import torch

from detr import HungarianMatcher, SetCriterion, build_model

WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}


def make_criterion(num_classes=2, eos_coef=0.1):
    return SetCriterion(num_classes, HungarianMatcher(1, 5, 2), dict(WEIGHTS), eos_coef)


def hand_made_case():
    """Image 0: 3 queries, 2 classes (+ "no object"), one target that query 1 clearly matches.
    Image 1: no targets."""
    logits = torch.tensor(
        [[[0.0, 0.0, 3.0], [0.5, 2.0, 0.0], [1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0], [2.0, 0.0, 0.0], [0.0, 0.5, 1.0]]]
    )
    boxes = torch.tensor(
        [[[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2], [0.8, 0.8, 0.1, 0.1]], [[0.5, 0.5, 0.5, 0.5]] * 3]
    )
    targets = [
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.55, 0.5, 0.2, 0.2]]), "image_id": 7},
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
    ]
    return {"pred_logits": logits, "pred_boxes": boxes}, targets


def nll(row, label):
    return -math.log(math.exp(row[label]) / sum(math.exp(x) for x in row))


def test_losses_match_hand_computed_values():
    outputs, targets = hand_made_case()
    losses = make_criterion()(outputs, targets)

    # Query 1 of image 0 is matched to class 1; the five others are "no object" (class 2, weight 0.1).
    rows = outputs["pred_logits"].tolist()
    unmatched = [(0, 0), (0, 2), (1, 0), (1, 1), (1, 2)]
    weighted = [(1.0, nll(rows[0][1], 1))] + [(0.1, nll(rows[b][q], 2)) for b, q in unmatched]
    expected_ce = sum(w * n for w, n in weighted) / sum(w for w, _ in weighted)
    # xyxy (0.4, 0.4, 0.6, 0.6) vs (0.45, 0.4, 0.65, 0.6): intersection 0.03, union 0.05, hull 0.05.
    expected_giou = 1 - (0.03 / 0.05 - 0.0)
    # 3 of 6 queries argmax a real class: image 0 predicts 2 for 1 target, image 1 predicts 1 for 0.
    expected = {
        "loss_ce": expected_ce,
        "class_error": 0.0,
        "loss_bbox": 0.05,
        "loss_giou": expected_giou,
        "cardinality_error": 1.0,
    }
    assert list(losses) == list(expected)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_class_error_counts_wrongly_classified_matches():
    outputs, targets = hand_made_case()
    targets[0]["labels"] = torch.tensor([0])
    assert make_criterion()(outputs, targets)["class_error"].item() == pytest.approx(100.0)


def test_no_targets_at_all():
    outputs, targets = hand_made_case()
    targets[0] = targets[1]
    losses = make_criterion()(outputs, targets)
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
    assert losses["class_error"].item() == 100  # the official value when nothing is matched
    assert math.isfinite(losses["loss_ce"].item())


def test_aux_losses_and_weights(tiny_config):
    tiny_config.dec_layers = 3
    model, criterion, _ = build_model(tiny_config)
    _, targets = hand_made_case()
    losses = criterion(model([torch.randn(3, 40, 48), torch.randn(3, 48, 32)]), targets)
    main = ["loss_ce", "class_error", "loss_bbox", "loss_giou", "cardinality_error"]
    aux = [f"{k}_{i}" for i in range(2) for k in ("loss_ce", "loss_bbox", "loss_giou", "cardinality_error")]
    assert list(losses) == main + aux
    assert criterion.weight_dict == {**WEIGHTS, **{f"{k}_{i}": v for i in range(2) for k, v in WEIGHTS.items()}}
    assert criterion.empty_weight.tolist() == pytest.approx([1.0] * tiny_config.num_classes + [0.1])


def test_losses_stay_float32_under_bf16_autocast(tiny_config):
    model, criterion, _ = build_model(tiny_config)
    _, targets = hand_made_case()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model([torch.randn(3, 40, 48), torch.randn(3, 48, 32)])
        losses = criterion(outputs, targets)
    assert outputs["pred_logits"].dtype == torch.bfloat16
    assert all(v.dtype == torch.float32 for v in losses.values())
    as_float32 = criterion(
        {
            "pred_logits": outputs["pred_logits"].float(),
            "pred_boxes": outputs["pred_boxes"].float(),
            "aux_outputs": [{k: v.float() for k, v in a.items()} for a in outputs["aux_outputs"]],
        },
        targets,
    )
    for key, value in as_float32.items():
        assert torch.equal(losses[key], value), key
