import itertools

import pytest
import torch

from benchmarks.official_reference import official_cost_matrix, official_match
from detr import HungarianMatcher

COSTS = {"cost_class": 1.0, "cost_bbox": 5.0, "cost_giou": 2.0}


def random_case(batch_size, num_queries, num_classes, sizes, seed):
    generator = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(batch_size, num_queries, num_classes + 1, generator=generator),
        "pred_boxes": torch.rand(batch_size, num_queries, 4, generator=generator) * 0.5 + 0.1,
    }
    targets = [
        {
            "labels": torch.randint(0, num_classes, (n,), generator=generator),
            "boxes": torch.rand(n, 4, generator=generator) * 0.5 + 0.1,
        }
        for n in sizes
    ]
    return outputs, targets


def assert_same_indices(actual, expected):
    assert len(actual) == len(expected)
    for (q, t), (q_ref, t_ref) in zip(actual, expected):
        assert q.dtype == t.dtype == torch.int64
        assert torch.equal(q, q_ref) and torch.equal(t, t_ref)


@pytest.mark.parametrize("seed", range(5))
def test_assignment_is_the_brute_force_optimum(seed):
    outputs, targets = random_case(1, 5, 4, [3], seed)
    ((query_idx, target_idx),) = HungarianMatcher(**COSTS)(outputs, targets)
    cost = official_cost_matrix(outputs, targets)[0]
    best = min(itertools.permutations(range(5), 3), key=lambda qs: sum(cost[q, t] for t, q in enumerate(qs)))
    assert sorted(zip(target_idx.tolist(), query_idx.tolist())) == list(enumerate(best))
    assert query_idx.tolist() == sorted(query_idx.tolist())


@pytest.mark.parametrize("seed", range(3))
def test_same_costs_and_assignment_as_the_official_whole_batch_matcher(seed):
    sizes = [3, 0, 7, 1, 12]
    outputs, targets = random_case(len(sizes), 20, 9, sizes, seed)
    matcher = HungarianMatcher(**COSTS)
    labels = torch.nn.utils.rnn.pad_sequence([t["labels"] for t in targets], batch_first=True)
    boxes = torch.nn.utils.rnn.pad_sequence([t["boxes"] for t in targets], batch_first=True)
    ours = matcher.cost_matrices(outputs["pred_logits"], outputs["pred_boxes"], labels, boxes)
    official = official_cost_matrix(outputs, targets).split(sizes, -1)
    for i, n in enumerate(sizes):
        assert torch.equal(ours[i, :, :n], official[i][i])
    assert_same_indices(matcher(outputs, targets), official_match(outputs, targets))


def test_images_without_targets():
    outputs, targets = random_case(3, 6, 3, [0, 0, 0], seed=0)
    indices = HungarianMatcher(**COSTS)(outputs, targets)
    assert [(len(q), len(t)) for q, t in indices] == [(0, 0)] * 3
    assert all(q.dtype == torch.int64 for q, _ in indices)


def test_more_targets_than_queries_matches_every_query():
    outputs, targets = random_case(1, 4, 3, [6], seed=1)
    ((query_idx, target_idx),) = HungarianMatcher(**COSTS)(outputs, targets)
    assert query_idx.tolist() == [0, 1, 2, 3] and len(set(target_idx.tolist())) == 4


def test_match_layers_equals_matching_each_layer():
    layers = [random_case(4, 10, 5, [2, 5, 0, 3], seed)[0] for seed in range(3)]
    _, targets = random_case(4, 10, 5, [2, 5, 0, 3], seed=9)
    matcher = HungarianMatcher(**COSTS)
    for together, layer in zip(matcher.match_layers(layers, targets), layers):
        assert_same_indices(together, matcher(layer, targets))


def test_costs_stay_float32_under_bf16_autocast():
    outputs, targets = random_case(2, 8, 5, [3, 2], seed=4)
    bf16 = {k: v.bfloat16() for k, v in outputs.items()}
    matcher = HungarianMatcher(**COSTS)
    labels = torch.nn.utils.rnn.pad_sequence([t["labels"] for t in targets], batch_first=True)
    boxes = torch.nn.utils.rnn.pad_sequence([t["boxes"] for t in targets], batch_first=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cost = matcher.cost_matrices(bf16["pred_logits"], bf16["pred_boxes"], labels, boxes)
        indices = matcher(bf16, targets)
    assert cost.dtype == torch.float32
    assert_same_indices(indices, official_match({k: v.float() for k, v in bf16.items()}, targets))


def test_rejects_all_zero_costs():
    with pytest.raises(ValueError):
        HungarianMatcher(0, 0, 0)
