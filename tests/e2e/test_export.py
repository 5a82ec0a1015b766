"""`detrdoctor export`: the tiny model to ONNX with and without post-processing, onnxruntime against PyTorch, the
check failing on a corrupted file, `predict --weights model.onnx`, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from typer.testing import CliRunner

from detr.data import build_dataset
from detr.engine.trainer import Trainer
from detr.onnx_runtime import OnnxDetector
from detrdoctor.cli import app
from detrdoctor.commands.evaluate import checkpoint_model
from detrdoctor.profiles import load_profile
from detrdoctor.runconfig import config_for_weights

runner = CliRunner()

CONTRACT_KEYS = {"file", "format", "opset", "dynamic", "postprocess", "check", "ms_per_image"}
CHECK_KEYS = {"inputs", "max_abs_diff", "max_rel_diff", "matching_detections", "ap", "passed"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny checkpoint trained for two steps on the synthetic dataset."""
    cfg = load_profile("tiny")
    cfg.train.max_steps = 2
    folder = tmp_path_factory.mktemp("run")
    Trainer(cfg, output_dir=folder).fit()
    return str(folder / "checkpoint.pth")


def export(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["export", *args, "--json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture(scope="module")
def raw(weights: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Dynamic batch and size, no post-processing, checked on the validation split (with AP)."""
    out = tmp_path_factory.mktemp("raw") / "model.onnx"
    code, record = export("--weights", weights, "--out", str(out), "--split", "val", "--timing-runs", "1")
    assert code == 0, record
    return out, record


@pytest.fixture(scope="module")
def postprocessed(weights: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Fixed batch 2 at 80×96 with post-processing, checked on three image files (a short last batch)."""
    folder = tmp_path_factory.mktemp("post")
    dataset = build_dataset(load_profile("tiny").data, "val", train=False)
    images = [str(shutil.copy(dataset.image_path(i), folder / f"{i}.jpg")) for i in range(3)]
    out = folder / "model.onnx"
    code, record = export(
        "--weights", weights, "--out", str(out), "--postprocess", "--batch", "2", "--size", "80", "96",
        *images, "--timing-runs", "0",
    )  # fmt: skip
    assert code == 0, record
    return out, record


def test_raw_export_has_the_contract_names_and_passes_the_check_with_equal_ap(raw):
    out, record = raw
    assert CONTRACT_KEYS <= record.keys() and CHECK_KEYS <= record["check"].keys()
    assert record["file"] == str(out) and record["format"] == "onnx" and record["opset"] == 18
    assert record["dynamic"] == {"batch": True, "size": True} and record["postprocess"] is False
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]  # no temporary file left beside it

    graph = onnx.load(str(out)).graph
    types = {v.name: v.type.tensor_type for v in [*graph.input, *graph.output]}
    assert [i.name for i in graph.input] == ["images", "mask"]
    assert [o.name for o in graph.output] == ["pred_logits", "pred_boxes"]
    assert types["images"].elem_type == onnx.TensorProto.FLOAT and types["mask"].elem_type == onnx.TensorProto.BOOL
    assert [d.dim_param or d.dim_value for d in types["pred_logits"].shape.dim][1:] == [10, 8]

    check = record["check"]
    assert check["passed"] and check["inputs"]["kind"] == "split" and check["inputs"]["images"] == 8
    assert check["max_abs_diff"]["logits"] <= 1e-3 and check["matching_detections"] == 1.0
    assert abs(check["ap"]["torch"] - check["ap"]["onnxruntime"]) <= 1e-3
    assert record["ms_per_image"]["torch"] > 0 and record["ms_per_image"]["onnxruntime"] > 0


def test_onnxruntime_matches_pytorch_on_two_sizes_and_two_batch_sizes(raw, weights):
    out, _ = raw
    cfg, ckpt = config_for_weights(weights, None, {})
    model, _ = checkpoint_model(cfg, ckpt, weights, torch.device("cpu"))
    model.eval()
    detector = OnnxDetector(out)
    generator = torch.Generator().manual_seed(0)
    # 120×90 with padding from row 60: a size where ONNX Resize would pick another mask row than F.interpolate.
    for batch, height, width in ((1, 64, 96), (3, 64, 96), (1, 120, 90), (2, 120, 90)):
        images = torch.randn((batch, 3, height, width), generator=generator)
        mask = torch.zeros((batch, height, width), dtype=torch.bool)
        mask[1:, height // 2 :, :] = True
        with torch.no_grad():
            expected = model(images, mask)
        chunk = detector.fit(images, mask, torch.tensor([[height, width]] * batch))[0]
        logits, boxes = detector.run(chunk)
        np.testing.assert_allclose(logits, expected["pred_logits"].numpy(), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(boxes, expected["pred_boxes"].numpy(), rtol=1e-3, atol=1e-4)


def test_postprocessed_fixed_export_outputs_scores_labels_pixel_boxes(postprocessed):
    out, record = postprocessed
    assert record["dynamic"] == {"batch": False, "size": False} and record["postprocess"] is True
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["images", "mask", "target_sizes"]
    assert [o.name for o in graph.output] == ["scores", "labels", "boxes"]
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [2, 3, 80, 96]
    check = record["check"]
    assert check["passed"] and check["inputs"] == {
        "kind": "files",
        "description": check["inputs"]["description"],
        "images": 3,
        "batches": 2,
    }
    assert check["max_abs_diff"]["logits"] is None and check["max_abs_diff"]["scores"] <= 1e-3


def test_predict_on_the_onnx_file_writes_the_checkpoints_predictions(raw, postprocessed, weights, tmp_path):
    out, _ = raw
    results = {}
    for name, source in (("torch", weights), ("onnx", str(out))):
        result = runner.invoke(
            app, ["predict", "--weights", source, "--split", "val", "--out", str(tmp_path / name), "--json"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["runtime"].startswith("onnxruntime" if name == "onnx" else "torch")
        results[name] = json.loads((tmp_path / name / "predictions.json").read_text())
        assert len(list((tmp_path / name).glob("*.jpg"))) == 8
    assert len(results["torch"]) == len(results["onnx"]) == 80
    for ours, theirs in zip(results["torch"], results["onnx"]):
        assert (ours["image_id"], ours["category_id"]) == (theirs["image_id"], theirs["category_id"])
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)
        assert ours["bbox"] == pytest.approx(theirs["bbox"], abs=1e-2)  # pixels

    post, _ = postprocessed
    result = runner.invoke(app, ["predict", "--weights", str(post), "--split", "val", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "p" / "predictions.json").read_text())) == 80


def test_the_check_fails_on_a_corrupted_initializer_and_names_the_worst_image(raw, weights, tmp_path):
    out, _ = raw
    proto = onnx.load(str(out))
    biggest = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)) if len(t.dims) == 2 else 0)
    values = numpy_helper.to_array(biggest).copy()
    values.flat[0] += 0.5  # one weight of one matrix
    biggest.CopyFrom(numpy_helper.from_array(values, biggest.name))
    corrupted = tmp_path / "corrupted.onnx"
    onnx.save(proto, str(corrupted))
    before = corrupted.read_bytes()

    code, record = export("--weights", weights, "--verify", str(corrupted), "--timing-runs", "0")
    assert code == 1 and record["check"]["passed"] is False and record["verified"] is False
    assert record["check"]["worst"]["image"].startswith("synthetic ")
    result = runner.invoke(app, ["export", "--weights", weights, "--verify", str(corrupted), "--timing-runs", "0"])
    assert result.exit_code == 1
    assert "worst image: synthetic" in result.stdout and "UNVERIFIED" in result.stdout
    assert corrupted.read_bytes() == before  # a file being verified is never rewritten


@pytest.mark.parametrize("case", ["not DETR", "no such folder", "opset", "unreadable image", "size"])
def test_bad_input_is_one_line_a_non_zero_exit_and_no_file(weights, tmp_path, case):
    out = tmp_path / "model.onnx"
    args = ["export", "--weights", weights, "--out", str(out)]
    if case == "not DETR":
        torch.save({"model": {"conv.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
        args[2] = str(tmp_path / "other.pth")
    if case == "no such folder":
        args[-1] = str(tmp_path / "nowhere" / "model.onnx")
    if case == "opset":
        args += ["--opset", "99"]
    if case == "unreadable image":
        (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
        args.append(str(tmp_path / "broken.jpg"))
    if case == "size":
        args += ["--size", "80"]
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert not list(tmp_path.rglob("*.onnx*")) and not list(tmp_path.rglob(".*partial"))
