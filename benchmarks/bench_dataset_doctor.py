"""The dataset doctor on a COCO-sized annotation file: how long `train` and `env-check` spend judging the data.

    python benchmarks/bench_dataset_doctor.py [--images 118287] [--annotations 860001] [--repeats 3]

Writes a random COCO-format file of that size (train; val is 5000 images) into a temporary folder without
image files (the sampled header reads then fail fast, so this times the judgement of the annotations),
parses it once (`load_coco`, cached as in `train`) and prints the parse time and the doctor's median time.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from detr.data.annotations import load_coco
from detrdoctor.datadoctor.doctor import diagnose_dataset
from detrdoctor.runconfig import load_run_config


def write_split(path: Path, images: int, annotations: int, rng: random.Random) -> None:
    categories = [{"id": i, "name": f"c{i}", "supercategory": "thing"} for i in range(1, 91)]
    data = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in range(1, images + 1)],
        "annotations": [
            {
                "id": k,
                "image_id": rng.randint(1, images),
                "category_id": rng.randint(1, 90),
                "bbox": [rng.uniform(0, 500), rng.uniform(0, 400), rng.uniform(1, 140), rng.uniform(1, 80)],
                "iscrowd": int(rng.random() < 0.01),
                "area": 1.0,
            }
            for k in range(1, annotations + 1)
        ],
        "categories": categories,
    }
    path.write_text(json.dumps(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=118_287)
    parser.add_argument("--annotations", type=int, default=860_001)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="bench-doctor-") as root:
        for folder in ("annotations", "train2017", "val2017"):
            (Path(root) / folder).mkdir()
        write_split(Path(root) / "annotations" / "instances_train2017.json", args.images, args.annotations, rng)
        write_split(Path(root) / "annotations" / "instances_val2017.json", 5000, 36_781, rng)
        cfg = load_run_config("detr-r50", root, {})
        start = time.perf_counter()
        for split in ("train2017", "val2017"):
            load_coco(Path(root) / "annotations" / f"instances_{split}.json")
        parse = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            diagnose_dataset(cfg)
            times.append(time.perf_counter() - start)
    print(
        f"{args.images} images, {args.annotations} annotations: parse {parse:.1f} s, "
        f"doctor median {statistics.median(times):.1f} s ({', '.join(f'{t:.1f}' for t in times)})"
    )


if __name__ == "__main__":
    main()
