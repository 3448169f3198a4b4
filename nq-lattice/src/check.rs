//! Validation at the public boundary (each check returns the typed error of its kind).

use half::f16;

use crate::{Error, Result};

/// `dim` must be a positive multiple of 8.
pub(crate) fn dim(op: &'static str, dim: usize) -> Result<()> {
    if dim == 0 || !dim.is_multiple_of(8) { Err(Error::Dim { op, dim }) } else { Ok(()) }
}

/// Number of rows of `dim` values in `len` values.
pub(crate) fn rows(op: &'static str, len: usize, d: usize) -> Result<usize> {
    dim(op, d)?;
    if !len.is_multiple_of(d) {
        return Err(Error::NotMultiple { op, len, dim: d });
    }
    Ok(len / d)
}

/// A buffer length must equal what the shape requires.
pub(crate) fn len(op: &'static str, what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got { Ok(()) } else { Err(Error::Len { op, what, expected, got }) }
}

/// Every value must be finite.
pub(crate) fn finite(op: &'static str, what: &'static str, xs: &[f32]) -> Result<()> {
    // Branch-free pass per chunk (vectorizes); locate the culprit only on failure.
    const EXP: u32 = 0x7f80_0000;
    let all = xs.chunks(256).all(|c| c.iter().fold(true, |ok, v| ok & (v.to_bits() & EXP != EXP)));
    if all {
        return Ok(());
    }
    match xs.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(Error::NonFinite { op, what, index, value: xs[index] }),
        None => Ok(()),
    }
}

/// Stored scales must be finite and not negative.
pub(crate) fn scales(op: &'static str, scales: &[f16]) -> Result<()> {
    match scales.iter().position(|s| !(s.is_finite() && s.to_f32() >= 0.0)) {
        Some(row) => Err(Error::BadScale { op, row, value: scales[row].to_f32() }),
        None => Ok(()),
    }
}
