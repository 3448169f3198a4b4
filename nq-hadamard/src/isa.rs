//! Instruction-set selection: runtime detection with an always-compiled scalar fallback.

use crate::{Error, Result};

/// The instruction set a transform runs on.
///
/// Every instruction set gives **bit-identical** results: the SIMD kernels perform the same
/// IEEE operations in the same order as the scalar loop (butterfly stages in ascending
/// stride, the diagonal multiply before the first or after the last stage), so a cache
/// written on one machine decodes the same on another.
///
/// Building with `RUSTFLAGS="--cfg nq_force_scalar"` makes [`Isa::detect`] return
/// [`Isa::Scalar`] and every other instruction set unavailable, so CI can test the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust loops (the compiler may still auto-vectorize them for the baseline target).
    Scalar,
    /// x86-64 AVX2 + FMA intrinsics, 8 lanes of f32.
    Avx2,
}

impl Isa {
    /// The fastest instruction set available on this CPU.
    ///
    /// # Examples
    /// ```
    /// let isa = nq_hadamard::Isa::detect();
    /// assert!(isa.is_available());
    /// ```
    #[must_use]
    pub fn detect() -> Isa {
        if Isa::Avx2.is_available() { Isa::Avx2 } else { Isa::Scalar }
    }

    /// Whether this instruction set can run here. [`Isa::Scalar`] always can.
    #[must_use]
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => avx2_available(),
        }
    }

    /// A short lowercase name: `"scalar"` or `"avx2"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
        }
    }

    /// Returns `self` if it is available, a typed error otherwise.
    pub(crate) fn check(self, op: &'static str) -> Result<Isa> {
        if self.is_available() { Ok(self) } else { Err(Error::IsaUnavailable { op, isa: self }) }
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
