//! Tokenizers rebuilt from GGUF metadata (`tokenizer.ggml.*`), matching llama.cpp's ids.
//!
//! - `tokenizer.ggml.model = gpt2` (SmolLM2, Qwen2): a byte-level BPE built with the
//!   `tokenizers` crate from `tokens` + `merges`. The pre-tokenizer follows
//!   `tokenizer.ggml.pre`: `smollm` splits digits individually then applies GPT-2's byte-level
//!   regex; `qwen2` and `llama-bpe` use their own split regexes; `gpt2`/`default` use GPT-2's.
//!   Control tokens (type 3) are registered as special tokens, user-defined ones (type 4) as
//!   added tokens.
//! - `tokenizer.ggml.model = llama` (Gemma): SentencePiece-style BPE by token score with byte
//!   fallback, implemented here as llama.cpp does it (`llm_tokenizer_spm`), after splitting
//!   out user-defined and control tokens longest first.

use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::model::GgufFile;
use crate::model::gguf::Meta;
use crate::{Error, Result};

/// Qwen2's pre-tokenizer regex (`tokenizer.ggml.pre = qwen2`).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama-3's pre-tokenizer regex (`tokenizer.ggml.pre = llama-bpe`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (`tokenizer.ggml.token_type`).
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_BYTE: i64 = 6;

/// A tokenizer built from the metadata of a GGUF file.
///
/// # Examples
/// ```no_run
/// let tok = nq_candle::GgufTokenizer::from_gguf(&nq_candle::model_path("smollm2")?)?;
/// let ids = tok.encode("Hello world")?;
/// assert_eq!(tok.decode(&ids)?, "Hello world");
/// # Ok::<(), nq_candle::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct GgufTokenizer {
    inner: Inner,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    vocab_size: usize,
    chat_template: Option<String>,
}

#[derive(Debug, Clone)]
enum Inner {
    Bpe(Box<Tokenizer>),
    Spm(Box<Spm>),
}

/// The system message a ChatML template writes when the conversation has none: the first
/// `<|im_start|>system` turn whose content is a literal (no template code in it). The template
/// writes the newline either as a real newline or as the escape `\n`.
fn chatml_default_system(template: &str) -> Option<String> {
    const OPEN: &str = "<|im_start|>system";
    let mut rest = template;
    while let Some(at) = rest.find(OPEN) {
        rest = &rest[at + OPEN.len()..];
        let body = rest.strip_prefix("\\n").or_else(|| rest.strip_prefix('\n'));
        let Some(body) = body else { continue };
        let Some(end) = body.find("<|im_end|>") else { continue };
        let content = &body[..end];
        if !content.is_empty() && !content.contains(['\'', '"', '{', '}', '<', '+']) {
            return Some(content.to_owned());
        }
    }
    None
}

fn tok_err(op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer { op, reason: e.to_string() }
}

impl GgufTokenizer {
    /// Opens a GGUF file and builds its tokenizer.
    ///
    /// # Errors
    /// As [`GgufFile::open`] and [`GgufTokenizer::from_gguf_file`].
    pub fn from_gguf(path: &Path) -> Result<Self> {
        Self::from_gguf_file(&GgufFile::open(path)?)
    }

    /// Builds the tokenizer from an open file's metadata.
    ///
    /// # Errors
    /// [`Error::Metadata`] for missing or ill-typed `tokenizer.ggml.*` keys;
    /// [`Error::Tokenizer`] for an unknown model or pre-tokenizer or a failed build.
    pub fn from_gguf_file(file: &GgufFile) -> Result<Self> {
        const OP: &str = "GgufTokenizer::from_gguf";
        let meta = Meta { md: &file.content().metadata, op: OP };
        let tokens = meta.string_array("tokenizer.ggml.tokens")?;
        let types: Vec<i64> = match meta.array("tokenizer.ggml.token_type") {
            Ok(a) => a.iter().map(value_as_i64).collect(),
            Err(_) => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(Error::Metadata {
                op: OP,
                key: "tokenizer.ggml.token_type".into(),
                reason: format!("{} types for {} tokens", types.len(), tokens.len()),
            });
        }
        let model = meta.str("tokenizer.ggml.model")?;
        let inner = match model {
            "gpt2" => {
                let merges = meta.string_array("tokenizer.ggml.merges")?;
                let pre = meta.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
                Inner::Bpe(Box::new(build_bpe(&tokens, &types, &merges, pre)?))
            }
            "llama" => {
                let scores: Vec<f32> = meta
                    .array("tokenizer.ggml.scores")?
                    .iter()
                    .map(|v| v.to_f32().unwrap_or(0.0))
                    .collect();
                let add_space_prefix =
                    meta.opt_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
                Inner::Spm(Box::new(Spm::new(&tokens, &types, &scores, add_space_prefix)?))
            }
            other => {
                return Err(tok_err(
                    OP,
                    format!("tokenizer.ggml.model `{other}` is not supported (gpt2, llama)"),
                ));
            }
        };
        Ok(Self {
            inner,
            bos: meta.opt_u32("tokenizer.ggml.bos_token_id")?,
            eos: meta.opt_u32("tokenizer.ggml.eos_token_id")?,
            add_bos: meta.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
            vocab_size: tokens.len(),
            chat_template: meta.opt_str("tokenizer.chat_template")?.map(str::to_owned),
        })
    }

    /// The model's chat template (`tokenizer.chat_template`, Jinja source), if it has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The text that asks `question` as one user turn and opens the assistant's turn, in the
    /// format of the model's chat template, with the template's default system message;
    /// `None` for a model without a template (a base model: prompt it with plain text).
    ///
    /// The template is not executed (that needs a Jinja engine): its format is recognized by
    /// its markers, ChatML (`<|im_start|>`, SmolLM2 and Qwen2.5) or Gemma's turns
    /// (`<start_of_turn>`), and the default system message is the one the template writes
    /// when the conversation has none.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] for a template of another format.
    pub fn chat_prompt(&self, question: &str) -> Result<Option<String>> {
        let Some(t) = &self.chat_template else { return Ok(None) };
        if t.contains("<|im_start|>") {
            let system = chatml_default_system(t)
                .map(|s| format!("<|im_start|>system\n{s}<|im_end|>\n"))
                .unwrap_or_default();
            return Ok(Some(format!(
                "{system}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
            )));
        }
        if t.contains("<start_of_turn>") {
            return Ok(Some(format!(
                "<start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n"
            )));
        }
        Err(tok_err(
            "GgufTokenizer::chat_prompt",
            "the chat template is neither ChatML (<|im_start|>) nor Gemma's (<start_of_turn>)",
        ))
    }

    /// Token ids of `text`, with no BOS/EOS added. Special-token text in the input (for
    /// example `<|endoftext|>`) maps to its id.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when the underlying tokenizer fails.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.inner {
            Inner::Bpe(t) => Ok(t
                .encode_fast(text, false)
                .map_err(|e| tok_err("GgufTokenizer::encode", e))?
                .get_ids()
                .to_vec()),
            Inner::Spm(s) => Ok(s.encode(text)),
        }
    }

    /// Like [`encode`](GgufTokenizer::encode), preceded by BOS when the file's
    /// `tokenizer.ggml.add_bos_token` is true (what llama.cpp does for a document).
    ///
    /// # Errors
    /// As [`encode`](GgufTokenizer::encode).
    pub fn encode_document(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// The text of `ids` (special tokens are kept as their text).
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`] for an id outside the vocabulary; [`Error::Tokenizer`] when
    /// the underlying tokenizer fails.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.vocab_size) {
            return Err(Error::TokenOutOfRange {
                op: "GgufTokenizer::decode",
                token: bad,
                vocab: self.vocab_size,
            });
        }
        match &self.inner {
            Inner::Bpe(t) => t.decode(ids, false).map_err(|e| tok_err("GgufTokenizer::decode", e)),
            Inner::Spm(s) => Ok(s.decode(ids)),
        }
    }

    /// BOS id (`tokenizer.ggml.bos_token_id`).
    #[must_use]
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// EOS id (`tokenizer.ggml.eos_token_id`).
    #[must_use]
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the model expects BOS before a document (`tokenizer.ggml.add_bos_token`).
    #[must_use]
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Number of tokens in the vocabulary.
    #[must_use]
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The id of a token's exact text, if it is in the vocabulary.
    #[must_use]
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Inner::Bpe(t) => t.token_to_id(token),
            Inner::Spm(s) => s.lookup.get(token).copied(),
        }
    }

    /// An incremental decoder for generation: feed ids one at a time, get text as soon as it
    /// forms complete UTF-8.
    #[must_use]
    pub fn stream(&self) -> TokenStream<'_> {
        TokenStream { tok: self, ids: Vec::new(), prefix: 0, read: 0 }
    }
}

/// Incremental decoding (see [`GgufTokenizer::stream`]): decodes a short window of recent ids
/// and emits only the new suffix, holding back text that ends in an incomplete character.
///
/// # Examples
/// ```no_run
/// let tok = nq_candle::GgufTokenizer::from_gguf(&nq_candle::model_path("smollm2")?)?;
/// let mut s = tok.stream();
/// let mut out = String::new();
/// for id in tok.encode("naïve café")? {
///     out.push_str(&s.push(id)?.unwrap_or_default());
/// }
/// assert_eq!(out, "naïve café");
/// # Ok::<(), nq_candle::Error>(())
/// ```
#[derive(Debug)]
pub struct TokenStream<'a> {
    tok: &'a GgufTokenizer,
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl TokenStream<'_> {
    /// Adds one id; returns the newly completed text, if any.
    ///
    /// # Errors
    /// As [`GgufTokenizer::decode`].
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = self.tok.decode(&self.ids[self.prefix..self.read])?;
        let after = self.tok.decode(&self.ids[self.prefix..])?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            let new = after.get(before.len()..).map(str::to_string).unwrap_or_default();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(Some(new))
        } else {
            Ok(None)
        }
    }

    /// All ids pushed so far.
    #[must_use]
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

fn value_as_i64(v: &candle_core::quantized::gguf_file::Value) -> i64 {
    v.to_i32()
        .map(i64::from)
        .or_else(|_| v.to_u32().map(i64::from))
        .or_else(|_| v.to_i64())
        .unwrap_or(1)
}

fn build_bpe(tokens: &[&str], types: &[i64], merges: &[&str], pre: &str) -> Result<Tokenizer> {
    const OP: &str = "GgufTokenizer::from_gguf";
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| tok_err(OP, format!("merge `{m}` has no space")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| tok_err(OP, e))?;
    let byte_level = |use_regex: bool, trim: bool| -> PreTokenizerWrapper {
        ByteLevel::new(false, trim, use_regex).into()
    };
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        let pattern = SplitPattern::Regex(re.to_string());
        Ok(Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| tok_err(OP, e))?
            .into())
    };
    let pre_tok: Vec<PreTokenizerWrapper> = match pre {
        "smollm" => vec![Digits::new(true).into(), byte_level(true, true)],
        "qwen2" => vec![split(QWEN2_REGEX)?, byte_level(false, false)],
        "llama-bpe" | "llama3" => vec![split(LLAMA3_REGEX)?, byte_level(false, false)],
        "gpt2" | "default" => vec![byte_level(true, true)],
        other => {
            return Err(tok_err(
                OP,
                format!(
                    "tokenizer.ggml.pre `{other}` is not supported (smollm, qwen2, llama-bpe, gpt2, default)"
                ),
            ));
        }
    };
    let mut tk = Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(Sequence::new(pre_tok)));
    tk.with_decoder(Some(ByteLevelDecoder::default()));
    let added = |ty: i64, special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(types)
            .filter(|&(_, &t)| t == ty)
            .map(|(s, _)| AddedToken::from(s.to_string(), special))
            .collect()
    };
    tk.add_special_tokens(added(TYPE_CONTROL, true)).map_err(|e| tok_err(OP, e))?;
    tk.add_tokens(added(TYPE_USER_DEFINED, false)).map_err(|e| tok_err(OP, e))?;
    Ok(tk)
}

/// SentencePiece-style BPE over token scores, as llama.cpp's `llm_tokenizer_spm`.
#[derive(Debug, Clone)]
struct Spm {
    pieces: Vec<String>,
    types: Vec<i64>,
    scores: Vec<f32>,
    lookup: HashMap<String, u32>,
    byte_ids: [Option<u32>; 256],
    /// Control and user-defined tokens, longest text first.
    specials: Vec<u32>,
    add_space_prefix: bool,
}

/// A candidate merge of two adjacent symbols.
#[derive(Debug, PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// Max-heap order: highest score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    fn new(tokens: &[&str], types: &[i64], scores: &[f32], add_space_prefix: bool) -> Result<Self> {
        if scores.len() != tokens.len() {
            return Err(Error::Metadata {
                op: "GgufTokenizer::from_gguf",
                key: "tokenizer.ggml.scores".into(),
                reason: format!("{} scores for {} tokens", scores.len(), tokens.len()),
            });
        }
        let mut lookup = HashMap::with_capacity(tokens.len());
        let mut byte_ids = [None; 256];
        for (i, (t, &ty)) in tokens.iter().zip(types).enumerate() {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            lookup.entry((*t).to_string()).or_insert(id);
            if ty == TYPE_BYTE
                && let Some(b) = parse_byte_token(t)
            {
                byte_ids[usize::from(b)] = Some(id);
            }
        }
        let mut specials: Vec<u32> = (0..tokens.len())
            .filter(|&i| {
                matches!(types[i], TYPE_CONTROL | TYPE_USER_DEFINED) && !tokens[i].is_empty()
            })
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
        Ok(Self {
            pieces: tokens.iter().map(|s| (*s).to_string()).collect(),
            types: types.to_vec(),
            scores: scores.to_vec(),
            lookup,
            byte_ids,
            specials,
            add_space_prefix,
        })
    }

    fn encode(&self, text: &str) -> Vec<u32> {
        // Split out special tokens, longest first (llama.cpp `tokenizer_st_partition`).
        enum Frag<'a> {
            Text(&'a str),
            Token(u32),
        }
        let mut frags = vec![Frag::Text(text)];
        for &id in &self.specials {
            let piece = self.pieces[id as usize].as_str();
            if !frags.iter().any(|f| matches!(f, Frag::Text(s) if s.contains(piece))) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                match f {
                    Frag::Text(s) if s.contains(piece) => {
                        let mut rest = s;
                        while let Some(at) = rest.find(piece) {
                            if at > 0 {
                                next.push(Frag::Text(&rest[..at]));
                            }
                            next.push(Frag::Token(id));
                            rest = &rest[at + piece.len()..];
                        }
                        if !rest.is_empty() {
                            next.push(Frag::Text(rest));
                        }
                    }
                    other => next.push(other),
                }
            }
            frags = next;
        }
        let mut out = Vec::new();
        let mut prev_special = true;
        for f in frags {
            match f {
                Frag::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Frag::Text(s) => {
                    let mut t = String::with_capacity(s.len() + 3);
                    if self.add_space_prefix && prev_special {
                        t.push(' ');
                    }
                    t.push_str(s);
                    let t = t.replace(' ', "\u{2581}");
                    self.encode_piece(&t, &mut out);
                    prev_special = false;
                }
            }
        }
        out
    }

    /// llama.cpp `llm_tokenizer_spm_session::tokenize` on one escaped fragment.
    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .map(|(start, c)| Symbol { start, len: c.len_utf8(), prev: None, next: None })
            .collect();
        let n = symbols.len();
        for (i, s) in symbols.iter_mut().enumerate() {
            s.prev = i.checked_sub(1);
            s.next = (i + 1 < n).then_some(i + 1);
        }
        let mut heap = BinaryHeap::new();
        let try_add = |left: Option<usize>,
                       right: Option<usize>,
                       symbols: &[Symbol],
                       heap: &mut BinaryHeap<Bigram>| {
            let (Some(l), Some(r)) = (left, right) else {
                return;
            };
            let s = &text[symbols[l].start..symbols[r].start + symbols[r].len];
            if let Some(&id) = self.lookup.get(s) {
                heap.push(Bigram {
                    score: self.scores[id as usize],
                    left: l,
                    right: r,
                    size: s.len(),
                });
            }
        };
        for i in 1..n {
            try_add(Some(i - 1), Some(i), &symbols, &mut heap);
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (b.left, b.right);
            if symbols[l].len == 0
                || symbols[r].len == 0
                || symbols[l].len + symbols[r].len != b.size
            {
                continue;
            }
            symbols[l].len += symbols[r].len;
            symbols[r].len = 0;
            symbols[l].next = symbols[r].next;
            if let Some(nx) = symbols[r].next {
                symbols[nx].prev = Some(l);
            }
            try_add(symbols[l].prev, Some(l), &symbols, &mut heap);
            try_add(Some(l), symbols[l].next, &symbols, &mut heap);
        }
        // Every merged symbol is a vocabulary token (merges are only proposed for pieces in the
        // vocabulary), so llama.cpp's `resegment` reduces to: the token if known, else bytes.
        let mut i = (n > 0).then_some(0);
        while let Some(k) = i {
            let s = symbols[k];
            let piece = &text[s.start..s.start + s.len];
            match self.lookup.get(piece) {
                Some(&id) => out.push(id),
                None => out.extend(piece.bytes().filter_map(|b| self.byte_ids[usize::from(b)])),
            }
            i = s.next;
        }
    }

    fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let i = id as usize;
            if self.types[i] == TYPE_BYTE
                && let Some(b) = parse_byte_token(&self.pieces[i])
            {
                bytes.push(b);
                continue;
            }
            bytes.extend_from_slice(self.pieces[i].replace('\u{2581}', " ").as_bytes());
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// `<0xAB>` -> 0xAB.
fn parse_byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}
