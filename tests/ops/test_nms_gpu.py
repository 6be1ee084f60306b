"""Fast NMS CUDA kernel vs the torch reference (on CUDA and on CPU).

Skipped without a CUDA device or when the extension lacks its CUDA kernel.
"""
import pytest
import torch

from tests.ops.test_nms import BOX_KINDS, SCORE_KINDS, assert_same, make_boxes, make_scores
from yolact_lite.ops import cuda_extension_available, fast_nms, fast_nms_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(not cuda_extension_available(),
                       reason="yolact_lite._C built without the CUDA kernel"),
]


def _to(out, device):
    return tuple(t.to(device) for t in out)


@pytest.mark.parametrize("seed", range(40))
def test_cuda_matches_reference_random(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 400, (1,), generator=g))
    c = int(torch.randint(1, 12, (1,), generator=g))
    boxes = make_boxes(BOX_KINDS[seed % len(BOX_KINDS)], n, g)
    scores = make_scores(SCORE_KINDS[seed % len(SCORE_KINDS)], c, n, g)
    kwargs = dict(iou_threshold=(0.0, 0.3, 0.5, 0.7, 1.0)[seed % 5],
                  top_k=(1, 7, 200, 300, 1000)[(seed // 5) % 5],
                  max_detections=(1, 10, 100, 5000)[seed % 4],
                  cross_class=bool(seed % 2))
    cpu_ref = fast_nms_reference(boxes, scores, **kwargs)
    gpu_ref = fast_nms_reference(boxes.cuda(), scores.cuda(), **kwargs)
    gpu = fast_nms(boxes.cuda(), scores.cuda(), **kwargs)
    assert all(t.is_cuda for t in gpu)
    assert_same(gpu, gpu_ref)
    assert_same(_to(gpu, "cpu"), cpu_ref)


@pytest.mark.parametrize("cross_class", [False, True])
def test_cuda_matches_reference_worst_case(cross_class):
    g = torch.Generator().manual_seed(0)
    n, c = 19248, 80
    centre, size = torch.rand(n, 2, generator=g) * 550, 10 + torch.rand(n, 2, generator=g) * 290
    boxes = torch.cat([centre - size / 2, centre + size / 2], 1)
    scores = torch.rand(c, n, generator=g)
    gpu = fast_nms(boxes.cuda(), scores.cuda(), cross_class=cross_class)
    assert_same(gpu, fast_nms_reference(boxes.cuda(), scores.cuda(), cross_class=cross_class))
    assert_same(_to(gpu, "cpu"), fast_nms(boxes, scores, cross_class=cross_class))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_inputs(dtype):
    g = torch.Generator().manual_seed(2)
    boxes = make_boxes("clustered", 300, g).to(dtype).cuda()
    scores = torch.rand(5, 300, generator=g).to(dtype).cuda()
    out = fast_nms(boxes, scores)
    assert out[2].dtype == dtype
    assert_same(out, fast_nms_reference(boxes, scores))


def test_cuda_empty_and_checks():
    out = fast_nms(torch.zeros(0, 4, device="cuda"), torch.zeros(3, 0, device="cuda"))
    assert [len(t) for t in out] == [0, 0, 0] and all(t.is_cuda for t in out)
    from yolact_lite.ops import nms as nms_mod
    with pytest.raises(RuntimeError, match="must be on a CUDA device"):
        nms_mod._C.fast_nms_cuda(torch.rand(3, 4), torch.rand(2, 3), 0.5, 10, 10, False)
