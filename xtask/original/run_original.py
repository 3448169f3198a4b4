"""Side-by-side run of the Python original (nexusquant-kv) on this project's protocol.

Run by `cargo xtask compare-original` (xtask/src/original.rs), which creates the virtual
environment `target/original-venv` with the pinned versions and calls this script once per
model. It can also be run by hand from that environment:

    target/original-venv/bin/python xtask/original/run_original.py \
        --model smollm2 --gguf ~/.cache/nexusquant/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --corpus nq-candle/tests/data/corpus --samples 1 --out /tmp/smollm2.json

What it mirrors of `nq eval --mode prompt` (nq-candle/src/eval.rs):
- Samples: every GENRE/*.txt of the corpus folder (nq-candle/tests/data/corpus, the texts
  built into `nq`), sorted by genre then name, the first N per genre (`--samples N`).
- Tokens: the document-start token (`<|endoftext|>` where the vocabulary has it, else BOS),
  then the text encoded with the GGUF's own tokenizer (transformers reads it from the GGUF)
  and no special tokens added.
- Model: the same GGUF file, dequantized by transformers to f32 weights; computation in f32.
- Protocol: prefill the first P tokens (default 1664) uncompressed; round the cache to f16
  (the uncompressed reference is an f16 cache, as ours); compress it; score the next C tokens
  (default 512) teacher-forced: the prefill's last logits predict the first, one forward pass
  over the other C-1 continuation tokens the rest (continuation rows stay uncompressed).
  Perplexity change in % of the pooled token NLLs against the uncompressed run of the same
  code, mean KL(uncompressed || compressed) of the next-token distributions, the worst sample.

How the original is applied: its eviction presets (`_EVICT_PRESETS` of
nexusquant.integrations.huggingface, read from the installed package: "high", "balanced",
"max") with the other arguments at the defaults of its `nexusquant_evict` (sliding window 32,
observation window 32, key-key scorer, no protected layers, mask mode), on a
`NexusQuantEvict` compressor whose `compress(past_key_values)` (the class's documented usage)
evicts, quantizes and writes the cache back, and returns the keep mask that is then passed
as the attention mask of the continuation, as its docs ask. `nexusquant_evict` itself
compresses inside the prefill forward pass (each layer's cache write is compressed before
that layer attends), which differs from our protocol (compress after an uncompressed
prefill); its mask-sharing hook applies the same `compress_layer` with the mask of layer 0,
so for a fresh prefix the result is the same as `compress` on the finished cache.

Ratios (fp16 bytes of the full prefix cache = 2 x layers x kv_heads x P x head_dim x 2):
- ratio_claimed: what the original prints, its `_CompressionStats.compression_ratio` fed
  each layer exactly as `nexusquant_evict`'s hook feeds it.
- ratio_paper: its README's accounting, bits per element (key_bits + value_bits) / 2 plus
  one f16 scale per vector, over the kept tokens only.
- ratio_resident: fp16 bytes of the full prefix cache / bytes of the tensors the cache really
  holds after compression (`numel * element_size` of every key and value tensor).

Diagnostics (not in the README table): `--mask-only` adds each preset's keep mask alone (every
layer protected, so nothing is quantized), `--unmasked` each preset with the keep mask left out
of the attention mask (evicted rows stay as zeros and are attended, as when the mask is not
passed on to generate()).

Output: a JSON array of flat records (shared DESIGN.md "Machine-readable results"): one
"original_eval_sample" record per sample and preset, then one "original_eval" record per
preset over all samples (genre "all"). Progress goes to stderr.
"""

import argparse
import json
import math
import os
import sys
import time


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="short model name written into the records")
    p.add_argument("--gguf", required=True, help="path of the GGUF file")
    p.add_argument("--corpus", required=True, help="corpus folder of GENRE/*.txt")
    p.add_argument("--corpus-name", default=None, help="corpus name for the records (default: folder name)")
    p.add_argument("--samples", type=int, default=None, help="samples per genre (default all)")
    p.add_argument("--prefix", type=int, default=1664)
    p.add_argument("--continuation", type=int, default=512)
    p.add_argument("--presets", default="high,balanced,max")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument(
        "--mask-only",
        action="store_true",
        help="also run each preset's keep mask alone (every layer protected: no quantization)",
    )
    p.add_argument(
        "--unmasked",
        action="store_true",
        help="also run each preset without its keep mask in the attention mask (evicted tokens"
        " stay in the cache as zero keys and values, as when the mask is not passed on)",
    )
    p.add_argument(
        "--tokens-from",
        default=None,
        help="check the tokenization against a file of 'GENRE/NAME id,id,...' lines",
    )
    return p.parse_args()


def load_corpus(folder, per_genre):
    samples = []
    for genre in sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))):
        names = sorted(f for f in os.listdir(os.path.join(folder, genre)) if f.endswith(".txt"))
        if per_genre is not None:
            names = names[:per_genre]
        for f in names:
            with open(os.path.join(folder, genre, f), encoding="utf-8") as fh:
                samples.append((genre, f[: -len(".txt")], fh.read()))
    if not samples:
        raise SystemExit(f"error: no GENRE/*.txt files under {folder}")
    return samples


def gguf_pre_tokenizer(path):
    """`tokenizer.ggml.pre` of the GGUF, or None."""
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get("tokenizer.ggml.pre")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def fix_pre_tokenizer(tok, pre):
    """transformers' GGUF converter gives `smollm` GGUFs GPT-2's byte-level pre-tokenizer
    alone; SmolLM2's own tokenizer.json, llama.cpp and nq-candle's tokenizer split digits
    first (runs of whitespace before a digit tokenize differently otherwise)."""
    if pre == "smollm":
        from tokenizers import pre_tokenizers as pt

        tok.backend_tokenizer.pre_tokenizer = pt.Sequence(
            [
                pt.Digits(individual_digits=True),
                pt.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
            ]
        )


def document_start(tok):
    vocab = tok.get_vocab()
    if "<|endoftext|>" in vocab:
        return [vocab["<|endoftext|>"]]
    return [] if tok.bos_token_id is None else [tok.bos_token_id]


def cache_bytes(cache):
    return sum(
        t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)
    )


def build_cache(kv, dtype):
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(kv):
        cache.update(k.to(dtype), v.to(dtype), i)
    return cache


def score(model, torch, cont_ids, last_logits, cache, prefix_mask):
    """Logits of the continuation: `last_logits` predicts the first target, the forward pass
    over `cont_ids` (all but the last target) the rest."""
    mask = torch.cat([prefix_mask, torch.ones(1, cont_ids.shape[1], dtype=prefix_mask.dtype)], 1)
    with torch.no_grad():
        out = model(cont_ids, past_key_values=cache, attention_mask=mask, use_cache=True)
    return torch.cat([last_logits.reshape(1, -1), out.logits[0].float()], 0)


def nll_and_kl(torch, logits, targets, base_logits):
    logp = torch.log_softmax(logits.double(), -1)
    nll = -logp.gather(1, targets.reshape(-1, 1)).squeeze(1)
    kl = None
    if base_logits is not None:
        base = torch.log_softmax(base_logits.double(), -1)
        kl = (base.exp() * (base - logp)).sum(-1)
    return nll.tolist(), None if kl is None else kl.tolist()


def make_compressor(nq_hf, nq_pipeline, model, preset, n_layers, mask_only):
    """A NexusQuantEvict built as `nexusquant_evict(model, quality=preset)` builds it."""
    cfg = nq_hf._detect_model_config(model)
    p = nq_hf._EVICT_PRESETS[preset]
    comp = nq_pipeline.NexusQuantEvict(
        head_dim=cfg["head_dim"],
        bits=p["bits"],
        key_bits=p.get("key_bits"),
        value_bits=p.get("value_bits"),
        eviction_rate=p["eviction_rate"],
        sliding_window=32,
        obs_window=32,
        rope_base=cfg["rope_base"],
        rope_scaling=cfg["rope_scaling"],
        scorer="key-key",
        protected_layers=set(range(n_layers)) if mask_only else None,
        protect_boundary=0,
    )
    comp.set_model_config(model.config)
    return comp


def claimed_ratio(nq_hf, comp, cache, n_layers, skip):
    """`_CompressionStats` fed each layer as nexusquant_evict's hook feeds it."""
    stats = nq_hf._CompressionStats(
        bits=comp.bits, key_bits=comp.key_bits, value_bits=comp.value_bits
    )
    for i, layer in enumerate(cache.layers):
        if i in skip:
            stats.record(layer.keys, layer.values, quantized=False)
        else:
            kl, vl = comp._resolve_layer_levels(i, n_layers)
            stats.record(layer.keys, layer.values, key_bits=math.log2(kl), value_bits=math.log2(vl))
    return stats.compression_ratio


def pooled(results, key):
    return [x for r in results for x in r[key]]


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def main():
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import nexusquant
    from nexusquant import pipeline as nq_pipeline
    from nexusquant.integrations import huggingface as nq_hf
    from importlib.metadata import version

    versions = {
        "nexusquant_kv": version("nexusquant-kv"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gguf": version("gguf"),
    }
    presets = [p for p in args.presets.split(",") if p]
    for p in presets:
        if p not in nq_hf._EVICT_PRESETS:
            raise SystemExit(f"error: the original has no preset {p!r} ({sorted(nq_hf._EVICT_PRESETS)})")
    # (name, the original's preset, keep mask alone, keep mask passed to attention)
    configs = [(p, p, False, True) for p in presets]
    if args.mask_only:
        configs += [(f"{p}-mask-only", p, True, True) for p in presets]
    if args.unmasked:
        configs += [(f"{p}-unmasked", p, False, False) for p in presets]

    started = time.time()
    folder, file = os.path.split(os.path.abspath(args.gguf))
    log(f"[{args.model}] loading {args.gguf} (transformers dequantizes the GGUF to f32)")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    fix_pre_tokenizer(tok, gguf_pre_tokenizer(args.gguf))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    model.eval()
    n_layers = model.config.num_hidden_layers
    expected_tokens = None
    if args.tokens_from:
        with open(args.tokens_from) as fh:
            expected_tokens = dict(
                (line.split(" ")[0], [int(x) for x in line.split(" ")[1].split(",")])
                for line in fh.read().splitlines()
            )

    samples = load_corpus(args.corpus, args.samples)
    P, C = args.prefix, args.continuation
    results = {c[0]: [] for c in configs}
    skipped = []
    for n, (genre, name, text) in enumerate(samples, 1):
        ids = document_start(tok) + tok.encode(text, add_special_tokens=False)
        if expected_tokens is not None:
            want = expected_tokens[f"{genre}/{name}"]
            same = ids == want
            log(f"  tokens of {genre}/{name}: {'identical to' if same else 'DIFFER from'} {args.tokens_from}")
            if not same:
                raise SystemExit(f"error: tokenization of {genre}/{name} differs")
        if len(ids) < P + C:
            log(f"warning: skipping {genre}/{name}: {len(ids)} tokens, the protocol needs {P + C}")
            skipped.append(f"{genre}/{name}")
            continue
        ids_t = torch.tensor([ids[: P + C]])
        targets = ids_t[0, P : P + C]
        cont = ids_t[:, P : P + C - 1]
        t0 = time.time()
        with torch.no_grad():
            out = model(ids_t[:, :P], use_cache=True, logits_to_keep=1)
        last = out.logits[0, -1].float()
        kv16 = [(l.keys.half(), l.values.half()) for l in out.past_key_values.layers]
        del out
        fp16_bytes = sum(k.numel() * 2 + v.numel() * 2 for k, v in kv16)
        ones = torch.ones(1, P)
        base_logits = score(model, torch, cont, last, build_cache(kv16, torch.float32), ones)
        nll_base, _ = nll_and_kl(torch, base_logits, targets, None)
        log(f"[{args.model}] {n}/{len(samples)} {genre}/{name}: prefill and uncompressed run {time.time() - t0:.1f} s")
        for cname, preset, mask_only, use_mask in configs:
            t1 = time.time()
            comp = make_compressor(nq_hf, nq_pipeline, model, preset, n_layers, mask_only)
            cache = build_cache(kv16, torch.float16)
            c0 = time.time()
            cache, keep = comp.compress(cache)
            seconds = time.time() - c0
            resident = cache_bytes(cache)
            skip = set(range(n_layers)) if mask_only else set()
            ratio_claimed = claimed_ratio(nq_hf, comp, cache, n_layers, skip)
            kept = float(keep.sum()) / keep.numel()
            bits = 16.0 if mask_only else (comp.key_bits + comp.value_bits) / 2 + 16.0 / cfg_head_dim(cache)
            ratio_paper = 16.0 / bits / kept
            cache32 = build_cache([(l.keys, l.values) for l in cache.layers], torch.float32)
            logits = score(model, torch, cont, last, cache32, keep.float() if use_mask else ones)
            nll, kl = nll_and_kl(torch, logits, targets, base_logits)
            ppl_base, ppl = math.exp(mean(nll_base)), math.exp(mean(nll))
            results[cname].append(
                {
                    "genre": genre,
                    "sample": name,
                    "preset": cname,
                    "ppl_base": ppl_base,
                    "ppl": ppl,
                    "ppl_delta_pct": 100.0 * (ppl / ppl_base - 1.0),
                    "kld": mean(kl),
                    "ratio_claimed": ratio_claimed,
                    "ratio_paper": ratio_paper,
                    "ratio_resident": fp16_bytes / resident,
                    "kept_fraction": kept,
                    "resident_bytes": resident,
                    "fp16_bytes": fp16_bytes,
                    "seconds": seconds,
                    "nll_base": nll_base,
                    "nll": nll,
                    "kl": kl,
                }
            )
            r = results[cname][-1]
            log(
                f"    {cname}: ppl {r['ppl_delta_pct']:+.2f}%, kl {r['kld']:.3f}, claimed {ratio_claimed:.2f}x,"
                f" paper {ratio_paper:.2f}x, resident {r['ratio_resident']:.2f}x ({time.time() - t1:.1f} s)"
            )

    common = {
        "model": args.model,
        "mode": "prompt",
        "corpus": args.corpus_name or os.path.basename(os.path.normpath(args.corpus)),
        "prefix": P,
        "continuation": C,
        "samples_per_genre": args.samples,
        "samples_skipped": len(skipped),
        "threads": args.threads,
        **{f"version_{k}": v for k, v in versions.items()},
    }
    records = []
    for cname, *_ in configs:
        for r in results[cname]:
            rec = {k: v for k, v in r.items() if k not in ("nll_base", "nll", "kl")}
            records.append({"bench": "original_eval_sample", **common, **rec})
    total = time.time() - started
    for cname, preset, mask_only, use_mask in configs:
        rs = results[cname]
        if not rs:
            continue
        ppl_base = math.exp(mean(pooled(rs, "nll_base")))
        ppl = math.exp(mean(pooled(rs, "nll")))
        avg = lambda k: mean([r[k] for r in rs])
        records.append(
            {
                "bench": "original_eval",
                **common,
                "genre": "all",
                "preset": cname,
                "original_preset": preset,
                "keep_mask_only": mask_only,
                "keep_mask_in_attention": use_mask,
                "samples": len(rs),
                "ppl_base": ppl_base,
                "ppl": ppl,
                "ppl_delta_pct": 100.0 * (ppl / ppl_base - 1.0),
                "ppl_delta_pct_worst": max(r["ppl_delta_pct"] for r in rs),
                "kld": mean(pooled(rs, "kl")),
                "ratio_claimed": avg("ratio_claimed"),
                "ratio_paper": avg("ratio_paper"),
                "ratio_resident": avg("ratio_resident"),
                "kept_fraction": avg("kept_fraction"),
                "seconds": avg("seconds"),
                "seconds_total": total,
            }
        )
    with open(args.out, "w") as fh:
        json.dump(records, fh, indent=2)
        fh.write("\n")
    log(f"[{args.model}] wrote {len(records)} records to {args.out} in {total:.0f} s")


def cfg_head_dim(cache):
    return cache.layers[0].keys.shape[-1]


if __name__ == "__main__":
    main()
