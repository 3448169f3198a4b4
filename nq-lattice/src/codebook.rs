//! The codebook tables, for kernels written elsewhere (CUDA) and for inspection.
//!
//! # E8P (2-bit code, first stage of the 3- and 4-bit codes)
//! Index bits 0-7 select a pattern `p`, bits 8-14 are sign flips `f_0..f_6`, bit 15 the
//! shift. With `b = `[`e8p_base`]`()[p]`, `f_7 = f_0 ^ .. ^ f_6` and `t = +¼` if bit 15
//! is set, else `−¼`, the codeword is `c_i = (−1)^{f_i} b_i + t`.
//!
//! # Residual codebook of the 3-bit code
//! [`e81b_words`]: the origin, the 240 roots of E8 and ±2e_i (without −2e_7); the 3-bit
//! codeword is `c1 + w / 2` with `c1` the E8P word of the first two bytes and `w` the
//! word of the third. The 4-bit codeword is `c1 + c2 / 4` with two E8P words.

/// Absolute values of the 256 E8P patterns, in half units (1 = ½, 3 = 3/2, 5 = 5/2): the
/// 227 patterns of squared norm ≤ 10 of D8 + ½, then 29 of squared norm 12.
#[must_use]
pub fn e8p_patterns() -> &'static [[u8; 8]; 256] {
    &crate::e8p::PATTERNS
}

/// Base point of each E8P pattern: its absolute values, coordinate 7 negated when the
/// coordinate sum is odd (so that the base point lies in E8).
#[must_use]
pub fn e8p_base() -> &'static [[f32; 8]; 256] {
    &crate::e8p::BASE
}

/// The 256 words of the 3-bit code's residual stage.
#[must_use]
pub fn e81b_words() -> &'static [[f32; 8]; 256] {
    &crate::e81b::WORDS
}
