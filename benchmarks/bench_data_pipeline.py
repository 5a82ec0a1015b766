"""Cost of the training data pipeline per image on one core, ours next to an official-style PIL pipeline.

    python benchmarks/bench_data_pipeline.py [--images 24] [--samples 240] [--noise 12] [--generate 2000]

Renders 640×480 synthetic JPEGs (with pixel noise so they compress like photos), then times, on one
thread like a DataLoader worker: each stage on its own (decode, flip, resize, crop, normalise, collate),
and the whole train pipeline (decode + the paper's random augmentation + collate into batches of 2) —
ours (torchvision decode_jpeg, v2 ops on uint8, float last) and the official repo's style (PIL decode,
PIL transforms, ToTensor + Normalize), driven by the same random draws so both produce the same shapes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from detr.config import DataConfig
from detr.data import build_dataset, collate_batch, generate_synthetic_coco
from detr.data.coco import CocoDetection, sample_rng
from detr.data.decode import read_rgb
from detr.data.render import render_image, synthetic_categories
from detr.data.shapes import resized_size
from detr.data.transforms import IMAGENET_MEAN, IMAGENET_STD, as_boxes, hflip, normalize, random_size_crop, resize


def write_dataset(root: Path, count: int, noise: float) -> None:
    """`count` 640×480 JPEGs (quality 90) with their COCO annotation file."""
    (root / "train2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for i in range(count):
        rng = np.random.default_rng([7, i])
        pixels, objects = render_image(rng, 480, 640)
        if noise:
            pixels = np.clip(pixels + rng.normal(0, noise, pixels.shape), 0, 255).astype(np.uint8)
        name = f"{i + 1:012d}.jpg"
        Image.fromarray(pixels).save(root / "train2017" / name, "JPEG", quality=90)
        images.append({"id": i + 1, "file_name": name, "width": 640, "height": 480})
        anns += [{"id": len(anns) + 1, "image_id": i + 1, "iscrowd": 0, **o} for o in objects]
    data = {"images": images, "annotations": anns, "categories": synthetic_categories()}
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(data))


class OfficialStyle:
    """The official DETR train pipeline's operations (PIL), with our random draws in the official order."""

    def __init__(self, ds: CocoDetection, cfg: DataConfig) -> None:
        self.ds, self.cfg = ds, cfg

    @staticmethod
    def resize(img: Image.Image, boxes: torch.Tensor, size: int, max_size: int | None):
        h, w = resized_size(img.height, img.width, size, max_size)
        out = TF.resize(img, [h, w])
        return out, boxes * torch.tensor([w / img.width, h / img.height] * 2)

    def __call__(self, index: int, epoch: int = 0) -> tuple[torch.Tensor, dict]:
        cfg, rng = self.cfg, sample_rng(self.ds.seed, epoch, index)
        img = Image.open(self.ds.image_path(index)).convert("RGB")
        anns = self.ds.coco.imgToAnns[self.ds.ids[index]]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        if rng.random() < 0.5:
            img = TF.hflip(img)
            boxes = boxes[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([img.width, 0, img.width, 0])
        if rng.random() < 0.5:
            img, boxes = self.resize(img, boxes, rng.choice(cfg.train_scales), cfg.max_size)
        else:
            img, boxes = self.resize(img, boxes, rng.choice(cfg.crop_resize_scales), None)
            cw = rng.randint(min(cfg.crop_min_size, img.width), min(img.width, cfg.crop_max_size))
            ch = rng.randint(min(cfg.crop_min_size, img.height), min(img.height, cfg.crop_max_size))
            top, left = rng.randint(0, img.height - ch), rng.randint(0, img.width - cw)
            img = TF.crop(img, top, left, ch, cw)
            boxes = torch.min((boxes - torch.tensor([left, top, left, top])).reshape(-1, 2, 2), torch.tensor([cw, ch]))
            boxes = boxes.clamp(min=0).reshape(-1, 4)
            boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
            img, boxes = self.resize(img, boxes, rng.choice(cfg.train_scales), cfg.max_size)
        image = TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)
        w, h = img.width, img.height
        cxcywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], dim=1)
        return image, {"boxes": cxcywh / torch.tensor([w, h, w, h]), "size": torch.tensor([h, w])}


def official_collate(samples):
    """NestedTensor-style batching: torch.zeros, then a copy per image."""
    hmax = max(s[0].shape[1] for s in samples)
    wmax = max(s[0].shape[2] for s in samples)
    images = torch.zeros(len(samples), 3, hmax, wmax)
    mask = torch.ones(len(samples), hmax, wmax, dtype=torch.bool)
    for i, (img, _) in enumerate(samples):
        images[i, :, : img.shape[1], : img.shape[2]].copy_(img)
        mask[i, : img.shape[1], : img.shape[2]] = False
    return images, mask, [t for _, t in samples]


def paired_ms(
    ours: Callable[[int], object], theirs: Callable[[int], object], n: int, rounds: int = 5
) -> tuple[float, float]:
    """Median ms per call of ours(i) and theirs(i), i = 0..n-1, timed in alternating rounds.

    Alternating makes the ratio robust to load from other processes drifting during the run.
    """
    ours(0), theirs(0)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for fn, out in ((ours, times[0]), (theirs, times[1])):
            start = time.perf_counter()
            for i in range(n):
                fn(i)
            out.append((time.perf_counter() - start) / n * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def stage_costs(ds: CocoDetection, n: int) -> list[tuple[str, float, float]]:
    """(stage, ours ms, official-style ms) at representative sizes: shorter side 608 (the scales' middle)."""
    paths = [ds.image_path(i % len(ds)) for i in range(n)]
    pil = [Image.open(p).convert("RGB") for p in paths]
    ours = [(read_rgb(p), as_boxes(torch.zeros(0, 4), 480, 640), torch.zeros(0, dtype=torch.int64)) for p in paths]
    big = [resize(s, 608, 1333) for s in ours]
    big_pil = [TF.resize(im, [608, 810]) for im in pil]
    crop_rng = random.Random(0)
    rows = [
        (
            "decode 640x480 JPEG",
            *paired_ms(lambda i: read_rgb(paths[i]), lambda i: Image.open(paths[i]).convert("RGB"), n),
        ),
        ("hflip 640x480", *paired_ms(lambda i: hflip(ours[i]), lambda i: TF.hflip(pil[i]), n)),
        (
            "resize → 608x810",
            *paired_ms(lambda i: resize(ours[i], 608, 1333), lambda i: TF.resize(pil[i], [608, 810]), n),
        ),
        (
            "crop branch: resize 500, crop, resize 608",
            *paired_ms(
                lambda i: resize(random_size_crop(resize(ours[i], 500, None), 384, 600, crop_rng), 608, 1333),
                lambda i: TF.resize(TF.crop(TF.resize(pil[i], [500, 666]), 50, 60, 450, 500), [608, 675]),
                n,
            ),
        ),
        (
            "normalise 608x810 (to float)",
            *paired_ms(
                lambda i: normalize(big[i]),
                lambda i: TF.normalize(TF.to_tensor(big_pil[i]), IMAGENET_MEAN, IMAGENET_STD),
                n,
            ),
        ),
    ]
    pairs = [[(normalize(big[2 * i % n])[0], {}), (normalize(big[(2 * i + 1) % n])[0], {})] for i in range(n)]
    ours_ms, theirs_ms = paired_ms(lambda i: collate_batch(pairs[i]), lambda i: official_collate(pairs[i]), n)
    rows.append(("collate (per image, batches of 2)", ours_ms / 2, theirs_ms / 2))
    return rows


def batches_of_two(get: Callable[[int], tuple], collate: Callable, count: int) -> Callable[[int], object]:
    """A call that decodes, augments and collates the i-th pair of images."""
    return lambda i: collate([get(2 * i % count), get((2 * i + 1) % count)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="distinct JPEGs")
    parser.add_argument("--samples", type=int, default=240, help="images through each full pipeline")
    parser.add_argument("--noise", type=float, default=12.0, help="pixel noise σ, for photo-like JPEG sizes")
    parser.add_argument("--generate", type=int, default=0, help="also time generating N synthetic images at 640 px")
    args = parser.parse_args()
    if args.generate:
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu = time.perf_counter(), time.process_time()
            generate_synthetic_coco(
                Path(tmp) / "synth", train_images=args.generate, val_images=0, image_size=640, seed=0
            )
            print(
                f"synthetic generation: {args.generate} images at 640 px in {time.perf_counter() - start:.1f} s "
                f"({time.process_time() - cpu:.1f} s CPU)\n"
            )
    torch.set_num_threads(1)  # a DataLoader worker runs single-threaded
    cfg = DataConfig()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(root, args.images, args.noise)
        cfg.coco_path = str(root)
        ds = build_dataset(cfg, "train", train=True, seed=0)
        kib = statistics.mean(ds.image_path(i).stat().st_size for i in range(len(ds))) / 1024
        print(f"{args.images} synthetic 640x480 JPEGs, mean {kib:.0f} KiB; torch {torch.__version__}, 1 thread\n")
        print(f"{'stage (ms per image)':44s} {'ours':>8s} {'official-style':>15s}")
        for name, ours, official in stage_costs(ds, args.images):
            print(f"{name:44s} {ours:8.2f} {official:15.2f}")
        official = OfficialStyle(ds, cfg)
        ours_ms, theirs_ms = paired_ms(
            batches_of_two(ds.__getitem__, collate_batch, len(ds)),
            batches_of_two(official, official_collate, len(ds)),
            args.samples // 2 // 5,
        )
        ours_ms, theirs_ms = ours_ms / 2, theirs_ms / 2
        print(f"\nfull train pipeline (decode + random augmentation + collate), {args.samples} images each:")
        print(f"  ours            {ours_ms:6.2f} ms/image  {1000 / ours_ms:6.1f} images/s per worker")
        print(f"  official-style  {theirs_ms:6.2f} ms/image  {1000 / theirs_ms:6.1f} images/s per worker")
        print(f"  ours / official-style: {ours_ms / theirs_ms:.2f}")
        a, b = ds[0], official(0)
        diff = (a[0] - b[0]).abs().mean().item()
        print(
            f"\nsame sample both ways: sizes {tuple(a[1]['size'].tolist())} vs {tuple(b[1]['size'].tolist())}, "
            f"mean |pixel diff| {diff:.3f} (normalised units), max |box diff| "
            f"{(a[1]['boxes'] - b[1]['boxes']).abs().max().item() if len(b[1]['boxes']) else 0.0:.2e}"
        )


if __name__ == "__main__":
    main()
