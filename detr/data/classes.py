"""The classifier's size from the data: the model's labels ARE the dataset's category ids.

DETR predicts `num_classes + 1` logits, the last being "no object", and uses the raw category ids as
labels; so every id must be below `num_classes`. An id equal to it would silently become "no object",
one above it indexes past the classifier (a raw IndexError on the CPU, a device-side assert on a GPU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detr.config import AUTO
from detr.errors import DataError

if TYPE_CHECKING:
    from detr.config import RunConfig


def category_ids(categories: list[dict[str, Any]], source: str) -> list[int]:
    """The ids of a COCO `categories` list; DataError naming the file when one is not an integer ≥ 0."""
    ids = [c["id"] for c in categories]
    bad = next((i for i in ids if isinstance(i, bool) or not isinstance(i, int) or i < 0), None)
    if bad is not None:
        raise DataError(f"{source}: category id {bad!r} is not an integer ≥ 0; renumber the categories 0, 1, 2, ...")
    if not ids:
        raise DataError(f"{source}: no categories: there is nothing to learn")
    return ids


def needed_num_classes(cfg: RunConfig) -> tuple[int, str]:
    """(largest category id of the training annotations + 1, that file): the smallest num_classes that fits."""
    from detr.data.annotations import load_coco
    from detr.data.layout import find_layout

    source = find_layout(cfg.data).train
    ann_file = source.annotations
    ids = category_ids(load_coco(source).dataset["categories"], str(ann_file))
    return max(ids) + 1, str(ann_file)


def resolve_num_classes(cfg: RunConfig) -> int:
    """Set `cfg.model.num_classes` to an int before any model is built, and return it.

    "auto" becomes the largest training category id + 1 (91 on COCO: the paper's model). An explicit
    value the data does not fit stops here with one line naming the file, the largest id and the fix.
    """
    needed, ann_file = needed_num_classes(cfg)
    current = cfg.model.num_classes
    if current == AUTO:
        cfg.model.num_classes = current = needed
    elif not isinstance(current, int) or current < needed:
        raise DataError(
            f"{ann_file}: the largest category id is {needed - 1}, but num_classes = {current}: "
            f'set num_classes = {needed} (or "auto") in the [model] section of the profile'
        )
    return current
