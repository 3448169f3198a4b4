"""bf16 decode attention by PyTorch scaled_dot_product_attention, the baseline of
nq-cuda's examples/attend_bench.rs (which runs this script as a subprocess, so both come
from the same run on the same GPU).

Usage: python3 sdpa.py 1x8192,8x32768,...   (B x L shapes; 32 query / 8 kv heads, d 128,
one query token, GQA by enable_gqa). Prints a JSON array of records
{"b", "l", "backend" (cudnn | flash), "us"} (or "error" instead of "us") to stdout.

Timing: 3 warm-up calls, then n back-to-back calls (n chosen for ~0.1 s, 5..200) between
two torch.cuda.synchronize(); us = wall time / n, the same rule as the Rust side.
"""
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HQ, HKV, D = 32, 8, 128


def timed(f):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    f()
    torch.cuda.synchronize()
    one = time.perf_counter() - t0
    n = max(5, min(200, int(0.1 / max(one, 1e-6))))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def main():
    shapes = [tuple(int(x) for x in s.split("x")) for s in sys.argv[1].split(",") if s]
    out = []
    for b, l in shapes:
        try:
            q = torch.randn(b, HQ, 1, D, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(b, HKV, l, D, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(b, HKV, l, D, device="cuda", dtype=torch.bfloat16)
        except RuntimeError as e:  # out of memory
            for name in ("cudnn", "flash"):
                out.append({"b": b, "l": l, "backend": name, "error": str(e)[:200]})
            torch.cuda.empty_cache()
            continue
        for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            try:
                with sdpa_kernel([backend]):
                    us = timed(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
                out.append({"b": b, "l": l, "backend": name, "us": us})
            except Exception as e:  # backend unavailable for this shape
                out.append({"b": b, "l": l, "backend": name, "error": str(e)[:200]})
            print(f"sdpa {name} b={b} l={l}: {out[-1].get('us')}", file=sys.stderr)
        del q, k, v
        torch.cuda.empty_cache()
    out.append({"torch": torch.__version__, "device": torch.cuda.get_device_name(0)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
