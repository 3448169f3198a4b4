#!/usr/bin/env python3
"""Token counts of every corpus sample (and dpkg_triggers.txt) by llama.cpp's own tokenizer.

Writes corpus_token_counts.json: {model: {relative file: count}} from `llama-tokenize --ids
--no-bos --no-escape` (llama.cpp commit 0c1e570, built as in llama_cpp_perplexity.sh). The
test checks GgufTokenizer's counts equal these exactly (the ids themselves were compared too
when this was made: all 13 files x 3 models, ~153K tokens, identical).

    python3 make_corpus_token_counts.py --llama-tokenize PATH [--corpus DIR] [--models DIR]
"""
import argparse
import ast
import json
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {
    "smollm2": "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen05": "qwen05/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "gemma270m": "gemma270m/gemma-3-270m-q4_k_m.gguf",
}

ap = argparse.ArgumentParser()
ap.add_argument("--llama-tokenize", required=True)
ap.add_argument("--corpus", default=str(HERE.parents[2].parent / "shared" / "corpus"))
ap.add_argument("--models", default=os.environ.get("NQ_MODEL_DIR") or str(Path.home() / ".cache/nexusquant/models"))
args = ap.parse_args()
corpus = Path(args.corpus)
files = {str(p.relative_to(corpus)): p for p in sorted(corpus.glob("*/*.txt"))}
files["dpkg_triggers.txt"] = HERE / "dpkg_triggers.txt"
out = {}
for name, rel in MODELS.items():
    out[name] = {}
    for key, path in files.items():
        res = subprocess.run([args.llama_tokenize, "-m", str(Path(args.models) / rel), "-f", str(path),
                              "--ids", "--no-bos", "--no-escape", "--log-disable"],
                             capture_output=True, text=True, check=True)
        out[name][key] = len(ast.literal_eval(res.stdout.strip().splitlines()[-1]))
(HERE / "corpus_token_counts.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
print(json.dumps(out, indent=1))
