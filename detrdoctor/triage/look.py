"""The look: training samples as the model sees them, with their target boxes, and the overfit model's predictions.

Boxes that do not sit on the objects give away xyxy-vs-xywh and EXIF mistakes at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from detr.config import RunConfig
    from detr.engine.trainer import Trainer

MIN_SIDE = 384  # training samples are small after the transforms: enlarged more than predict's images
TARGET_COLOUR, PREDICTION_COLOUR = (0, 255, 0), (255, 0, 0)
SCORE = 0.5  # predictions drawn: the most likely real class at least this probable


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation of a model input: 3×H×W uint8."""
    import torch

    from detr.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image.float().cpu() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)


def draw(image: torch.Tensor, layers: list[tuple[torch.Tensor, list[str], tuple[int, int, int]]], path: Path) -> None:
    """Each layer's pixel xyxy boxes, with its labels and in its colour, on an enlarged copy of `image`; a PNG."""
    from PIL import Image

    from detrdoctor.predictions.draw import draw_boxes, enlarged

    canvas, factor = enlarged(image, MIN_SIDE)
    for boxes, labels, colour in layers:
        canvas = draw_boxes(canvas, boxes.float().cpu() * factor, (), labels, colour)
    Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(path)


def pixel_boxes(relative_cxcywh: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Relative cxcywh (the model's target format) → pixel xyxy on an h×w image."""
    import torch

    from detr.box_ops import box_cxcywh_to_xyxy

    h, w = size
    return box_cxcywh_to_xyxy(relative_cxcywh) * torch.tensor([w, h, w, h], dtype=torch.float32)


def draw_training_samples(cfg: RunConfig, image_ids: list[int], folder: Path) -> list[str]:
    """The images `image_ids` after the run's training transforms (epoch 0), target boxes and class names drawn."""
    from detr.checkpoint import coco_category_names
    from detr.data import build_dataset

    dataset = build_dataset(cfg.data, "train", train=True, seed=cfg.train.seed)
    dataset.set_epoch(0)
    names = coco_category_names(dataset.coco)
    index = {image_id: i for i, image_id in enumerate(dataset.ids)}
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for n, image_id in enumerate(image_ids):
        image, target = dataset[index[image_id]]
        path = folder / f"{n + 1:02d}-image{image_id}-train.png"
        boxes = pixel_boxes(target["boxes"], (image.shape[-2], image.shape[-1]))
        draw(
            to_uint8(image), [(boxes, [names.get(int(c), str(int(c))) for c in target["labels"]], TARGET_COLOUR)], path
        )
        written.append(str(path))
    return written


def draw_predictions(trainer: Trainer, folder: Path) -> list[str]:
    """The overfit model's predictions (red, with scores) over the targets (green) on the images it trained on."""
    import torch

    from detr.checkpoint import coco_category_names
    from detr.data import collate_batch

    dataset = trainer.val_set
    assert dataset is not None  # the overfit run evaluates
    names = coco_category_names(dataset.coco)
    samples = [dataset[i] for i in range(len(dataset))]
    images, mask, targets = collate_batch(samples)
    model = trainer.model_without_ddp
    model.eval()
    with torch.no_grad(), trainer.autocast():
        outputs = model(images.to(trainer.device), mask.to(trainer.device))
    sizes = torch.stack([t["size"] for t in targets]).to(trainer.device)
    results = trainer.postprocessor(outputs, sizes)
    written = []
    for n, ((image, target), result) in enumerate(zip(samples, results)):
        keep = result["scores"] >= SCORE
        labels = [
            f"{names.get(int(c), str(int(c)))} {s:.2f}" for c, s in zip(result["labels"][keep], result["scores"][keep])
        ]
        truth = pixel_boxes(target["boxes"], (image.shape[-2], image.shape[-1]))
        path = folder / f"{n + 1:02d}-image{target['image_id']}-overfit.png"
        draw(
            to_uint8(image),
            [(truth, [""] * len(truth), TARGET_COLOUR), (result["boxes"][keep].cpu(), labels, PREDICTION_COLOUR)],
            path,
        )
        written.append(str(path))
    return written
