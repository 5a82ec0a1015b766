"""The Pascal VOC reader: the devkit and labelImg's flat folder, difficult objects, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from format_exports import draw, expected, observed, scene, voc_devkit, voc_labelimg, voc_xml

from detr.config import DataConfig
from detr.data import find_layout
from detr.data.annotations import load_coco
from detr.errors import DataError


def read_split(root: Path, split: str) -> dict:
    return load_coco(find_layout(DataConfig(coco_path=str(root))).split(split)).dataset


def test_devkit_splits_sizes_and_one_class_list(tmp_path: Path) -> None:
    truth = voc_devkit(tmp_path)
    layout = find_layout(DataConfig(coco_path=str(tmp_path)))
    assert layout.kind == "voc" and layout.train.images == tmp_path / "JPEGImages"
    assert layout.describe().startswith(f"Pascal VOC XML at {tmp_path}: train ImageSets/Main/train.txt, val ImageSets")
    train, val = read_split(tmp_path, "train"), read_split(tmp_path, "val")
    assert observed(train) == expected(truth["train"])  # image 2 has <size> 0 × 0: its size from the header
    assert observed(val) == expected(truth["val"])
    # Sorted names of the whole Annotations folder: "zebra" (only in val) has the same id in both splits.
    assert (
        train["categories"]
        == val["categories"]
        == [{"id": i + 1, "name": n} for i, n in enumerate(["bird", "cat", "dog", "zebra"])]
    )
    crowd = [a for a in train["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["image_id"] == 1  # <difficult>1: ignored, as VOC's evaluation does


def test_devkit_with_trainval_only_holds_out_a_share(tmp_path: Path) -> None:
    voc_devkit(tmp_path)
    main = tmp_path / "ImageSets" / "Main"
    (main / "trainval.txt").write_text((main / "train.txt").read_text() + (main / "val.txt").read_text())
    (main / "train.txt").unlink()
    (main / "val.txt").unlink()
    layout = find_layout(DataConfig(coco_path=str(tmp_path)))
    assert layout.train.annotations == main / "trainval.txt" and layout.val.part == "held_out"


def test_labelimg_flat_folder_with_an_image_without_xml(tmp_path: Path) -> None:
    truth = voc_labelimg(tmp_path)
    layout = find_layout(DataConfig(coco_path=str(tmp_path)))
    assert layout.kind == "voc" and "XML files beside the images" in layout.describe()
    assert observed(read_split(tmp_path, "train")) == expected(truth)


def test_images_and_annotations_folders(tmp_path: Path) -> None:
    images = scene(3, "k_")
    draw(tmp_path / "images", images)
    (tmp_path / "annotations").mkdir()
    for img in images:
        (tmp_path / "annotations" / f"{Path(img.name).stem}.xml").write_text(voc_xml(img, "images", img.name))
    assert observed(read_split(tmp_path, "train")) == expected(images)


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<annotation><object><name>cat</name>", ".xml:1: not valid XML"),
        ("<annotation><object><name>cat</name></object></annotation>", "<object> 1 (cat) has no <bndbox>"),
        (
            "<annotation><object><name>cat</name><bndbox><xmin>a</xmin></bndbox></object></annotation>",
            "<object> 1 (cat): <bndbox> needs numbers",
        ),
        ("<annotation><object><bndbox/></object></annotation>", "<object> 1 has no <name>"),
        ("<annotations><image/></annotations>", "not a Pascal VOC file"),
    ],
)
def test_a_bad_xml_file_is_one_line(tmp_path: Path, xml: str, message: str) -> None:
    images = scene(2, "k_")
    draw(tmp_path, images)
    (tmp_path / "k_000.xml").write_text(voc_xml(images[0], "f", "p"))
    (tmp_path / "k_001.xml").write_text(xml)
    with pytest.raises(DataError) as e:
        read_split(tmp_path, "train")
    assert str(e.value).startswith(str(tmp_path / "k_001.xml")) and message in str(e.value)


def test_the_annotation_flags_take_imagesets_lists(tmp_path: Path) -> None:
    truth = voc_devkit(tmp_path / "VOCdevkit" / "VOC2012")
    cfg = DataConfig(
        coco_path=str(tmp_path / "VOCdevkit"),
        train_annotations="VOC2012/ImageSets/Main/val.txt",
        val_annotations="VOC2012/ImageSets/Main/train.txt",
    )
    layout = find_layout(cfg)
    assert layout.train.format == "voc" and layout.train.images == tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages"
    assert observed(load_coco(layout.train).dataset) == expected(truth["val"])
    found = find_layout(DataConfig(coco_path=str(tmp_path / "VOCdevkit")))  # the one VOC20xx/ inside
    assert found.kind == "voc" and found.train.annotations.parts[-4:] == ("VOC2012", "ImageSets", "Main", "train.txt")


def test_roboflow_voc_export_has_one_class_list_for_both_splits(tmp_path: Path) -> None:
    splits = {"train": scene(3, "t_"), "valid": scene(2, "v_")}
    splits["valid"][0].objects[0].label = "ant"  # only in valid: the same id in both splits
    for split, images in splits.items():
        draw(tmp_path / split, images)
        for img in images:
            (tmp_path / split / f"{Path(img.name).stem}.xml").write_text(voc_xml(img, split, img.name))
    layout = find_layout(DataConfig(coco_path=str(tmp_path)))
    assert layout.kind == "voc" and layout.val.images == tmp_path / "valid" and layout.val.part == "all"
    train, val = read_split(tmp_path, "train"), read_split(tmp_path, "val")
    assert train["categories"] == val["categories"] and train["categories"][0] == {"id": 1, "name": "ant"}
    assert observed(train) == expected(splits["train"]) and observed(val) == expected(splits["valid"])
