//! Instruction-set selection: runtime detection with an always-compiled scalar fallback.

use crate::{Error, Result};

/// The instruction set the codecs run on.
///
/// Every instruction set produces the same codes and scales (the SIMD encoder performs the
/// scalar encoder's IEEE operations in the same order, lane by lane) and the same decoded
/// values (decoding is exact). The fused `dot_rows`/`axpy_rows` sum in a different order,
/// so they agree to within rounding.
///
/// Building with `RUSTFLAGS="--cfg nq_force_scalar"` makes [`Isa::detect`] return
/// [`Isa::Scalar`] and every other instruction set unavailable, so CI tests the fallback.
/// Setting the environment variable `NQ_FORCE_AVX2=1` (read once per process; any value but
/// empty or `0`) makes [`Isa::Avx512`] unavailable, so an AVX-512 machine runs (and times)
/// the AVX2 path that AVX2-only CPUs take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust loops.
    Scalar,
    /// x86-64 AVX2 + FMA intrinsics: one E8 block is one 256-bit register; the encoder
    /// works on 8 blocks at once.
    Avx2,
    /// x86-64 AVX-512F (with AVX2 + FMA): the encoder works on 16 blocks at once; decoding
    /// uses the AVX2 kernels.
    Avx512,
}

impl Isa {
    /// The fastest instruction set available on this CPU.
    ///
    /// # Examples
    /// ```
    /// let isa = nq_lattice::Isa::detect();
    /// assert!(isa.is_available());
    /// ```
    #[must_use]
    pub fn detect() -> Isa {
        if Isa::Avx512.is_available() {
            Isa::Avx512
        } else if Isa::Avx2.is_available() {
            Isa::Avx2
        } else {
            Isa::Scalar
        }
    }

    /// Whether this instruction set can run here. [`Isa::Scalar`] always can.
    #[must_use]
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => avx2_available(),
            Isa::Avx512 => avx2_available() && avx512_available(),
        }
    }

    /// A short lowercase name: `"scalar"`, `"avx2"` or `"avx512"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

impl Isa {
    /// `self` if it is available here, else [`Error::Param`].
    pub(crate) fn check(self, op: &'static str) -> Result<Isa> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(Error::Param {
                op,
                what: "isa",
                value: 0.0,
                range: "an instruction set this CPU supports",
            })
        }
    }
}

#[cfg(all(target_arch = "x86_64", not(nq_force_scalar)))]
fn avx2_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(all(target_arch = "x86_64", not(nq_force_scalar))))]
fn avx2_available() -> bool {
    false
}

#[cfg(all(target_arch = "x86_64", not(nq_force_scalar)))]
fn avx512_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && !avx2_forced()
}

/// Whether `NQ_FORCE_AVX2` asks to skip AVX-512 (read once, then cached).
#[cfg(all(target_arch = "x86_64", not(nq_force_scalar)))]
fn avx2_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| {
        std::env::var_os("NQ_FORCE_AVX2").is_some_and(|v| !v.is_empty() && v != "0")
    })
}

#[cfg(not(all(target_arch = "x86_64", not(nq_force_scalar))))]
fn avx512_available() -> bool {
    false
}
