"""Small-object options: loss weighting, crop modes, the P2 config, tiled inference."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.paths import ROOT
from yolact_lite.box_ops import center_size
from yolact_lite.checkpoint.files import model_checkpoint, save_atomic
from yolact_lite.config import InferenceConfig, LossConfig, load_config
from yolact_lite.data import coco_subset
from yolact_lite.data.stats import class_balanced_weights, class_counts
from yolact_lite.errors import ConfigError, DataError
from yolact_lite.inference.detection import detect
from yolact_lite.inference.mask_assembly import assemble_detections
from yolact_lite.inference.tiling import predict_tiled, tile_windows
from yolact_lite.loss.criterion import YolactLoss, mask_size_weight_fn, size_mask_weights
from yolact_lite.masks import crop_region, soft_crop_region
from yolact_lite.model import build_model
from yolact_lite.model.outputs import decode_outputs
from yolact_lite.model.testing import detecting_model
from yolact_lite.structures import Detections, InputGeometry

TRAIN = ROOT / "data" / "coco_mini" / "train"


# --------------------------------------------------------------------------- config


def test_defaults_are_the_original_behaviour():
    cfg = load_config("yolact_base")
    assert cfg.loss.masks_selection == "random"
    assert cfg.loss.mask_size_weight_power == 0.0 and cfg.loss.class_balance == "none"
    assert cfg.inference.crop_mode == "hard" and cfg.inference.crop_padding == 1.0
    assert mask_size_weight_fn(0.0) is None


@pytest.mark.parametrize("override, words", [
    ("inference.crop_mode=blurry", "inference.crop_mode must be one of"),
    ("inference.crop_softness=0", "crop_softness must be > 0"),
    ("loss.class_balance=inverse", "loss.class_balance must be one of"),
    ("loss.mask_size_weight_power=-1", "mask_size_weight_power must be >= 0"),
    ("inference.crop_masks=false", "replaced by crop_mode"),
])
def test_config_rejects_bad_small_object_options(override, words):
    with pytest.raises(ConfigError, match=words):
        load_config("yolact_base", [override])


def test_negative_crop_padding_is_allowed():
    assert load_config("yolact_base", ["inference.crop_padding=-1"]).inference.crop_padding == -1.0


# --------------------------------------------------------------------------- loss weighting


def test_size_weights_follow_area_power_with_mean_one():
    # relative areas 0.01, 0.04, 0.16 -> area^-0.5 = 10, 5, 2.5
    boxes = torch.tensor([[0.0, 0.0, 0.1, 0.1], [0.2, 0.2, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]])
    w = size_mask_weights(boxes, 0.5)
    torch.testing.assert_close(w, torch.tensor([10.0, 5.0, 2.5]) / (17.5 / 3))
    assert w.mean().item() == pytest.approx(1.0)
    w1 = size_mask_weights(boxes, 1.0)
    assert (w1[0] / w1[2]).item() == pytest.approx(16.0, rel=1e-5)
    assert torch.equal(size_mask_weights(boxes, 0.0), torch.ones(3))
    degenerate = torch.tensor([[0.3, 0.3, 0.3, 0.5], [0.0, 0.0, 0.5, 0.5]])
    assert torch.isfinite(size_mask_weights(degenerate, 0.5)).all()
    assert size_mask_weights(torch.zeros(0, 4), 0.5).shape == (0,)


def _positive_case(sizes):
    """One prior per gt, identical to it (IoU 1): every gt is a positive with its own mask."""
    boxes = torch.tensor([[0.05 + 0.3 * i, 0.1, 0.05 + 0.3 * i + s, 0.1 + s] for i, s in enumerate(sizes)])
    num = len(sizes)
    gen = torch.Generator().manual_seed(3)
    outputs = {
        "box_deltas": torch.zeros(1, num, 4),
        "class_logits": torch.zeros(1, num, 2),
        "coefficients": torch.rand(1, num, 3, generator=gen) - 0.5,
        "prototypes": torch.rand(1, 16, 16, 3, generator=gen),
        "priors": center_size(boxes),
    }
    masks = torch.zeros(num, 32, 32)
    for i, (x0, y0, x1, y1) in enumerate((boxes * 32).round().long().tolist()):
        masks[i, y0:y1, x0:x1] = 1.0
    return outputs, [{"boxes": boxes, "labels": torch.zeros(num, dtype=torch.long), "masks": masks}]


def test_mask_loss_is_the_size_weighted_sum():
    sizes = [0.1, 0.2, 0.25]
    outputs, targets = _positive_case(sizes)

    def mask_loss(weight_fn):
        return YolactLoss(LossConfig(), 1, mask_instance_weight=weight_fn)(outputs, targets)["mask"].item()

    per_gt = [mask_loss(lambda b, g=g: torch.nn.functional.one_hot(torch.tensor(g), 3).float()) for g in range(3)]
    w = size_mask_weights(targets[0]["boxes"], 0.5).tolist()
    assert w[0] > w[1] > w[2]
    got = mask_loss(mask_size_weight_fn(0.5))
    assert got == pytest.approx(sum(wi * li for wi, li in zip(w, per_gt)), rel=1e-5)
    assert mask_loss(None) == pytest.approx(sum(per_gt), rel=1e-5)


# --------------------------------------------------------------------------- crop modes


def test_soft_crop_is_in_unit_interval_and_monotone_across_edges():
    boxes = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.4, 0.1, 0.5, 0.3]])
    soft = soft_crop_region(boxes, 32, 40, padding_px=1.0, softness_px=1.5)
    assert soft.shape == (2, 32, 40) and soft.min() > 0 and soft.max() <= 1
    for n in range(2):
        peak_r, peak_c = divmod(int(soft[n].argmax()), 40)
        row, col = soft[n, peak_r], soft[n, :, peak_c]
        for profile, peak in ((row, peak_c), (col, peak_r)):
            assert (profile[1:peak + 1] >= profile[:peak]).all()  # rises to the peak
            assert (profile[peak + 1:] <= profile[peak:-1]).all()  # falls after it
    # far inside ~1, far outside ~0; thresholded at 0.5 it is the hard crop for whole bounds
    assert soft[0, 16, 20] > 0.99 and soft[0, 0, 0] < 1e-3
    hard = crop_region(boxes[:1], 32, 40, 1.0)[0]
    assert torch.equal(soft_crop_region(boxes[:1], 32, 40, 1.0, 0.1)[0] > 0.5, hard)
    # a box reaching the map edge is not feathered there
    edge = soft_crop_region(torch.tensor([[0.0, 0.0, 0.5, 1.0]]), 8, 8, 0.0, 1.0)[0]
    # (only the right edge at x = 4 ramps: column 0 is sigmoid(4 - 0.5), every row the same)
    torch.testing.assert_close(edge[:, 0], torch.sigmoid(torch.tensor(3.5)).expand(8))


def test_negative_padding_shrinks_the_crop():
    box = torch.tensor([[0.25, 0.25, 0.75, 0.75]])
    assert crop_region(box, 32, 32, 0.0).sum() == 16 * 16
    assert crop_region(box, 32, 32, -1.0).sum() == 14 * 14
    assert soft_crop_region(box, 32, 32, -1.0).sum() < soft_crop_region(box, 32, 32, 0.0).sum()


def test_crop_modes_in_postprocess():
    # one detection whose mask logits are +4 everywhere: only the crop limits it
    box = torch.tensor([[0.25, 0.25, 0.75, 0.75]])
    outputs = {"box_deltas": torch.zeros(1, 4), "priors": center_size(box),
               "class_logits": torch.tensor([[0.0, 6.0]]), "coefficients": torch.tensor([[4.0]])}
    protos = torch.ones(16, 16, 1)
    geometry = InputGeometry.for_image(64, 64, 64)

    def area(**kw):
        cfg = dataclasses.replace(InferenceConfig(), **kw)
        out = assemble_detections(detect(decode_outputs(outputs), cfg), protos, geometry, cfg)
        return int(out.masks[0].sum())

    none, hard = area(crop_mode="none"), area(crop_mode="hard", crop_padding=0.0)
    assert none == 64 * 64  # "none" keeps everything
    assert 1000 <= hard <= 32 * 32  # the box, corners rounded by the bilinear resize
    assert area(crop_mode="hard", crop_padding=-1.0) < hard
    soft = area(crop_mode="soft", crop_padding=0.0, crop_softness=1.0)
    assert 0.7 * hard < soft < none
    # the ROI resize of the soft crop gives the same masks as resizing whole maps
    cfg = dataclasses.replace(InferenceConfig(), crop_mode="soft", crop_padding=-0.5, crop_softness=2.0)
    det = detect(decode_outputs(outputs), cfg)
    fast = assemble_detections(det, protos, geometry, cfg)
    full = assemble_detections(det, protos, geometry, cfg, roi_resize=False)
    assert torch.equal(fast.masks, full.masks)


# --------------------------------------------------------------------------- training wiring


@pytest.fixture(scope="module")
def two_image_json(tmp_path_factory) -> Path:
    data = json.loads((TRAIN / "annotations.json").read_text())
    ids = sorted({a["image_id"] for a in data["annotations"] if not a.get("iscrowd")})[:2]
    data = coco_subset(data, ids)
    path = tmp_path_factory.mktemp("small_obj") / "two.json"
    path.write_text(json.dumps(data))
    return path


def test_small_config_trains_two_steps_with_every_option_and_predicts(two_image_json, tmp_path):
    from yolact_lite.engine import trainer as T

    scales = [[max(1, int(s[0] * 128 / 448))] for s in load_config("yolact_effl0_small").model.anchors.scales]
    config = load_config("yolact_effl0_small", [
        "model.input_size=128", f"model.anchors.scales={scales}", "train.batch_size=2",
        "train.num_workers=0", "train.checkpoint_every_iters=0", "train.augment=none",
        "loss.masks_selection=stratified_by_area", "loss.mask_size_weight_power=0.5",
        "loss.class_balance=effective_number", "loss.class_balance_beta=0.9",
        "inference.crop_mode=soft", "inference.max_detections=5",
    ])
    assert config.model.fpn.min_level == 2 and config.model.proto_level == 2
    options = T.TrainOptions(train_json=str(two_image_json), train_images=str(TRAIN / "images"),
                             out=str(tmp_path / "run"), max_iter=2, pretrained=False, progress=False)
    trainer = T.Trainer(config, options)
    criterion = trainer.step_module.criterion
    assert criterion.masks_selection == "stratified_by_area"
    assert criterion.mask_instance_weight is not None
    counts = class_counts(json.loads(two_image_json.read_text()))
    expected = torch.tensor([1.0] + class_balanced_weights(counts, 0.9))
    torch.testing.assert_close(criterion.class_weights, expected)
    result = trainer.fit()
    assert result.step == 2 and result.skipped_steps == 0

    predictor = T.make_predictor(trainer.model, config, torch.device("cpu"), trainer.class_names)
    protos = predictor.network(predictor.preprocess([np.zeros((128, 128, 3), np.uint8)])[0])["prototypes"]
    assert protos.shape[1:3] == (64, 64)  # proto_level 2: stride 2
    image = cv2.imread(str(TRAIN / "images" / json.loads(two_image_json.read_text())["images"][0]["file_name"]))
    dets = predictor.predict(image)
    assert dets.masks.shape[1:] == image.shape[:2] and len(dets) <= 5


# --------------------------------------------------------------------------- tiling


class BlobPredictor:
    """Finds bright blobs (one class), but only those at least ``min_px`` wide AND high after
    a square stretch of its input to ``internal`` px: the network's resolution limit."""

    class_names = ["blob"]

    def __init__(self, internal: int = 320, min_px: float = 3.0):
        self.internal, self.min_px = internal, min_px
        self.calls = 0

    def predict(self, image):
        self.calls += 1
        h, w = image.shape[:2]
        bright = (image.max(axis=2) > 128).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
        found = [k for k in range(1, n)
                 if stats[k, 2] * self.internal / w >= self.min_px and stats[k, 3] * self.internal / h >= self.min_px]
        if not found:
            return Detections.empty(h, w, self.class_names)
        boxes = torch.tensor([[stats[k, 0], stats[k, 1], stats[k, 0] + stats[k, 2], stats[k, 1] + stats[k, 3]]
                              for k in found], dtype=torch.float32)
        masks = torch.from_numpy(np.stack([labels == k for k in found]))
        scores = torch.tensor([0.9 - 0.01 * i for i in range(len(found))])
        return Detections(boxes=boxes, scores=scores, classes=torch.zeros(len(found), dtype=torch.int64),
                          masks=masks, class_names=self.class_names)


def _frame(rects, height=1500, width=2000):
    frame = np.zeros((height, width, 3), np.uint8)
    for x0, y0, x1, y1 in rects:
        frame[y0:y1, x0:x1] = 255
    return frame


def _rect_mask(rect, height=1500, width=2000):
    m = torch.zeros(height, width, dtype=torch.bool)
    m[rect[1]:rect[3], rect[0]:rect[2]] = True
    return m


def test_tile_windows_cover_with_overlap():
    wins = tile_windows(2000, 1500, 640, 0.2)
    xs = sorted({w[0] for w in wins})
    assert xs == [0, 453, 907, 1360] and max(w[2] for w in wins) == 2000
    assert all(xs[i] + 640 - xs[i + 1] >= 128 for i in range(len(xs) - 1))
    assert tile_windows(300, 200, 640) == [(0, 0, 300, 200)]


def test_tiling_finds_a_small_object_the_full_frame_misses():
    rect = (1001, 703, 1009, 711)  # 8 px: 1.3 px after 2000 -> 320, 4 px after 640 -> 320
    frame = _frame([rect])
    fake = BlobPredictor()
    assert len(fake.predict(frame)) == 0
    dets = predict_tiled(fake, frame, tile=640, overlap=0.2)
    assert len(dets) == 1  # seen whole by two overlapping tiles: kept once
    assert dets.boxes[0].tolist() == list(map(float, rect))
    assert dets.masks.shape == (1, 1500, 2000) and torch.equal(dets.masks[0], _rect_mask(rect))
    assert fake.calls == 1 + 1 + 12  # the check above, the full frame, 4 x 3 tiles


@pytest.mark.parametrize("full_frame", [True, False])
def test_object_cut_by_tile_borders_is_returned_once_whole(full_frame):
    big = (600, 100, 1200, 200)  # crosses x = 640 and 907 / 1093: no tile holds it whole
    near = (1210, 100, 1300, 200)  # a separate blob 10 px to the right
    frame = _frame([big, near])
    dets = predict_tiled(BlobPredictor(), frame, tile=640, overlap=0.2, include_full_frame=full_frame)
    assert len(dets) == 2
    order = dets.boxes[:, 0].argsort()
    assert dets.boxes[order[0]].tolist() == list(map(float, big))
    assert dets.boxes[order[1]].tolist() == list(map(float, near))
    assert torch.equal(dets.masks[order[0]], _rect_mask(big))
    assert torch.equal(dets.masks[order[1]], _rect_mask(near))


def test_roi_restricts_results_to_the_area_in_frame_coordinates():
    inside, outside = (1001, 703, 1009, 711), (200, 200, 208, 208)
    frame = _frame([inside, outside])
    roi = (800, 500, 1300, 900)
    dets = predict_tiled(BlobPredictor(), frame, tile=None, roi=roi)  # 8 px -> 5 px in a 500 px ROI
    assert len(dets) == 1 and dets.boxes[0].tolist() == list(map(float, inside))
    assert dets.masks.shape == (1, 1500, 2000) and torch.equal(dets.masks[0], _rect_mask(inside))
    tiled = predict_tiled(BlobPredictor(), frame, tile=320, roi=roi)
    assert len(tiled) == 1 and tiled.boxes[0].tolist() == list(map(float, inside))


@pytest.fixture(scope="module")
def real_predictor():
    from yolact_lite.inference.predictor import Predictor

    config = load_config("yolact_effl0", ["model.num_classes=2", "model.input_size=64",
                                          "model.anchors.scales=[[4],[8],[16],[32],[64]]",
                                          "inference.max_detections=6"])
    torch.manual_seed(0)
    model = build_model(config, pretrained=False)
    with torch.no_grad():  # random weights, biased so that every prior is a confident class-1 detection
        bias = model.head.cls.bias.view(-1, 3)
        bias[:, 0], bias[:, 1], bias[:, 2] = -4.0, 0.0, 4.0
    return Predictor(config, weights=model_checkpoint(model, config.to_dict()))


def test_tiling_through_the_real_predictor(real_predictor):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    plain = real_predictor.predict(image)
    assert len(plain) > 0
    one = real_predictor.predict(image, tile=400)  # a single window: the plain result
    assert torch.equal(one.masks, plain.masks) and torch.allclose(one.boxes, plain.boxes)
    tiled = real_predictor.predict(image, tile=128, tile_overlap=0.25)
    assert 0 < len(tiled) <= 6 and tiled.masks.shape[1:] == (200, 300)
    assert (tiled.boxes >= 0).all() and (tiled.boxes[:, 2] <= 300).all() and (tiled.boxes[:, 3] <= 200).all()
    assert torch.all(tiled.scores[:-1] >= tiled.scores[1:])
    roi = (50, 40, 250, 160)
    inside = real_predictor.predict(image, roi=roi)  # the ROI alone (tiles inside it: as above)
    assert len(inside) > 0 and inside.masks.shape[1:] == (200, 300)
    b = inside.boxes
    assert (b[:, 0] >= 50).all() and (b[:, 1] >= 40).all() and (b[:, 2] <= 250).all() and (b[:, 3] <= 160).all()
    outside = inside.masks.clone()
    outside[:, 40:160, 50:250] = False
    assert not outside.any()
    top = real_predictor.predict(image, tile=400, top_k=2)
    assert len(top) == 2


def test_infer_cli_tile_and_roi(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("infer_script", ROOT / "scripts" / "infer.py")
    infer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer)
    overrides = ["model.input_size=64", "model.anchors.scales=[[4],[8],[16],[32],[64]]", "inference.max_detections=5"]
    weights = tmp_path / "detecting.pth"
    config = load_config("yolact_effl0", overrides)
    save_atomic(model_checkpoint(detecting_model(config), config.to_dict()), weights)
    tiny = ["--config", "yolact_effl0", "--weights", str(weights), *(a for o in overrides for a in ("--set", o))]
    photo = ROOT / "data" / "photos" / "messi5.jpg"
    out = tmp_path / "dets.json"
    assert infer.main(tiny + ["--image", str(photo), "--out", str(tmp_path / "drawn.png"), "--json", str(out),
                              "--tile", "96", "--tile-overlap", "0.25", "--roi", "10,10,200,150"]) == 0
    dets = json.loads(out.read_text())
    assert 0 < len(dets) <= 5
    for det in dets:
        x, y, w, h = det["bbox"]
        assert x >= 10 and y >= 10 and x + w <= 200.01 and y + h <= 150.01
    for bad, message in ((["--roi", "5,5"], "--roi must be X1,Y1,X2,Y2"), (["--tile", "8"], "--tile must be >= 32")):
        with pytest.raises(DataError, match=message):
            infer.main(tiny + ["--image", str(photo), *bad])


def test_small_objects_benchmark_rows_differ_only_in_their_option():
    import benchmarks.small_objects as so
    args = so.parse_args([])
    assert args.seeds == [0, 1] and args.iters > 0
    base = so.build_config(*so.TRAINED["baseline"], args, seed=0).to_dict()
    focal = so.build_config(*so.TRAINED["focal"], args, seed=0).to_dict()
    assert focal["loss"].pop("classification") == "focal" and base["loss"].pop("classification") == "softmax_ohem"
    assert focal == base
    small = so.build_config(*so.TRAINED["p2_proto2"], args, seed=0)
    assert small.model.fpn.min_level == 2 and small.model.input_size == args.input_size
    runs = [{"row": "baseline", "kind": "trained", "mask_AP_small": v, "ms": 10.0} for v in (1.0, 3.0)]
    runs += [{"row": "focal", "kind": "trained", "mask_AP_small": v, "ms": 12.0} for v in (2.0, 6.0)]
    table = so.aggregate(runs, ["baseline", "focal"])
    assert table[0]["mask_AP_small"] == "2.0 ± 1.0" and table[1]["mask_AP_small"] == "4.0 ± 2.0"
    assert table[1]["d_mask_AP_small"] == "+2.00"
