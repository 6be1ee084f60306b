// CPU implementation of Fast NMS.
//
// Per class (parallel over classes with at::parallel_for):
//   1. top-k selection with a bounded heap (one pass over the P scores),
//   2. for every candidate j (in rank order) test IoU against the candidates
//      ranked before it; j survives iff every such IoU is <= threshold. The
//      scan stops at the first IoU above the threshold, because only
//      "max IoU <= threshold" matters. Suppressed candidates still suppress.
// Then the survivors of all classes are merged and the best max_detections
// are returned.
#include "fast_nms.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace yolact_lite {

void check_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores,
                      double iou_threshold, int64_t top_k,
                      int64_t max_detections, const char* fn_name) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, fn_name,
              ": boxes must have shape [P, 4], got ", boxes.sizes());
  TORCH_CHECK(scores.dim() == 2, fn_name,
              ": scores must have shape [C, P], got ", scores.sizes());
  TORCH_CHECK(scores.size(1) == boxes.size(0), fn_name,
              ": scores [C, P] and boxes [P, 4] disagree on P (",
              scores.size(1), " vs ", boxes.size(0), ")");
  TORCH_CHECK(boxes.scalar_type() == at::kFloat, fn_name,
              ": boxes must be float32, got ", boxes.scalar_type());
  TORCH_CHECK(scores.scalar_type() == at::kFloat, fn_name,
              ": scores must be float32, got ", scores.scalar_type());
  TORCH_CHECK(boxes.device() == scores.device(), fn_name,
              ": boxes and scores must be on the same device (",
              boxes.device(), " vs ", scores.device(), ")");
  TORCH_CHECK(boxes.is_contiguous(), fn_name, ": boxes must be contiguous");
  TORCH_CHECK(scores.is_contiguous(), fn_name, ": scores must be contiguous");
  TORCH_CHECK(iou_threshold >= 0.0, fn_name,
              ": iou_threshold must be >= 0, got ", iou_threshold);
  TORCH_CHECK(boxes.size(0) < (int64_t(1) << 32), fn_name,
              ": at most 2^32 - 1 boxes are supported, got ", boxes.size(0));
  TORCH_CHECK(top_k >= 1, fn_name, ": top_k must be >= 1, got ", top_k);
  TORCH_CHECK(max_detections >= 1, fn_name,
              ": max_detections must be >= 1, got ", max_detections);
}

namespace {

// On x86-64 Linux with GCC, the top-k scan and the suppression loop also get
// an AVX2 clone, picked at load time when the CPU has AVX2 (8 float lanes
// instead of 4). FMA stays off (-ffp-contract=off): both clones give
// identical results.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define YL_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define YL_MULTIVERSION
#endif

struct Candidate {
  float score;
  int64_t index;
};

// A 64-bit key whose unsigned order is the rank order: higher score first,
// equal scores by lower prior index. High half: the score mapped to an
// order-preserving unsigned int (-0.0 folded into +0.0, since they compare
// equal); low half: the complemented index (P < 2^32 is checked).
inline uint64_t rank_key(float score, int64_t index) {
  const float folded = score + 0.0f;  // -0.0 + 0.0 == +0.0
  uint32_t u;
  std::memcpy(&u, &folded, sizeof(u));
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<uint64_t>(u) << 32) |
         (0xffffffffu - static_cast<uint32_t>(index));
}

inline int64_t key_index(uint64_t key) {
  return static_cast<int64_t>(0xffffffffu - static_cast<uint32_t>(key));
}

// Maximum of p[0..kBlock): eight independent lanes so the compiler emits
// packed max instructions.
constexpr int64_t kBlock = 32;
inline float block_max(const float* p) {
  float m[8];
  for (int l = 0; l < 8; ++l) m[l] = p[l];
  for (int j = 8; j < kBlock; j += 8)
    for (int l = 0; l < 8; ++l) m[l] = m[l] > p[j + l] ? m[l] : p[j + l];
  float r = m[0];
  for (int l = 1; l < 8; ++l) r = r > m[l] ? r : m[l];
  return r;
}

struct SelectScratch {
  std::vector<float> maxima, tmp;
  std::vector<uint64_t> keys;
};

// Writes the best min(k, n) entries of s[0..n) to out, in rank order.
//
// Bound from block maxima: the k-th largest of the per-block maxima (blocks of
// kBlock scores) is a score that at least k distinct entries reach, so every
// entry of the top k scores >= that bar. Only blocks whose maximum reaches
// the bar are scanned, and only entries >= bar become candidates (about k of
// them for continuous scores; ties are all kept, so the bound is exact). The
// candidates are then cut to k by their rank keys and sorted.
YL_MULTIVERSION void select_top_k(const float* s, int64_t n, int64_t k,
                                  SelectScratch& sc,
                                  std::vector<Candidate>& out) {
  const auto better = [](uint64_t a, uint64_t b) { return a > b; };
  k = std::min(k, n);
  std::vector<uint64_t>& keys = sc.keys;
  keys.clear();
  const int64_t nfull = n / kBlock;
  if (nfull < 2 * k) {  // too few blocks for the bound to pay off
    keys.reserve(n);
    for (int64_t i = 0; i < n; ++i) keys.push_back(rank_key(s[i], i));
  } else {
    sc.maxima.resize(nfull);
    for (int64_t b = 0; b < nfull; ++b)
      sc.maxima[b] = block_max(s + b * kBlock);
    sc.tmp.assign(sc.maxima.begin(), sc.maxima.end());
    std::nth_element(sc.tmp.begin(), sc.tmp.begin() + (k - 1), sc.tmp.end(),
                     [](float a, float b) { return a > b; });
    const float bar = sc.tmp[k - 1];
    for (int64_t b = 0; b < nfull; ++b) {
      if (!(sc.maxima[b] >= bar)) continue;
      for (int64_t i = b * kBlock; i < (b + 1) * kBlock; ++i)
        if (s[i] >= bar) keys.push_back(rank_key(s[i], i));
    }
    for (int64_t i = nfull * kBlock; i < n; ++i)  // partial last block
      if (s[i] >= bar) keys.push_back(rank_key(s[i], i));
  }
  if (static_cast<int64_t>(keys.size()) > k) {
    std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), better);
    keys.resize(k);
  }
  std::sort(keys.begin(), keys.end(), better);
  out.clear();
  out.reserve(keys.size());
  for (uint64_t key : keys) {
    const int64_t idx = key_index(key);
    out.push_back({s[idx], idx});
  }
}

// Scratch buffers with the candidates' coordinates (structure of arrays).
struct BoxBuffer {
  std::vector<float> x1, y1, x2, y2, area;
  void load(const float* boxes, const std::vector<Candidate>& cand) {
    const size_t n = cand.size();
    x1.resize(n); y1.resize(n); x2.resize(n); y2.resize(n); area.resize(n);
    for (size_t t = 0; t < n; ++t) {
      const float* b = boxes + 4 * cand[t].index;
      x1[t] = b[0]; y1[t] = b[1]; x2[t] = b[2]; y2[t] = b[3];
      area[t] = (b[2] - b[0]) * (b[3] - b[1]);
    }
  }
};

// keep[j] = 1 iff IoU(i, j) <= thr for every i < j. The operation order
// matches the torch reference exactly, so decisions agree bit for bit:
// w = min(x2) - max(x1) clamped at 0, inter = w * h,
// union = (area_i + area_j) - inter, IoU = inter / union, or 0 if union <= 0.
YL_MULTIVERSION void fast_suppress(const BoxBuffer& bb, float thr, std::vector<uint8_t>& keep) {
  constexpr int64_t kChunk = 16;
  const int64_t n = static_cast<int64_t>(bb.x1.size());
  keep.assign(n, 0);
  if (n == 0) return;
  keep[0] = 1;  // no earlier candidate; 0 <= thr since thr >= 0
  const float* X1 = bb.x1.data();
  const float* Y1 = bb.y1.data();
  const float* X2 = bb.x2.data();
  const float* Y2 = bb.y2.data();
  const float* A = bb.area.data();
  for (int64_t j = 1; j < n; ++j) {
    const float jx1 = X1[j], jy1 = Y1[j], jx2 = X2[j], jy2 = Y2[j], ja = A[j];
    bool ok = true;
    // Fixed-size chunks without a data-dependent exit vectorise; exiting
    // after the first chunk that holds an IoU above thr is the early exit.
    for (int64_t i0 = 0; i0 < j && ok; i0 += kChunk) {
      const int64_t i1 = std::min(i0 + kChunk, j);
      int bad = 0;
      for (int64_t i = i0; i < i1; ++i) {
        const float w = std::max(std::min(X2[i], jx2) - std::max(X1[i], jx1), 0.f);
        const float h = std::max(std::min(Y2[i], jy2) - std::max(Y1[i], jy1), 0.f);
        const float inter = w * h;
        const float uni = (A[i] + ja) - inter;
        const bool pos = uni > 0.f;
        // Branch-free (needs -fno-trapping-math to vectorise): divide by 1
        // where union <= 0, then select 0 there.
        const float iou = inter / (pos ? uni : 1.f);
        const float v = pos ? iou : 0.f;
        bad |= !(v <= thr);
      }
      ok = (bad == 0);
    }
    keep[j] = ok ? 1 : 0;
  }
}

struct Detection {
  float score;
  int64_t cls;
  int64_t index;
};

inline bool detection_before(const Detection& a, const Detection& b) {
  if (a.score != b.score) return a.score > b.score;
  if (a.cls != b.cls) return a.cls < b.cls;
  return a.index < b.index;
}

NmsResult make_result(const std::vector<Detection>& dets, int64_t n) {
  auto idx = at::empty({n}, at::kLong);
  auto cls = at::empty({n}, at::kLong);
  auto sc = at::empty({n}, at::kFloat);
  int64_t* pi = idx.data_ptr<int64_t>();
  int64_t* pc = cls.data_ptr<int64_t>();
  float* ps = sc.data_ptr<float>();
  for (int64_t t = 0; t < n; ++t) {
    pi[t] = dets[t].index;
    pc[t] = dets[t].cls;
    ps[t] = dets[t].score;
  }
  return NmsResult(idx, cls, sc);
}

NmsResult per_class_nms(const float* boxes, const float* scores, int64_t C,
                        int64_t P, float thr, int64_t top_k,
                        int64_t max_detections) {
  std::vector<std::vector<Candidate>> kept(C);
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    SelectScratch scratch;
    std::vector<Candidate> cand;
    BoxBuffer bb;
    std::vector<uint8_t> keep;
    for (int64_t c = begin; c < end; ++c) {
      select_top_k(scores + c * P, P, top_k, scratch, cand);
      bb.load(boxes, cand);
      fast_suppress(bb, thr, keep);
      std::vector<Candidate>& out = kept[c];
      for (size_t t = 0; t < cand.size(); ++t)
        if (keep[t]) out.push_back(cand[t]);
    }
  });
  size_t total = 0;
  for (const auto& v : kept) total += v.size();
  std::vector<Detection> dets;
  dets.reserve(total);
  for (int64_t c = 0; c < C; ++c)
    for (const Candidate& k : kept[c]) dets.push_back({k.score, c, k.index});
  const int64_t n = std::min<int64_t>(max_detections, dets.size());
  std::partial_sort(dets.begin(), dets.begin() + n, dets.end(),
                    [](const Detection& a, const Detection& b) {
                      return detection_before(a, b);
                    });
  return make_result(dets, n);
}

NmsResult cross_class_nms(const float* boxes, const float* scores, int64_t C,
                          int64_t P, float thr, int64_t top_k) {
  // Best class per prior; ties go to the lowest class id (like argmax).
  std::vector<float> best(P);
  std::vector<int64_t> arg(P);
  at::parallel_for(0, P, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      best[p] = scores[p];
      arg[p] = 0;
    }
    for (int64_t c = 1; c < C; ++c) {
      const float* row = scores + c * P;
      for (int64_t p = begin; p < end; ++p) {
        if (row[p] > best[p]) {
          best[p] = row[p];
          arg[p] = c;
        }
      }
    }
  });
  SelectScratch scratch;
  std::vector<Candidate> cand;
  select_top_k(best.data(), P, top_k, scratch, cand);
  BoxBuffer bb;
  bb.load(boxes, cand);
  std::vector<uint8_t> keep;
  fast_suppress(bb, thr, keep);
  std::vector<Detection> dets;
  for (size_t t = 0; t < cand.size(); ++t)
    if (keep[t]) dets.push_back({cand[t].score, arg[cand[t].index], cand[t].index});
  // Already in rank order; no max_detections cap in cross-class mode.
  return make_result(dets, static_cast<int64_t>(dets.size()));
}

}  // namespace

NmsResult fast_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores,
                       double iou_threshold, int64_t top_k,
                       int64_t max_detections, bool cross_class) {
  check_nms_inputs(boxes, scores, iou_threshold, top_k, max_detections,
                   "fast_nms_cpu");
  TORCH_CHECK(boxes.device().is_cpu(), "fast_nms_cpu: tensors must be on CPU, got ",
              boxes.device());
  const int64_t C = scores.size(0);
  const int64_t P = scores.size(1);
  if (C == 0 || P == 0) return make_result({}, 0);
  const float thr = static_cast<float>(iou_threshold);
  const float* pb = boxes.data_ptr<float>();
  const float* ps = scores.data_ptr<float>();
  if (cross_class) return cross_class_nms(pb, ps, C, P, thr, top_k);
  return per_class_nms(pb, ps, C, P, thr, top_k, max_detections);
}

}  // namespace yolact_lite
