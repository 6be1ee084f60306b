import dataclasses
import math

import pytest
import torch
from torch import nn

from yolact_lite.box_ops import box_iou, center_size, point_form
from yolact_lite.config import LossConfig, config_from_dict
from yolact_lite.loss.criterion import LARGE_AREA, SMALL_AREA, YolactLoss, match, select_masks


def _cxcywh(xyxy):
    return center_size(torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4))


# --------------------------------------------------------------------------- match


def _reference_match(priors, gt_boxes, gt_labels, pos_thr, neg_thr):
    """Straightforward transcription of the rule (every row recomputed each round)."""
    overlaps = box_iou(gt_boxes, point_form(priors))
    best, idx = overlaps.max(0)
    ov = overlaps.clone()
    for _ in range(gt_boxes.shape[0]):
        row_best, row_arg = ov.max(1)
        j = int(row_best.max(0).indices)
        i = int(row_arg[j])
        ov[:, i] = -1
        ov[j, :] = -1
        best[i] = 2
        idx[i] = j
    conf = gt_labels[idx] + 1
    conf[best < pos_thr] = -1
    conf[best < neg_thr] = 0
    return idx, conf


def test_forced_matching_gives_each_gt_its_own_prior():
    priors = _cxcywh([[0.0, 0.0, 0.4, 0.4], [0.3, 0.3, 0.7, 0.7]])
    gts = torch.tensor([[0.0, 0.0, 0.4, 0.4], [0.05, 0.05, 0.45, 0.45]])
    labels = torch.tensor([3, 5])
    # both gts have prior 0 as their best; plain argmax would leave gt 1 without a positive
    iou = box_iou(gts, point_form(priors))
    assert iou[:, 0].argmax() == 0 and iou[1].argmax() == 0 and iou[1, 1] < 0.4
    matched, conf = match(priors, gts, labels, None, 0.5, 0.4, 0.7)
    assert matched.tolist() == [0, 1]
    assert conf.tolist() == [4, 6]


def test_thresholds_positive_neutral_background():
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    shifts = [0.0] + [0.5 * (1 - r) / (1 + r) for r in (0.55, 0.45, 0.3)]
    priors = _cxcywh([[d, 0.0, 0.5 + d, 0.5] for d in shifts])
    torch.testing.assert_close(box_iou(gt, point_form(priors))[0], torch.tensor([1.0, 0.55, 0.45, 0.3]))
    matched, conf = match(priors, gt, torch.tensor([1]), None, 0.5, 0.4, 0.7)
    assert conf.tolist() == [2, 2, -1, 0]
    assert matched.tolist() == [0, 0, 0, 0]


def test_crowd_rule():
    priors = _cxcywh([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7], [0.5, 0.5, 0.7, 0.7]])
    gt = torch.tensor([[0.5, 0.5, 0.7, 0.7]])
    for covered, expected in ((0.8, -1), (0.6, 0)):
        crowd = torch.tensor([[0.0, 0.0, 0.2 * covered, 0.2], [0.45, 0.45, 0.75, 0.75]])
        _, conf = match(priors, gt, torch.tensor([0]), crowd, 0.5, 0.4, 0.7)
        # prior 0: background unless the crowd covers > 70 % of it; priors 1, 2 stay positive
        assert conf.tolist() == [expected, 1, 1]
        # without gts every prior starts as background, the crowd rule still applies
        matched, conf = match(priors, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), crowd, 0.5, 0.4, 0.7)
        assert conf.tolist() == [expected, -1, -1]
        assert matched.tolist() == [0, 0, 0]
    # crowd_iou >= 1 disables the rule
    _, conf = match(priors, gt, torch.tensor([0]), crowd, 0.5, 0.4, 1.0)
    assert conf.tolist() == [0, 1, 1]


def test_match_agrees_with_the_plain_transcription():
    gen = torch.Generator().manual_seed(5)
    for trial in range(20):
        priors = torch.cat([torch.rand(60, 2, generator=gen), torch.rand(60, 2, generator=gen) * 0.4 + 0.05], 1)
        n = 1 + trial % 9
        gts = point_form(torch.cat([torch.rand(n, 2, generator=gen), torch.rand(n, 2, generator=gen) * 0.4 + 0.05], 1))
        labels = torch.randint(0, 4, (n,), generator=gen)
        got = match(priors, gts, labels, None, 0.5, 0.4, 0.7)
        want = _reference_match(priors, gts, labels, 0.5, 0.4)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert (got[1] > 0).sum() >= n  # every gt has at least one positive


# --------------------------------------------------------------------------- hand-computed loss


def _bce(p, t):
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _tiny_case():
    """P=4 quadrant priors, C=2, one gt (label 1) best matching prior 0; 4x4x2 protos."""
    priors = torch.tensor(
        [[0.25, 0.25, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]]
    )
    box_deltas = torch.tensor([[[0.3, -0.2, 0.1, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0],
                                [2.0, 0.0, 0.0, 0.0]]])
    class_logits = torch.tensor(
        [[[0.5, 0.1, 1.0], [2.0, 0.5, 0.0], [0.0, 1.5, 0.8], [1.0, 0.2, 0.3]]]
    )  # prior 2 is the hardest negative
    protos = torch.tensor(
        [[[0.5, 0.0], [1.0, 0.2], [0.0, 1.0], [0.3, 0.3]],
         [[0.8, 0.1], [0.0, 0.0], [1.2, 0.4], [0.6, 0.9]],
         [[0.1, 0.7], [0.4, 0.4], [0.9, 0.0], [0.0, 0.5]],
         [[1.0, 1.0], [0.2, 0.6], [0.5, 0.5], [0.7, 0.1]]]
    )[None]  # [1, 4, 4, 2]
    coefficients = torch.tensor([[[0.9, -0.5], [0.1, 0.1], [-0.3, 0.4], [0.2, 0.2]]])
    outputs = {
        "box_deltas": box_deltas,
        "class_logits": class_logits,
        "coefficients": coefficients,
        "prototypes": protos,
        "priors": priors,
    }
    gt_box = [0.05, 0.0, 0.5, 0.45]
    proto_mask = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    masks = proto_mask.repeat_interleave(2, 0).repeat_interleave(2, 1)[None]  # [1, 8, 8], 2x2 blocks
    targets = [{"boxes": torch.tensor([gt_box]), "labels": torch.tensor([1]), "masks": masks,
                "is_crowd": torch.tensor([False])}]
    return outputs, targets, proto_mask


def test_loss_terms_by_hand():
    outputs, targets, proto_mask = _tiny_case()
    cfg = LossConfig(ohem_neg_pos_ratio=1)
    losses = YolactLoss(cfg, num_classes=2)(outputs, targets)

    # B: one positive (prior 0), target from the SSD formula
    t = [0.025 / 0.05, -0.025 / 0.05, math.log(0.9) / 0.2, math.log(0.9) / 0.2]
    d = [0.3, -0.2, 0.1, 0.0]
    smooth = sum(0.5 * (a - b) ** 2 if abs(a - b) < 1 else abs(a - b) - 0.5 for a, b in zip(d, t))
    assert losses["box"].item() == pytest.approx(1.5 * smooth, rel=1e-5)

    # C: positive prior 0 (target class 2) + the single hardest background prior (2)
    def ce(logits, y):
        return math.log(sum(math.exp(v) for v in logits)) - logits[y]

    logits = outputs["class_logits"][0].tolist()
    hardness = [ce(logits[i], 0) for i in (1, 2, 3)]
    assert max(hardness) == hardness[1]
    assert losses["class"].item() == pytest.approx(ce(logits[0], 2) + ce(logits[2], 0), rel=1e-5)

    # M: 3x3 crop (cols 0..2: 0.05*4-1 <= c < 0.5*4+1; rows 0..2: -1 <= r < 0.45*4+1 = 2.8)
    protos = outputs["prototypes"][0]
    c = outputs["coefficients"][0, 0].tolist()
    total = 0.0
    for r in range(3):
        for col in range(3):
            logit = sum(float(protos[r, col, j]) * c[j] for j in range(2))
            total += _bce(_sigmoid(logit), float(proto_mask[r, col]))
    area = (0.45 * 4) * (0.45 * 4)
    assert losses["mask"].item() == pytest.approx(6.125 * total / area, rel=1e-5)

    assert "semantic" not in losses and "mask_iou" not in losses
    assert losses["num_positives"].item() == 1
    assert losses["total"].item() == pytest.approx(
        losses["box"].item() + losses["class"].item() + losses["mask"].item(), rel=1e-6
    )


def test_ohem_ratio_limits_negatives():
    outputs, targets, _ = _tiny_case()
    logits = outputs["class_logits"][0].tolist()

    def ce(row, y):
        return math.log(sum(math.exp(v) for v in row)) - row[y]

    loss = YolactLoss(LossConfig(ohem_neg_pos_ratio=3), 2)(outputs, targets)["class"]
    # 3 * 1 positives, capped at P - 1 = 3: all background priors
    assert loss.item() == pytest.approx(ce(logits[0], 2) + sum(ce(logits[i], 0) for i in (1, 2, 3)), rel=1e-5)
    weights = torch.tensor([0.5, 1.0, 2.0])
    loss = YolactLoss(LossConfig(ohem_neg_pos_ratio=1), 2, class_weights=weights)(outputs, targets)
    assert loss["class"].item() == pytest.approx(2.0 * ce(logits[0], 2) + 0.5 * ce(logits[2], 0), rel=1e-5)


def test_focal_loss_by_hand():
    outputs, targets, _ = _tiny_case()
    cfg = LossConfig(classification="focal", focal_alpha=0.25, focal_gamma=2.0)
    loss = YolactLoss(cfg, 2)(outputs, targets)["class"]
    expected = 0.0
    for i, y in enumerate([2, 0, 0, 0]):
        row = outputs["class_logits"][0, i].tolist()
        p = math.exp(row[y]) / sum(math.exp(v) for v in row)
        a = 0.25 if y > 0 else 0.75
        expected += -a * (1 - p) ** 2 * math.log(p)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_mask_crop_none_and_semantic_by_hand():
    outputs, targets, proto_mask = _tiny_case()
    sem = torch.tensor([[[[0.5, -1.0], [0.2, 0.0]], [[1.0, 2.0], [-0.5, 0.3]]]])  # [1, 2, 2, 2]
    outputs["semantic_logits"] = sem
    cfg = LossConfig(mask_crop="none", semantic_weight=2.0)
    losses = YolactLoss(cfg, 2)(outputs, targets)
    protos = outputs["prototypes"][0]
    c = outputs["coefficients"][0, 0].tolist()
    total = 0.0
    for r in range(4):
        for col in range(4):
            logit = sum(float(protos[r, col, j]) * c[j] for j in range(2))
            total += _bce(_sigmoid(logit), float(proto_mask[r, col]))
    assert losses["mask"].item() == pytest.approx(6.125 * total / 3.24, rel=1e-5)
    # semantic target: the 8x8 mask averaged to 2x2 is [[0.75, 0.25], [0, 0]] -> > 0.5 at (0, 0), class 1
    target = torch.zeros(2, 2, 2)
    target[1, 0, 0] = 1
    bce = sum(_bce(_sigmoid(float(sem[0, k, r, col])), float(target[k, r, col]))
              for k in range(2) for r in range(2) for col in range(2))
    assert losses["semantic"].item() == pytest.approx(2.0 * bce / 4, rel=1e-5)


class _FixedIoUHead(nn.Module):
    """[N, 1, H, W] -> [N, 2]: (mean of the mask, max of the mask)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        return torch.stack([x.mean(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))], dim=1)


def test_mask_iou_loss_by_hand():
    outputs, targets, proto_mask = _tiny_case()
    head = _FixedIoUHead()
    cfg = LossConfig(mask_iou_min_area=2)
    losses = YolactLoss(cfg, 2)(outputs, targets, mask_iou_head=head)
    protos = outputs["prototypes"][0]
    c = outputs["coefficients"][0, 0].tolist()
    soft = torch.zeros(4, 4)
    for r in range(3):
        for col in range(3):
            soft[r, col] = _sigmoid(sum(float(protos[r, col, j]) * c[j] for j in range(2)))
    torch.testing.assert_close(head.seen[0][0, 0].detach(), soft)
    hard = soft > 0.5
    gt = proto_mask > 0.5
    iou = (hard & gt).sum().item() / (hard | gt).sum().item()
    pred = soft.amax().item()  # label 1 -> second column
    diff = abs(pred - iou)
    smooth = 0.5 * diff**2 if diff < 1 else diff - 0.5
    assert losses["mask_iou"].item() == pytest.approx(25 * smooth, rel=1e-5)
    # the gt mask has 4 proto pixels: with the default minimum (25) nothing qualifies
    losses = YolactLoss(LossConfig(), 2)(outputs, targets, mask_iou_head=head)
    assert losses["mask_iou"].item() == 0.0
    assert len(head.seen) == 1


def test_mask_iou_gradient_reaches_coefficients():
    outputs, targets, _ = _tiny_case()
    outputs["coefficients"] = outputs["coefficients"].clone().requires_grad_(True)
    losses = YolactLoss(LossConfig(mask_iou_min_area=2), 2)(outputs, targets, _FixedIoUHead())
    losses["mask_iou"].backward()
    assert outputs["coefficients"].grad[0, 0].abs().sum() > 0


# --------------------------------------------------------------------------- masks_to_train


def _many_positive_case(num, sizes=None):
    """`num` priors, each identical to its own gt box (IoU 1), identical coefficients."""
    if sizes is None:
        boxes = torch.tensor([[0.2, 0.2, 0.7, 0.6]]).repeat(num, 1)
        boxes[:, 0] += torch.arange(num) * 1e-3  # distinct, all heavily overlapping
    else:
        boxes = []
        for i, s in enumerate(sizes):
            x, y = 0.05 + 0.09 * (i % 10), 0.1 + 0.3 * (i // 10)
            boxes.append([x, y, x + s, y + s])
        boxes = torch.tensor(boxes)
    gen = torch.Generator().manual_seed(11)
    protos = torch.rand(1, 8, 8, 3, generator=gen)
    coeff = torch.tensor([0.5, -0.4, 0.3]).repeat(num, 1)[None]
    outputs = {
        "box_deltas": torch.zeros(1, num, 4),
        "class_logits": torch.zeros(1, num, 2),
        "coefficients": coeff.clone(),
        "prototypes": protos,
        "priors": center_size(boxes),
    }
    masks = torch.zeros(num, 32, 32)
    masks[:, 8:20, 8:24] = 1.0
    targets = [{"boxes": boxes, "labels": torch.zeros(num, dtype=torch.long), "masks": masks,
                "is_crowd": torch.zeros(num, dtype=torch.bool)}]
    return outputs, targets


def test_random_subset_keeps_four_and_rescales():
    outputs, targets = _many_positive_case(10)
    # all ten masks: same gt mask, same coefficients, nearly the same box -> nearly equal losses;
    # make them exactly equal by giving every gt the same box (matching is still one prior each)
    targets[0]["boxes"] = targets[0]["boxes"][:1].repeat(10, 1)
    outputs["priors"] = center_size(targets[0]["boxes"])
    full = YolactLoss(LossConfig(), 1)(outputs, targets)
    assert full["num_positives"].item() == 10
    head = _FixedIoUHead()
    sub = YolactLoss(LossConfig(mask_iou_min_area=1, masks_to_train=4), 1)(outputs, targets, head)
    assert head.seen[0].shape[0] == 4  # four masks trained
    assert sub["mask"].item() == pytest.approx(full["mask"].item(), rel=1e-5)
    one = YolactLoss(LossConfig(masks_to_train=1), 1)(outputs, targets)
    assert one["mask"].item() == pytest.approx(full["mask"].item(), rel=1e-5)  # 1 mask x 10


def test_random_selection_uses_the_global_rng():
    areas = torch.ones(10)
    torch.manual_seed(123)
    expected = torch.randperm(10)[:4]
    torch.manual_seed(123)
    got = select_masks(areas, 4, "random")
    assert torch.equal(got, expected)
    assert torch.equal(select_masks(torch.ones(3), 4, "random"), torch.arange(3))


def test_smallest_first_keeps_the_smallest():
    areas = torch.tensor([50.0, 3.0, 9.0, 1.0, 70.0, 8.0, 2.0, 100.0, 30.0, 4.0])
    got = select_masks(areas, 4, "smallest_first")
    assert sorted(got.tolist()) == [1, 3, 6, 9]
    # ties are broken at random but never let a larger one in
    tied = torch.tensor([5.0, 1.0, 5.0, 5.0, 9.0])
    picks = {tuple(sorted(select_masks(tied, 3, "smallest_first").tolist())) for _ in range(30)}
    assert all(1 in p and 4 not in p for p in picks) and len(picks) > 1


def test_smallest_first_in_the_loss():
    sizes = [0.05 + 0.015 * i for i in range(10)]
    order = torch.randperm(10, generator=torch.Generator().manual_seed(2)).tolist()
    sizes = [sizes[i] for i in order]
    outputs, targets = _many_positive_case(10, sizes)

    def weighted(index, k, mode):
        weight = lambda boxes: torch.nn.functional.one_hot(torch.tensor(index), 10).float()  # noqa: E731
        cfg = LossConfig(masks_to_train=k, masks_selection=mode)
        return YolactLoss(cfg, 1, mask_instance_weight=weight)(outputs, targets)["mask"].item()

    per_gt = [weighted(g, 100, "random") for g in range(10)]
    smallest = sorted(range(10), key=lambda g: sizes[g])[:4]
    got = YolactLoss(LossConfig(masks_to_train=4, masks_selection="smallest_first"), 1)(outputs, targets)["mask"].item()
    assert got == pytest.approx(2.5 * sum(per_gt[g] for g in smallest), rel=1e-5)
    assert got != pytest.approx(2.5 * sum(per_gt[g] for g in range(4)), rel=1e-3)


def test_stratified_keeps_at_least_the_small_share():
    small = torch.full((4,), SMALL_AREA / 2)
    medium = torch.full((9,), (SMALL_AREA + LARGE_AREA) / 2)
    large = torch.full((7,), LARGE_AREA * 2)
    areas = torch.cat([medium, small, large])[torch.randperm(20)]
    is_small = areas < SMALL_AREA
    for k in (1, 3, 10, 19):
        for _ in range(10):
            got = select_masks(areas, k, "stratified_by_area")
            assert got.numel() == k and got.unique().numel() == k
            assert is_small[got].sum().item() >= math.ceil(k * 4 / 20)
    # proportional among the others: k=10 -> 2 small, then 8 split 9:7 -> 4.5 -> round -> 4 / 4
    got = select_masks(areas, 10, "stratified_by_area")
    is_large = areas >= LARGE_AREA
    assert is_small[got].sum().item() == 2 and is_large[got].sum().item() == 4
    # a stratum that runs out spills over
    only_small_and_large = torch.tensor([10.0] * 2 + [LARGE_AREA * 4] * 3)
    got = select_masks(only_small_and_large, 4, "stratified_by_area")
    assert sorted(got.tolist()) in ([0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 3, 4])


# --------------------------------------------------------------------------- invariances


def _random_batch(seed, batch=2, num_gts=(4, 3), crowds=(1, 0), semantic=True):
    gen = torch.Generator().manual_seed(seed)
    grid = 6
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    priors = []
    for size in (0.15, 0.3, 0.6):
        priors.append(torch.stack([cx.flatten(), cy.flatten(), torch.full((grid * grid,), size),
                                   torch.full((grid * grid,), size)], 1))
    priors = torch.cat(priors)
    num_priors, k, classes, size = priors.shape[0], 4, 3, 32
    outputs = {
        "box_deltas": torch.randn(batch, num_priors, 4, generator=gen).requires_grad_(True),
        "class_logits": torch.randn(batch, num_priors, classes + 1, generator=gen).requires_grad_(True),
        "coefficients": torch.tanh(torch.randn(batch, num_priors, k, generator=gen)).requires_grad_(True),
        "prototypes": torch.relu(torch.randn(batch, 8, 8, k, generator=gen)).requires_grad_(True),
        "priors": priors,
    }
    if semantic:
        outputs["semantic_logits"] = torch.randn(batch, classes, 4, 4, generator=gen).requires_grad_(True)
    targets = []
    for b in range(batch):
        n = num_gts[b] + crowds[b]
        xy = torch.rand(n, 2, generator=gen) * 0.6
        wh = torch.rand(n, 2, generator=gen) * 0.35 + 0.05
        boxes = torch.cat([xy, xy + wh], 1)
        masks = torch.zeros(n, size, size)
        for i in range(n):
            x1, y1, x2, y2 = (boxes[i] * size).round().long().tolist()
            masks[i, y1:y2, x1:x2] = torch.rand(y2 - y1, x2 - x1, generator=gen)
        targets.append({
            "boxes": boxes,
            "labels": torch.randint(0, classes, (n,), generator=gen),
            "masks": masks,
            "is_crowd": torch.arange(n) >= num_gts[b],
        })
    return outputs, targets


def _loss(cfg=None, **kw):
    cfg = dataclasses.replace(cfg or LossConfig(), masks_to_train=kw.pop("masks_to_train", 100),
                              masks_selection=kw.pop("mode", "random"))
    return YolactLoss(cfg, 3, **kw)


@pytest.mark.parametrize("classification", ["softmax_ohem", "focal"])
def test_permuting_gts_leaves_the_loss_unchanged(classification):
    outputs, targets = _random_batch(0)
    loss = _loss(LossConfig(classification=classification))
    before = loss(outputs, targets)
    perm = torch.tensor([2, 0, 3, 1, 4])  # crowd (row 4) stays last
    targets[0] = {key: value[perm] for key, value in targets[0].items()}
    after = loss(outputs, targets)
    for key in ("box", "class", "mask", "semantic", "total", "num_positives"):
        torch.testing.assert_close(after[key], before[key], rtol=1e-5, atol=1e-6)


def test_duplicating_an_image_keeps_per_positive_terms():
    outputs, targets = _random_batch(1, batch=1, num_gts=(4,), crowds=(1,))
    loss = _loss()
    single = loss(outputs, targets)
    doubled_outputs = {k: (v if k == "priors" else torch.cat([v, v]).detach()) for k, v in outputs.items()}
    doubled = loss(doubled_outputs, targets + targets)
    for key in ("box", "class", "mask", "semantic"):
        torch.testing.assert_close(doubled[key], single[key], rtol=1e-5, atol=1e-6)
    assert doubled["num_positives"].item() == 2 * single["num_positives"].item()


def test_normalised_by_total_positives_of_the_batch():
    outputs, targets = _random_batch(6)
    loss = _loss()
    both = loss(outputs, targets)
    singles = [loss({k: (v if k == "priors" else v[b : b + 1]) for k, v in outputs.items()}, [targets[b]])
               for b in range(2)]
    counts = [s["num_positives"] for s in singles]
    assert counts[0] != counts[1] and both["num_positives"] == counts[0] + counts[1]
    for key in ("box", "class", "mask"):
        torch.testing.assert_close(both[key] * both["num_positives"],
                                   singles[0][key] * counts[0] + singles[1][key] * counts[1])
    # the semantic term is a per-image mean instead
    torch.testing.assert_close(both["semantic"] * 2, singles[0]["semantic"] + singles[1]["semantic"])


def test_gradients_reach_every_output():
    outputs, targets = _random_batch(2)
    losses = _loss()(outputs, targets)
    losses["total"].backward()
    for key in ("box_deltas", "class_logits", "coefficients", "prototypes", "semantic_logits"):
        grad = outputs[key].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, key


def test_image_without_gts_and_zero_area_box():
    outputs, targets = _random_batch(3, num_gts=(2, 0), crowds=(0, 0))
    targets[0]["boxes"][1] = torch.tensor([0.4, 0.4, 0.4, 0.4])  # zero area
    targets[0]["masks"][1] = 0
    for cfg in (LossConfig(), LossConfig(classification="focal"), LossConfig(mask_crop="none")):
        losses = _loss(cfg)(outputs, targets, _FixedIoUHead())
        for key, value in losses.items():
            assert torch.isfinite(value).all(), key
        losses["total"].backward()
        for key in ("box_deltas", "class_logits", "coefficients", "prototypes"):
            assert torch.isfinite(outputs[key].grad).all()
            outputs[key].grad = None


def test_batch_without_any_gt():
    outputs, targets = _random_batch(4, num_gts=(0, 0), crowds=(0, 1))
    losses = _loss()(outputs, targets)
    assert losses["num_positives"].item() == 0
    for key in ("box", "class", "mask"):
        assert losses[key].item() == 0.0  # OHEM takes 3 x 0 negatives, as the original
    assert losses["semantic"].item() > 0
    losses["total"].backward()  # still attached to the graph
    focal = _loss(LossConfig(classification="focal"))(outputs, targets)
    assert focal["class"].item() > 0  # background-only class loss


def test_rejects_bad_arguments():
    from yolact_lite.errors import ConfigError

    with pytest.raises(ConfigError, match="loss.masks_selection must be one of"):  # validated once, with the config
        config_from_dict({"loss": {"masks_selection": "largest_first"}})
    with pytest.raises(ValueError, match=r"class_weights must have shape \[4\]; got \(3,\)"):
        YolactLoss(LossConfig(), 3, class_weights=torch.ones(3))
    outputs, targets = _random_batch(5)
    with pytest.raises(ValueError, match=r"class_logits has 4 columns; expected num_classes \+ 1 = 5"):
        YolactLoss(LossConfig(), 4)(outputs, targets)


def test_loss_reports_how_many_prototypes_are_alive():
    outputs, targets = _random_batch(4)
    k = outputs["prototypes"].shape[-1]
    assert _loss(LossConfig())(outputs, targets)["prototypes_alive"].item() == k
    with torch.no_grad():
        outputs["prototypes"][..., :2] = 0  # two dead prototypes, on every image of the batch
    assert _loss(LossConfig())(outputs, targets)["prototypes_alive"].item() == k - 2
