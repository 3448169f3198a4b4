#!/usr/bin/env bash
# Registers, spills and the instruction mix of attend_split's main loop (one 16-token tile of
# one warp), compiled offline for sm_90 with nvcc 13.0, as NVRTC compiles kernels/attend.cu at
# run time. No GPU needed. From the repository root:
#   bash nq-cuda/bench/sass.sh [D KB VB ROWS8 MINB]     (default: 128 4 2 1 1)
# (SRC=FILE: another version of the kernel, e.g. from git show REV:nq-cuda/kernels/attend.cu)
# Needs nvcc (cargo xtask build-cuda installs it into target/cuda13) and cuobjdump + nvdisasm
# (installed here into target/cuobjdump from the package registry on first use).
set -euo pipefail
d=${1:-128} kb=${2:-4} vb=${3:-2} rows8=${4:-1} minb=${5:-1}
root=$(pwd)
nvcc_dir=$root/target/cuda13/nvidia/cu13/bin
tools=$root/target/cuobjdump/nvidia/cu13/bin
[ -x "$nvcc_dir/nvcc" ] || { echo "no nvcc in $nvcc_dir: run cargo xtask build-cuda first" >&2; exit 1; }
if [ ! -x "$tools/nvdisasm" ] || [ ! -x "$tools/cuobjdump" ]; then
  python3 -m pip install --quiet --no-deps --target "$root/target/cuobjdump" \
    nvidia-cuda-cuobjdump==13.2.51 nvidia-cuda-nvdisasm==13.2.51
fi
export PATH=$nvcc_dir:$tools:$PATH
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The byte tables the host defines (E8_BYTES / RW_BYTES in src/attend.rs).
printf '#define NQ_D %s\n#define NQ_KB %s\n#define NQ_VB %s\n#define NQ_ROWS8 %s\n#define NQ_MINB %s\n#define NQ_PREFETCH 1\n#define E8_LO 0x00413E38u\n#define E8_HI 0x00C1BEB8u\n#define RW_LO 0x3C383400u\n#define RW_HI 0xBCB8B400u\n' \
  "$d" "$kb" "$vb" "$rows8" "$minb" > "$work/a.cu"
cat "${SRC:-nq-cuda/kernels/attend.cu}" >> "$work/a.cu"
nvcc -cubin -arch=sm_90 -std=c++17 --resource-usage -o "$work/a.cubin" "$work/a.cu" 2>&1 \
  | grep -A3 "entry function 'attend_split'" | grep -oE "Used [0-9]+ registers|[0-9]+ bytes spill stores" || true
cuobjdump -sass -fun attend_split "$work/a.cubin" > "$work/a.sass"
python3 - "$work/a.sass" <<'PY'
import re, sys
from collections import Counter
ins = []
for l in open(sys.argv[1]):
    m = re.match(r'\s+/\*([0-9a-f]+)\*/\s+(.*?);', l)
    if m:
        ins.append((int(m.group(1), 16), m.group(2).strip()))
hmma = [i for i, (_, t) in enumerate(ins) if 'HMMA' in t]
first = ins[hmma[0]][0]
# The loop: the backward branch after the last HMMA whose target precedes the first HMMA.
for i in range(hmma[-1], len(ins)):
    m = re.search(r'BRA (0x[0-9a-f]+)', ins[i][1])
    if m and int(m.group(1), 16) <= first:
        top, end = int(m.group(1), 16), ins[i][0]
        break
body = [t for a, t in ins if top <= a <= end]
ops = Counter(re.sub(r'^@!?U?P\w+\s+', '', t).split()[0].split('.')[0] for t in body)
print(f"main loop: {len(body)} instructions per 16-token tile per warp, {ops['HMMA']} HMMA")
print(' '.join(f'{k} {v}' for k, v in ops.most_common(16)))
PY
