// CUDA implementation of Fast NMS.
//
// Candidate selection (stable sort per class, top-k, gather of the boxes) and
// the final top-max_detections selection use ATen ops on the device. The
// suppression itself is one kernel: one block per class; the block walks the
// class's k candidates in column chunks of kThreads, each thread owning one
// column j and folding "IoU(i, j) <= thr for all i < j" in a register while
// the rows i are staged through shared memory tile by tile. No [C, k, k]
// IoU tensor is ever materialised.
#include "fast_nms.h"

// c10 headers only: ATen/cuda/CUDAContext.h would also pull in the cuBLAS /
// cuSPARSE headers, which a minimal CUDA toolkit may not ship.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

namespace yolact_lite {

namespace {

constexpr int kThreads = 256;

// Same operation order as the CPU kernel and the torch reference; the _rn
// intrinsics keep nvcc from contracting into FMAs so results are bitwise
// identical to torch's elementwise ops.
__device__ __forceinline__ float pair_iou(float ax1, float ay1, float ax2,
                                          float ay2, float aa, float bx1,
                                          float by1, float bx2, float by2,
                                          float ba) {
  float w = __fsub_rn(fminf(ax2, bx2), fmaxf(ax1, bx1));
  float h = __fsub_rn(fminf(ay2, by2), fmaxf(ay1, by1));
  w = w > 0.f ? w : 0.f;
  h = h > 0.f ? h : 0.f;
  const float inter = __fmul_rn(w, h);
  const float uni = __fsub_rn(__fadd_rn(aa, ba), inter);
  return uni > 0.f ? __fdiv_rn(inter, uni) : 0.f;
}

__device__ __forceinline__ float box_area(float x1, float y1, float x2,
                                          float y2) {
  return __fmul_rn(__fsub_rn(x2, x1), __fsub_rn(y2, y1));
}

// boxes: [G, k, 4] candidates in rank order per group; keep: [G, k].
__global__ void fast_nms_keep_kernel(const float* __restrict__ boxes,
                                     int64_t k, float thr,
                                     bool* __restrict__ keep) {
  __shared__ float sx1[kThreads], sy1[kThreads], sx2[kThreads],
      sy2[kThreads], sa[kThreads];
  const int64_t g = blockIdx.x;
  const float* gb = boxes + g * k * 4;
  bool* gk = keep + g * k;
  const int tid = threadIdx.x;

  for (int64_t j0 = 0; j0 < k; j0 += kThreads) {
    const int64_t j = j0 + tid;
    const bool active = j < k;
    float jx1 = 0.f, jy1 = 0.f, jx2 = 0.f, jy2 = 0.f, ja = 0.f;
    if (active) {
      jx1 = gb[4 * j];
      jy1 = gb[4 * j + 1];
      jx2 = gb[4 * j + 2];
      jy2 = gb[4 * j + 3];
      ja = box_area(jx1, jy1, jx2, jy2);
    }
    bool ok = true;
    const int64_t row_end = min(j0 + static_cast<int64_t>(kThreads), k);
    for (int64_t i0 = 0; i0 < row_end; i0 += kThreads) {
      const int64_t i = i0 + tid;
      __syncthreads();  // previous tile fully consumed
      if (i < row_end) {
        const float x1 = gb[4 * i], y1 = gb[4 * i + 1];
        const float x2 = gb[4 * i + 2], y2 = gb[4 * i + 3];
        sx1[tid] = x1;
        sy1[tid] = y1;
        sx2[tid] = x2;
        sy2[tid] = y2;
        sa[tid] = box_area(x1, y1, x2, y2);
      }
      __syncthreads();
      if (active && ok) {
        const int64_t lim = min(static_cast<int64_t>(kThreads), j - i0);
        for (int64_t t = 0; t < lim; ++t) {
          const float v = pair_iou(sx1[t], sy1[t], sx2[t], sy2[t], sa[t], jx1,
                                   jy1, jx2, jy2, ja);
          if (!(v <= thr)) {
            ok = false;
            break;
          }
        }
      }
    }
    if (active) gk[j] = ok;
  }
}

at::Tensor launch_keep(const at::Tensor& cand_boxes, int64_t groups, int64_t k,
                       float thr) {
  auto keep = at::empty({groups, k}, cand_boxes.options().dtype(at::kBool));
  if (groups == 0 || k == 0) return keep;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  fast_nms_keep_kernel<<<static_cast<unsigned int>(groups), kThreads, 0,
                         stream>>>(cand_boxes.data_ptr<float>(), k, thr,
                                   keep.data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return keep;
}

}  // namespace

NmsResult fast_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                        double iou_threshold, int64_t top_k,
                        int64_t max_detections, bool cross_class) {
  check_nms_inputs(boxes, scores, iou_threshold, top_k, max_detections,
                   "fast_nms_cuda");
  TORCH_CHECK(boxes.is_cuda(), "fast_nms_cuda: tensors must be on a CUDA device, got ",
              boxes.device());
  const c10::cuda::CUDAGuard guard(boxes.device());
  const int64_t C = scores.size(0);
  const int64_t P = scores.size(1);
  const auto long_opts = boxes.options().dtype(at::kLong);
  if (C == 0 || P == 0) {
    return NmsResult(at::empty({0}, long_opts), at::empty({0}, long_opts),
                     at::empty({0}, boxes.options()));
  }
  const float thr = static_cast<float>(iou_threshold);
  const int64_t k = std::min(top_k, P);

  if (cross_class) {
    // Best class per prior (argmax returns the first maximum: lowest class).
    const at::Tensor cls = scores.argmax(0);
    const at::Tensor best = scores.gather(0, cls.unsqueeze(0)).squeeze(0);
    const at::Tensor order =
        std::get<1>(best.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true))
            .narrow(0, 0, k);
    const at::Tensor cand = boxes.index_select(0, order).contiguous();
    const at::Tensor keep = launch_keep(cand, 1, k, thr).view({k});
    const at::Tensor idx = order.masked_select(keep);
    // Rank order is score order; no max_detections cap in this mode.
    return NmsResult(idx, cls.index_select(0, idx), best.index_select(0, idx));
  }

  auto sorted = scores.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true);
  const at::Tensor top_scores = std::get<0>(sorted).narrow(1, 0, k).contiguous();
  const at::Tensor top_idx = std::get<1>(sorted).narrow(1, 0, k).contiguous();
  const at::Tensor cand =
      boxes.index_select(0, top_idx.reshape({-1})).contiguous();  // [C*k, 4]
  const at::Tensor keep = launch_keep(cand, C, k, thr);           // [C, k]
  const at::Tensor cls_grid =
      at::arange(C, long_opts).unsqueeze(1).expand({C, k});
  // masked_select walks class-major, rank order; a stable sort by score then
  // orders ties by (class, prior index) like the CPU kernel.
  const at::Tensor kept_scores = top_scores.masked_select(keep);
  const at::Tensor kept_idx = top_idx.masked_select(keep);
  const at::Tensor kept_cls = cls_grid.masked_select(keep);
  const int64_t n = std::min<int64_t>(max_detections, kept_scores.size(0));
  const at::Tensor order =
      std::get<1>(kept_scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true))
          .narrow(0, 0, n);
  return NmsResult(kept_idx.index_select(0, order),
                   kept_cls.index_select(0, order),
                   kept_scores.index_select(0, order));
}

}  // namespace yolact_lite
