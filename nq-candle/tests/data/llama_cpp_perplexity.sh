#!/usr/bin/env bash
# Reference perplexities for tests/kat.rs, measured with llama.cpp itself.
#
# llama.cpp comes from the source distribution of llama-cpp-python 0.3.36 on PyPI (it vendors
# llama.cpp commit 0c1e570); each model is requantized to F32 (our Model dequantizes to f32 by
# default), then llama-perplexity scores the second half of the first N-token window of
# dpkg_triggers.txt. Measured 2026-11-29 (CPU, 2 threads):
#   smollm2   -c 512: 20.1800   -c 2560: 16.3246   (nq-candle: 16.3248)
#   qwen05    -c 512: 19.0610   -c 2560: 13.6272   (nq-candle: 13.6285)
#   gemma270m -c 1024: 14.7180  -c 2560: 17.0467   (nq-candle: 17.0471)
# (native Q4_1 SmolLM2, -c 2560: 16.4128.)
set -euo pipefail
WORK=${WORK:-/tmp/llcpp}
MODELS=${NQ_MODEL_DIR:-$HOME/.cache/nexusquant/models}
TEXT=$(cd "$(dirname "$0")" && pwd)/dpkg_triggers.txt
mkdir -p "$WORK" && cd "$WORK"
pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d .
pip install cmake
tar xzf llama_cpp_python-0.3.36.tar.gz
cd llama_cpp_python-0.3.36/vendor/llama.cpp
cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF
cmake --build build --target llama-perplexity llama-quantize -j2
for m in smollm2/SmolLM2-135M-Instruct.Q4_1.gguf qwen05/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \
         gemma270m/gemma-3-270m-q4_k_m.gguf; do
  n=$(dirname "$m")
  ./build/bin/llama-quantize --allow-requantize "$MODELS/$m" "$WORK/$n-f32.gguf" F32
  for c in 512 1024 2560; do
    echo "$n -c $c: $(./build/bin/llama-perplexity -m "$WORK/$n-f32.gguf" -f "$TEXT" -c $c \
      --chunks 1 -b $c -ub $c -t 2 2>&1 | grep 'Final estimate')"
  done
done
