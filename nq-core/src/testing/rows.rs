//! The row-level primitives of a device ([`RowOps`]) against the CPU.

use super::{Mismatch, fail, test_rows};
use crate::backend::{RowOps, Rows};
use crate::cpu::CpuBackend;
use crate::rotation::Rotation;

/// Check `upload`/`download`, `rotate` (both directions) and `encode`/`decode` of `backend`
/// against [`CpuBackend`] for head dimensions 64, 96, 128 and 256 and every E8 rate.
///
/// # Errors
/// The first [`Mismatch`] found, or a backend error rendered as one.
pub fn check_row_ops<B: RowOps>(backend: &B) -> Result<(), Mismatch> {
    let cpu = CpuBackend;
    for dim in [64usize, 96, 128, 256] {
        let n = 300;
        let rows = Rows::new(n, dim).map_err(|e| fail("Rows::new", e.to_string()))?;
        let host = test_rows(n, dim, dim as u64);
        let err = |op: &'static str| move |e: B::Error| fail(op, e.to_string());
        let buf = backend.upload(&host).map_err(err("upload"))?;
        if backend.download(&buf).map_err(err("download"))? != host {
            return Err(fail("upload/download", format!("dim {dim}: round trip changed values")));
        }
        let rot = Rotation::new(dim, 42).map_err(|e| fail("Rotation::new", e.to_string()))?;
        for inverse in [false, true] {
            let mut dev = backend.upload(&host).map_err(err("upload"))?;
            backend.rotate(&mut dev, rows, &rot, inverse).map_err(err("rotate"))?;
            let got = backend.download(&dev).map_err(err("download"))?;
            let mut want = host.clone();
            cpu.rotate(&mut want, rows, &rot, inverse)
                .map_err(|e| fail("rotate", e.to_string()))?;
            // Normwise bound of a length-dim FWHT in f32, per row, with margin for a
            // different summation order: 8 * eps * log2(dim) * |row|.
            let bound = 8.0 * f32::EPSILON * (dim as f32).log2();
            for (r, (g, w)) in got.chunks(dim).zip(want.chunks(dim)).enumerate() {
                let norm = w.iter().map(|x| x * x).sum::<f32>().sqrt();
                let e = g.iter().zip(w).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
                if e > bound * norm {
                    return Err(fail(
                        "rotate",
                        format!(
                            "dim {dim} inverse {inverse} row {r}: error {e} > {}",
                            bound * norm
                        ),
                    ));
                }
            }
        }
        for bits in [2u8, 3, 4] {
            let codec =
                crate::lattice::fixed_codec(bits, 8).map_err(|e| fail("codec", e.to_string()))?;
            let dev = backend.upload(&host).map_err(err("upload"))?;
            let got = backend.encode(&dev, rows, &codec).map_err(err("encode"))?;
            let want =
                cpu.encode(&host, rows, &codec).map_err(|e| fail("encode", e.to_string()))?;
            let differing = got
                .codes
                .chunks(codec.bytes_per_block())
                .zip(want.codes.chunks(codec.bytes_per_block()))
                .filter(|(a, b)| a != b)
                .count();
            // Rows on a decision boundary may round either way on another device; more than
            // 1 block in 1000 is a bug.
            if differing * 1000 > want.codes.len() / codec.bytes_per_block() {
                return Err(fail(
                    "encode",
                    format!("dim {dim} bits {bits}: {differing} blocks differ"),
                ));
            }
            let dec = backend.decode(&want, rows, &codec).map_err(err("decode"))?;
            let dec = backend.download(&dec).map_err(err("download"))?;
            let cpu_dec =
                cpu.decode(&want, rows, &codec).map_err(|e| fail("decode", e.to_string()))?;
            if dec != cpu_dec {
                return Err(fail("decode", format!("dim {dim} bits {bits}: decoded rows differ")));
            }
        }
    }
    Ok(())
}
