// Python bindings for yolact_lite._C.
#include <torch/extension.h>

#include "fast_nms.h"

namespace {

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "yolact_lite compiled ops (Fast NMS)";
  m.def("fast_nms_cpu", &yolact_lite::fast_nms_cpu,
        "Fast NMS on CPU tensors: (boxes [P,4] f32, scores [C,P] f32, "
        "iou_threshold, top_k, max_detections, cross_class) -> "
        "(prior_index i64, class_id i64, score f32)",
        py::arg("boxes"), py::arg("scores"), py::arg("iou_threshold"),
        py::arg("top_k"), py::arg("max_detections"), py::arg("cross_class"));
#ifdef WITH_CUDA
  m.def("fast_nms_cuda", &yolact_lite::fast_nms_cuda,
        "Fast NMS on CUDA tensors (same contract as fast_nms_cpu)",
        py::arg("boxes"), py::arg("scores"), py::arg("iou_threshold"),
        py::arg("top_k"), py::arg("max_detections"), py::arg("cross_class"));
#endif
  m.def("with_cuda", &with_cuda,
        "True if the extension was compiled with the CUDA kernel");
}
