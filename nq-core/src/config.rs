//! Presets and the fully explicit compression configuration.

use crate::error::{Error, Result};

/// How one of K or V is stored once a token leaves the f16 windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Half precision, uncompressed (16 bits per value). For ablations.
    F16,
    /// Fixed-rate E8 code at 2, 3 or 4 bits per value (+ one f16 scale per vector).
    E8 {
        /// Index bits per value: 2, 3 or 4.
        bits: u8,
    },
}

impl Storage {
    /// Bits per value of the payload, scale excluded.
    pub fn bits(self) -> u8 {
        match self {
            Storage::F16 => 16,
            Storage::E8 { bits } => bits,
        }
    }
}

/// The importance scorer used to choose which tokens to evict.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScorerKind {
    /// Observed attention of the last `window` prompt queries (SnapKV-style, causal, pooled as
    /// [`EvictConfig::pool`] and [`EvictConfig::pool_kernel`] say): the raw attention mass, so
    /// a pooled split can see how much of it a head spends on evictable tokens.
    Observed,
    /// Expected attention of future queries (kvpress), from the observation window's statistics.
    Expected,
    /// A mix of both: `mix * observed + (1 - mix) * expected`, each normalised per head.
    Mixed {
        /// Weight of the observed-attention score, in `[0, 1]`.
        mix: f32,
    },
    /// Key-key similarity, the Python original's scorer (for comparison only).
    KeyKey,
    /// Key norm (low norm = important), a cheap baseline.
    KeyNorm,
}

/// How the eviction budget is spread over heads: nq-evict's [`Split`](nq_evict::Split), the
/// one definition (`PerHead`, `PerLayer`, `Global`). With `Global`, all heads of all layers
/// share one budget at the first compression (after prefill); later blocks are shared per
/// layer.
pub use nq_evict::Split as BudgetSplit;

/// How the observed-attention scores are pooled along the token axis: nq-evict's
/// [`Pool`](nq_evict::Pool), the one definition (`Avg`, SnapKV as kvpress writes it, and `Max`,
/// SnapKV's own `max_pool1d`).
pub use nq_evict::Pool as PoolKind;

/// Which tokens are kept, and how they are scored.
///
/// # Examples
/// SnapKV's own pooling, a maximum over 7 tokens, on the `max` preset (which averages over 5;
/// `high` and `balanced` take the maximum over 15; nq-candle's README compares them):
/// ```
/// use nq_core::{CompressionConfig, PoolKind, Preset};
/// let mut cfg = Preset::Max.config();
/// assert_eq!((cfg.evict.pool, cfg.evict.pool_kernel), (PoolKind::Avg, 5));
/// (cfg.evict.pool, cfg.evict.pool_kernel) = (PoolKind::Max, 7);
/// cfg.validate()?;
/// assert_eq!(CompressionConfig::from_bytes(&cfg.to_bytes())?, cfg);
/// cfg.evict.pool_kernel = 6; // no centred window
/// assert!(cfg.validate().is_err());
/// # Ok::<(), nq_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvictConfig {
    /// Fraction of tokens kept, in `(0, 1]`; `1.0` disables eviction.
    pub keep: f32,
    /// First tokens always kept in f16 (attention sinks).
    pub sinks: usize,
    /// Last tokens always kept in f16 (the recent window).
    pub recent: usize,
    /// Number of last prompt queries kept to score tokens with.
    pub window: usize,
    /// The scorer.
    pub scorer: ScorerKind,
    /// How the budget is spread over heads.
    pub split: BudgetSplit,
    /// Weight each token's score by the norm of its value (kvpress `use_vnorm`): a token with
    /// a small value changes the attention output little when evicted.
    pub value_norm: bool,
    /// Fraction kept of each decode-time block, in `(0, 1]`; `None`: `keep`. Evicting recent
    /// tokens hurts the tokens generated next more than evicting the prompt does (the
    /// decode-mode evaluation), so generation may keep more of its own tokens. Every preset
    /// keeps them all (`Some(1.0)`, quantized): over the 12 samples of both dev models that
    /// halved the decode-mode perplexity change of every preset (the repository README,
    /// "Quality and compression"); the price is that a long generation's own tokens are compressed by
    /// quantization alone, so the ratio of the whole cache falls towards that of its bits as
    /// generation goes on.
    pub decode_keep: Option<f32>,
    /// Pooling of the observed-attention scores (the `Observed` scorer and the observed half
    /// of `Mixed`): each token's score becomes the mean (`Avg`) or maximum (`Max`) of the
    /// scores of the `pool_kernel` tokens centred on it, so the neighbours of a token the
    /// window attends to are kept with it. Default `Max`, the value of `high` and
    /// `balanced`; `max` takes `Avg`.
    pub pool: PoolKind,
    /// Width of the pooling window in tokens: odd, `1` = no pooling; default 15 (`high` and
    /// `balanced`; `max` averages over 5). With `Max`, a token within `pool_kernel / 2` of an
    /// attended token scores as high as that token, so the kernel is the width of the spans
    /// kept whole.
    pub pool_kernel: usize,
}

/// A complete, explicit compression configuration. Presets are values of this type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompressionConfig {
    /// Eviction.
    pub evict: EvictConfig,
    /// How keys are stored.
    pub keys: Storage,
    /// How values are stored.
    pub values: Storage,
    /// Remove RoPE from keys before quantizing (re-applied per key at attention time).
    pub remove_rope: bool,
    /// Subtract each head's mean key and value before quantizing (added back exactly at
    /// attention time), so the codes spend their range on what differs between tokens.
    pub center: bool,
    /// Candidates of the per-vector scale search (1 = RMS rule only).
    pub scale_candidates: u8,
    /// Balance keys against queries channel by channel before quantizing (SmoothQuant-style,
    /// exact in `q . k`): keys are multiplied by `s_c = sqrt(rms(q_c) / rms(k_c))` (geometric
    /// mean 1, from the observation window and the first compressed keys) and queries divided
    /// by it, so quantization error lands less on the channels queries weigh most. Without it
    /// a few Qwen2.5-Coder-0.5B samples blew up (+76% and +96% perplexity where +4% and +5%
    /// with it).
    pub smooth_keys: bool,
    /// Tokens compressed at a time once they leave the recent window during decoding: 16 in
    /// every preset (64 before). Tokens waiting for a full block stay f16, so a smaller block
    /// holds fewer of them; the quality is the same (a generation step appends one token, and
    /// the evaluation's 16-token chunks quantize the same rows at the same step with blocks of
    /// 8 or 16).
    pub block: usize,
    /// Seed of the randomized Hadamard sign vectors (one derived seed per layer, K and V).
    pub seed: u64,
}

/// The named presets. Values are tuned by measurement (`cargo xtask bench quality`). Each
/// evicts only from the prompt: tokens generated later are compressed in blocks of 16 and all
/// kept ([`EvictConfig::decode_keep`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// Half the tokens kept, 4-bit keys, 3-bit values, one scale per vector by the RMS rule
    /// (measured ratio in the README), eviction scores pooled by a maximum over 15 tokens: on
    /// both dev models it keeps every pass key of the retrieval check that the 5-token average
    /// lost, and the mean perplexity change of the two over the whole corpus is no worse
    /// (nq-candle's README, "Pooling"). It searched 4 scale candidates per vector until key
    /// smoothing and kept decode-time tokens made that search useless: over the 12 samples in
    /// decode mode the RMS rule gives SmolLM2 +2.31% against +2.30% and Qwen2.5-Coder-0.5B
    /// +1.91% against +2.36%, at a third of the compression time (nq-core's README,
    /// "Decode-mode frontier").
    High,
    /// 35% of the tokens kept, 4-bit keys, 2-bit values, eviction scores pooled by a maximum
    /// over 15 tokens as in `high`: on the retrieval check it answers 41 of 45 pass keys on
    /// SmolLM2 (the uncompressed cache 42; the 5-token average 1) and 15 of 15 on
    /// Qwen2.5-Coder-0.5B (the average 10), for a mean perplexity change of the two models
    /// over the whole corpus 0.09 (decode) and 0.25 (prompt) points worse than the average's
    /// (nq-candle's README, "Pooling"). It still loses 2 keys that the uncompressed SmolLM2
    /// finds, and finds one it misses.
    Balanced,
    /// 20% of the tokens kept, 4-bit keys, 2-bit values, eviction scores averaged over 5
    /// tokens (max pooling over 15 answered 8 of 12 pass keys against 0 on a small SmolLM2
    /// check, not measured on the whole corpus). Before key smoothing, fewer key bits
    /// broke Qwen2.5-Coder-0.5B (2 kv heads) on some samples (Mansfield Park, 3-bit keys:
    /// +95.6% against +5.8% with 4-bit keys); with smoothing 3-bit keys gave +4.7% there, but
    /// the whole corpus was measured with 4-bit keys only.
    Max,
    /// No compression: f16 cache with every token. The baseline every figure is compared to.
    None,
}

impl Preset {
    /// Every preset, in order of increasing compression.
    pub const ALL: [Preset; 3] = [Preset::High, Preset::Balanced, Preset::Max];

    /// The preset's name, as used on the command line and in result files.
    pub fn name(self) -> &'static str {
        match self {
            Preset::High => "high",
            Preset::Balanced => "balanced",
            Preset::Max => "max",
            Preset::None => "none",
        }
    }

    /// The configuration this preset stands for.
    pub fn config(self) -> CompressionConfig {
        let base = CompressionConfig::default();
        match self {
            Preset::High => CompressionConfig {
                evict: EvictConfig { keep: 0.5, ..base.evict },
                keys: Storage::E8 { bits: 4 },
                values: Storage::E8 { bits: 3 },
                ..base
            },
            Preset::Balanced => base,
            Preset::Max => CompressionConfig {
                evict: EvictConfig { keep: 0.2, pool: PoolKind::Avg, pool_kernel: 5, ..base.evict },
                ..base
            },
            Preset::None => CompressionConfig {
                evict: EvictConfig { keep: 1.0, ..base.evict },
                keys: Storage::F16,
                values: Storage::F16,
                ..base
            },
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "high" => Ok(Preset::High),
            "balanced" => Ok(Preset::Balanced),
            "max" => Ok(Preset::Max),
            "none" => Ok(Preset::None),
            _ => Err(Error::UnknownPreset { got: s.to_owned() }),
        }
    }
}

impl Default for CompressionConfig {
    /// The `balanced` preset.
    fn default() -> Self {
        CompressionConfig {
            evict: EvictConfig {
                keep: 0.35,
                sinks: 4,
                recent: 16,
                window: 128,
                scorer: ScorerKind::Observed,
                split: BudgetSplit::Global,
                value_norm: true,
                decode_keep: Some(1.0),
                pool: PoolKind::Max,
                pool_kernel: 15,
            },
            keys: Storage::E8 { bits: 4 },
            values: Storage::E8 { bits: 2 },
            remove_rope: false,
            center: true,
            scale_candidates: 1,
            smooth_keys: true,
            block: 16,
            seed: 0x6e71_5f6b_765f_6338,
        }
    }
}

impl CompressionConfig {
    /// Check every field, naming the first bad one.
    ///
    /// # Errors
    /// [`Error::Config`] when a value is out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, value: String| Err(Error::Config { field, value });
        let e = &self.evict;
        if !(e.keep > 0.0 && e.keep <= 1.0) {
            return bad("evict.keep", e.keep.to_string());
        }
        if e.window == 0 {
            return bad("evict.window", "0".into());
        }
        if let Some(k) = e.decode_keep
            && !(k > 0.0 && k <= 1.0)
        {
            return bad("evict.decode_keep", k.to_string());
        }
        if e.pool_kernel.is_multiple_of(2) {
            // Even (or zero): no centred window.
            return bad("evict.pool_kernel", e.pool_kernel.to_string());
        }
        if let ScorerKind::Mixed { mix } = e.scorer
            && !(0.0..=1.0).contains(&mix)
        {
            return bad("evict.scorer.mix", mix.to_string());
        }
        for (field, s) in [("keys", self.keys), ("values", self.values)] {
            if let Storage::E8 { bits } = s
                && !(2..=4).contains(&bits)
            {
                return bad(field, format!("E8 {{ bits: {bits} }}"));
            }
        }
        if self.scale_candidates == 0 {
            return bad("scale_candidates", "0".into());
        }
        if self.block == 0 {
            return bad("block", "0".into());
        }
        Ok(())
    }
}

impl CompressionConfig {
    /// Version of the byte form written by [`to_bytes`](Self::to_bytes).
    const BYTES_VERSION: u8 = 6;

    /// A stable byte form, stored in archives so a loaded cache keeps compressing the same way.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![Self::BYTES_VERSION];
        let e = &self.evict;
        b.extend_from_slice(&e.keep.to_le_bytes());
        for n in [e.sinks, e.recent, e.window, self.block] {
            b.extend_from_slice(&u64::try_from(n).unwrap_or(u64::MAX).to_le_bytes());
        }
        let (tag, mix) = match e.scorer {
            ScorerKind::Observed => (0u8, 0.0f32),
            ScorerKind::Expected => (1, 0.0),
            ScorerKind::Mixed { mix } => (2, mix),
            ScorerKind::KeyKey => (3, 0.0),
            ScorerKind::KeyNorm => (4, 0.0),
        };
        b.push(tag);
        b.extend_from_slice(&mix.to_le_bytes());
        b.push(match e.split {
            BudgetSplit::PerHead => 0,
            BudgetSplit::PerLayer => 1,
            BudgetSplit::Global => 2,
        });
        b.push(self.keys.bits());
        b.push(self.values.bits());
        b.push(u8::from(self.remove_rope));
        b.push(self.scale_candidates);
        b.push(u8::from(self.center));
        b.extend_from_slice(&self.seed.to_le_bytes());
        b.push(u8::from(e.value_norm));
        b.push(u8::from(self.smooth_keys));
        // Version 5: the decode-time keep fraction, NaN for "same as keep".
        b.extend_from_slice(&e.decode_keep.unwrap_or(f32::NAN).to_le_bytes());
        // Version 6: the observed scorer's pooling, kind then kernel.
        b.push(match e.pool {
            PoolKind::Avg => 0,
            PoolKind::Max => 1,
        });
        b.extend_from_slice(&u64::try_from(e.pool_kernel).unwrap_or(u64::MAX).to_le_bytes());
        b
    }

    /// Parse [`to_bytes`](Self::to_bytes) output (also versions 2 to 5, which lacked
    /// `value_norm`, `smooth_keys`, `decode_keep` and the pooling, the later ones in turn; a
    /// version without pooling reads as `Avg` over 5 tokens, what those versions did).
    ///
    /// # Errors
    /// [`Error::Archive`] for a wrong length, version or field value.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        const V2_LEN: usize = 1 + 4 + 4 * 8 + 1 + 4 + 1 + 4 + 1 + 8;
        let bad = |what: &str| Error::Archive(format!("compression config: {what}"));
        let flag = |i: usize, what: &str| match b[i] {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(bad(&format!("{what} {t}"))),
        };
        let f32_at = |i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let usize_at =
            |i: usize| usize::try_from(u64_at(i)).map_err(|_| bad("count overflows usize"));
        let decode_keep_at = |i: usize| {
            let k = f32_at(i);
            (!k.is_nan()).then_some(k)
        };
        let (avg5, v6_len) = ((PoolKind::Avg, 5), V2_LEN + 15);
        let (value_norm, smooth_keys, decode_keep, (pool, pool_kernel)) = match (b.first(), b.len())
        {
            (Some(2), V2_LEN) => (false, false, None, avg5),
            (Some(3), n) if n == V2_LEN + 1 => (flag(V2_LEN, "value_norm")?, false, None, avg5),
            (Some(4), n) if n == V2_LEN + 2 => {
                (flag(V2_LEN, "value_norm")?, flag(V2_LEN + 1, "smooth_keys")?, None, avg5)
            }
            (Some(5), n) if n == V2_LEN + 6 => (
                flag(V2_LEN, "value_norm")?,
                flag(V2_LEN + 1, "smooth_keys")?,
                decode_keep_at(V2_LEN + 2),
                avg5,
            ),
            (Some(&Self::BYTES_VERSION), n) if n == v6_len => {
                let pool = match b[V2_LEN + 6] {
                    0 => PoolKind::Avg,
                    1 => PoolKind::Max,
                    t => return Err(bad(&format!("pool tag {t}"))),
                };
                (
                    flag(V2_LEN, "value_norm")?,
                    flag(V2_LEN + 1, "smooth_keys")?,
                    decode_keep_at(V2_LEN + 2),
                    (pool, usize_at(V2_LEN + 7)?),
                )
            }
            (None, _) => return Err(bad("empty")),
            (Some(&version), n) => {
                return Err(bad(&format!(
                    "version {version} in {n} bytes (this build reads versions 2 to {} with {V2_LEN} to {v6_len} bytes)",
                    Self::BYTES_VERSION,
                )));
            }
        };
        let storage = |bits: u8| match bits {
            16 => Ok(Storage::F16),
            2..=4 => Ok(Storage::E8 { bits }),
            _ => Err(bad(&format!("bits {bits}"))),
        };
        let mix = f32_at(38);
        let cfg = CompressionConfig {
            evict: EvictConfig {
                keep: f32_at(1),
                sinks: usize_at(5)?,
                recent: usize_at(13)?,
                window: usize_at(21)?,
                scorer: match b[37] {
                    0 => ScorerKind::Observed,
                    1 => ScorerKind::Expected,
                    2 => ScorerKind::Mixed { mix },
                    3 => ScorerKind::KeyKey,
                    4 => ScorerKind::KeyNorm,
                    t => return Err(bad(&format!("scorer tag {t}"))),
                },
                split: match b[42] {
                    0 => BudgetSplit::PerHead,
                    1 => BudgetSplit::PerLayer,
                    2 => BudgetSplit::Global,
                    t => return Err(bad(&format!("split tag {t}"))),
                },
                value_norm,
                decode_keep,
                pool,
                pool_kernel,
            },
            block: usize_at(29)?,
            keys: storage(b[43])?,
            values: storage(b[44])?,
            remove_rope: match b[45] {
                0 => false,
                1 => true,
                t => return Err(bad(&format!("remove_rope {t}"))),
            },
            scale_candidates: b[46],
            center: match b[47] {
                0 => false,
                1 => true,
                t => return Err(bad(&format!("center {t}"))),
            },
            seed: u64_at(48),
            smooth_keys,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
