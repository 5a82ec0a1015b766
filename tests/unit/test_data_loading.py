"""Deterministic sampling and batching: any num_workers, exact resume, ranks, aspect grouping, padding."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import DataLoader

from detr.config import DataConfig
from detr.data import (
    DeterministicBatchSampler,
    aspect_ratio_group_ids,
    build_dataset,
    collate_batch,
    padding_fraction,
)


def batches(sampler: DeterministicBatchSampler, epoch: int, start: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch, start_batch=start)
    out = list(sampler)
    assert len(out) == len(sampler)
    return out


def test_epochs_are_shuffled_reproducibly() -> None:
    a = DeterministicBatchSampler(10, 3, shuffle=True, seed=5, drop_last=False)
    b = DeterministicBatchSampler(10, 3, shuffle=True, seed=5, drop_last=False)
    assert batches(a, 0) == batches(b, 0) and batches(a, 1) == batches(b, 1)
    assert batches(a, 0) != batches(a, 1)
    assert sorted(itertools.chain(*batches(a, 2))) == list(range(10))
    assert batches(DeterministicBatchSampler(10, 3, shuffle=False, seed=0, drop_last=False), 0)[0] == [0, 1, 2]
    assert [len(b) for b in batches(DeterministicBatchSampler(10, 3, shuffle=True, seed=0), 0)] == [3, 3, 3]


@pytest.mark.parametrize("groups", [None, [0, 1, 1, 0, 1, 1, 1, 0, 1, 0, 0, 1, 1]])
@pytest.mark.parametrize("drop_last", [True, False])
def test_resume_yields_the_tail_of_the_uninterrupted_epoch(groups, drop_last) -> None:
    sampler = DeterministicBatchSampler(13, 2, shuffle=True, seed=1, drop_last=drop_last, group_ids=groups)
    full = batches(sampler, 4)
    for k in range(len(full) + 1):
        assert batches(sampler, 4, start=k) == full[k:]
    assert len(batches(sampler, 5)) == len(full)  # the next epoch starts from its first batch again
    with pytest.raises(ValueError):
        sampler.set_epoch(4, start_batch=len(full) + 1)


def test_aspect_ratio_grouping_makes_single_group_batches() -> None:
    ratios = [4 / 3, 3 / 4, 1.0, 0.5, 2.0, 0.75, 1.5, 0.8, 1.2, 0.9, 1.1]
    groups = aspect_ratio_group_ids(ratios)
    assert groups == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    sampler = DeterministicBatchSampler(11, 2, shuffle=True, seed=0, drop_last=False, group_ids=groups)
    epoch = batches(sampler, 0)
    assert all(len({groups[i] for i in b}) == 1 for b in epoch)
    assert sorted(itertools.chain(*epoch)) == list(range(11))
    shapes = [(30, 40) if g else (40, 30) for g in groups]
    mixed = batches(DeterministicBatchSampler(11, 2, shuffle=True, seed=0, drop_last=False), 0)
    assert padding_fraction(shapes, epoch) == 0.0 < padding_fraction(shapes, mixed)


def test_padding_fraction_by_hand() -> None:
    # One batch of a 2×4 and a 4×2 image padded to 4×4: 16 real pixels of 32.
    assert padding_fraction([(2, 4), (4, 2)], [[0, 1]]) == 0.5
    assert padding_fraction([(2, 4)], []) == 0.0


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("groups", [None, [i % 2 for i in range(17)]])
@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_get_disjoint_equal_shares(world_size: int, groups, drop_last: bool) -> None:
    shares = [
        batches(
            DeterministicBatchSampler(
                17, 2, shuffle=True, seed=3, rank=r, world_size=world_size, drop_last=drop_last, group_ids=groups
            ),
            1,
        )
        for r in range(world_size)
    ]
    assert len({len(s) for s in shares}) == 1
    seen = [i for share in shares for b in share for i in b]
    if drop_last:
        assert len(seen) == len(set(seen))
    else:
        assert set(seen) == set(range(17))


def test_collate_pads_bottom_right_with_a_mask() -> None:
    a, b = torch.ones(3, 2, 5), torch.full((3, 4, 3), 2.0)
    images, mask, targets = collate_batch([(a, {"n": 0}), (b, {"n": 1})])
    assert images.shape == (2, 3, 4, 5) and mask.shape == (2, 4, 5) and mask.dtype == torch.bool
    assert images[0, :, :2].eq(1).all() and images[0, :, 2:].eq(0).all()
    assert images[1, :, :, :3].eq(2).all() and images[1, :, :, 3:].eq(0).all()
    assert mask[0].sum() == 20 - 10 and not mask[0, :2].any() and mask[1, :, 3:].all()
    assert [t["n"] for t in targets] == [0, 1]


def test_collate_matches_the_models_padding() -> None:
    from detr import pad_images

    samples = [(torch.randn(3, 5, 7), {}), (torch.randn(3, 6, 4), {}), (torch.randn(3, 2, 2), {})]
    images, mask, _ = collate_batch(samples)
    expected_images, expected_mask = pad_images([image for image, _ in samples])
    assert torch.equal(images, expected_images) and torch.equal(mask, expected_mask)


def run_epochs(ds, cfg: DataConfig, workers: int, persistent: bool = False) -> list:
    sampler = DeterministicBatchSampler(len(ds), 3, shuffle=True, seed=9, drop_last=False)
    loader = DataLoader(
        ds, batch_sampler=sampler, collate_fn=collate_batch, num_workers=workers, persistent_workers=persistent
    )
    out = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        out += [
            (images, mask, [(t["image_id"], t["boxes"], t["labels"]) for t in targets])
            for images, mask, targets in loader
        ]
    return out


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (ia, ma, ta), (ib, mb, tb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ma, mb)
        for (id_a, boxes_a, labels_a), (id_b, boxes_b, labels_b) in zip(ta, tb):
            assert id_a == id_b and torch.equal(boxes_a, boxes_b) and torch.equal(labels_a, labels_b)


def test_batches_identical_for_any_num_workers(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETRDOCTOR_CACHE", str(tmp_path))
    cfg = DataConfig(
        train_scales=[64, 72, 80],
        max_size=96,
        crop_resize_scales=[64, 80],
        crop_min_size=48,
        crop_max_size=64,
        synthetic_train_images=9,
        synthetic_val_images=2,
        synthetic_image_size=96,
    )
    ds = build_dataset(cfg, "train", train=True, seed=2)
    serial = run_epochs(ds, cfg, 0)
    assert_same_batches(serial, run_epochs(ds, cfg, 2))
    assert_same_batches(serial, run_epochs(ds, cfg, 2, persistent=True))
    ds.set_epoch(0)
    first = [ds[i][0] for i in range(len(ds))]
    ds.set_epoch(1)
    assert any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(first, (ds[i][0] for i in range(len(ds)))))
