"""The dataset doctor: one judgement of a dataset against the model that will train on it.

Collect the facts (the annotation files of both splits and the headers of a sample of images), then judge
them with plain rules, as env-check does. Each check is a `detrdoctor.verdict.Check` with two details: `count`
(how many annotations, images or categories are concerned; None when not counted) and `example` (a file name
or annotation id). Used by `env-check --coco-path`, by `train` before the first
step (fail rows stop it, warn rows become `data_check` events) and by `triage`.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from detrdoctor.verdict import Check

if TYPE_CHECKING:
    from detr.config import RunConfig
    from detr.data.split import SplitData
    from detr.data.targets import BoxFates

QUERIES_CLOSE = 0.8  # an image with more objects than this share of num_queries leaves few spare queries
XYXY_FAIL, XYXY_WARN = 0.25, 0.1  # shares of the boxes that fit the image only read as [x1, y1, x2, y2]
SIZE_FAIL = 0.5  # share of the sampled images whose real size differs from the JSON's
EMPTY_WARN = 0.3  # share of training images without a usable box
SMALL_PX = 1.0  # a box side below this many pixels after the smallest training resize does not survive it
SMALL_WARN = 0.01
CROWD_WARN = 0.1
BORDER_SLACK = 1.02  # rounding in exports puts boxes a pixel or two past the border
OUTSIDE_WARN, OUTSIDE_FAIL = 0.01, 0.25  # shares of the boxes wholly outside their image (training drops them)
SHOWN_IMAGES = 3  # file names quoted in a finding


@dataclass
class SplitFacts:
    """One split as the doctor sees it: the split training reads (`detr.data.split.SplitData`) and a sample
    of image headers."""

    data: SplitData
    headers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def annotations_file(self) -> Path:
        return self.data.source.annotations

    @property
    def image_dir(self) -> Path:
        return self.data.source.images

    @property
    def images(self) -> list[dict[str, Any]]:
        return self.data.images

    @property
    def annotations(self) -> list[dict[str, Any]]:
        return self.data.annotations

    @property
    def categories(self) -> list[dict[str, Any]]:
        return self.data.categories

    @functools.cached_property
    def boxes(self) -> Boxes:
        return Boxes.of(self)


def diagnose_dataset(cfg: RunConfig, sample_images: int = 32, read_timeout_s: float | None = None) -> list[Check]:
    """The doctor's checks of `cfg`'s training (and validation) data against `cfg.model`.

    DataError when the dataset is missing or an annotation file it trains or evaluates on is not usable;
    messy contents are findings, never exceptions. Image headers are read with a time limit per file.
    """
    train, val = collect_splits(cfg, sample_images, read_timeout_s)
    return judge_dataset(train, val, cfg)


def collect_splits(
    cfg: RunConfig, sample_images: int, read_timeout_s: float | None = None
) -> tuple[SplitFacts, SplitFacts | None]:
    """Both splits' facts, read as training reads them; val is None when training does not evaluate and
    its files are not usable (with eval_every > 0 they must be: training would stop at its first evaluation)."""
    from detr.data.bounded import READ_TIMEOUT_S
    from detr.data.split import load_split, training_objects_limit
    from detr.errors import DataError

    timeout = READ_TIMEOUT_S if read_timeout_s is None else read_timeout_s
    limit = training_objects_limit(cfg.model.num_queries, cfg.data.skip_images_over_queries)
    train = SplitFacts(load_split(cfg.data, "train", limit))
    train.headers = read_headers(train.image_dir, train.images, sample_images, timeout)
    try:
        val = SplitFacts(load_split(cfg.data, "val"))
    except DataError:
        if cfg.train.eval_every > 0:
            raise
        return train, None
    val.headers = read_headers(val.image_dir, val.images, sample_images, timeout)
    return train, val


def read_headers(
    image_dir: Path, images: Sequence[dict[str, Any]], sample: int, timeout_s: float
) -> list[dict[str, Any]]:
    """Size and EXIF orientation of up to `sample` images spread evenly over the list (headers only).

    Each read has `timeout_s`: a file that does not answer gets "timeout" and ends the sample.
    """
    from detr.data.bounded import TimedOut, read_each

    if not images or sample <= 0:
        return []
    step = max(1, len(images) // sample)
    picked = [str(img["file_name"]) for img in list(images)[::step][:sample]]
    json_size = {str(img["file_name"]): (img.get("width"), img.get("height")) for img in images}
    headers = []
    for name, result in read_each(picked, lambda n: _header(image_dir / n), timeout_s):
        header: dict[str, Any] = {"file_name": name, "json": json_size[name]}
        if isinstance(result, TimedOut):
            header["timeout"] = result.seconds
        elif isinstance(result, BaseException):  # an unreadable file is a finding of data.readable
            header["error"] = f"{type(result).__name__}: {result}"
        else:
            header["real"], header["orientation"] = result
        headers.append(header)
    return headers


def _header(path: Path) -> tuple[tuple[int, int], int]:
    from PIL import Image

    from detr.data.decode import ORIENTATION_TAG

    with Image.open(path) as im:
        return im.size, int(im.getexif().get(ORIENTATION_TAG, 1) or 1)


# ---------------------------------------------------------------- the facts, per annotation


@dataclass
class Boxes:
    """The split's annotations as arrays, with each one's fate in training (`detr.data.targets.box_fates`)."""

    bbox: np.ndarray  # float64 [n, 4] x, y, w, h
    image: np.ndarray  # int64 [n]: the index of the annotation's image in `SplitFacts.images`
    image_size: np.ndarray  # float64 [n, 2] the image's width, height from the JSON (nan when not given)
    category: np.ndarray  # int64 [n]: the index of its category in the categories list, -1 when not there
    crowd: np.ndarray  # bool [n]
    zero: np.ndarray  # bool [n]: width or height ≤ 0
    fates: BoxFates

    @classmethod
    def of(cls, split: SplitFacts) -> Boxes:
        from detr.data.targets import image_sizes

        anns, n = split.annotations, len(split.annotations)  # validated: every bbox is four numbers
        fates, image = split.data.fates
        categories = {c["id"]: k for k, c in enumerate(split.categories)}
        bbox = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        category = np.fromiter((categories.get(a["category_id"], -1) for a in anns), dtype=np.int64, count=n)
        return cls(
            bbox,
            image,
            image_sizes(split.images)[image],
            category,
            fates.crowd,
            (bbox[:, 2] <= 0) | (bbox[:, 3] <= 0),
            fates,
        )

    @property
    def known(self) -> np.ndarray:
        return self.category >= 0

    @property
    def usable(self) -> np.ndarray:
        """What training keeps: the same mask the `data_summary` counts come from."""
        return self.fates.usable


def _size(img: dict[str, Any]) -> bool:
    w, h = img.get("width"), img.get("height")
    return _number(w) and _number(h) and w > 0 and h > 0


def _number(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def row(id: str, status: str, *texts: str, count: int | None = None, example: str = "", **named: str) -> Check:
    """A check (texts: found, expected, fix, message) with the doctor's details, always present: how many are
    concerned (None: not counted) and an example."""
    return Check(id, status, *texts, count=count, example=example, **named)


def _share(n: int, total: int) -> str:
    return f"{n} of {total} ({n / total:.0%})" if total else f"{n}"


# ---------------------------------------------------------------- rules


def rule_num_classes(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> Check:
    from detr.config import AUTO

    ids: list[Any] = [c.get("id") for c in train.categories]  # JSON values, checked next
    bad = [i for i in ids if not _number(i) or isinstance(i, float) or i < 0]
    if bad:
        return row(
            "data.num_classes",
            "fail",
            f"category id {bad[0]!r}",
            "integer ids ≥ 0",
            fix="renumber the categories 0, 1, 2, ... in the annotation files",
            message=f"{train.annotations_file}: the model's labels are the category ids",
            count=len(bad),
            example=str(bad[0]),
        )
    if not ids:
        return row(
            "data.num_classes",
            "fail",
            "no categories",
            "at least one category",
            message=f"{train.annotations_file} lists no categories",
            count=0,
        )
    largest = max(ids)
    name = next((str(c.get("name", "")) for c in train.categories if c.get("id") == largest), "")
    current = cfg.model.num_classes
    if current == AUTO:
        return row(
            "data.num_classes",
            "pass",
            f"auto → {largest + 1} (largest id {largest})",
            "ids < num_classes",
            count=len(ids),
            example=name,
        )
    if largest >= current:
        return row(
            "data.num_classes",
            "fail",
            f"largest id {largest}, num_classes = {current}",
            f"num_classes ≥ {largest + 1}",
            fix=f'set num_classes = {largest + 1} (or "auto") in the [model] section of the profile',
            message=f"{train.annotations_file}: id {largest} ({name}) indexes past the classifier"
            + (" (it would become 'no object')" if largest == current else ""),
            count=sum(1 for i in ids if i >= current),
            example=name,
        )
    return row(
        "data.num_classes",
        "pass",
        f"largest id {largest}, num_classes = {current}",
        "ids < num_classes",
        count=len(ids),
        example=name,
    )


def _objects_per_image(split: SplitFacts) -> np.ndarray:
    boxes = split.boxes
    return np.bincount(boxes.image[boxes.usable], minlength=len(split.images))


def _named(names_counts: Sequence[tuple[str, int]]) -> str:
    shown = ", ".join(f"{name} ({n})" for name, n in names_counts[:SHOWN_IMAGES])
    return shown + (f" and {len(names_counts) - SHOWN_IMAGES} more" if len(names_counts) > SHOWN_IMAGES else "")


def rule_num_queries(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> Check:
    queries = cfg.model.num_queries
    counts = [(split, _objects_per_image(split)) for split in ((train, val) if val is not None else (train,))]
    skipped = [(s.file_name, s.objects) for s in train.data.skipped]
    if not any(c.sum() for _, c in counts) and not skipped:
        return row("data.num_queries", "skip", message="no usable boxes")
    split, per_image = max(counts, key=lambda sc: sc[1].max(initial=0))
    most, worst = int(per_image.max(initial=0)), str(split.images[int(per_image.argmax())]["file_name"])
    if skipped and max(n for _, n in skipped) >= most:
        worst, most = max(skipped, key=lambda fn: fn[1])
    found = f"up to {most} objects per image ({worst})"
    expected = f"≤ num_queries = {queries}"

    def over(s: SplitFacts, c: np.ndarray) -> list[tuple[str, int]]:
        return sorted(
            ((str(s.images[k]["file_name"]), int(c[k])) for k in np.flatnonzero(c > queries)), key=lambda x: -x[1]
        )

    train_over = over(*counts[0])
    if train_over:
        return row(
            "data.num_queries",
            "fail",
            found,
            expected,
            fix=f"set num_queries ≥ {most} in the [model] section (the paper: 100 for COCO's up to ~60), or set "
            f"skip_images_over_queries = true in [data] to train without these {len(train_over)} images",
            message=f"DETR outputs at most {queries} boxes: {len(train_over)} training images hold more objects "
            f"than that: {_named(train_over)}",
            count=len(train_over),
            example=worst,
        )
    val_over = over(*counts[1]) if len(counts) > 1 else []
    if skipped or val_over:
        parts = [f"{len(skipped)} training images left out: {_named(skipped)}"] if skipped else []
        if val_over:
            parts.append(
                f"{len(val_over)} val images hold more, of which at most {queries} can be found: {_named(val_over)}"
            )
        return row(
            "data.num_queries",
            "warn",
            found,
            expected,
            fix=f"set num_queries ≥ {most} in the [model] section to train and score every object",
            message=f"more objects than num_queries = {queries} ([data] skip_images_over_queries): " + "; ".join(parts),
            count=len(skipped) + len(val_over),
            example=worst,
        )
    close = sum(int((c > QUERIES_CLOSE * queries).sum()) for _, c in counts)
    if close:
        return row(
            "data.num_queries",
            "warn",
            found,
            expected,
            fix=f"consider num_queries ≥ {int(most / QUERIES_CLOSE) + 1} in the [model] section",
            message=f"{close} images use over {QUERIES_CLOSE:.0%} of the queries: few spare ones to match",
            count=close,
            example=worst,
        )
    return row("data.num_queries", "pass", found, expected, count=0)


def rule_box_format(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> Check:
    judged = xyxy = 0
    example = ""
    for split in (train, val) if val is not None else (train,):
        boxes = split.boxes
        ok = ~boxes.zero & ~np.isnan(boxes.image_size[:, 0])
        (x, y, w, h), (iw, ih) = boxes.bbox.T, boxes.image_size.T * BORDER_SLACK
        outside = ok & ((x + w > iw) | (y + h > ih))
        # As [x1, y1, x2, y2] the numbers make a box inside the image: the likelier reading.
        fits_xyxy = outside & (w > x) & (h > y) & (w <= iw) & (h <= ih)
        judged, xyxy = judged + int(ok.sum()), xyxy + int(fits_xyxy.sum())
        if fits_xyxy.any() and not example:
            ann = split.annotations[int(fits_xyxy.argmax())]
            example = f"annotation {ann.get('id', '?')} in {split.annotations_file.name}"
    if not judged:
        return row("data.box_format", "skip", message="no boxes with an image size in the JSON to judge")
    share = xyxy / judged
    found = f"{_share(xyxy, judged)} boxes fit only as [x1, y1, x2, y2]"
    expected = "[x, y, width, height]"
    fix = "convert the boxes: width = x2 - x1, height = y2 - y1 (COCO's bbox is [x, y, w, h])"
    message = "read as COCO's [x, y, w, h] they run past the image border and get clamped"
    if share >= XYXY_FAIL:
        return row("data.box_format", "fail", found, expected, fix, message, count=xyxy, example=example)
    if share >= XYXY_WARN:
        return row("data.box_format", "warn", found, expected, fix, message, count=xyxy, example=example)
    clamped = int(sum(int(s.boxes.fates.clamped.sum()) for s in (train, val) if s is not None))
    return row(
        "data.box_format",
        "pass",
        f"{clamped} of {judged} cut at the border (clamped)",
        expected,
        count=xyxy,
        example=example,
    )


def _rotated_matches(header: dict[str, Any]) -> bool:
    """The JSON's size is the image turned upright by its EXIF orientation (the annotator saw it rotated)."""
    from detr.data.decode import ROTATING

    (jw, jh), (rw, rh) = header["json"], header["real"]
    return header.get("orientation") in ROTATING and (jw, jh) == (rh, rw) != (rw, rh)


def rule_image_size(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> Check:
    headers = [h for s in (train, val) if s is not None for h in s.headers if "real" in h]
    judged = [h for h in headers if all(_number(v) and v > 0 for v in h["json"])]
    if not judged:
        missing = len(headers) - len(judged)
        return row(
            "data.image_size",
            "skip",
            message=f"{missing} sampled images have no width/height in the JSON"
            if missing
            else "no image could be sampled",
        )
    wrong = [h for h in judged if tuple(h["json"]) != tuple(h["real"]) and not _rotated_matches(h)]
    found = f"{_share(len(wrong), len(judged))} sampled images differ"
    expected = "JSON size = file size"
    if not wrong:
        return row("data.image_size", "pass", f"{len(judged)} sampled images agree", expected, count=0)
    first = wrong[0]
    example = (
        f"{first['file_name']} ({first['json'][0]}×{first['json'][1]} in the JSON, {first['real'][0]}×"
        f"{first['real'][1]} on disk)"
    )
    status = "fail" if len(wrong) / len(judged) >= SIZE_FAIL else "warn"
    return row(
        "data.image_size",
        status,
        found,
        expected,
        fix="re-export the annotations with the images as they are now (were they resized after labelling?)",
        message="boxes are in the JSON's pixel coordinates: on a resized image they point elsewhere",
        count=len(wrong),
        example=example,
    )


def rule_exif(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> Check:
    headers = [h for s in (train, val) if s is not None for h in s.headers if "real" in h]
    from detr.data.decode import ROTATING

    oriented = [h for h in headers if h.get("orientation", 1) != 1]
    expected = "labels match decoding"
    if not oriented:
        return row("data.exif", "pass", f"none in {len(headers)} sampled images", expected, count=0)
    upright = [h for h in oriented if _rotated_matches(h)]
    unknown = [
        h
        for h in oriented
        if h not in upright and (h.get("orientation") not in ROTATING or not all(_number(v) for v in h["json"]))
    ]
    found = f"{_share(len(oriented), len(headers))} sampled images carry an EXIF orientation"
    if unknown:
        return row(
            "data.exif",
            "warn",
            found,
            expected,
            fix="re-save the images upright (e.g. PIL.ImageOps.exif_transpose) and re-export the labels",
            message=f"{len(unknown)} of them flip or rotate without changing the size: the JSON cannot "
            "tell which way they were labelled; they are decoded as stored",
            count=len(unknown),
            example=unknown[0]["file_name"],
        )
    how = f"{len(upright)} labelled upright: decoded upright" if upright else "labelled as stored: decoded as stored"
    return row("data.exif", "pass", found, expected, message=how, count=len(oriented), example=oriented[0]["file_name"])


def rule_duplicates(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> Check:
    problems: list[str] = []
    count, example = 0, ""
    for split in (train, val) if val is not None else (train,):
        boxes = split.boxes
        keys = np.column_stack([boxes.image, boxes.category, boxes.bbox])
        order = np.lexsort(keys.T[::-1])  # equal keys end up side by side, the earlier annotation first
        same = np.all(keys[order[1:]] == keys[order[:-1]], axis=1)
        repeated = int(same.sum())
        names = Counter(str(img["file_name"]) for img in split.images)
        listed_twice = [n for n, c in names.items() if c > 1]
        if repeated:
            pair = int(same.argmax())  # sorted positions pair and pair + 1 hold the first repeat
            earlier, later = (split.annotations[int(order[k])].get("id", "?") for k in (pair, pair + 1))
            problems.append(f"{split.name}: {repeated} repeated boxes")
            count, example = count + repeated, example or f"annotation {later} repeats {earlier} ({split.name})"
        if listed_twice:
            extra = sum(names[n] - 1 for n in listed_twice)
            problems.append(f"{split.name}: {extra} images listed again")
            count, example = count + extra, example or f"{listed_twice[0]} ({split.name})"
    if val is not None and val.annotations_file != train.annotations_file:
        shared = sorted(set(_paths(train)) & set(_paths(val)))
        if shared:
            problems.append(f"{len(shared)} images in both train and val")
            count, example = count + len(shared), example or f"{Path(shared[0]).name} in train and val"
    expected = "no repeats"
    if not problems:
        return row("data.duplicates", "pass", "none", expected, count=0)
    return row(
        "data.duplicates",
        "warn",
        "; ".join(problems),
        expected,
        fix="de-duplicate the annotation files, and keep each image in one split only",
        message="a repeated box is two targets for one object (DETR learns to predict duplicates); "
        "an image in both splits inflates AP",
        count=count,
        example=example,
    )


def _annotation(split: SplitFacts, mask: np.ndarray) -> str:
    """ "annotation <id>" of the first annotation in `mask`, or ""."""
    return f"annotation {split.annotations[int(mask.argmax())].get('id', '?')}" if mask.any() else ""


def _paths(split: SplitFacts) -> list[str]:
    """The image files of a split as path strings (joined as text: pathlib costs a second per 100k images)."""
    folder = os.path.join(split.image_dir, "")
    return [os.path.normpath(folder + str(img["file_name"])) for img in split.images]


def rule_empty_images(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> Check:
    boxes = train.boxes
    has_boxes = np.zeros(len(train.images), dtype=bool)
    has_boxes[boxes.image[boxes.usable]] = True
    empty, total = int((~has_boxes).sum()), len(train.images)
    found = f"{_share(empty, total)} train images without boxes"
    expected = f"≤ {EMPTY_WARN:.0%}"
    example = str(train.images[int((~has_boxes).argmax())]["file_name"]) if empty else ""
    if total and empty == total:
        return row(
            "data.empty_images",
            "fail",
            found,
            "some boxes",
            fix="check the annotation file: every box is crowd, zero-size or of an unknown category",
            message="there is nothing to learn",
            count=empty,
            example=example,
        )
    if total and empty / total > EMPTY_WARN:
        return row(
            "data.empty_images",
            "warn",
            found,
            expected,
            fix="drop most images without objects, or keep them on purpose (they teach 'no object')",
            message="steps on empty images only push the queries towards 'no object'",
            count=empty,
            example=example,
        )
    return row("data.empty_images", "pass", found, expected, count=empty, example=example)


def resize_factors(image_sizes: np.ndarray, scale: int, max_size: int | None) -> np.ndarray:
    """[n, 2] (x, y) factors of the training resize to `scale` for images of [n, 2] width, height (nan: unknown)."""
    from detr.data.shapes import resized_size

    unique, inverse = np.unique(np.nan_to_num(image_sizes), axis=0, return_inverse=True)
    per_size = np.full((len(unique), 2), np.nan)
    for k, (w, h) in enumerate(unique):
        if w > 0 and h > 0:
            rh, rw = resized_size(int(h), int(w), scale, max_size)
            per_size[k] = (rw / w, rh / h)
    return per_size[inverse.reshape(-1)]


def rule_small_boxes(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> Check:
    boxes = train.boxes
    smallest = min(cfg.data.train_scales)
    kept = ~boxes.crowd & boxes.known
    zero = kept & boxes.zero
    factors = resize_factors(boxes.image_size, smallest, cfg.data.max_size or None)
    with np.errstate(invalid="ignore"):
        tiny = (
            kept
            & ~boxes.zero
            & (np.minimum(boxes.bbox[:, 2] * factors[:, 0], boxes.bbox[:, 3] * factors[:, 1]) < SMALL_PX)
        )
    lost, total = zero | tiny, int(kept.sum())
    found = f"{_share(int(lost.sum()), total)} boxes" + (f" ({int(zero.sum())} of zero size)" if zero.any() else "")
    expected = f"≥ {SMALL_PX:g} px at scale {smallest}"
    example = _annotation(train, lost)
    if total and lost.sum() / total >= SMALL_WARN:
        fixes = ["remove the zero-size boxes (training drops them)"] if zero.any() else []
        if tiny.any():
            fixes.append("raise train_scales / max_size in [data], or drop boxes not visible at that size")
        return row(
            "data.small_boxes",
            "warn",
            found,
            expected,
            fix="; ".join(fixes),
            message="a box under a pixel after the resize is a target the model cannot see; a zero-size "
            "box is a labelling slip",
            count=int(lost.sum()),
            example=example,
        )
    return row("data.small_boxes", "pass", found, expected, count=int(lost.sum()), example=example)


def rule_crowd(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> Check:
    crowd, total = int(train.boxes.crowd.sum()), len(train.annotations)
    found = f"{_share(crowd, total)} annotations"
    expected = f"≤ {CROWD_WARN:.0%}"
    example = _annotation(train, train.boxes.crowd)
    if total and crowd / total > CROWD_WARN:
        return row(
            "data.crowd",
            "warn",
            found,
            expected,
            fix="set iscrowd = 0 on annotations that are single objects (many tools export 1 for polygons)",
            message="DETR, like the official code, drops crowd annotations from the training targets",
            count=crowd,
            example=example,
        )
    return row("data.crowd", "pass", found, expected, count=crowd, example=example)


def rule_categories(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> Check:
    names = {c.get("id"): str(c.get("name", "")) for c in train.categories}
    used = Counter(a.get("category_id") for a in train.annotations if not a.get("iscrowd", 0))
    supercategories = {str(c.get("supercategory", "")) for c in train.categories}
    unused = [i for i in names if not used.get(i)]
    # Roboflow lists the dataset itself as category 0, the supercategory of all the others, with no boxes.
    parents = [i for i in unused if names[i] in supercategories and names[i]]
    unused = [i for i in unused if i not in parents]
    unknown = [a for a in train.annotations if a.get("category_id") not in names]
    problems: list[str] = []
    example, count = "", 0
    if unknown:
        problems.append(f"{len(unknown)} annotations of ids not in the categories (dropped)")
        example, count = f"annotation {unknown[0].get('id', '?')}", count + len(unknown)
    if unused:
        problems.append(f"{len(unused)} categories without boxes in train ({', '.join(names[i] for i in unused[:3])})")
        example, count = example or names[unused[0]], count + len(unused)
    if val is not None:
        val_names = {c.get("id"): str(c.get("name", "")) for c in val.categories}
        if val_names != names:
            problems.append("train and val list different categories")
            count += 1
        val_used = {a.get("category_id") for a in val.annotations if not a.get("iscrowd", 0)}
        unseen = sorted((i for i in val_used if not used.get(i)), key=str)
        if unseen:
            problems.append(f"{len(unseen)} categories in val but not in train ({', '.join(map(str, unseen[:3]))})")
            example, count = example or val_names.get(unseen[0], str(unseen[0])), count + len(unseen)
    expected = "all trained and scored"
    parent_note = (
        f"{len(parents)} parent category without boxes ({', '.join(f'{i} {names[i]}' for i in parents)})"
        if parents
        else ""
    )
    if not problems:
        found = f"{len(names) - len(parents)} categories with boxes" + (f"; {parent_note}" if parent_note else "")
        return row(
            "data.categories",
            "pass",
            found,
            expected,
            message="a parent category never gets boxes: harmless, its id just stays unused" if parents else "",
            count=0,
        )
    return row(
        "data.categories",
        "warn",
        "; ".join(problems),
        expected,
        fix="export train and val with the same category list, and give every category training boxes",
        message="a category without training boxes is never predicted; one only in val scores 0 AP"
        + (f" ({parent_note}: harmless)" if parent_note else ""),
        count=count,
        example=example,
    )


def rule_pixels(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> Check:
    """Images over [data] max_image_pixels are never decoded: by the JSON's sizes (every image) and the
    sampled headers (the real size)."""
    limit = cfg.data.max_image_pixels
    expected = f"at most {limit:,} pixels ([data] max_image_pixels)" if limit > 0 else "no limit"
    if limit <= 0:
        return row("data.pixels", "pass", "no limit set", expected, count=0)
    sizes = [
        (str(img.get("file_name")), img.get("width"), img.get("height"))
        for s in (train, val)
        if s is not None
        for img in s.images
    ]
    sizes += [(h["file_name"], *h["real"]) for s in (train, val) if s is not None for h in s.headers if "real" in h]
    headers = [h for s in (train, val) if s is not None for h in s.headers]
    bombs = {h["file_name"] for h in headers if "bomb" in h.get("error", "").lower()}  # PIL refused even the header
    over = sorted({name for name, w, h in sizes if _number(w) and _number(h) and w * h > limit} | bombs)
    if not over:
        return row("data.pixels", "pass", f"every image within {limit:,} pixels", expected, count=0)
    return row(
        "data.pixels",
        "fail",
        f"{len(over)} images larger",
        expected,
        fix="shrink those images (and their boxes), or raise [data] max_image_pixels if they are real",
        message="they would be skipped as unreadable, never decoded: one can take gigabytes of memory",
        count=len(over),
        example=over[0],
    )


def rule_dropped_boxes(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> Check:
    """What training drops, counted by the function `data_summary` comes from (its counts are the row's `counts`)."""
    summary = train.data.summary()
    fates = train.boxes.fates
    outside, boxes = summary["outside_image"], summary["annotations"] - summary["crowd"]
    dropped = outside + summary["degenerate"] + summary["unknown_category"] + summary["unknown_image"]
    found = (
        f"{_share(dropped, boxes)} train boxes dropped: {outside} wholly outside their image, "
        f"{summary['degenerate']} of zero size, {summary['unknown_category']} of unknown categories, "
        f"{summary['unknown_image']} of unlisted images"
    )
    expected = f"< {OUTSIDE_WARN:.0%} outside the image"
    counts = {**summary, "skipped_images": len(train.data.skipped)}
    example = ""
    if fates.outside.any():
        k = int(fates.outside.argmax())
        ann, image = train.annotations[k], train.images[int(train.boxes.image[k])]
        example = (
            f"annotation {ann.get('id', '?')}: bbox {ann['bbox']} in {image['file_name']} "
            f"({image.get('width')}×{image.get('height')})"
        )
    share = outside / boxes if boxes else 0.0
    status = "fail" if share >= OUTSIDE_FAIL else "warn" if share >= OUTSIDE_WARN else "pass"
    result = row(
        "data.dropped_boxes",
        status,
        found,
        expected,
        fix="check the images' width/height in the annotation file and the box coordinates (pixels, [x, y, w, h])"
        if status != "pass"
        else "",
        message="training drops boxes that lie wholly outside the image's declared size" if status != "pass" else "",
        count=dropped,
        example=example,
    )
    result["counts"] = counts
    return result


def rule_readable(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> Check:
    headers = [(s.name, h) for s in (train, val) if s is not None for h in s.headers]
    stuck = [(n, h) for n, h in headers if "timeout" in h]
    broken = [(n, h) for n, h in headers if "error" in h]
    expected = "sampled headers read"
    if stuck:
        name, h = stuck[0]
        folder = train.image_dir if name == "train" else val.image_dir if val is not None else train.image_dir
        path = folder / h["file_name"]
        return row(
            "data.readable",
            "fail",
            f"{path} did not answer in {h['timeout']:g} s",
            expected,
            fix="check the file and its storage (a hung network mount? a named pipe?), or drop it from the annotations",
            message="training would wait on it forever",
            count=len(stuck),
            example=str(path),
        )
    if not headers:
        return row("data.readable", "skip", message="no images to sample")
    found = f"{len(headers) - len(broken)} of {len(headers)} sampled headers read"
    if broken:
        name, h = broken[0]
        status = "fail" if len(broken) == len(headers) else "warn"
        return row(
            "data.readable",
            status,
            found,
            expected,
            fix="re-copy or re-encode the unreadable images",
            message=f"{name}: {h['file_name']}: {h['error'].splitlines()[0] if h['error'] else 'unreadable'}; training "
            "replaces unreadable images (up to [data] max_corrupt_fraction)",
            count=len(broken),
            example=h["file_name"],
        )
    return row("data.readable", "pass", found, expected, count=0)


RULES: tuple[Callable[[SplitFacts, SplitFacts | None, Any], Check], ...] = (
    rule_num_classes,
    rule_num_queries,
    rule_box_format,
    rule_image_size,
    rule_pixels,
    rule_exif,
    rule_duplicates,
    rule_empty_images,
    rule_small_boxes,
    rule_crowd,
    rule_categories,
    rule_dropped_boxes,
    rule_readable,
)


def judge_dataset(train: SplitFacts, val: SplitFacts | None, cfg: RunConfig) -> list[Check]:
    """Every rule's row, in a fixed order."""
    return [rule(train, val, cfg) for rule in RULES]
