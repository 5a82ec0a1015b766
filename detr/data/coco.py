"""The COCO detection dataset: decoded, cleaned and augmented samples that depend only on (seed, epoch, index)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from detr.config import DataConfig
from detr.data.annotations import load_coco
from detr.data.decode import DEFAULT_MAX_PIXELS, CorruptImageError, read_rgb
from detr.data.layout import SplitSource
from detr.data.split import load_split
from detr.data.targets import clean_boxes
from detr.data.transforms import TrainTransform, ValTransform, as_boxes
from detr.errors import DataError

MAX_REPLACEMENTS = 10  # consecutive unreadable images before giving up on a sample


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The augmentation RNG of one sample (string seeds hash with SHA-512: stable across processes)."""
    return random.Random(f"{seed}/{epoch}/{index}")


class CocoDetection(Dataset):
    """Images of one split with their box targets (see `build_dataset` for the sample format)."""

    def __init__(
        self, source: SplitSource, transform: Callable, seed: int = 0, image_ids: list[int] | None = None
    ) -> None:
        if not source.images.is_dir():
            raise DataError(f"{source.images}: image folder not found")
        self.image_dir, self.ann_file = source.images, source.annotations
        self.coco = load_coco(source)
        self.ids: list[int] = sorted(self.coco.imgs) if image_ids is None else image_ids
        self.category_ids = frozenset(self.coco.cats)
        self.max_category_id = max(self.category_ids, default=0)
        self.transform = transform
        self.seed = seed
        self.max_pixels = DEFAULT_MAX_PIXELS  # [data] max_image_pixels, set by build_dataset
        # Shared memory: DataLoader workers (persistent ones included) see set_epoch from the main process.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation randomness of an epoch; call before creating the epoch's iterator."""
        self._epoch.fill_(epoch)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.coco.imgs[self.ids[index]]["file_name"]

    def aspect_ratios(self) -> list[float]:
        """width / height of every image in dataset order, from the annotation file (no decoding)."""
        ratios = []
        for image_id in self.ids:
            info = self.coco.imgs[image_id]
            if info.get("width") and info.get("height"):
                ratios.append(info["width"] / info["height"])
            else:
                with Image.open(self.image_dir / info["file_name"]) as im:  # reads the header only
                    ratios.append(im.width / im.height)
        return ratios

    def _replacement(self, index: int, attempt: int) -> int:
        """Another index, fixed by (seed, index, attempt), to stand in for an unreadable image."""
        offset = random.Random(f"replace/{self.seed}/{index}/{attempt}").randrange(len(self) - 1)
        return (index + 1 + offset) % len(self)

    def _decode(self, index: int) -> tuple[int, torch.Tensor, list[str]]:
        """(index actually used, image, unreadable files met): unreadable images are replaced deterministically."""
        corrupt: list[str] = []
        for attempt in range(MAX_REPLACEMENTS + 1):
            try:
                info = self.coco.imgs[self.ids[index]]
                size = (info["width"], info["height"]) if info.get("width") and info.get("height") else None
                return index, read_rgb(self.image_path(index), size, self.max_pixels), corrupt
            except CorruptImageError:
                corrupt.append(str(self.image_path(index)))
                if len(self) < 2:
                    break
                index = self._replacement(index, attempt)
        raise DataError(f"{self.image_dir}: {len(corrupt)} unreadable images in a row ({', '.join(corrupt[:3])}, ...)")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        epoch = int(self._epoch)
        used, image, corrupt = self._decode(index)
        image_id = self.ids[used]
        h, w = image.shape[-2:]
        boxes, labels = clean_boxes(self.coco.imgToAnns.get(image_id, []), h, w, self.category_ids)
        sample = (image, as_boxes(torch.from_numpy(boxes), h, w), torch.from_numpy(labels))
        image, boxes, labels = self.transform(sample, sample_rng(self.seed, epoch, index))
        target = {
            "labels": labels,
            "boxes": boxes,
            "image_id": image_id,
            "orig_size": torch.tensor([h, w]),
            "size": torch.tensor(image.shape[-2:]),
        }
        if corrupt:
            target["corrupt_files"] = corrupt
        return image, target


def build_dataset(
    data_cfg: DataConfig, split: str, *, train: bool, seed: int = 0, max_objects: int | None = None
) -> CocoDetection:
    """The dataset of split "train" or "val" with training (random) or evaluation transforms.

    Samples are (image float32 3×H×W normalised, target) with target 'labels' int64[n] (raw category
    ids), 'boxes' float32[n,4] (cxcywh relative to the augmented image), 'image_id', 'orig_size' and
    'size' (int64 [h, w]), and 'corrupt_files' when an unreadable image was replaced. Images with more
    than `max_objects` usable boxes are left out (see `detr.data.split.load_split`).
    """
    data = load_split(data_cfg, split, max_objects)
    transform = TrainTransform(data_cfg) if train else ValTransform(data_cfg)
    dataset = CocoDetection(data.source, transform, seed, data.image_ids)
    dataset.max_pixels = data_cfg.max_image_pixels
    return dataset
