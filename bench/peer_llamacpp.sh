#!/bin/sh
# peer_llamacpp.sh - the peer of the CPU decode benchmark in the same minutes: llama.cpp's own
# llama-bench (built here, natively, from the llama.cpp source that node-llama-cpp's npm package
# carries as a git bundle) on a GGUF file with the preset's shapes (bench/make_gguf.py), run in
# turn with bench_decode on the MLX-format preset (bench/run_decode.sh makes those), each beside
# the read bandwidth bench_decode measures.
#
#   bench/peer_llamacpp.sh [WORK_DIR] [PRESET_DIR]
#
# WORK_DIR (default /tmp/infer-peer) receives the npm package, the llama.cpp build and the GGUF
# files; PRESET_DIR (default /tmp/infer-presets) holds bench/run_decode.sh's model folders.
# Needs cmake, g++, git, npm and python3 (Debian packages); ROUNDS (default 2) turns of each
# format of each of MODELS (default "llama3.2-1b gemma3-1b qwen3-0.6b", run_decode.sh's presets).
set -e
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/infer-peer}
PRESETS=${2:-/tmp/infer-presets}
ROUNDS=${ROUNDS:-2}
MODELS=${MODELS:-"llama3.2-1b gemma3-1b qwen3-0.6b"}
NLC=node-llama-cpp@3.22.1 # its llama/gitRelease.bundle: llama.cpp at the release it names

mkdir -p "$WORK"
if [ ! -x "$WORK/llama.cpp/build/bin/llama-bench" ]; then
    (cd "$WORK" && rm -rf package ./*.tgz && npm pack --silent "$NLC" >/dev/null && tar xzf ./*.tgz)
    rm -rf "$WORK/llama.cpp"
    git -c advice.detachedHead=false clone -q "$WORK/package/llama/gitRelease.bundle" "$WORK/llama.cpp"
    echo "building llama.cpp's llama-bench (log: $WORK/build.log)"
    if ! { cmake -S "$WORK/llama.cpp" -B "$WORK/llama.cpp/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF &&
        cmake --build "$WORK/llama.cpp/build" -j"$(nproc)" --target llama-bench; } >"$WORK/build.log" 2>&1; then
        tail -20 "$WORK/build.log"
        exit 1
    fi
fi
make -j"$(nproc)" all bench >/dev/null
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus;" \
    "llama.cpp $(cat "$WORK/package/llama/llama.cpp.info.json" | tr -d ' \n')"
for p in $MODELS; do
    for q in q4 q8 bf16; do
        case $q in
        q4) g=q4_0 m=$p-q4 a=--int8 ;;
        q8) g=q8_0 m=$p-q8 a=--int8 ;;
        bf16) g=bf16 m=$p a= ;;
        esac
        gguf=$WORK/$p-$g.gguf
        [ -f "$gguf" ] || python3 bench/make_gguf.py "$p" $g "$gguf"
        if [ ! -f "$PRESETS/$m/config.json" ]; then
            echo "no $PRESETS/$m: run bench/run_decode.sh $PRESETS $p first"
            exit 1
        fi
        r=1
        while [ $r -le "$ROUNDS" ]; do
            echo
            echo "## $m, round $r: build/bench/bench_decode $PRESETS/$m --runs 3 $a"
            build/bench/bench_decode "$PRESETS/$m" --runs 3 $a |
                grep -E '^(limit|bytes/token|decode|paired|prefill):'
            echo "## llama.cpp $g: llama-bench -m $gguf -t $(nproc) -p 128 -n 128 -r 3"
            "$WORK/llama.cpp/build/bin/llama-bench" -m "$gguf" -t "$(nproc)" -p 128 -n 128 -r 3 -o md 2>/dev/null |
                grep -E 'pp128|tg128'
            r=$((r + 1))
        done
    done
done
