#!/usr/bin/env python3
"""Reference token ids for nq-candle's GgufTokenizer tests.

Builds each model's tokenizer in Python from the GGUF metadata alone (`pip install gguf
tokenizers sentencepiece`) and writes tokens_<model>.json: a list of {"source", "text", "ids"}.

- smollm2 (pre = smollm) and qwen05 (pre = qwen2): byte-level BPE with the HF `tokenizers`
  Python package, following shared/models.md's recipe (the recipe that matched llama.cpp).
- gemma270m (model = llama, SentencePiece BPE by score): Google's `sentencepiece` library on a
  ModelProto rebuilt from the GGUF pieces, scores and types (an implementation independent of
  ours, which follows llama.cpp's algorithm).

Texts: the first ~1,500 characters (cut at a paragraph end) of three corpus files, one per
genre, plus short edge cases. The texts are stored in the JSON, so the tests do not need the
corpus. Run from anywhere:

    python3 nq-candle/tests/data/make_token_fixtures.py [--corpus DIR] [--models DIR]
"""
import argparse
import json
import os
from pathlib import Path

from gguf import GGUFReader

HERE = Path(__file__).resolve().parent
MODELS = {
    "smollm2": "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen05": "qwen05/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "gemma270m": "gemma270m/gemma-3-270m-q4_k_m.gguf",
}
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CORPUS_FILES = ["academic/sandwich_jss.txt", "technical/py_regex_howto.txt",
                "creative/austen_pride_and_prejudice.txt"]
EDGE_CASES = [
    "Numbers: 12345, 3.14159, 2024-11-29 and 1e-5.",
    "  leading spaces,   runs of   spaces,\ttabs\t\tand\n\n\nnewlines  \n",
    "naïve café — “quotes” ‘single’ … Ünïcödé 日本語のテキスト 🙂👍🏽",
    "def f(x):\n    return x**2  # comment\n\nprint(f(3))\n",
    "<|endoftext|>special tokens<|im_start|>user\nhi<|im_end|>",
    "I'm sure it's fine; they'll've DONE IT'S",
]


def field(r, key):
    f = r.fields.get(key)
    return None if f is None else f.contents()


def bpe_tokenizer(r):
    from tokenizers import Tokenizer, AddedToken, Regex, decoders, models, pre_tokenizers
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(r, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    pre = field(r, "tokenizer.ggml.pre")
    if pre == "smollm":
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    elif pre == "qwen2":
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    else:
        raise SystemExit(f"pre {pre} not handled")
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, special=True) for t, ty in zip(tokens, types) if ty == 3])
    tk.add_tokens([AddedToken(t, special=False) for t, ty in zip(tokens, types) if ty == 4])
    return lambda text: tk.encode(text, add_special_tokens=False).ids


def spm_tokenizer(r):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    scores = field(r, "tokenizer.ggml.scores")
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.vocab_size = len(tokens)
    m.trainer_spec.unk_id = field(r, "tokenizer.ggml.unknown_token_id")
    m.trainer_spec.bos_id = field(r, "tokenizer.ggml.bos_token_id")
    m.trainer_spec.eos_id = field(r, "tokenizer.ggml.eos_token_id")
    m.trainer_spec.pad_id = field(r, "tokenizer.ggml.padding_token_id")
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = bool(field(r, "tokenizer.ggml.add_space_prefix"))
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    kind = {1: pb.ModelProto.SentencePiece.NORMAL, 2: pb.ModelProto.SentencePiece.UNKNOWN,
            3: pb.ModelProto.SentencePiece.CONTROL, 4: pb.ModelProto.SentencePiece.USER_DEFINED,
            5: pb.ModelProto.SentencePiece.UNUSED, 6: pb.ModelProto.SentencePiece.BYTE}
    for t, s, ty in zip(tokens, scores, types):
        p = m.pieces.add()
        p.piece, p.score, p.type = t, s, kind[ty]
    sp = spm.SentencePieceProcessor(model_proto=m.SerializeToString())
    # Control and user-defined tokens (Gemma-3 has literal whitespace runs such as "  " and
    # HTML tags among them) are matched in the raw text before whitespace escaping, longest
    # first, by llama.cpp (tokenizer_st_partition) and by HF (added tokens); sentencepiece
    # would only see them after escaping. Split them out first, then encode the rest.
    controls = sorted((t for t, ty in zip(tokens, types) if ty in (3, 4) and t), key=len, reverse=True)
    ids_of = {t: i for i, t in reversed(list(enumerate(tokens)))}

    def encode(text):
        frags = [text]
        for c in controls:
            nxt = []
            for f in frags:
                if isinstance(f, str) and c in f:
                    parts = f.split(c)
                    for k, part in enumerate(parts):
                        if k:
                            nxt.append(ids_of[c])
                        if part:
                            nxt.append(part)
                else:
                    nxt.append(f)
            frags = nxt
        out = []
        for f in frags:
            out.extend([f] if isinstance(f, int) else sp.encode(f))
        return out
    return encode


def first_paragraphs(text, limit=1500):
    cut = text.rfind("\n\n", 0, limit)
    return text[: cut if cut > 0 else limit]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(HERE.parents[2].parent / "shared" / "corpus"))
    default_models = os.environ.get("NQ_MODEL_DIR") or str(Path.home() / ".cache/nexusquant/models")
    ap.add_argument("--models", default=default_models)
    args = ap.parse_args()
    texts = [(f, first_paragraphs((Path(args.corpus) / f).read_text())) for f in CORPUS_FILES]
    texts += [("edge", t) for t in EDGE_CASES]
    for name, rel in MODELS.items():
        path = Path(args.models) / rel
        if not path.exists():
            print(f"skip {name}: {path} absent")
            continue
        r = GGUFReader(str(path))
        model = field(r, "tokenizer.ggml.model")
        enc = bpe_tokenizer(r) if model == "gpt2" else spm_tokenizer(r)
        out = [{"source": src, "text": t, "ids": enc(t)} for src, t in texts]
        dst = HERE / f"tokens_{name}.json"
        dst.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
        print(f"{dst.name}: {sum(len(o['ids']) for o in out)} ids over {len(out)} texts")


if __name__ == "__main__":
    main()
