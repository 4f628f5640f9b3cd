#!/bin/sh
# run_decode.sh - decode and prefill speed of the presets at bf16, 8 and 4
# bits (MLX affine, groups of 64), each beside the read bandwidth measured
# in the same run (bench/bench_decode.c).
#
#   bench/run_decode.sh [WORK_DIR] [PRESET ...]
#
# WORK_DIR (default /tmp/infer-presets) receives the model folders, made
# once: build/bench/make_preset (bf16, random weights, real shapes), then
# build/infer quantize --bits 4|8 --group-size 64.  Quantized folders run
# twice: float32 activations (exact, the default) and --int8.  The output
# (one block per run) goes to stdout; bench/RESULTS.md records it.
set -e
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/infer-presets}
[ $# -gt 0 ] && shift
PRESETS=${*:-"llama3.2-1b gemma3-1b qwen3-0.6b"}
RUNS=${RUNS:-5}

make -j2 all bench >/dev/null
mkdir -p "$WORK"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus"
for p in $PRESETS; do
    [ -f "$WORK/$p/config.json" ] || build/bench/make_preset "$p" "$WORK/$p"
    for b in 4 8; do
        [ -f "$WORK/$p-q$b/config.json" ] || build/infer quantize "$WORK/$p" "$WORK/$p-q$b" --bits $b --group-size 64
    done
done
for p in $PRESETS; do
    for m in "$p" "$p-q4" "$p-q8"; do
        echo
        echo "## $m: build/bench/bench_decode $WORK/$m --runs $RUNS"
        build/bench/bench_decode "$WORK/$m" --runs "$RUNS"
        case $m in
        *-q4 | *-q8)
            echo
            echo "## $m: build/bench/bench_decode $WORK/$m --runs $RUNS --int8"
            build/bench/bench_decode "$WORK/$m" --runs "$RUNS" --int8
            ;;
        esac
    done
done
