"""The maintenance scripts on tiny inputs: scripts/bundle_model.py (a run -> the shipped model)
and scripts/make_coco_subset.py (the bundled data/coco_mini from its source)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.paths import ROOT
from yolact_lite import Predictor, load_config
from yolact_lite.checkpoint.files import model_checkpoint, read_state_file, save_atomic
from yolact_lite.errors import CheckpointError
from yolact_lite.model.testing import detecting_model

TINY = ["model.num_classes=1", "model.input_size=64", "model.anchors.scales=[[4],[8],[16],[32],[64]]"]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- bundle_model.py


def test_bundle_model_keeps_the_inference_weights_as_fp16(tmp_path, capsys):
    config = load_config("yolact_effl0", TINY)
    inference = detecting_model(config)
    training = {k: v + 1 if v.is_floating_point() else v for k, v in inference.state_dict().items()}
    run = tmp_path / "run"
    run.mkdir()
    save_atomic(model_checkpoint(inference, config.to_dict(), train_model=training, step=7,
                                 class_names=["person"], category_ids=[1]), run / "last.pt")
    (run / "eval.csv").write_text("step,train_minutes,box_AP,mask_AP\n4,0.5,1.0,0.5\n7,1.25,2.0,1.5\n")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"box": {"AP": 2.0}, "mask": {"AP": 1.5}, "other": 0}))
    bundle = load_script("bundle_model")

    bundle.main(["--run", str(run), "--out", str(tmp_path / "model"), "--command", "yolact-lite train ...",
                 "--metrics", str(metrics)])
    assert f"wrote {tmp_path / 'model.pt'}" in capsys.readouterr().out
    shipped = read_state_file(tmp_path / "model.pt")
    assert "train_model" not in shipped and shipped["step"] == 7
    assert shipped["class_names"] == ["person"] and shipped["category_ids"] == [1]
    for key, value in inference.state_dict().items():  # the inference weights, floats halved
        expected = value.half() if value.is_floating_point() else value
        assert torch.equal(shipped["model"][key], expected), key
    record = json.loads((tmp_path / "model.json").read_text())
    assert record["weights"] == "model.pt" and record["steps"] == 7 and record["train_minutes"] == 1.25
    assert record["metrics"] == {"box": {"AP": 2.0}, "mask": {"AP": 1.5}}
    assert [row["step"] for row in record["curve"]] == ["4", "7"] and record["command"] == "yolact-lite train ..."
    # the shipped file is a model the Predictor runs (fp16 weights into the fp32 model)
    dets = Predictor(config, tmp_path / "model.pt").predict(np.full((48, 64, 3), 90, np.uint8))
    assert len(dets) > 0 and dets.masks.shape[1:] == (48, 64)


def test_bundle_model_refuses_a_checkpoint_without_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_atomic({"format": "yolact_lite", "model": {}, "step": 1}, run / "last.pt")
    with pytest.raises(CheckpointError, match="last.pt: carries no config"):
        load_script("bundle_model").main(["--run", str(run), "--out", str(tmp_path / "m"), "--command", "x"])


# --------------------------------------------------------------------------- make_coco_subset.py

SOURCE = ROOT.parent / "shared" / "data"  # the script's default --src


@pytest.mark.skipif(not (SOURCE / "coco_mini" / "train" / "annotations.json").is_file(),
                    reason="the coco_mini source is not beside this checkout")
def test_subset_builder_reproduces_the_bundled_coco_mini(tmp_path, capsys):
    dst = tmp_path / "coco_mini"
    assert load_script("make_coco_subset").main(["--src", str(SOURCE), "--dst", str(dst)]) == 0
    bundled = ROOT / "data" / "coco_mini"
    made = sorted(p.relative_to(dst) for p in dst.rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(bundled) for p in bundled.rglob("*") if p.is_file())
    for rel in made:
        if rel.suffix in (".json", ".md"):
            assert (dst / rel).read_bytes() == (bundled / rel).read_bytes(), rel
        else:  # images are copies: the size says it cheaply
            assert (dst / rel).stat().st_size == (bundled / rel).stat().st_size, rel


def _synthetic_source(root: Path) -> Path:
    """Two splits of 4 and 2 tiny images: persons (one crowd-only image), a cat, nothing."""
    categories = [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}]
    rng = np.random.default_rng(0)

    def split(name, images, annotations):
        folder = root / "coco_mini" / name / "images"
        folder.mkdir(parents=True)
        for img in images:  # distinct sizes on disk: noise of a size that grows with the id
            side = 8 + 4 * img["id"]
            cv2.imwrite(str(folder / img["file_name"]), rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
        data = {"info": {"description": "synthetic"}, "licenses": [], "images": images,
                "annotations": annotations, "categories": categories}
        (root / "coco_mini" / name / "annotations.json").write_text(json.dumps(data))

    def image(i):
        return {"id": i, "file_name": f"{i:06d}.png", "height": 8 + 4 * i, "width": 8 + 4 * i}

    def ann(i, image_id, category, crowd=0, area=100.0):
        return {"id": i, "image_id": image_id, "category_id": category, "iscrowd": crowd, "area": area,
                "bbox": [0, 0, 10, 10], "segmentation": [[0, 0, 10, 0, 10, 10]]}

    split("train", [image(i) for i in (1, 2, 3, 4, 5)],
          [ann(10, 1, 1), ann(11, 1, 17), ann(12, 2, 1, crowd=1), ann(13, 3, 17), ann(14, 5, 1, area=5000.0)])
    split("val", [image(i) for i in (6, 7)], [ann(20, 6, 1), ann(21, 7, 17)])
    (root / "NOTICE.md").write_text("# Source notice\n")
    return root


def test_subset_builder_on_a_synthetic_source(tmp_path, capsys):
    src = _synthetic_source(tmp_path / "src")
    dst = tmp_path / "out"
    subset = load_script("make_coco_subset")
    # persons (1, 5; 2 holds only a crowd), the named negative 3 and the smallest further one (2)
    assert subset.main(["--src", str(src), "--dst", str(dst), "--negative-ids", "3", "--negatives", "1"]) == 0
    train = json.loads((dst / "train" / "annotations.json").read_text())
    assert [img["id"] for img in train["images"]] == [1, 2, 3, 5]  # the source's order
    assert sorted(a["id"] for a in train["annotations"]) == [10, 11, 12, 13, 14]
    assert train["info"] == {"description": "synthetic"} and len(train["categories"]) == 2
    person = json.loads((dst / "train" / "annotations_person.json").read_text())
    assert person["categories"] == [{"id": 1, "name": "person"}] and person["images"] == train["images"]
    assert sorted(a["id"] for a in person["annotations"]) == [10, 12, 14]  # the crowd one kept
    val = json.loads((dst / "val" / "annotations_person.json").read_text())
    assert [img["id"] for img in val["images"]] == [6, 7] and [a["id"] for a in val["annotations"]] == [20]
    copied = sorted(p.name for p in (dst / "train" / "images").iterdir())
    assert copied == ["000001.png", "000002.png", "000003.png", "000005.png"]
    assert (dst / "train" / "images" / "000005.png").read_bytes() == \
        (src / "coco_mini" / "train" / "images" / "000005.png").read_bytes()
    notice = (dst / "NOTICE.md").read_text()
    assert notice.startswith("# Source notice\n") and "person-free image(s) 3 and the 1 smallest" in notice
    assert "- train/annotations_person.json: 4 images (2 with a person), 3 instances" in notice

    # over the size limit: an error and nothing written
    assert subset.main(["--src", str(src), "--dst", str(tmp_path / "big"), "--negative-ids", "3",
                        "--max-mib", "0.0001"]) == 1
    assert "over --max-mib 0.0001" in capsys.readouterr().err and not (tmp_path / "big").exists()
    with pytest.raises(SystemExit, match=r"--negative-ids contain a person: \[1\]"):
        subset.main(["--src", str(src), "--dst", str(tmp_path / "x"), "--negative-ids", "1"])


# --------------------------------------------------------------------------- demo.py


def test_demo_writes_anywhere_and_summarises_with_absolute_paths(tmp_path, monkeypatch, capsys):
    """Each step is a CLI command (tested on its own elsewhere): here they are recorded and their
    outputs faked, so the demo's own part runs: the folder outside the checkout, the commands,
    the curve, the summary, and a previous run moved aside."""
    demo = load_script("demo")
    commands = []

    def fake_step(cmd, title):
        cmd = [str(c) for c in cmd]
        commands.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        if cmd[3] == "train":
            (out / "last.pt").write_bytes(b"weights")
            (out / "eval.csv").write_text("step,train_minutes,box_AP,mask_AP,mask_AP50\n"
                                          "0,0.0,0.0,0.0,0.0\n12,0.05,1.5,0.75,2.0\n")
        elif cmd[3] == "eval":
            out.mkdir()
            scores = {"AP": 1.5, "AP50": 4.0, "AP_small": None, "AP_medium": 1.0, "AP_large": 3.0}
            (out / "metrics.json").write_text(json.dumps({"box": scores, "mask": scores}))
        elif "--track" in cmd:  # the CLI's own lines, as the video step prints them
            return ("network: openvino fp32 on cpu (auto: OpenVINO fp32 (X has no native bf16))\n"
                    "pipeline: 150 frames in 6.00 s -> 25.00 FPS (median 25.3 FPS), batch 1\n")
        return ""

    monkeypatch.setattr(demo, "run", fake_step)
    elsewhere = tmp_path / "elsewhere"
    demo.main(["--out", str(elsewhere), "--minutes", "0.05"])
    text = capsys.readouterr().out
    assert [c[3] for c in commands] == ["train", "eval", "predict", "predict"]
    assert commands[0][commands[0].index("--max-minutes") + 1] == "0.05"
    assert all(Path(c[c.index("--out") + 1]).is_relative_to(elsewhere) for c in commands)
    assert f"fine-tuned 0.05 min (12 steps) on 101 COCO images with people -> {elsewhere / 'last.pt'}" in text
    assert "box AP 1.50  AP50 4.00" in text and "small n/a" in text
    assert f"drawn video:    {elsewhere / 'vtest.mp4'}" in text
    assert ("video speed:    150 frames at 25.00 FPS on the default path: openvino fp32 on cpu (auto: OpenVINO "
            "fp32 (X has no native bf16))") in text
    assert cv2.imread(str(elsewhere / "curve.png")) is not None

    demo.main(["--out", str(elsewhere), "--minutes", "0.05"])  # again: the first run is kept aside
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("elsewhere.previous-")]
    assert len(aside) == 1 and (aside[0] / "curve.png").is_file()


def test_every_mutation_still_targets_one_place():
    """scripts/mutation_check.py flips text in named files: after a file moves or a line changes,
    a mutation that no longer finds its text would report nothing, so each must match once."""
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation_check"] = module  # dataclasses look their module up while it loads
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("mutation_check", None)
    assert len(module.MUTATIONS) >= 10
    for mutation in module.MUTATIONS:
        text = (ROOT / mutation.file).read_text(encoding="utf-8")
        assert text.count(mutation.old) == 1, f"{mutation.name}: {mutation.file}"
        assert all((ROOT / t).exists() for t in mutation.tests if t.startswith("tests/")), mutation.name
