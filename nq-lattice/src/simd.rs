//! SIMD kernels (x86-64), selected at run time.
//!
//! Encoding runs the crate's lane-generic encoder (`crate::lanes`) on 8 blocks at once
//! (AVX2, one block per 32-bit lane, blocks transposed in registers) or 16 (AVX-512F);
//! it performs exactly the scalar encoder's IEEE operations, so the codes are identical.
//! The pattern ids of the E8P indices come from one gather per group from `e8p::KEY_TO_ID`.
//!
//! Decoding, `dot_rows` and `axpy_rows` hold one E8 block in one 256-bit register: the
//! pattern's base point is one 32-byte load from `e8p::BASE` (8 KiB), the signs one 32-byte
//! load from a 4 KiB table of sign masks (indexed by the 7 flip bits, the parity flip of
//! coordinate 7 included), the shift one broadcast. All tables stay in L1.
//!
//! Safety invariant of this module: the lane types [`F32x8`] and [`F32x16`] and every
//! `#[target_feature]` function are only used inside kernels entered through
//! [`kernels`], which hands out an instruction set's kernels only after
//! [`Isa::is_available`] confirmed the CPU features at run time.

use half::f16;

use crate::fixed::{FixedBits, Kernels, Scalar};
use crate::isa::Isa;

/// The kernels of an instruction set (the scalar ones if it is not available).
pub(crate) fn kernels(isa: Isa) -> &'static dyn Kernels {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && isa.is_available() {
            return &x86::Avx512;
        }
        if isa == Isa::Avx2 && isa.is_available() {
            return &x86::Avx2;
        }
    }
    let _ = isa;
    &Scalar
}

/// f16 values to f32: F16C conversions inline where the CPU has them, `half`'s conversion
/// otherwise (which converts with F16C too where it can: the same bits either way).
pub(crate) fn widen(src: &[f16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("f16c")
        {
            // SAFETY: AVX and F16C, the function's only requirements, were detected just above.
            unsafe { x86::widen_f16c(src, dst) };
            return;
        }
    }
    half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::{Add, Mul, Sub};

    use super::{FixedBits, Kernels, f16};
    use crate::e8::nearest_blocks;
    use crate::fixed::encode_blocks;
    use crate::lanes::Lanes;
    use crate::{e8p, e81b};

    /// 8 lanes of `f32` in an AVX register (see the module's safety invariant).
    #[derive(Clone, Copy)]
    pub(super) struct F32x8(__m256);

    macro_rules! avx {
        ($e:expr) => {
            // SAFETY: `F32x8`/`F32x16` values only exist inside kernels entered after the
            // CPU features were detected (module invariant), so the intrinsic is supported.
            unsafe { $e }
        };
    }

    impl Add for F32x8 {
        type Output = Self;
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            F32x8(avx!(_mm256_add_ps(self.0, o.0)))
        }
    }
    impl Sub for F32x8 {
        type Output = Self;
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            F32x8(avx!(_mm256_sub_ps(self.0, o.0)))
        }
    }
    impl Mul for F32x8 {
        type Output = Self;
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            F32x8(avx!(_mm256_mul_ps(self.0, o.0)))
        }
    }

    impl Lanes for F32x8 {
        type M = __m256;
        const N: usize = 8;

        #[inline(always)]
        fn splat(v: f32) -> Self {
            F32x8(avx!(_mm256_set1_ps(v)))
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            // maxps: `a > b ? a : b`.
            F32x8(avx!(_mm256_max_ps(self.0, o.0)))
        }
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            F32x8(avx!(_mm256_min_ps(self.0, o.0)))
        }
        #[inline(always)]
        fn abs(self) -> Self {
            F32x8(avx!(_mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0)))
        }
        #[inline(always)]
        fn round(self) -> Self {
            F32x8(avx!(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                self.0
            )))
        }
        #[inline(always)]
        fn lt(self, o: Self) -> __m256 {
            avx!(_mm256_cmp_ps::<_CMP_LT_OQ>(self.0, o.0))
        }
        #[inline(always)]
        fn eq(self, o: Self) -> __m256 {
            avx!(_mm256_cmp_ps::<_CMP_EQ_OQ>(self.0, o.0))
        }
        #[inline(always)]
        fn select(m: __m256, a: Self, b: Self) -> Self {
            F32x8(avx!(_mm256_blendv_ps(b.0, a.0, m)))
        }
        #[inline(always)]
        fn mask_val(m: __m256, a: Self) -> Self {
            F32x8(avx!(_mm256_and_ps(m, a.0)))
        }
        #[inline(always)]
        fn neg_if(self, m: __m256) -> Self {
            F32x8(avx!(_mm256_xor_ps(self.0, _mm256_and_ps(m, _mm256_set1_ps(-0.0)))))
        }
        #[inline(always)]
        fn none() -> __m256 {
            avx!(_mm256_setzero_ps())
        }
        #[inline(always)]
        fn and(a: __m256, b: __m256) -> __m256 {
            avx!(_mm256_and_ps(a, b))
        }
        #[inline(always)]
        fn xor(a: __m256, b: __m256) -> __m256 {
            avx!(_mm256_xor_ps(a, b))
        }
        #[inline(always)]
        fn not(a: __m256) -> __m256 {
            avx!(_mm256_xor_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(-1))))
        }
        #[inline(always)]
        fn mselect(m: __m256, a: __m256, b: __m256) -> __m256 {
            avx!(_mm256_blendv_ps(b, a, m))
        }
        #[inline(always)]
        fn all(m: __m256) -> bool {
            avx!(_mm256_movemask_ps(m)) == 0xff
        }
        #[inline(always)]
        fn odd_signs(x: &[Self; 8]) -> __m256 {
            let mut p = x[0].0;
            for v in &x[1..] {
                p = avx!(_mm256_xor_ps(p, v.0));
            }
            // The sign bit of the XOR is the parity; spread it over the lane.
            avx!(_mm256_castsi256_ps(_mm256_srai_epi32::<31>(_mm256_castps_si256(p))))
        }
        #[inline(always)]
        fn store(self, out: &mut [f32]) {
            let out = &mut out[..8];
            // SAFETY: `out` has 8 elements (sliced above); unaligned store. Features: invariant.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn e8p_indices(self, out: &mut [u32]) {
            let out = &mut out[..8];
            let packed = avx!(_mm256_cvttps_epi32(self.0));
            let key = avx!(_mm256_and_si256(packed, _mm256_set1_epi32(8191)));
            // SAFETY: each lane reads 4 bytes at `KEY_TO_ID + 2 key` with key < 2^13, inside
            // the table of 2^13 + 1 entries. Features: invariant.
            let id = unsafe { _mm256_i32gather_epi32::<2>(e8p::KEY_TO_ID.as_ptr().cast(), key) };
            let id = avx!(_mm256_and_si256(id, _mm256_set1_epi32(0xff)));
            let hi = avx!(_mm256_slli_epi32::<8>(_mm256_srli_epi32::<13>(packed)));
            let index = avx!(_mm256_or_si256(id, hi));
            // SAFETY: `out` has 8 elements (sliced above); unaligned store. Features: invariant.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), index) }
        }
        #[inline(always)]
        fn lookup(self, table: &[f32; 16]) -> Self {
            // SAFETY: both halves of `table` are 8 elements; unaligned loads. Features:
            // invariant.
            let (lo, hi) =
                unsafe { (_mm256_loadu_ps(table.as_ptr()), _mm256_loadu_ps(table[8..].as_ptr())) };
            avx!({
                let i = _mm256_cvttps_epi32(self.0);
                let a = _mm256_permutevar8x32_ps(lo, i);
                let b = _mm256_permutevar8x32_ps(hi, i);
                // Bit 3 of the index (moved to the sign bit) picks the upper half.
                F32x8(_mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(i))))
            })
        }
        #[inline(always)]
        fn load(x: &[f32]) -> Self {
            let x = &x[..8];
            // SAFETY: `x` has 8 elements (sliced above); unaligned load. Features: invariant.
            F32x8(unsafe { _mm256_loadu_ps(x.as_ptr()) })
        }
        #[inline(always)]
        fn load_blocks(x: &[f32]) -> [Self; 8] {
            let x = &x[..64];
            let mut r = [F32x8::splat(0.0).0; 8];
            for (l, rl) in r.iter_mut().enumerate() {
                *rl = F32x8::load(&x[8 * l..]).0;
            }
            let t = transpose8(r);
            let mut out = [F32x8::splat(0.0); 8];
            for i in 0..8 {
                out[i] = F32x8(t[i]);
            }
            out
        }
    }

    /// Transposes an 8×8 matrix held in 8 registers (rows in, columns out).
    #[inline(always)]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        avx!({
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            [
                _mm256_permute2f128_ps::<0x20>(s0, s4),
                _mm256_permute2f128_ps::<0x20>(s1, s5),
                _mm256_permute2f128_ps::<0x20>(s2, s6),
                _mm256_permute2f128_ps::<0x20>(s3, s7),
                _mm256_permute2f128_ps::<0x31>(s0, s4),
                _mm256_permute2f128_ps::<0x31>(s1, s5),
                _mm256_permute2f128_ps::<0x31>(s2, s6),
                _mm256_permute2f128_ps::<0x31>(s3, s7),
            ]
        })
    }

    /// 16 lanes of `f32` in an AVX-512 register (see the module's safety invariant).
    #[derive(Clone, Copy)]
    pub(super) struct F32x16(__m512);

    impl Add for F32x16 {
        type Output = Self;
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            F32x16(avx!(_mm512_add_ps(self.0, o.0)))
        }
    }
    impl Sub for F32x16 {
        type Output = Self;
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            F32x16(avx!(_mm512_sub_ps(self.0, o.0)))
        }
    }
    impl Mul for F32x16 {
        type Output = Self;
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            F32x16(avx!(_mm512_mul_ps(self.0, o.0)))
        }
    }

    impl Lanes for F32x16 {
        type M = __mmask16;
        const N: usize = 16;

        #[inline(always)]
        fn splat(v: f32) -> Self {
            F32x16(avx!(_mm512_set1_ps(v)))
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            F32x16(avx!(_mm512_max_ps(self.0, o.0)))
        }
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            F32x16(avx!(_mm512_min_ps(self.0, o.0)))
        }
        #[inline(always)]
        fn abs(self) -> Self {
            F32x16(avx!(_mm512_abs_ps(self.0)))
        }
        #[inline(always)]
        fn round(self) -> Self {
            F32x16(avx!(_mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                self.0
            )))
        }
        #[inline(always)]
        fn lt(self, o: Self) -> __mmask16 {
            avx!(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, o.0))
        }
        #[inline(always)]
        fn eq(self, o: Self) -> __mmask16 {
            avx!(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(self.0, o.0))
        }
        #[inline(always)]
        fn select(m: __mmask16, a: Self, b: Self) -> Self {
            F32x16(avx!(_mm512_mask_blend_ps(m, b.0, a.0)))
        }
        #[inline(always)]
        fn mask_val(m: __mmask16, a: Self) -> Self {
            F32x16(avx!(_mm512_maskz_mov_ps(m, a.0)))
        }
        #[inline(always)]
        fn neg_if(self, m: __mmask16) -> Self {
            avx!({
                let x = _mm512_castps_si512(self.0);
                let sign = _mm512_set1_epi32(i32::MIN);
                F32x16(_mm512_castsi512_ps(_mm512_mask_xor_epi32(x, m, x, sign)))
            })
        }
        #[inline(always)]
        fn none() -> __mmask16 {
            0
        }
        #[inline(always)]
        fn and(a: __mmask16, b: __mmask16) -> __mmask16 {
            a & b
        }
        #[inline(always)]
        fn xor(a: __mmask16, b: __mmask16) -> __mmask16 {
            a ^ b
        }
        #[inline(always)]
        fn not(a: __mmask16) -> __mmask16 {
            !a
        }
        #[inline(always)]
        fn mselect(m: __mmask16, a: __mmask16, b: __mmask16) -> __mmask16 {
            (m & a) | (!m & b)
        }
        #[inline(always)]
        fn all(m: __mmask16) -> bool {
            m == u16::MAX
        }
        #[inline(always)]
        fn odd_signs(x: &[Self; 8]) -> __mmask16 {
            avx!({
                let b = |v: Self| _mm512_castps_si512(v.0);
                // 0x96: three-way XOR.
                let p = _mm512_ternarylogic_epi32::<0x96>(b(x[0]), b(x[1]), b(x[2]));
                let q = _mm512_ternarylogic_epi32::<0x96>(b(x[3]), b(x[4]), b(x[5]));
                let r = _mm512_ternarylogic_epi32::<0x96>(b(x[6]), b(x[7]), p);
                _mm512_cmplt_epi32_mask(_mm512_xor_si512(q, r), _mm512_setzero_si512())
            })
        }
        #[inline(always)]
        fn store(self, out: &mut [f32]) {
            let out = &mut out[..16];
            // SAFETY: `out` has 16 elements (sliced above); unaligned store. Features: invariant.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn e8p_indices(self, out: &mut [u32]) {
            let out = &mut out[..16];
            let packed = avx!(_mm512_cvttps_epu32(self.0));
            let key = avx!(_mm512_and_si512(packed, _mm512_set1_epi32(8191)));
            // SAFETY: each lane reads 4 bytes at `KEY_TO_ID + 2 key` with key < 2^13, inside
            // the table of 2^13 + 1 entries. Features: invariant.
            let id = unsafe { _mm512_i32gather_epi32::<2>(key, e8p::KEY_TO_ID.as_ptr().cast()) };
            let id = avx!(_mm512_and_si512(id, _mm512_set1_epi32(0xff)));
            let hi = avx!(_mm512_slli_epi32::<8>(_mm512_srli_epi32::<13>(packed)));
            let index = avx!(_mm512_or_si512(id, hi));
            // SAFETY: `out` has 16 elements (sliced above); unaligned store. Features: invariant.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), index) }
        }
        #[inline(always)]
        fn lookup(self, table: &[f32; 16]) -> Self {
            // SAFETY: `table` has 16 elements; unaligned load. Features: invariant.
            let t = unsafe { _mm512_loadu_ps(table.as_ptr()) };
            F32x16(avx!(_mm512_permutexvar_ps(_mm512_cvttps_epi32(self.0), t)))
        }
        #[inline(always)]
        fn load(x: &[f32]) -> Self {
            let x = &x[..16];
            // SAFETY: `x` has 16 elements (sliced above); unaligned load. Features: invariant.
            F32x16(unsafe { _mm512_loadu_ps(x.as_ptr()) })
        }
        #[inline(always)]
        fn load_blocks(x: &[f32]) -> [Self; 8] {
            let lo = F32x8::load_blocks(&x[..64]);
            let hi = F32x8::load_blocks(&x[64..128]);
            let mut out = [F32x16::splat(0.0); 8];
            for i in 0..8 {
                out[i] = F32x16(avx!(_mm512_castpd_ps(_mm512_insertf64x4::<1>(
                    _mm512_castpd256_pd512(_mm256_castps_pd(lo[i].0)),
                    _mm256_castps_pd(hi[i].0),
                ))));
            }
            out
        }
    }

    /// Sign masks of the 128 values of the 7 flip bits (bit 31 of lane `i` set when
    /// coordinate `i` is negated; lane 7 carries the parity of the 7 bits).
    static SIGNS: [[u32; 8]; 128] = {
        let mut t = [[0u32; 8]; 128];
        let mut f = 0;
        while f < 128 {
            let flips = e8p::FLIP8[f];
            let mut i = 0;
            while i < 8 {
                t[f][i] = ((flips >> i) as u32 & 1) << 31;
                i += 1;
            }
            f += 1;
        }
        t
    };

    /// The residual words of the 3-bit code at half scale.
    static HALF_WORDS: [[f32; 8]; 256] = {
        let mut t = [[0.0f32; 8]; 256];
        let mut k = 0;
        while k < 256 {
            let mut i = 0;
            while i < 8 {
                t[k][i] = e81b::WORDS[k][i] * 0.5;
                i += 1;
            }
            k += 1;
        }
        t
    };

    /// One E8P codeword in a register.
    #[inline(always)]
    fn e8p_word(idx: u16) -> __m256 {
        let base = &e8p::BASE[usize::from(idx & 0xff)];
        let signs = &SIGNS[usize::from((idx >> 8) & 0x7f)];
        let shift = if idx & 0x8000 != 0 { 0.25 } else { -0.25 };
        // SAFETY: both tables are 8 x 32-bit elements long; unaligned loads. Features: the
        // callers are `#[target_feature(enable = "avx2,fma")]` functions.
        unsafe {
            let b = _mm256_loadu_ps(base.as_ptr());
            let s = _mm256_loadu_si256(signs.as_ptr().cast());
            _mm256_add_ps(_mm256_xor_ps(b, _mm256_castsi256_ps(s)), _mm256_set1_ps(shift))
        }
    }

    /// One block's codeword (unscaled) in a register; `code` has `bytes_per_block` bytes.
    #[inline(always)]
    fn word(bits: FixedBits, code: &[u8]) -> __m256 {
        let c1 = e8p_word(u16::from_le_bytes([code[0], code[1]]));
        match bits {
            FixedBits::B2 => c1,
            FixedBits::B3 => {
                let w = &HALF_WORDS[usize::from(code[2])];
                // SAFETY: the table row has 8 elements; unaligned load. Features: callers.
                unsafe { _mm256_add_ps(c1, _mm256_loadu_ps(w.as_ptr())) }
            }
            FixedBits::B4 => {
                let c2 = e8p_word(u16::from_le_bytes([code[2], code[3]]));
                // c1 + c2 / 4 is exact (dyadic values), so fused or not gives the same bits.
                avx!(_mm256_fmadd_ps(c2, _mm256_set1_ps(0.25), c1))
            }
        }
    }

    /// Horizontal sum of 8 lanes.
    #[inline(always)]
    fn hsum(v: __m256) -> f32 {
        avx!({
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        })
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    fn encode_avx2(
        bits: FixedBits,
        x: &[f32],
        blocks_per_row: usize,
        inv: &[f32],
        codes: &mut [u8],
        xc: &mut [f32],
        cc: &mut [f32],
    ) {
        encode_blocks::<F32x8>(bits, x, 0, blocks_per_row, inv, codes, xc, cc);
    }

    #[target_feature(enable = "avx2,fma")]
    fn nearest_avx2(x: &[f32], blocks_per_row: usize, inv: &[f32], y: &mut [f32]) {
        nearest_blocks::<F32x8>(x, 0, blocks_per_row, inv, y);
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    fn nearest_avx512(x: &[f32], blocks_per_row: usize, inv: &[f32], y: &mut [f32]) {
        nearest_blocks::<F32x16>(x, 0, blocks_per_row, inv, y);
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    fn encode_avx512(
        bits: FixedBits,
        x: &[f32],
        blocks_per_row: usize,
        inv: &[f32],
        codes: &mut [u8],
        xc: &mut [f32],
        cc: &mut [f32],
    ) {
        encode_blocks::<F32x16>(bits, x, 0, blocks_per_row, inv, codes, xc, cc);
    }

    #[target_feature(enable = "avx2,fma")]
    fn decode_avx2(bits: FixedBits, codes: &[u8], scales: &[f16], dim: usize, out: &mut [f32]) {
        let bpb = bits.bytes_per_block();
        let row_bytes = dim / 8 * bpb;
        for ((row_codes, s), row) in
            codes.chunks_exact(row_bytes).zip(scales).zip(out.chunks_exact_mut(dim))
        {
            let s = _mm256_set1_ps(s.to_f32());
            for (code, o) in row_codes.chunks_exact(bpb).zip(row.chunks_exact_mut(8)) {
                let v = _mm256_mul_ps(word(bits, code), s);
                // SAFETY: `o` is a chunk of exactly 8 elements; unaligned store.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn dot_avx2(bits: FixedBits, q: &[f32], codes: &[u8], scales: &[f16], out: &mut [f32]) {
        let bpb = bits.bytes_per_block();
        let nblk = q.len() / 8;
        let row_bytes = nblk * bpb;
        for ((row_codes, s), o) in codes.chunks_exact(row_bytes).zip(scales).zip(out.iter_mut()) {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (j, (code, qb)) in row_codes.chunks_exact(bpb).zip(q.chunks_exact(8)).enumerate() {
                // SAFETY: `qb` is a chunk of exactly 8 elements; unaligned load.
                let qv = unsafe { _mm256_loadu_ps(qb.as_ptr()) };
                acc[j & 3] = _mm256_fmadd_ps(qv, word(bits, code), acc[j & 3]);
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            *o = s.to_f32() * hsum(sum);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn axpy_avx2(bits: FixedBits, w: &[f32], codes: &[u8], scales: &[f16], acc: &mut [f32]) {
        let bpb = bits.bytes_per_block();
        let dim = acc.len();
        let row_bytes = dim / 8 * bpb;
        let f: Vec<f32> = w.iter().zip(scales).map(|(w, s)| w * s.to_f32()).collect();
        for (j, a) in acc.chunks_exact_mut(8).enumerate() {
            let mut sum = [_mm256_setzero_ps(); 4];
            for (n, (row_codes, fv)) in codes.chunks_exact(row_bytes).zip(&f).enumerate() {
                let code = &row_codes[j * bpb..(j + 1) * bpb];
                sum[n & 3] = _mm256_fmadd_ps(word(bits, code), _mm256_set1_ps(*fv), sum[n & 3]);
            }
            let total = _mm256_add_ps(_mm256_add_ps(sum[0], sum[1]), _mm256_add_ps(sum[2], sum[3]));
            // SAFETY: `a` is a chunk of exactly 8 elements; unaligned load and store.
            unsafe {
                let prev = _mm256_loadu_ps(a.as_ptr());
                _mm256_storeu_ps(a.as_mut_ptr(), _mm256_add_ps(prev, total));
            }
        }
    }

    /// [`super::widen`] with F16C, 8 values per conversion (`src.len() == dst.len()`).
    #[target_feature(enable = "avx,f16c")]
    pub(super) fn widen_f16c(src: &[f16], dst: &mut [f32]) {
        let (src8, src_tail) = src.as_chunks::<8>();
        let (dst8, dst_tail) = dst.as_chunks_mut::<8>();
        for (s, d) in src8.iter().zip(dst8) {
            // SAFETY: `s` holds 8 f16 (16 bytes), `d` 8 f32 (32 bytes); unaligned load and
            // store. Features: the caller detected AVX and F16C.
            unsafe {
                let v = _mm256_cvtph_ps(_mm_loadu_si128(s.as_ptr().cast()));
                _mm256_storeu_ps(d.as_mut_ptr(), v);
            }
        }
        if !src_tail.is_empty() {
            half::slice::HalfFloatSliceExt::convert_to_f32_slice(src_tail, dst_tail);
        }
    }

    /// AVX2 + FMA kernels.
    pub(super) struct Avx2;

    impl Kernels for Avx2 {
        fn encode(
            &self,
            bits: FixedBits,
            x: &[f32],
            blocks_per_row: usize,
            inv: &[f32],
            codes: &mut [u8],
            xc: &mut [f32],
            cc: &mut [f32],
        ) {
            // SAFETY: `kernels` hands out `Avx2` only after detecting AVX2 and FMA.
            unsafe { encode_avx2(bits, x, blocks_per_row, inv, codes, xc, cc) }
        }
        fn nearest(&self, x: &[f32], blocks_per_row: usize, inv: &[f32], y: &mut [f32]) {
            // SAFETY: as above.
            unsafe { nearest_avx2(x, blocks_per_row, inv, y) }
        }
        fn decode(
            &self,
            bits: FixedBits,
            codes: &[u8],
            scales: &[f16],
            dim: usize,
            out: &mut [f32],
        ) {
            // SAFETY: as above.
            unsafe { decode_avx2(bits, codes, scales, dim, out) }
        }
        fn dot(&self, bits: FixedBits, q: &[f32], codes: &[u8], scales: &[f16], out: &mut [f32]) {
            // SAFETY: as above.
            unsafe { dot_avx2(bits, q, codes, scales, out) }
        }
        fn axpy(&self, bits: FixedBits, w: &[f32], codes: &[u8], scales: &[f16], acc: &mut [f32]) {
            // SAFETY: as above.
            unsafe { axpy_avx2(bits, w, codes, scales, acc) }
        }
    }

    /// AVX-512F encoder (16 blocks at once); decoding uses the AVX2 kernels.
    pub(super) struct Avx512;

    impl Kernels for Avx512 {
        fn encode(
            &self,
            bits: FixedBits,
            x: &[f32],
            blocks_per_row: usize,
            inv: &[f32],
            codes: &mut [u8],
            xc: &mut [f32],
            cc: &mut [f32],
        ) {
            // SAFETY: `kernels` hands out `Avx512` only after detecting AVX-512F, AVX2, FMA.
            unsafe { encode_avx512(bits, x, blocks_per_row, inv, codes, xc, cc) }
        }
        fn nearest(&self, x: &[f32], blocks_per_row: usize, inv: &[f32], y: &mut [f32]) {
            // SAFETY: as above.
            unsafe { nearest_avx512(x, blocks_per_row, inv, y) }
        }
        fn decode(
            &self,
            bits: FixedBits,
            codes: &[u8],
            scales: &[f16],
            dim: usize,
            out: &mut [f32],
        ) {
            Avx2.decode(bits, codes, scales, dim, out);
        }
        fn dot(&self, bits: FixedBits, q: &[f32], codes: &[u8], scales: &[f16], out: &mut [f32]) {
            Avx2.dot(bits, q, codes, scales, out);
        }
        fn axpy(&self, bits: FixedBits, w: &[f32], codes: &[u8], scales: &[f16], acc: &mut [f32]) {
            Avx2.axpy(bits, w, codes, scales, acc);
        }
    }
}
