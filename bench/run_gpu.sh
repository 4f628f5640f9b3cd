#!/bin/sh
# run_gpu.sh - the cuda backend's decode and prefill speed on the presets,
# beside the device's copy bandwidth measured in the same run and the peer
# (transformers, bf16, the same weights) in the same call.  For the GPU
# machine (the device tool): the binaries come built (BIN, default build).
#
#   bench/run_gpu.sh [WORK_DIR] [PRESET ...]
#
# WORK_DIR (default /tmp/infer-presets) receives the model folders:
# make_preset (bf16, random weights, real shapes), then infer quantize
# --bits 4|8 --group-size 64 (QBITS="4 8" by default).
set -e
cd "$(dirname "$0")/.."
BIN=${BIN:-build}
WORK=${1:-/tmp/infer-presets}
[ $# -gt 0 ] && shift
PRESETS=${*:-"gemma3-1b llama3.2-1b"}
RUNS=${RUNS:-3}
PROMPT=${PROMPT:-512}
QBITS=${QBITS:-"4 8"}
mkdir -p "$WORK"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
for p in $PRESETS; do
    [ -f "$WORK/$p/config.json" ] || "$BIN/bench/make_preset" "$p" "$WORK/$p"
    for b in $QBITS; do
        [ -f "$WORK/$p-q$b/config.json" ] || "$BIN/infer" quantize "$WORK/$p" "$WORK/$p-q$b" --bits $b --group-size 64 >/dev/null
    done
done
for p in $PRESETS; do
    for m in $(for b in $QBITS; do echo "$p-q$b"; done) "$p"; do
        echo "## $m"
        "$BIN/bench/bench_decode" "$WORK/$m" --backend cuda --runs "$RUNS" --prompt "$PROMPT"
    done
    [ "${PEER:-1}" = 1 ] && python3 bench/hf_peer.py "$WORK/$p" --prompt "$PROMPT" --runs "$RUNS" 2>&1 | grep -v Warning
done
