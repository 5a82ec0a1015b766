"""Datasets in the native formats (YOLO, Pascal VOC, CVAT for images XML, VIA 2), each written from its
specification, with the truth they encode: the pixel boxes and classes every reader must give back.

Every generator draws the same kind of scene (`scene`): images of alternating portrait and landscape sizes,
two objects each, class names cat, dog and bird, plus each format's messy cases (named in its docstring).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from exports import write_image

CLASSES = ("cat", "dog", "bird")


@dataclass
class Obj:
    label: str
    x: float
    y: float
    w: float
    h: float
    polygon: list[tuple[float, float]] | None = None  # written as a polygon: its points (the box encloses them)


@dataclass
class Img:
    name: str  # the file's path under its split's image folder
    width: int
    height: int
    objects: list[Obj] = field(default_factory=list)


def scene(count: int, prefix: str) -> list[Img]:
    images = []
    for i in range(count):
        w, h = (64, 48) if i % 2 else (48, 64)
        objects = [Obj(CLASSES[i % 3], 4 + i % 5, 6, 16, 12), Obj(CLASSES[(i + 1) % 3], 24, 20 + i % 3, 14, 16)]
        images.append(Img(f"{prefix}{i:03d}.jpg", w, h, objects))
    return images


def triangle(x: float, y: float, w: float, h: float) -> list[tuple[float, float]]:
    """A polygon whose enclosing box is exactly (x, y, w, h)."""
    return [(x, y), (x + w, y + h / 2), (x + w / 2, y + h)]


def draw(folder: Path, images: list[Img]) -> None:
    for img in images:
        write_image(folder / img.name, img.width, img.height, boxes=[(o.x, o.y, o.w, o.h) for o in img.objects])


# ---------------------------------------------------------------- YOLO


def yolo_line(obj: Obj, img: Img) -> str:
    cls = CLASSES.index(obj.label)
    if obj.polygon:
        return f"{cls} " + " ".join(f"{px / img.width!r} {py / img.height!r}" for px, py in obj.polygon)
    cx, cy = (obj.x + obj.w / 2) / img.width, (obj.y + obj.h / 2) / img.height
    return f"{cls} {cx!r} {cy!r} {obj.w / img.width!r} {obj.h / img.height!r}"


def write_yolo_labels(label_dir: Path, images: list[Img], skip: tuple[str, ...] = ()) -> None:
    for img in images:
        if img.name in skip:
            continue
        path = (label_dir / img.name).with_suffix(".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(yolo_line(o, img) + "\n" for o in img.objects))


def yolo_dataset(root: Path, train: int = 6, val: int = 3) -> dict[str, list[Img]]:
    """ultralytics' layout: data.yaml (names as a map, `path: .`), images/{train,val}/, labels/{train,val}/.

    Messy cases: an image without a label file (no objects), one whose labels are all polygons (segment
    format), a box that runs past the border (cx + w/2 > 1), and a validation split given as a .txt list with
    Windows separators.
    """
    splits = {"train": scene(train, "tr_"), "val": scene(val, "va_")}
    t = splits["train"]
    t[1].objects = [Obj(o.label, o.x, o.y, o.w, o.h, triangle(o.x, o.y, o.w, o.h)) for o in t[1].objects]
    t[2].objects[1] = Obj(t[2].objects[1].label, 40, 40, 24, 20)  # past the border of 48 × 64 / 64 × 48
    t[3].objects = []  # no label file
    for split, images in splits.items():
        draw(root / "images" / split, images)
        write_yolo_labels(root / "labels" / split, images, skip=(t[3].name,) if split == "train" else ())
    (root / "val.txt").write_text("".join(f"images\\val\\{img.name}\r\n" for img in splits["val"]))
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASSES))
    (root / "data.yaml").write_text(
        f"# written by hand\npath: .\ntrain: images/train\nval: val.txt\ntest:\n\nnames:\n{names}"
        "download: |\n  import this\n  not: yaml\n"
    )
    for split in splits:  # file names as the reader reports them: relative to the dataset folder
        for img in splits[split]:
            img.name = f"images/{split}/{img.name}"
    return splits


def yolo_classes_txt(root: Path, count: int = 6) -> list[Img]:
    """Label Studio's YOLO export: classes.txt, images/, labels/, no data.yaml (one split)."""
    images = scene(count, "img_")
    draw(root / "images", images)
    write_yolo_labels(root / "labels", images)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "notes.json").write_text(json.dumps({"categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)]}))
    return images


# ---------------------------------------------------------------- Pascal VOC


def voc_xml(img: Img, folder: str, path: str, difficult: tuple[int, ...] = (), size: bool = True) -> str:
    """A VOC annotation: <bndbox> counts pixels from 1, both ends inside the box."""
    objects = "".join(
        f"<object><name>{o.label}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{int(k in difficult)}</difficult><bndbox><xmin>{o.x + 1:g}</xmin><ymin>{o.y + 1:g}</ymin>"
        f"<xmax>{o.x + o.w:g}</xmax><ymax>{o.y + o.h:g}</ymax></bndbox></object>"
        for k, o in enumerate(img.objects)
    )
    width, height = (img.width, img.height) if size else (0, 0)
    return (
        f"<annotation><folder>{folder}</folder><filename>{Path(img.name).name}</filename><path>{path}</path>"
        f"<source><database>Unknown</database></source><size><width>{width}</width><height>{height}</height>"
        f"<depth>3</depth></size><segmented>0</segmented>{objects}</annotation>"
    )


def voc_devkit(root: Path, train: int = 6, val: int = 3) -> dict[str, list[Img]]:
    """The VOC devkit: Annotations/, JPEGImages/, ImageSets/Main/{train,val}.txt.

    Messy cases: a difficult object (→ crowd), an XML with <size> 0 × 0 (sizes from the image header), and a
    class ("bird" is renamed "zebra") used only in the validation split.
    """
    splits = {"train": scene(train, "2007_0"), "val": scene(val, "2007_1")}
    splits["val"][0].objects[0].label = "zebra"
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (root / "Annotations").mkdir()
    for split, images in splits.items():
        draw(root / "JPEGImages", images)
        for k, img in enumerate(images):
            xml = voc_xml(img, "VOC2007", img.name, difficult=(1,) if k == 0 else (), size=k != 2)
            (root / "Annotations" / Path(img.name).with_suffix(".xml")).write_text(xml)
        (main / f"{split}.txt").write_text("".join(Path(img.name).stem + "\n" for img in images))
    return splits


def voc_labelimg(root: Path, count: int = 6) -> list[Img]:
    """labelImg's flat folder: each image with its XML beside it (<path> a Windows path from the labelling
    machine), and an image without objects that has no XML."""
    images = scene(count, "photo_")
    images[-1].objects = []
    draw(root, images)
    for img in images[:-1]:
        xml = voc_xml(img, "labelling", f"C:\\Users\\ann\\labelling\\{img.name}")
        (root / Path(img.name).with_suffix(".xml")).write_text(xml)
    return images


# ---------------------------------------------------------------- CVAT for images XML 1.1


def cvat_xml(root: Path, count: int = 8, subsets: bool = False) -> dict[str, list[Img]]:
    """annotations.xml + images/, labels declared in <meta><task><labels> (order dog, cat, bird: the
    category order), boxes, polygons (one image with polygons only), a rotated box, a polyline (skipped), an
    image without shapes, file names in a sub-folder. `subsets`: a project export, Train and Validation."""
    images = scene(count, "frame_")
    for img in images:
        img.name = f"batch1/{img.name}"
    images[1].objects = [Obj(o.label, o.x, o.y, o.w, o.h, triangle(o.x, o.y, o.w, o.h)) for o in images[1].objects]
    images[2].objects = []
    draw(root / "images", images)
    order = ("dog", "cat", "bird")
    labels = "".join(
        f"<label><name>{n}</name><color>#ff0000</color><type>any</type><attributes/></label>" for n in order
    )
    task = f"<id>7</id><name>pets</name><size>{count}</size><mode>annotation</mode><labels>{labels}</labels>"
    meta = f"<meta><task>{task}</task></meta>"
    if subsets:
        meta = f"<meta><project><id>3</id><name>pets</name><labels>{labels}</labels></project></meta>"
    body = []
    split_of: dict[str, list[Img]] = {"Train": [], "Validation": []}
    for k, img in enumerate(images):
        shapes = []
        for o in img.objects:
            if o.polygon:
                points = ";".join(f"{px:.2f},{py:.2f}" for px, py in o.polygon)
                shapes.append(
                    f'<polygon label="{o.label}" source="manual" occluded="0" points="{points}" z_order="0"/>'
                )
            else:
                shapes.append(
                    f'<box label="{o.label}" source="manual" occluded="0" xtl="{o.x:.2f}" ytl="{o.y:.2f}" '
                    f'xbr="{o.x + o.w:.2f}" ybr="{o.y + o.h:.2f}" z_order="0"></box>'
                )
        if k == 3:  # the first box stored unturned (w and h swapped) with rotation 90°: the same enclosing box
            o = img.objects[0]
            xtl, ytl = o.x + (o.w - o.h) / 2, o.y + (o.h - o.w) / 2
            shapes[0] = (
                f'<box label="{o.label}" occluded="0" xtl="{xtl:.2f}" ytl="{ytl:.2f}" xbr="{xtl + o.h:.2f}" '
                f'ybr="{ytl + o.w:.2f}" rotation="90.0" z_order="0"></box>'
            )
        shapes.append('<polyline label="cat" occluded="0" points="1.0,1.0;5.0,5.0" z_order="0"/>')
        subset = "Validation" if k % 4 == 3 else "Train"
        split_of[subset].append(img)
        attr = f' subset="{subset}"' if subsets else ""
        size = f'width="{img.width}" height="{img.height}"'
        body.append(f'<image id="{k}" name="{img.name}" {size}{attr}>{"".join(shapes)}</image>')
    head = '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
    xml = f"{head}{meta}{''.join(body)}</annotations>"
    (root / "annotations.xml").write_text(xml)
    return split_of if subsets else {"all": images}


# ---------------------------------------------------------------- VIA 2


def via_entry(img: Img, name: str, attribute: str = "type") -> dict:
    regions = []
    for o in img.objects:
        if o.polygon:
            shape = {
                "name": "polygon",
                "all_points_x": [p[0] for p in o.polygon],
                "all_points_y": [p[1] for p in o.polygon],
            }
        else:
            shape = {"name": "rect", "x": o.x, "y": o.y, "width": o.w, "height": o.h}
        regions.append({"shape_attributes": shape, "region_attributes": {"colour": "brown", attribute: o.label}})
    return {"filename": name, "size": 1000 + len(name), "regions": regions, "file_attributes": {}}


def via_project(root: Path, train: int = 6, val: int = 3) -> dict[str, list[Img]]:
    """The balloon layout: train/ and val/, each a VIA 2 project file beside its images.

    Messy cases: two region attributes (colour, and type: the class, a VIA dropdown), a polygon-only image,
    an image without regions, a circle, a file name with Windows separators, and an "annotations as JSON"
    export (no _via_ keys) with VIA 1's regions keyed "0", "1" for the validation split.
    """
    splits = {"train": scene(train, "balloon_"), "val": scene(val, "val_")}
    t = splits["train"]
    t[1].objects = [Obj(o.label, o.x, o.y, o.w, o.h, triangle(o.x, o.y, o.w, o.h)) for o in t[1].objects]
    t[2].objects = []
    for split, images in splits.items():
        draw(root / split, images)
    metadata = {}
    for k, img in enumerate(t):
        name = f".\\{img.name}" if k == 4 else img.name
        metadata[name + str(1000 + len(name))] = via_entry(img, name)
    circle = t[5].objects[0]
    circle.w = circle.h = 12
    metadata[list(metadata)[5]]["regions"][0]["shape_attributes"] = {
        "name": "circle",
        "cx": circle.x + 6,
        "cy": circle.y + 6,
        "r": 6,
    }
    options = {n: "" for n in CLASSES}
    project = {
        "_via_settings": {"ui": {}, "core": {"buffer_size": 18}, "project": {"name": "balloons"}},
        "_via_img_metadata": metadata,
        "_via_attributes": {
            "region": {
                "colour": {"type": "text", "description": "", "default_value": ""},
                "type": {"type": "dropdown", "description": "", "options": options, "default_options": {}},
            },
            "file": {},
        },
        "_via_data_format_version": "2.0.10",
        "_via_image_id_list": list(metadata),
    }
    (root / "train" / "via_project_balloons.json").write_text(json.dumps(project))
    exported = {}
    for img in splits["val"]:
        entry = via_entry(img, img.name)
        entry["regions"] = {str(i): r for i, r in enumerate(entry["regions"])}
        exported[img.name + str(entry["size"])] = entry
    (root / "val" / "via_region_data.json").write_text(json.dumps(exported))
    return splits


# ---------------------------------------------------------------- comparing


Summary = dict[str, tuple[int, int, list[tuple[str, float, float, float, float]]]]


def expected(images: list[Img]) -> Summary:
    """Per image (by file name): its size and sorted (class, x, y, w, h) objects, boxes rounded to 0.01 px."""
    return {
        Path(img.name).name: (
            img.width,
            img.height,
            sorted((o.label, *_rounded((o.x, o.y, o.w, o.h))) for o in img.objects),
        )
        for img in images
    }


def observed(data: dict) -> Summary:
    """The same summary of a COCO dict (what a reader returns, or an exported file read back)."""
    names = {c["id"]: c["name"] for c in data["categories"]}
    objects: dict[int, list] = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        objects[ann["image_id"]].append((names[ann["category_id"]], *_rounded(ann["bbox"])))
    return {
        Path(img["file_name"]).name: (img.get("width"), img.get("height"), sorted(objects[img["id"]]))
        for img in data["images"]
    }


def _rounded(box: tuple | list) -> tuple[float, ...]:
    return tuple(round(float(v), 2) + 0.0 for v in box)
