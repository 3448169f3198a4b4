//! Kernel dispatch per instruction set.

use crate::fixed::{Kernels, Scalar};
use crate::isa::Isa;

/// The kernels of an instruction set.
pub(crate) fn kernels(isa: Isa) -> &'static dyn Kernels {
    match isa {
        Isa::Scalar | Isa::Avx2 => &Scalar,
    }
}
