"""What `evaluate --confusion --pr --errors` adds to scoring AP: the headline COCOeval alone against the same
COCOeval plus its matching, per-class precision/recall/F1, the confusion matrix and TIDE's six re-scorings.

A synthetic COCO-like set (IMAGES images, OBJECTS objects each, CLASSES classes) with QUERIES detections per
image, a realistic mix: most objects found with jittered boxes, some mislabelled, some missed, the spare
queries scattered at low scores. The two take turns ROUNDS times, so the machine's load hits both alike;
medians and their ratio are printed.

    python benchmarks/bench_evaluate_analysis.py [--images 500] [--queries 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

import numpy as np
from pycocotools.coco import COCO

from detr.engine.evaluate import coco_box_stats
from detrdoctor.commands.evaluate import analyse_detections

SECTIONS = {"per_class", "pr", "confusion", "errors"}


def synthetic(images: int, objects: int, classes: int, queries: int, seed: int = 0) -> tuple[COCO, np.ndarray]:
    rng = np.random.default_rng(seed)
    annotations, rows = [], []
    for image_id in range(1, images + 1):
        boxes = np.column_stack([rng.uniform(0, 500, (objects, 2)), rng.uniform(20, 120, (objects, 2))])
        labels = rng.integers(1, classes + 1, objects)
        for box, label in zip(boxes, labels):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": box.tolist(),
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
            if rng.random() < 0.8:  # found, box jittered, now and then under another label
                jitter = box + rng.normal(0, 0.1, 4) * np.repeat(box[2:], 2)
                wrong = rng.random() < 0.1
                rows.append([image_id, *jitter, rng.uniform(0.3, 1), rng.integers(1, classes + 1) if wrong else label])
        for _ in range(queries - objects):  # the spare queries
            rows.append([image_id, *rng.uniform(0, 500, 2), *rng.uniform(20, 120, 2), rng.uniform(0, 0.3), 1])
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "width": 640, "height": 640} for i in range(1, images + 1)],
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in range(1, classes + 1)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, np.array(rows, dtype=np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--objects", type=int, default=7)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    coco, detections = synthetic(args.images, args.objects, args.classes, args.queries)
    image_ids = sorted(coco.getImgIds())
    names = {c: str(c) for c in coco.cats}
    headline, analysed = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        stats = coco_box_stats(coco, detections, image_ids)
        headline.append(time.perf_counter() - start)
        start = time.perf_counter()
        analysis = analyse_detections(coco, detections, image_ids, names, SECTIONS, None)
        analysed.append(time.perf_counter() - start)
    assert analysis["stats"] == stats
    a, b = statistics.median(headline), statistics.median(analysed)
    print(f"{len(image_ids)} images, {len(detections)} detections, AP50 {stats['AP50']:.3f}")
    print({k: (v["count"], round(v["dAP50"], 3)) for k, v in analysis["errors"].items()})
    print(f"headline COCOeval {a:.1f} s, with every section {b:.1f} s (median of {args.rounds}): ×{b / a:.2f}")


if __name__ == "__main__":
    main()
