"""Reading the native formats and converting them to COCO: seconds per 1000 images.

    python benchmarks/bench_native_formats.py [--images 2000] [--repeats 3]

Writes each format's test export (tests/format_exports.py: small JPEGs, two objects each) with `--images`
training images, then times the first read of both splits (`load_coco`, uncached: label files, XML or JSON
parsed and every image header opened where the format has no sizes) and `convert` with hard links. Prints the
medians of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

import format_exports  # noqa: E402

from detr.config import DataConfig  # noqa: E402
from detr.data import annotations  # noqa: E402
from detr.data.export import export_coco  # noqa: E402
from detr.data.formats import cvat_xml, via, voc, yolo  # noqa: E402
from detr.data.layout import find_layout  # noqa: E402

EXPORTS = {
    "yolo": lambda root, n: format_exports.yolo_dataset(root, train=n, val=max(1, n // 10)),
    "voc": lambda root, n: format_exports.voc_devkit(root, train=n, val=max(1, n // 10)),
    "cvat-xml": lambda root, n: format_exports.cvat_xml(root, count=n),
    "via": lambda root, n: format_exports.via_project(root, train=n, val=max(1, n // 10)),
}


def clear_caches() -> None:
    annotations._load_native.cache_clear()
    for cache in (yolo._parse_yaml, voc._read_folder, cvat_xml._parse, via._load):
        cache.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kind, export in EXPORTS.items():
            root = Path(tmp) / kind
            export(root, args.images)
            cfg = DataConfig(coco_path=str(root))
            reads, converts = [], []
            for r in range(args.repeats):
                clear_caches()
                start = time.perf_counter()
                layout = find_layout(cfg)
                sources = {(src.annotations, src.subset): src for src in (layout.train, layout.val)}
                count = sum(len(annotations.load_coco(src).imgs) for src in sources.values())  # held out: once
                reads.append(time.perf_counter() - start)
                start = time.perf_counter()
                export_coco(cfg, Path(tmp) / f"{kind}-coco-{r}")
                converts.append(time.perf_counter() - start)
            read, convert = statistics.median(reads), statistics.median(converts)
            print(
                f"{kind:9s} {count} images: read {read:.2f} s ({1000 * read / count:.2f} s per 1000), "
                f"convert (cached read + links) {convert:.2f} s ({1000 * convert / count:.2f} s per 1000)"
            )


if __name__ == "__main__":
    main()
