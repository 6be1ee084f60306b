"""Light checks of the benchmark scripts (none of the heavy benchmarks is run)."""

from __future__ import annotations

import csv
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.runs import InterruptAt
from tests.paths import ROOT

BENCH = ROOT / "benchmarks"


def _load(name: str):
    """``benchmarks.{name}`` (run from the repository root, as ``python -m benchmarks.NAME``)."""
    return importlib.import_module(f"benchmarks.{name}")


def test_write_results_writes_csv_and_md_with_machine_info(tmp_path, monkeypatch):
    common = _load("_common")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    rows = [{"k": 8, "net_ms": 12.3456, "label": "a"}, {"k": 32, "net_ms": 250.0, "extra": 1}]
    csv_path, md_path = common.write_results("unit_test", rows, notes="some notes here")

    assert csv_path == tmp_path / "results" / "unit_test.csv" and md_path.parent == csv_path.parent
    with csv_path.open(newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == ["k", "net_ms", "label", "extra"]  # union of keys, first seen first
    assert [r["k"] for r in read] == ["8", "32"] and read[1]["label"] == "" and read[1]["extra"] == "1"

    md = md_path.read_text()
    assert md.startswith("# unit_test")
    for key in ("cpu", "cores", "torch", "torch_threads", "cuda_device", "date"):
        assert f"- {key}: " in md
    assert "some notes here" in md
    assert "| k | net_ms | label | extra |" in md
    assert "| 8 | 12.346 | a |  |" in md and "| 32 | 250.0 |  | 1 |" in md
    assert not (BENCH / "results" / "unit_test.csv").exists()


@pytest.mark.parametrize("module", ["k_sweep", "run_all"])
def test_help_exits_zero(module):
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--help"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "--device" in proc.stdout


def test_run_all_dry_run_lists_benchmarks_and_forwards_options():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--dry-run", "--quick", "--device", "cpu",
                           "--only", "k_sweep", "nms_speed"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "benchmarks.k_sweep --quick --device cpu" in proc.stdout
    assert "benchmarks.nms_speed --quick --device cpu" in proc.stdout
    assert "end_to_end" not in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--dry-run", "--only", "nope"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode != 0


def test_k_sweep_recipe_differs_only_in_k_and_seed():
    k_sweep = _load("k_sweep")
    args = k_sweep.parse_args([])
    assert (args.k, args.seeds, args.steps, args.config) == ((8, 16, 32, 64, 128, 256), (0, 1, 2), 600,
                                                            ["yolact_effl0_finetune"])
    a = k_sweep.build_spec(args, 8, 0, Path("runs/x/k8_s0"))["recipe"]
    b = k_sweep.build_spec(args, 64, 1, Path("runs/x/k64_s1"))["recipe"]
    diff = [(x, y) for x, y in zip(a["overrides"], b["overrides"]) if x != y]
    assert diff == [("train.seed=0", "train.seed=1"), ("model.num_prototypes=8", "model.num_prototypes=64")]
    assert {k: v for k, v in a.items() if k != "overrides"} == {k: v for k, v in b.items() if k != "overrides"}
    # the bundled person sets, relative to the repository: a clean clone sweeps the same thing
    assert a["train_json"] == "data/coco_mini/train/annotations_person.json"
    assert a["val_json"] == "data/coco_mini/val/annotations_person.json"
    from yolact_lite import load_config

    config = load_config(a["config"], a["overrides"])
    assert config.model.input_size == 448 and config.model.num_prototypes == 8 and config.model.num_classes == 1
    assert config.train.max_iter == 600 and config.train.seed == 0


def test_k_sweep_k32_with_prototype_settings_is_the_recipe_prototypes_alive_row():
    """The k=32 runs of the documented sweep train what finetune_recipe's ``prototypes_alive``
    row trains (fp32, same seed and steps), so they count as that row's seeds (docs/k_sweep.md):
    the same config but for ``train.max_iter``, which both replace with the step count."""
    from yolact_lite.engine.schedule import build_schedule

    k_sweep, recipe = _load("k_sweep"), _load("finetune_recipe")
    args = k_sweep.parse_args(["--set", "model.coefficient_init=zero", "--set", "train.lr_multipliers.protonet=0.1"])
    for seed in (0, 2):
        spec = k_sweep.build_spec(args, 32, seed, Path("runs/x"))
        configs = (k_sweep._config(spec), recipe.recipe_config(seed, False, recipe.ROWS["prototypes_alive"]))
        sweep, row = (c.to_dict() for c in configs)
        steps = spec["recipe"]["steps"]
        assert sweep["train"].pop("max_iter") == steps and row["train"].pop("max_iter") != steps
        assert sweep == row
        a, b = (build_schedule(c.train).with_max_iter(steps) for c in configs)
        assert a == b


def test_k_sweep_rejects_contradictory_options(capsys):
    k_sweep = _load("k_sweep")
    with pytest.raises(SystemExit, match="2"):
        k_sweep.parse_args(["--reuse", "--fresh"])
    assert "--reuse keeps the trained runs and --fresh retrains them" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        k_sweep.parse_args(["--k", "0", "8"])
    assert "--k values must be positive (got [0])" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        k_sweep.parse_args(["--config", "yolact_base", "yolact_resnet50"])
    assert "a trained sweep takes one --config" in capsys.readouterr().err


def test_k_sweep_summary_and_seed_spread():
    k_sweep, seeds = _load("k_sweep"), _load("_seeds")

    def run(k, seed, ap):
        return {"k": k, "seed": seed, "mask_AP": ap, "box_AP": ap + 1, "net_ms": 10.0 + k, "params": 100 + k,
                "mask_params": k}

    rows = [run(8, s, ap) for s, ap in enumerate((1.0, 1.2, 1.4))] + [run(32, s, ap) for s, ap in
                                                                       enumerate((3.0, 3.1, 3.2))]
    rows += [run(64, s, ap) for s, ap in enumerate((2.0, 3.0, 4.0))]
    summary = k_sweep.summarise(rows)
    assert [r["k"] for r in summary] == [8, 32, 64] and summary[0]["seeds"] == 3
    assert summary[0]["mask_AP"] == pytest.approx(1.2) and summary[0]["mask_AP_sd"] == pytest.approx(0.2)
    assert summary[2]["net_ms"] == 74.0 and summary[2]["params"] == 164
    diff, se, beyond = seeds.exceeds_spread([3.0, 3.1, 3.2], [1.0, 1.2, 1.4])
    assert diff == pytest.approx(-1.9) and beyond and se == pytest.approx((0.01 / 3 + 0.04 / 3) ** 0.5)
    assert not seeds.exceeds_spread([3.0, 3.1, 3.2], [2.0, 3.0, 4.0])[2]
    assert not seeds.exceeds_spread([3.0], [1.0])[2]  # one seed: no spread to compare with
    text = k_sweep.spread_reading(rows, "mask_AP")
    assert "beyond the seed spread" in text and "k=8 (-1.90" in text and "within the spread: k=64 (-0.10" in text
    one_seed = [r for r in rows if r["seed"] == 0]
    assert "fewer than 2 seeds" in k_sweep.spread_reading(one_seed, "mask_AP")

    # a sweep resumed on another CPU: AP averages over every seed, times only over the runs of
    # the CPU that timed most of them
    mixed = [{**r, "timed_cpu": "A"} for r in rows]
    mixed[2] = {**mixed[2], "timed_cpu": "B", "net_ms": 1000.0}  # k=8 seed 2, a much slower machine
    summary = k_sweep.summarise(mixed)
    assert summary[0]["mask_AP"] == pytest.approx(1.2) and summary[0]["seeds"] == 3
    assert summary[0]["net_ms"] == 18.0 and summary[0]["timed_runs"] == 2 and summary[1]["timed_runs"] == 3


def test_k_sweep_recipe_ids_read_back_as_the_strings_written(tmp_path, monkeypatch):
    common, k_sweep = _load("_common"), _load("k_sweep")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    ids = [k_sweep.recipe_id({"steps": steps}) for steps in range(200)]
    # bare 12-digit hex digests like these would come back from the CSV as numbers
    assert any(re.fullmatch(r"[0-9]+(e[0-9]+)?", i[1:]) for i in ids)
    common.write_results("ids", [{"recipe_id": i} for i in ids])
    assert [r["recipe_id"] for r in common.read_results("ids")] == ids


def test_finetune_recipe_summary_says_which_rows_differ_from_the_baseline_beyond_the_spread():
    fr = _load("finetune_recipe")

    def run(row, seed, mask, box, steps=600, minutes=""):
        return {"row": row, "seed": seed, "steps": steps, "minutes": minutes, "precision": "fp32",
                "mask_AP": mask, "box_AP": box, "mask_AP_M": mask - 1, "mask_tide_miss": 10.0 + seed}

    rows = [run("baseline", s, m, b) for s, (m, b) in enumerate([(3.0, 6.0), (3.2, 6.4)])]
    rows += [run("lsj", s, m, b) for s, (m, b) in enumerate([(5.0, 6.1), (5.1, 6.5)])]  # mask beyond, box not
    rows += [run("mosaic", 0, 9.0, 9.0)]  # one seed only
    rows += [run("baseline", 0, 4.0, 8.0, steps=900, minutes=15.0)]  # another budget: its own reference
    summary = {(e["row"], e["budget"]): e for e in fr.summarise(rows)}
    assert set(summary) == {("baseline", "600 steps"), ("lsj", "600 steps"), ("mosaic", "600 steps"),
                            ("baseline", "15 min")}
    mean, sd = summary["baseline", "600 steps"]["mask_AP"]
    assert (mean, sd) == (pytest.approx(3.1), pytest.approx(0.1414, abs=1e-4))  # sample sd of 3.0, 3.2
    assert summary["baseline", "600 steps"]["mask_tide_miss"] == (pytest.approx(10.5), pytest.approx(0.7071, abs=1e-4))
    base = summary["baseline", "600 steps"]
    words = fr.verdict(summary["lsj", "600 steps"], base)
    # se = sqrt(var_a / 2 + var_b / 2): mask sqrt(0.02 / 2 + 0.005 / 2) = 0.112, box sqrt(0.08) = 0.283
    assert "mask_AP +1.95 +- 0.11 BEYOND the spread" in words
    assert "box_AP +0.10 +- 0.28;" in words
    assert "fewer than 2 seeds" in fr.verdict(summary["mosaic", "600 steps"], base)
    assert fr.verdict(base, base) == "the reference"
    table = fr.summary_table(rows)
    assert "| lsj | 600 steps | fp32 | 2 | 5.05 +- 0.07 |" in table
    assert "| baseline | 15 min | fp32 | 1 | 4.00 | 8.00 |" in table
    assert "| mosaic | 600 steps | fp32 | 1 | 9.00 |" in table


def test_finetune_recipe_scores_the_written_masks_by_their_box_scores_for_mask_ap_unrescored(tmp_path, monkeypatch):
    """One person and two detections: the right mask with box score 0.9 but mask score 0.1, a
    wrong mask with box score 0.1 but mask score 0.9.  Ranked by the mask score the false
    positive comes first (AP 50); ranked by the box score the hit does (AP 100)."""
    import json

    import numpy as np
    from pycocotools import mask as mask_utils

    from yolact_lite.config import load_config, with_overrides
    from yolact_lite.evaluation.coco_eval import coco_evaluate

    fr = _load("finetune_recipe")
    gt = {"images": [{"id": 7, "width": 40, "height": 40, "file_name": "a.jpg"}],
          "categories": [{"id": 1, "name": "person"}],
          "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": 400.0,
                           "bbox": [0, 0, 20, 20], "segmentation": [[0, 0, 20, 0, 20, 20, 0, 20]]}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    monkeypatch.setattr(fr, "VAL_JSON", tmp_path / "gt.json")

    def rle(y0, x0):
        m = np.zeros((40, 40), np.uint8, order="F")
        m[y0:y0 + 20, x0:x0 + 20] = 1
        code = mask_utils.encode(m)
        return {**code, "counts": code["counts"].decode()}

    boxes = [{"image_id": 7, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},
             {"image_id": 7, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.1}]
    masks = [{"image_id": 7, "category_id": 1, "segmentation": rle(0, 0), "score": 0.1},
             {"image_id": 7, "category_id": 1, "segmentation": rle(20, 20), "score": 0.9}]
    (tmp_path / "bbox_detections.json").write_text(json.dumps(boxes))
    (tmp_path / "mask_detections.json").write_text(json.dumps(masks))
    assert coco_evaluate(tmp_path / "gt.json", boxes, masks)["mask"]["AP"] == 50.0  # as written: re-scored

    recipe = load_config(fr.CONFIG)
    head = with_overrides(recipe, ["model.mask_iou_head=true"])
    assert fr.unrescored_columns(head, tmp_path)["mask_AP_unrescored"] == pytest.approx(100.0)
    assert fr.unrescored_columns(recipe, tmp_path) == {}
    assert fr.unrescored_columns(with_overrides(head, ["inference.rescore_masks=false"]), tmp_path) == {}


def test_finetune_recipe_keeps_a_finished_bf16_run_recorded_with_the_trainers_description(tmp_path, monkeypatch):
    import torch

    common, fr = _load("_common"), _load("finetune_recipe")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(fr, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(fr, "plot", lambda *args, **kwargs: None)
    monkeypatch.setattr(fr, "bf16_supported", lambda device: True)
    bf16 = "bf16 autocast (this CPU has native bf16)"

    def row(name, seed):
        return {"row": name, "seed": seed, "steps": 640, "minutes": 15.0, "precision": bf16, "mask_AP": 3.0,
                "box_AP": 6.0, "mask_AP_M": 2.0}

    common.write_results("stage_b", [row("baseline", 0)])
    trained = []
    monkeypatch.setattr(fr, "run_row", lambda name, seed, *a, **k: trained.append((name, seed)) or row(name, seed))
    fr.main(["--minutes", "15", "--seeds", "0", "--rows", "baseline", "mask_rescoring", "--name", "stage_b",
             "--runs-dir", str(tmp_path / "runs"), "--threads", str(torch.get_num_threads())])
    assert trained == [("mask_rescoring", 0)]


def test_finetune_recipe_keeps_rows_another_screen_wrote_to_the_same_file(tmp_path, monkeypatch):
    import torch

    common, fr = _load("_common"), _load("finetune_recipe")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(fr, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(fr, "plot", lambda *args, **kwargs: None)

    def row(name, seed, mask):
        return {"row": name, "seed": seed, "steps": 600, "minutes": "", "precision": "fp32", "mask_AP": mask,
                "box_AP": mask + 2, "mask_AP_M": mask - 1}

    common.write_results("screen", [row("baseline", 0, 3.0)])

    def train(name, seed, *args, **kwargs):  # meanwhile a second screen adds its row to the file
        common.write_results("screen", [row("baseline", 0, 3.0), row("width_64", 1, 3.3)])
        return row(name, seed, 3.5)

    monkeypatch.setattr(fr, "run_row", train)
    fr.main(["--steps", "600", "--seeds", "1", "--rows", "baseline", "--precision", "fp32", "--name", "screen",
             "--runs-dir", str(tmp_path / "runs"), "--threads", str(torch.get_num_threads())])
    kept = {(r["row"], int(r["seed"])): float(r["mask_AP"]) for r in common.read_results("screen")}
    assert kept == {("baseline", 0): 3.0, ("baseline", 1): 3.5, ("width_64", 1): 3.3}


def test_conv_macs_counts_each_convolution_by_hand():
    import torch

    common = _load("_common")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 8 x 8 x 8 outputs, 3 x 9 each
            self.head = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
                                            torch.nn.Conv2d(8, 4, 1))  # depthwise: 1 x 9 each; 1x1: 8 each

        def forward(self, x):
            return self.head(self.stem(x))

    net = Net()
    macs = common.conv_macs(net, torch.zeros(2, 3, 16, 16))
    assert macs == {"stem": 2 * 8 * 8 * 8 * 27, "head": 2 * 8 * 8 * 8 * 9 + 2 * 4 * 8 * 8 * 8}
    assert all(not m._forward_hooks for m in net.modules())  # hooks removed


def test_fit_subset_picks_annotated_images_and_keeps_categories(tmp_path):
    import json

    common = _load("_common")
    cats = [{"id": 1, "name": "a"}, {"id": 7, "name": "b"}]
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in (5, 3, 11, 9, 4)]
    anns = [  # 3: two small; 4: one small + one large; 5: crowd only; 9: one large; 11: five large
        {"id": 1, "image_id": 3, "category_id": 1, "area": 100.0, "iscrowd": 0},
        {"id": 2, "image_id": 3, "category_id": 7, "area": 200.0, "iscrowd": 0},
        {"id": 3, "image_id": 4, "category_id": 1, "area": 50.0, "iscrowd": 0},
        {"id": 4, "image_id": 4, "category_id": 7, "area": 5000.0, "iscrowd": 0},
        {"id": 5, "image_id": 5, "category_id": 1, "area": 100.0, "iscrowd": 1},
        {"id": 6, "image_id": 9, "category_id": 7, "area": 4000.0, "iscrowd": 0},
    ] + [{"id": 10 + j, "image_id": 11, "category_id": 1, "area": 3000.0, "iscrowd": 0} for j in range(5)]
    src = tmp_path / "a.json"
    src.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))

    def pick(count, prefer):
        data = json.loads(common.fit_subset(src, count, tmp_path / f"{prefer}{count}.json", prefer=prefer).read_text())
        assert data["categories"] == cats
        assert {a["image_id"] for a in data["annotations"]} == {im["id"] for im in data["images"]}
        return sorted(im["id"] for im in data["images"])

    # large: 1-4 instances (11 has 5, 5 only a crowd), fewest small first: 9, 4, 3
    assert pick(1, "large") == [9] and pick(2, "large") == [4, 9] and pick(3, "large") == [3, 4, 9]
    # small: most small first (3, 4), then by id (9, 11); never the crowd-only 5
    assert pick(1, "small") == [3] and pick(2, "small") == [3, 4] and pick(4, "small") == [3, 4, 9, 11]
    with pytest.raises(SystemExit, match="3 images of the kind"):
        common.fit_subset(src, 4, tmp_path / "four.json")


def test_small_objects_writes_its_results_under_the_given_name(tmp_path, monkeypatch):
    so = _load("small_objects")
    written, plotted = [], []

    def fake_train_and_eval(name, seed, args, run_root):
        metrics = {f"{kind}_{key}": 1.0 + seed for kind in ("mask", "box") for key in so.METRICS}
        return [{"row": name, "kind": "trained", "seed": seed, "iters": 1, "train_s": 0.0, "train_cpu_s": 0.0,
                 "positives_per_image": 1.0, **metrics, "leak_all": 0.1, "leak_small": 0.2, "ms": 5.0,
                 "detections": 3}]

    monkeypatch.setattr(so, "train_and_eval", fake_train_and_eval)
    monkeypatch.setattr(so, "write_results", lambda stem, rows, notes="": written.append((stem, len(rows))))
    monkeypatch.setattr(so, "plot", lambda runs, order, path: plotted.append(path.name))
    so.main(["--only", "smallest_first", "--name", "bench_x", "--fit", "0", "--seeds", "0", "1"])
    # the row loop must not rename the results (it once wrote them under the last row's name)
    assert written == [("bench_x", 2), ("bench_x_runs", 4)] and plotted == ["bench_x.png"]


def test_read_results_returns_what_write_results_wrote(tmp_path, monkeypatch):
    common = _load("_common")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    common.write_results("again", [{"row": "a", "seed": 1, "ap": 2.5, "note": ""}])
    assert common.read_results("again") == [{"row": "a", "seed": 1, "ap": 2.5, "note": ""}]
    assert common.read_results("absent") == []


def test_compare_finetune_peer_trains_and_predicts_full_resolution_masks():
    """The Mask R-CNN peer: our targets convert to torchvision's (pixels, labels from 1, crowds
    and sub-pixel boxes dropped), one training step gives every finite loss, and its predictor
    returns Detections at the image's resolution."""
    import numpy as np
    import torch

    cf = _load("compare_finetune")
    targets = [{"boxes": torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.301, 0.5]]),
                "labels": torch.tensor([0, 0, 0]), "is_crowd": torch.tensor([False, True, False]),
                "masks": torch.zeros(3, 64, 64)}]
    targets[0]["masks"][0, 13:58, 6:32] = 1.0
    out = cf.maskrcnn_targets(targets, 64)[0]
    assert torch.allclose(out["boxes"], torch.tensor([[6.4, 12.8, 32.0, 57.6]]))
    assert out["labels"].tolist() == [1] and out["masks"].dtype == torch.uint8 and int(out["masks"].sum()) == 45 * 26

    config = cf.recipe_config(0, amp=False)
    torch.manual_seed(0)
    model = cf.build_maskrcnn(config).train()
    losses = model([torch.randn(3, 64, 64)], [out])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    frozen = [n for n, p in model.backbone.body.named_parameters() if not p.requires_grad]
    groups = {n.split(".")[0] if n.startswith("stem") else ".".join(n.split(".")[:2]) for n in frozen}
    assert groups == {"stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4"}  # frozen_stages=3

    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    det = cf.MaskRCNNPredictor(model, config).predict(image)
    assert det.masks.shape[1:] == (90, 120) and det.masks.dtype == torch.bool
    assert len(det) == len(det.scores) == len(det.boxes)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__"))
def test_every_benchmark_module_imports(name):
    """A renamed or moved library symbol breaks a benchmark only when someone runs it: import
    each one here."""
    assert _load(name).__name__ == f"benchmarks.{name}"


def test_compare_finetune_rows_keep_input_sizes_apart():
    """Rows of the same model and budget at two input sizes are two series, not one."""
    cf = _load("compare_finetune")
    rows = [{"model": cf.PEER, "input_size": s, "minutes": 5.0, "seed": 0} for s in (384, "448")]
    assert len({cf.key(r) for r in rows}) == 2
    assert list(cf.series(rows)) == [f"{cf.PEER}, 384 px", f"{cf.PEER}, 448 px"]
    assert cf.label(cf.OURS, "yolact_effl0_finetune_384") == "ours (yolact_effl0_finetune_384)"


def test_compare_finetune_keeps_recipe_variants_out_of_the_comparison(tmp_path, monkeypatch):
    """A ``--set`` variant is its own curve in finetune_curve but not a row of compare_finetune."""
    cf = _load("compare_finetune")
    monkeypatch.setattr(cf, "write_results", lambda name, rows, notes: written.__setitem__(name, rows))
    monkeypatch.setattr(cf, "plot", lambda *a, **k: None)
    written = {}
    plain, variant = cf.label(cf.OURS, "r"), cf.label(cf.OURS, "r", ["train.weight_decay=0.05"])
    assert (cf.is_variant(plain), cf.is_variant(variant), cf.is_variant(cf.PEER)) == (False, True, False)
    rows = [{"model": m, "input_size": 448, "minutes": 15.0, "seed": 0} for m in (plain, variant, cf.PEER)]
    cf.write_all(rows, threads=2, amp=True)
    assert {r["model"] for r in written["finetune_curve"]} == {plain, variant}
    assert {r["model"] for r in written["compare_finetune"]} == {plain, cf.PEER}


def test_recipe_negatives_set_keeps_every_image_and_only_person_annotations(shared_data, tmp_path):
    fr = _load("finetune_recipe")
    path, images, num_classes = fr.training_set("shared_person_209", tmp_path)
    data = json.loads(Path(path).read_text())
    source = json.loads((shared_data / "coco_mini" / "train" / "annotations.json").read_text())
    assert num_classes == 1 and [c["name"] for c in data["categories"]] == ["person"]
    assert len(data["images"]) == len(source["images"]) == 209
    persons = [a for a in source["annotations"] if a["category_id"] == data["categories"][0]["id"]]
    assert data["annotations"] == persons and Path(images).is_dir()
    with_person = {a["image_id"] for a in persons}
    assert len(with_person) < len(data["images"])  # the rest are the negatives


def test_recipe_run_cut_off_goes_on_to_the_uninterrupted_weights(tmp_path, capsys):
    """A screen spans sessions: a (row, seed) run cut off mid-training resumes from its run
    folder's checkpoint and ends with the weights of a run that was never stopped."""
    fr = _load("finetune_recipe")

    def checksum():
        """The final weights' checksum the trainer printed, and whether the run went on from step 1."""
        printed = capsys.readouterr()
        text = printed.out + printed.err
        return re.findall(r"weights sha256 \(rank 0\): (\w+)", text), "iterations 1->2" in text

    whole = fr.run_row("baseline", 0, 2, False, smoke=True, run_dir=tmp_path / "whole")
    reference, resumed = checksum()
    assert len(reference) == 1 and not resumed
    with pytest.raises(KeyboardInterrupt):
        fr.run_row("baseline", 0, 2, False, smoke=True, run_dir=tmp_path / "cut", extra_hooks=[InterruptAt(1)])
    assert (tmp_path / "cut" / "last.pt").is_file() and checksum() == ([], False)
    pieced = fr.run_row("baseline", 0, 2, False, smoke=True, run_dir=tmp_path / "cut")
    assert checksum() == (reference, True)  # went on from step 1, to the same weights
    assert (pieced["steps"], pieced["mask_AP"], pieced["box_AP"]) == (whole["steps"], whole["mask_AP"], whole["box_AP"])
    assert not (tmp_path / "cut").exists() and not (tmp_path / "whole").exists()  # removed once measured
