#!/usr/bin/env bash
# Issue 9's GPU figures in one run: the paper-best step (feature crops + transformer) against two
# RGB crops at batch 8 and 64, eager vs channels_last_3d + torch.compile; `stica pretrain`'s real
# loader end to end vs compute only, its JPEG frames decoded in the workers or on the GPU, with
# 14 and 4 workers; extract-features clips/s and data wait with the stored JPEG
# frames decoded by PIL in the loader workers vs by nvJPEG on the GPU (same store, batch and
# workers), and how far apart their features are. Every step has its own time limit and writes
# JSON as it goes, so a slow step costs only itself.
#
#   bash scripts/gpu_bench.sh OUT_DIR            # on the GPU machine (see ../shared/device/README.md)
#   PROFILE=params.yaml B_SMALL=4 B_LARGE=8 STEPS=1 WORKERS=2 SYNTH="--set train_per_class=4" \
#     COMPILE=off bash scripts/gpu_bench.sh /tmp/gpu_dry   # a dry run on a CPU
#   ONLY="synth|preprocess|extract.*" bash scripts/gpu_bench.sh OUT_DIR   # extraction only (~2.5 min)
#   ONLY="synth|preprocess|store.*" bash scripts/gpu_bench.sh OUT_DIR   # pretraining's loader only
set -uo pipefail
out=${1:?usage: gpu_bench.sh OUT_DIR}
mkdir -p "$out"
profile=${PROFILE:-profiles/paper.yaml}
b_small=${B_SMALL:-8}
b_large=${B_LARGE:-64}
steps=${STEPS:-5}
workers=${WORKERS:-14}
few_workers=${FEW_WORKERS:-4}
synth=${SYNTH:---set train_per_class=80}
compile_switch=${COMPILE:-on}  # on|off: off for a dry run on a CPU
compile=--compile
[[ $compile_switch == off ]] && compile=--no-compile
work=${WORK:-/tmp/stica_gpu_bench}
log="$out/log.txt"
stica="python3 -m stica"
fast="$compile --set channels_last=on --set deterministic=false"
eager="--no-compile --set channels_last=off --set deterministic=false"

step() { # NAME SECONDS COMMAND...: run with a limit, log its output and exit status
  local name=$1 limit=$2
  shift 2
  if [[ -n "${ONLY:-}" && ! "$name" =~ ^(${ONLY})$ ]]; then return; fi
  echo "== $name start $(date +%T)" | tee -a "$log"
  timeout "$limit" "$@" >>"$log" 2>&1
  echo "== $name rc=$? end $(date +%T)" | tee -a "$log"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nproc
} >>"$log" 2>&1

bench="$stica bench train --params $profile --only paper --pooling transformer --steps $steps"
step b64_eager 90 $bench --batch-size "$b_large" --warmup 2 $eager --json-out "$out/b64_eager.json"
step b64_fast 200 $bench --batch-size "$b_large" --warmup 3 $fast --json-out "$out/b64_fast.json"
step b8_eager 60 $bench --batch-size "$b_small" --warmup 2 $eager --json-out "$out/b8_eager.json"
step b8_fast 150 $bench --batch-size "$b_small" --warmup 3 $fast --json-out "$out/b8_fast.json"

rm -rf "$work" && mkdir -p "$work"
step synth 60 $stica synth --out "$work/videos" --workers "$workers" --params "$profile" $synth
step preprocess 90 $stica preprocess "$work/videos" --out "$work/store" --params "$profile" \
  --set workers="$workers"
# pretraining's loader end to end: JPEG frames decoded by PIL in the workers (pretrain.jpeg_decode:
# cpu, the profile's) vs shipped as files and decoded on the GPU, with the workers a 16-core
# machine spares per GPU and with the few an 8-GPU node of fewer cores would
store="$stica bench train --params $profile --store $work/store --batch-size $b_large"
store="$store --steps $((4 * steps)) --warmup 3 $fast --set prefetch_factor=4"
step store 150 $store --set workers="$workers" --json-out "$out/store.json"
step store_device 150 $store --set workers="$workers" --set jpeg_decode=device \
  --json-out "$out/store_device.json"
for decode in cpu device; do
  step store_few_$decode 150 $store --set workers=$few_workers --set jpeg_decode=$decode \
    --json-out "$out/store_few_$decode.json"
done
# extraction (eager: compiling the trunk did not pay, README): the frames decoded in the loader
# workers (PIL) vs on the GPU, autotuned; then the GPU decode with the profile's deterministic mode
extract="$stica extract-features $work/store --ckpt random --params $profile --set workers=$workers"
extract="$extract --set batch_size=200 --set chunk_videos=100 --set compile=off"
for decode in cpu device; do
  step extract_$decode 75 $extract --set jpeg_decode=$decode --set deterministic=false \
    --out "$work/features_$decode.h5" --json-out "$out/extract_$decode.json"
done
step extract_compare 30 python3 scripts/compare_features.py "$work/features_cpu.h5" \
  "$work/features_device.h5" --json-out "$out/extract_compare.json"
step extract_device_det 75 $extract --set jpeg_decode=device --out "$work/features_det.h5" \
  --json-out "$out/extract_device_det.json"
step profile 150 python3 scripts/profile_step.py --params "$profile" --batch-size "$b_large" \
  --set compile="$compile_switch" --set channels_last=on --set deterministic=false
# the paper profile's default, deterministic: true (deterministic cuDNN, no autotuning), last
step b64_det 120 $bench --batch-size "$b_large" --warmup 3 $compile --set channels_last=on \
  --set deterministic=true --json-out "$out/b64_det.json"
echo "== done $(date +%T)" | tee -a "$log"
