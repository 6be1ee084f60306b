"""Prior matching and the YOLACT training loss.

Terms (keys of the returned dict), with the original's definitions:

* ``box``   B = box_weight x sum of smooth-L1 (beta 1) over positive priors of
  (predicted deltas - encode(matched gt, prior)).
* ``class`` C = class_weight x softmax cross-entropy over positives and OHEM-selected
  negatives (or a softmax focal loss, ``classification="focal"``).
* ``mask``  M = mask_weight x sum over kept positive masks of
  [sum over pixels of BCE inside the matched gt box (+padding) / gt box area in proto pixels],
  times (#positives / #kept) per image when subsampled.
* ``semantic`` S (when the model returns ``semantic_logits``) and ``mask_iou`` I (when a
  mask-IoU head is passed, YOLACT++).

B, C, M and I are divided by the total number of positive priors in the batch (at least 1),
S by the batch size; ``total`` is their plain sum.  ``num_positives`` (a float tensor, not in
the total) is returned for logging.

Notes on equivalence with the original:

* The mask BCE is computed from logits, ``BCE_with_logits(logit, target) * crop``.  The
  original crops the *sigmoid* (0 outside the crop) and applies BCE to it.  Outside the crop
  the downsampled gt mask is 0 too whenever it lies inside its box plus the padding, and then
  both forms contribute exactly 0 there; inside the crop they are the same function.  (Where
  a gt mask spills outside its own box, the original charges a constant 100 per pixel from
  its log clamp, with no gradient; this form charges 0.)  The logits form is exact for large
  |logits| and safe under autocast.
* OHEM picks, per image, the ``min(ratio * num_pos, P - 1)`` hardest priors among the
  background (non-positive, non-neutral) ones.  The original ranks all priors with positives
  and neutrals given hardness 0 and drops them afterwards; the two only differ when a
  background prior's hardness is exactly 0, whose cross-entropy is then 0 as well, so the
  loss value is the same.  As in the original an image without positives selects no
  negatives and so adds nothing to C under OHEM (it does under the focal loss).
* Degenerate (zero-area) gt boxes do not produce NaN: the box encoding clamps sizes before the
  log (see :func:`yolact_lite.box_ops.encode`) and the mask normaliser is clamped at
  ``_MIN_BOX_AREA_PX`` proto pixels (real boxes are never that small).
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..box_ops import COCO_LARGE_AREA, COCO_SMALL_AREA, box_ioa, box_iou, encode, point_form
from ..config import MASK_SELECTIONS, Config, LossConfig
from ..errors import ConfigError
from ..masks import assemble_mask_logits, crop_region, prototype_activity

__all__ = ["match", "select_masks", "size_mask_weights", "mask_size_weight_fn", "YolactLoss", "build_criterion",
           "MASK_SELECTIONS",
           "SMALL_AREA", "LARGE_AREA"]


# COCO size strata, in pixels at the network input: small < 32^2 <= medium < 96^2 <= large.
SMALL_AREA, LARGE_AREA = COCO_SMALL_AREA, COCO_LARGE_AREA  # measured in network-input pixels here

# Lower bound (proto pixels^2) of the gt-box area that normalises each mask's BCE sum.
_MIN_BOX_AREA_PX = 1e-2

# Lower bound of the relative gt-box area in the size weighting (0.55 px^2 at 550 px): a
# degenerate box must not take all the weight.
_MIN_REL_AREA = 1e-6

_VARIANCES = (0.1, 0.2)


# --------------------------------------------------------------------------- matching


def _force_best_priors(overlaps: Tensor) -> List[Tuple[int, int]]:
    """The "less greedy" forced matching.

    Repeated once per gt: take the globally largest remaining (gt j, prior i) overlap, record
    (i, j), then blank row j and column i with -1.  Row maxima are kept incrementally: only
    the rows whose best prior was just blanked are recomputed, which gives the same result as
    recomputing every row (first index wins ties in both).

    Args:
        overlaps: ``[n, P]`` IoU (modified in place).

    Returns:
        ``[(prior i, gt j), ...]`` in the order they were forced.
    """
    pairs = []
    row_best, row_arg = overlaps.max(dim=1)
    for _ in range(overlaps.shape[0]):
        j = int(row_best.argmax())
        i = int(row_arg[j])
        pairs.append((i, j))
        overlaps[:, i] = -1
        overlaps[j, :] = -1
        stale = row_arg == i
        stale[j] = True
        row_best[stale], row_arg[stale] = overlaps[stale].max(dim=1)
    return pairs


@torch.no_grad()
def match(
    priors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    crowd_boxes: Optional[Tensor] = None,
    positive_iou: float = 0.5,
    negative_iou: float = 0.4,
    crowd_iou: float = 0.7,
) -> Tuple[Tensor, Tensor]:
    """Assign a ground truth and a classification target to every prior.

    Args:
        priors: ``[P, 4]`` (cx, cy, w, h), relative.
        gt_boxes: ``[n, 4]`` relative xyxy (non-crowd).
        gt_labels: ``[n]`` int64, 0-based classes.
        crowd_boxes: ``[m, 4]`` relative xyxy or None.
        positive_iou, negative_iou: overlap < positive_iou -> neutral; < negative_iou ->
            background.
        crowd_iou: a non-positive prior whose intersection with some crowd box exceeds this
            fraction of the prior's own area becomes neutral (disabled when >= 1).

    Returns:
        ``(matched_index [P] int64, conf_target [P] int64)``: the gt index per prior (0 when
        there are no gts), and -1 neutral / 0 background / label + 1 positive.
    """
    num_priors = priors.shape[0]
    prior_boxes = point_form(priors)
    n = gt_boxes.shape[0]
    if n == 0:
        matched = torch.zeros(num_priors, dtype=torch.long, device=priors.device)
        conf = torch.zeros(num_priors, dtype=torch.long, device=priors.device)
    else:
        overlaps = box_iou(gt_boxes.to(prior_boxes.dtype), prior_boxes)  # [n, P]
        best_overlap, matched = overlaps.max(dim=0)
        for i, j in _force_best_priors(overlaps):
            best_overlap[i] = 2.0
            matched[i] = j
        conf = gt_labels.long()[matched] + 1
        conf[best_overlap < positive_iou] = -1
        conf[best_overlap < negative_iou] = 0
    if crowd_boxes is not None and crowd_boxes.shape[0] > 0 and crowd_iou < 1:
        crowd_overlap = box_ioa(prior_boxes, crowd_boxes.to(prior_boxes.dtype)).max(dim=1).values
        conf[(conf <= 0) & (crowd_overlap > crowd_iou)] = -1
    return matched, conf


# --------------------------------------------------------------------------- mask subsets


def select_masks(areas_px: Tensor, masks_to_train: int, mode: str = "random") -> Tensor:
    """Choose which positives of one image train the mask branch.

    Args:
        areas_px: ``[N]`` area of each positive's matched gt box, in input pixels.
        masks_to_train: the most to keep.
        mode: ``"random"``: a uniform subset via ``torch.randperm`` on the global RNG (the
            original).  ``"smallest_first"``: the positives with the smallest gt boxes (ties
            broken at random).  ``"stratified_by_area"``: positives are split into COCO
            strata by gt box area (small < 32^2 <= medium < 96^2 <= large, input pixels);
            small ones get ``ceil(K * n_small / N)`` slots (so never less than their share),
            the remaining slots go to medium and large in proportion (rounded, spilling over
            when a stratum runs out); members are drawn uniformly within each stratum.

    Returns:
        ``[min(N, masks_to_train)]`` int64 indices into the positives (on ``areas_px``'s
        device).  All of them, in order, when ``N <= masks_to_train``.
    """
    num = areas_px.shape[0]
    device = areas_px.device
    if num <= masks_to_train:
        return torch.arange(num, device=device)
    if mode == "random":
        return torch.randperm(num)[:masks_to_train].to(device)
    if mode == "smallest_first":
        perm = torch.randperm(num).to(device)
        order = torch.sort(areas_px[perm], stable=True).indices
        return perm[order[:masks_to_train]]
    if mode == "stratified_by_area":
        stratum = (areas_px >= SMALL_AREA).long() + (areas_px >= LARGE_AREA).long()
        members = [torch.nonzero(stratum == s).squeeze(1) for s in range(3)]
        counts = [int(m.numel()) for m in members]
        k = masks_to_train
        q_small = min(counts[0], -(-k * counts[0] // num))
        rest = k - q_small
        others = counts[1] + counts[2]
        q_medium = min(counts[1], int(round(rest * counts[1] / others))) if others else 0
        q_large = rest - q_medium
        if q_large > counts[2]:
            q_medium += q_large - counts[2]
            q_large = counts[2]
        picks = []
        for member, quota in zip(members, (q_small, q_medium, q_large)):
            picks.append(member[torch.randperm(member.numel())[:quota].to(device)])
        return torch.cat(picks)
    raise ConfigError(f"masks_selection must be one of {', '.join(MASK_SELECTIONS)}; got {mode!r}")


# --------------------------------------------------------------------------- size weights


@torch.no_grad()
def size_mask_weights(boxes: Tensor, power: float) -> Tensor:
    """Per-gt mask-loss weights for small objects (``loss.mask_size_weight_power``).

    ``w_i = a_i ** -power / mean_j(a_j ** -power)`` with ``a_i`` the relative area of gt box
    ``i`` (width x height, clamped below at 1e-6): proportional to ``area^-power`` and of mean
    exactly 1 over the image's gts, so the mask term keeps its overall scale while small
    objects weigh more.  ``power = 0`` gives all ones (the original).

    Args:
        boxes: ``[n, 4]`` relative xyxy (one image's non-crowd gts).

    Returns:
        ``[n]`` float32 weights (empty for ``n = 0``).
    """
    boxes = boxes.detach().float().reshape(-1, 4)
    if boxes.shape[0] == 0:
        return boxes.new_zeros(0)
    width = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    height = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    # float64: area^-power spans many decades for large powers
    raw = (width * height).double().clamp(min=_MIN_REL_AREA).pow(-float(power))
    return (raw / raw.mean()).float()


def mask_size_weight_fn(power: float) -> Optional[Callable[[Tensor], Tensor]]:
    """The ``mask_instance_weight`` callable of :class:`YolactLoss` for a size-weight power
    (None for ``power == 0``: unweighted, the original)."""
    if power < 0:
        raise ConfigError(f"loss.mask_size_weight_power must be >= 0; got {power}")
    if power == 0:
        return None
    return functools.partial(size_mask_weights, power=float(power))


# --------------------------------------------------------------------------- the loss


def _graph_zero(reference: Tensor) -> Tensor:
    """A 0 that stays attached to ``reference``'s graph (so ``backward`` never fails)."""
    return reference.reshape(-1)[:0].sum().float()


class YolactLoss(nn.Module):
    """The YOLACT multi-task loss (see the module docstring for each term).

    Args:
        loss_config: weights, thresholds, classification and crop options.
        num_classes: foreground classes C (the logits have C + 1 columns, 0 = background).
            ``loss_config.masks_to_train`` positives per image at most train the mask branch,
            chosen by ``loss_config.masks_selection`` (see :func:`select_masks`).
        class_weights: optional ``[C + 1]`` per-target-class weights for the classification
            loss (None: unweighted, the original).
        mask_instance_weight: optional callable ``gt_boxes_rel [n, 4] -> [n]`` giving a weight
            per (non-crowd) gt; each mask's loss is multiplied by its gt's weight (None: 1).
    """

    def __init__(
        self,
        loss_config: LossConfig,
        num_classes: int,
        class_weights: Optional[Tensor] = None,
        mask_instance_weight: Optional[Callable[[Tensor], Tensor]] = None,
    ) -> None:
        super().__init__()
        self.cfg = loss_config  # validated with its Config (config.validate)
        self.num_classes = int(num_classes)
        self.masks_to_train = int(loss_config.masks_to_train)
        self.masks_selection = loss_config.masks_selection
        self.mask_instance_weight = mask_instance_weight
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
            if class_weights.shape != (self.num_classes + 1,):
                raise ValueError(
                    f"class_weights must have shape [{self.num_classes + 1}]; got {tuple(class_weights.shape)}"
                )
            self.register_buffer("class_weights", class_weights, persistent=False)
        else:
            self.class_weights = None

    # ----------------------------------------------------------------- forward

    def forward(
        self,
        outputs: Dict[str, Tensor],
        targets: Sequence[Dict[str, Tensor]],
        mask_iou_head: Optional[nn.Module] = None,
    ) -> Dict[str, Tensor]:
        """Compute every loss term.

        Args:
            outputs: ``box_deltas [B,P,4]``, ``class_logits [B,P,C+1]``, ``coefficients
                [B,P,k]`` (tanh'd), ``prototypes [B,Hp,Wp,k]``, ``priors [P,4]`` (cx,cy,w,h),
                optional ``semantic_logits [B,C,Hs,Ws]``.
            targets: per image ``boxes [n,4]`` relative xyxy, ``labels [n]`` 0-based,
                ``masks [n,S,S]`` in [0,1], optional ``is_crowd [n]`` bool.
            mask_iou_head: YOLACT++ head mapping ``[N,1,Hp,Wp]`` masks to ``[N,C]`` IoUs.

        Returns:
            ``{"box", "class", "mask"[, "semantic"][, "mask_iou"], "total", "num_positives",
            "prototypes_alive"}``, scalar tensors; the last two are counts, not losses
            (``prototypes_alive``: prototypes above zero on some pixel of the batch).
        """
        class_logits = outputs["class_logits"]
        batch, num_priors, width = class_logits.shape
        if width != self.num_classes + 1:
            raise ValueError(
                f"class_logits has {width} columns; expected num_classes + 1 = {self.num_classes + 1}"
            )
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} targets for a batch of {batch}")
        priors = outputs["priors"]
        device = class_logits.device

        gts = [self._split_target(t, device) for t in targets]
        matched, conf = [], []
        for gt in gts:
            m, c = match(
                priors, gt["boxes"], gt["labels"], gt["crowd_boxes"],
                self.cfg.positive_iou, self.cfg.negative_iou, self.cfg.crowd_iou,
            )
            matched.append(m)
            conf.append(c)
        matched_index = torch.stack(matched)  # [B, P]
        conf_target = torch.stack(conf)  # [B, P]
        positive = conf_target > 0
        num_positives = positive.sum()
        normaliser = num_positives.clamp(min=1).float()

        losses: Dict[str, Tensor] = {}
        losses["box"] = self._box_loss(outputs["box_deltas"], priors, gts, matched_index, positive) / normaliser
        losses["class"] = self._class_loss(class_logits, conf_target, positive) / normaliser
        mask_loss, mask_iou_loss = self._mask_losses(outputs, gts, matched_index, positive, mask_iou_head)
        losses["mask"] = mask_loss / normaliser
        semantic_logits = outputs.get("semantic_logits")
        if semantic_logits is not None:
            losses["semantic"] = self._semantic_loss(semantic_logits, gts) / batch
        if mask_iou_head is not None:
            losses["mask_iou"] = mask_iou_loss / normaliser
        losses["total"] = sum(losses.values())
        losses["num_positives"] = num_positives.detach().float()
        # a diagnostic, not a loss: all k at zero means every mask comes out empty
        losses["prototypes_alive"] = (prototype_activity(outputs["prototypes"]) > 0).sum().float()
        return losses

    # ----------------------------------------------------------------- targets

    @staticmethod
    def _split_target(target: Dict[str, Tensor], device: torch.device) -> Dict[str, Tensor]:
        """Separate crowd rows (only their boxes are kept, for the crowd rule)."""
        boxes = target["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4)
        labels = target["labels"].to(device=device, dtype=torch.long).reshape(-1)
        masks = target["masks"].to(device=device, dtype=torch.float32)
        crowd = target.get("is_crowd")
        if crowd is None:
            crowd = torch.zeros(boxes.shape[0], dtype=torch.bool, device=device)
        crowd = crowd.to(device=device, dtype=torch.bool).reshape(-1)
        keep = ~crowd
        return {
            "boxes": boxes[keep],
            "labels": labels[keep],
            "masks": masks[keep],
            "crowd_boxes": boxes[crowd],
        }

    @staticmethod
    def _matched_boxes(gts: List[Dict[str, Tensor]], matched_index: Tensor) -> Tensor:
        """``[B, P, 4]`` matched gt box per prior (zeros for images without gts)."""
        rows = []
        for gt, index in zip(gts, matched_index):
            if gt["boxes"].shape[0] == 0:
                rows.append(torch.zeros(index.shape[0], 4, device=index.device))
            else:
                rows.append(gt["boxes"][index])
        return torch.stack(rows)

    # ----------------------------------------------------------------- terms

    def _box_loss(self, box_deltas: Tensor, priors: Tensor, gts, matched_index: Tensor, positive: Tensor) -> Tensor:
        matched_boxes = self._matched_boxes(gts, matched_index)  # [B, P, 4]
        prior_grid = priors.float().expand(positive.shape[0], -1, -1)
        target = encode(matched_boxes[positive], prior_grid[positive], _VARIANCES)
        loss = F.smooth_l1_loss(box_deltas[positive].float(), target, reduction="sum", beta=1.0)
        return loss * self.cfg.box_weight

    def _class_loss(self, class_logits: Tensor, conf_target: Tensor, positive: Tensor) -> Tensor:
        weights = None if self.class_weights is None else self.class_weights.to(class_logits.device)
        if self.cfg.classification == "focal":
            return self._focal_loss(class_logits, conf_target, weights) * self.cfg.class_weight
        with torch.no_grad():
            logits = class_logits.float()
            hardness = torch.logsumexp(logits, dim=-1) - logits[..., 0]  # = -log softmax(bg)
            candidate = conf_target == 0
            hardness = hardness.masked_fill(~candidate, float("-inf"))
            order = torch.sort(hardness, dim=1, descending=True, stable=True).indices
            rank = torch.argsort(order, dim=1)
            num_neg = (self.cfg.ohem_neg_pos_ratio * positive.sum(dim=1)).clamp(max=conf_target.shape[1] - 1)
            negative = (rank < num_neg[:, None]) & candidate
        keep = positive | negative
        loss = F.cross_entropy(class_logits[keep].float(), conf_target[keep], weight=weights, reduction="sum")
        return loss * self.cfg.class_weight

    def _focal_loss(self, class_logits: Tensor, conf_target: Tensor, weights: Optional[Tensor]) -> Tensor:
        """Softmax focal loss over every non-neutral prior.

        ``-a_t (1 - p_t)^gamma log p_t`` with ``p_t`` the softmax probability of the target
        class (background included) and ``a_t = alpha`` for foreground targets, ``1 - alpha``
        for background ones; times ``class_weights[target]`` when given; summed.
        """
        keep = conf_target >= 0
        target = conf_target[keep]
        log_p = F.log_softmax(class_logits[keep].float(), dim=-1).gather(1, target[:, None]).squeeze(1)
        alpha = self.cfg.focal_alpha
        alpha_t = torch.where(target > 0, torch.full_like(log_p, alpha), torch.full_like(log_p, 1.0 - alpha))
        loss = -alpha_t * (1.0 - log_p.exp()).pow(self.cfg.focal_gamma) * log_p
        if weights is not None:
            loss = loss * weights[target]
        return loss.sum()

    def _mask_losses(
        self,
        outputs: Dict[str, Tensor],
        gts: List[Dict[str, Tensor]],
        matched_index: Tensor,
        positive: Tensor,
        mask_iou_head: Optional[nn.Module],
    ) -> Tuple[Tensor, Tensor]:
        """(M, I) summed over the batch, before the division by the number of positives."""
        prototypes = outputs["prototypes"]  # [B, Hp, Wp, k]
        coefficients = outputs["coefficients"]  # [B, P, k]
        proto_h, proto_w = prototypes.shape[1], prototypes.shape[2]
        crop = self.cfg.mask_crop == "gt_box"
        mask_total = _graph_zero(coefficients) + _graph_zero(prototypes)
        iou_inputs, iou_targets, iou_labels = [], [], []

        for b, gt in enumerate(gts):
            prior_index = torch.nonzero(positive[b]).squeeze(1)
            num_pos = prior_index.numel()
            if num_pos == 0:
                continue
            gt_index = matched_index[b, prior_index]
            boxes = gt["boxes"][gt_index]  # [N, 4]
            input_h, input_w = gt["masks"].shape[-2], gt["masks"].shape[-1]
            box_w = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
            box_h = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
            kept = select_masks(box_w * input_w * box_h * input_h, self.masks_to_train, self.masks_selection)
            prior_index, gt_index, boxes = prior_index[kept], gt_index[kept], boxes[kept]
            box_area_px = (box_w[kept] * proto_w * box_h[kept] * proto_h).clamp(min=_MIN_BOX_AREA_PX)

            gt_masks = _downsample_binary(gt["masks"], proto_h, proto_w)[gt_index]  # [N, Hp, Wp]
            logits = assemble_mask_logits(prototypes[b], coefficients[b, prior_index])  # [N, Hp, Wp]
            bce = F.binary_cross_entropy_with_logits(logits.float(), gt_masks, reduction="none")
            if crop:
                region = crop_region(boxes, proto_h, proto_w, self.cfg.mask_crop_padding).float()
                bce = bce * region
            per_mask = bce.sum(dim=(1, 2)) / box_area_px
            if self.mask_instance_weight is not None:
                instance_weight = torch.as_tensor(self.mask_instance_weight(gt["boxes"]), device=per_mask.device)
                per_mask = per_mask * instance_weight.float()[gt_index]
            mask_total = mask_total + per_mask.sum() * (num_pos / kept.numel())

            if mask_iou_head is not None:
                gt_area = gt_masks.sum(dim=(1, 2))
                big = gt_area > self.cfg.mask_iou_min_area
                if bool(big.any()):
                    soft = torch.sigmoid(logits[big].float())
                    if crop:
                        soft = soft * region[big]
                    with torch.no_grad():
                        hard = (soft > 0.5).float()
                        inter = (hard * gt_masks[big]).sum(dim=(1, 2))
                        union = hard.sum(dim=(1, 2)) + gt_area[big] - inter
                        iou_targets.append(inter / union.clamp(min=1))
                    iou_inputs.append(soft[:, None])
                    iou_labels.append(gt["labels"][gt_index[big]])

        mask_loss = mask_total * self.cfg.mask_weight
        if mask_iou_head is None or not iou_inputs:
            return mask_loss, _graph_zero(coefficients)
        predicted = mask_iou_head(torch.cat(iou_inputs))  # [N, C]
        predicted = predicted.gather(1, torch.cat(iou_labels)[:, None]).squeeze(1)
        iou_loss = F.smooth_l1_loss(predicted.float(), torch.cat(iou_targets), reduction="sum", beta=1.0)
        return mask_loss, iou_loss * self.cfg.mask_iou_weight

    def _semantic_loss(self, semantic_logits: Tensor, gts: List[Dict[str, Tensor]]) -> Tensor:
        """Sum over images of BCE-with-logits summed over the [C,Hs,Ws] map / (Hs*Ws)."""
        _, classes, height, width = semantic_logits.shape
        target = torch.zeros(semantic_logits.shape, device=semantic_logits.device)
        for b, gt in enumerate(gts):
            if gt["boxes"].shape[0] == 0:
                continue
            masks = _downsample_binary(gt["masks"], height, width)  # [n, Hs, Ws]
            one_hot = F.one_hot(gt["labels"], classes).float()  # [n, C]
            covered = one_hot.t() @ masks.reshape(masks.shape[0], -1)  # per-class max-merge
            target[b] = (covered > 0).float().reshape(classes, height, width)
        loss = F.binary_cross_entropy_with_logits(semantic_logits.float(), target, reduction="sum")
        return loss / (height * width) * self.cfg.semantic_weight


def _downsample_binary(masks: Tensor, height: int, width: int) -> Tensor:
    """``[n, S, S]`` soft masks -> ``[n, height, width]`` 0/1 float (bilinear, then > 0.5)."""
    if masks.shape[0] == 0:
        return masks.new_zeros(0, height, width)
    resized = F.interpolate(masks[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return (resized > 0.5).float()


def build_criterion(config: Config, coco_dict: Optional[dict] = None) -> YolactLoss:
    """The training loss of ``config``: :class:`YolactLoss` with the class weights of
    ``loss.class_balance`` (computed from ``coco_dict``, the training set's COCO dict) and the
    mask size weighting of ``loss.mask_size_weight_power``."""
    loss = config.loss
    class_weights = None
    if loss.class_balance != "none":
        if coco_dict is None:
            raise ConfigError(f"loss.class_balance={loss.class_balance} needs the training set's class counts")
        from ..data.stats import class_balanced_weights, class_counts

        foreground = class_balanced_weights(class_counts(coco_dict), loss.class_balance_beta)
        class_weights = torch.tensor([1.0] + foreground, dtype=torch.float32)
    return YolactLoss(loss, config.model.num_classes, class_weights=class_weights,
                      mask_instance_weight=mask_size_weight_fn(loss.mask_size_weight_power))
