// Fast NMS (YOLACT-style) kernels exposed as yolact_lite._C.
//
// Shared contract for every backend (see yolact_lite/ops/nms.py for the full
// description):
//   boxes  : float32 [P, 4] (x1, y1, x2, y2), contiguous
//   scores : float32 [C, P], contiguous, same device as boxes, no NaN/inf
//   returns (prior_index int64 [N], class_id int64 [N], score float32 [N]),
//   ordered by score descending; equal scores are ordered by class id, then
//   prior index, ascending (cross-class mode: by prior index).
//   iou_threshold is compared as float32 (callers pass float32 values).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>

namespace yolact_lite {

using NmsResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Validates arguments shared by the CPU and CUDA entry points (TORCH_CHECK).
void check_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores,
                      double iou_threshold, int64_t top_k,
                      int64_t max_detections, const char* fn_name);

NmsResult fast_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores,
                       double iou_threshold, int64_t top_k,
                       int64_t max_detections, bool cross_class);

#ifdef WITH_CUDA
NmsResult fast_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                        double iou_threshold, int64_t top_k,
                        int64_t max_detections, bool cross_class);
#endif

}  // namespace yolact_lite
