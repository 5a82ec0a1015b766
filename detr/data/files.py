"""Image files outside any dataset (what `predict` runs on), read with the validation transforms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from detr.config import DataConfig
from detr.data.collate import collate_batch
from detr.data.decode import CorruptImageError, read_rgb
from detr.data.transforms import ValTransform, as_boxes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def find_images(sources: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(path, name) of every image in `sources`: files as given, folders searched recursively.

    The name is the path relative to its folder (the file name for files given directly): it names the
    drawn output and the image in predictions.json, so two inputs with the same name get a numbered suffix.
    """
    found: list[tuple[Path, str]] = []
    for source in map(Path, sources):
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            found.extend((p, p.relative_to(source).as_posix()) for p in files)
        else:
            found.append((source, source.name))
    taken: set[str] = set()
    unique = []
    for path, name in found:
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{Path(name).with_suffix('')}-{n}{Path(name).suffix}"
        taken.add(candidate)
        unique.append((path, candidate))
    return unique


class ImageFiles(Dataset):
    """Samples (image, target) like the COCO dataset's at evaluation, with `image_id` the index in `paths`.

    An unreadable file gives (None, {"image_id": index}); `collate_readable` leaves it out of the batch.
    """

    def __init__(self, paths: Sequence[Path], data_cfg: DataConfig) -> None:
        self.paths = list(paths)
        self.transform = ValTransform(data_cfg)
        self.max_pixels = data_cfg.max_image_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, dict]:
        try:
            image = read_rgb(self.paths[index], max_pixels=self.max_pixels)
        except CorruptImageError:
            return None, {"image_id": index}
        h, w = image.shape[-2:]
        sample = (image, as_boxes(torch.zeros((0, 4)), h, w), torch.zeros(0, dtype=torch.int64))
        image, _, _ = self.transform(sample)
        return image, {"image_id": index, "orig_size": torch.tensor([h, w]), "size": torch.tensor(image.shape[-2:])}


def collate_readable(samples: Sequence[tuple[torch.Tensor | None, dict]]) -> tuple[torch.Tensor, torch.Tensor, list]:
    """`collate_batch` of the readable samples; a batch with none is empty (no targets)."""
    readable = [(image, target) for image, target in samples if image is not None]
    if not readable:
        return torch.zeros((0, 3, 1, 1)), torch.zeros((0, 1, 1), dtype=torch.bool), []
    return collate_batch(readable)
