//! One storage format for rows of a head: f16 or a fixed-rate E8 code with one f16 scale per row.
//! Every attention primitive here reads the stored bytes directly.

use half::f16;
use nq_lattice::FixedCodec;

use crate::config::Storage;
use crate::error::Result;

/// Encoder/decoder of rows of `dim` values in one [`Storage`].
#[derive(Clone, Debug)]
pub(crate) enum RowCodec {
    F16 { dim: usize },
    E8 { dim: usize, codec: FixedCodec },
}

impl RowCodec {
    pub(crate) fn new(storage: Storage, dim: usize, scale_candidates: u8) -> Result<Self> {
        Ok(match storage {
            Storage::F16 => RowCodec::F16 { dim },
            Storage::E8 { bits } => {
                RowCodec::E8 { dim, codec: crate::lattice::fixed_codec(bits, scale_candidates)? }
            }
        })
    }

    /// Bytes of payload per row (scales excluded).
    pub(crate) fn bytes_per_row(&self) -> usize {
        match self {
            RowCodec::F16 { dim } => dim * 2,
            RowCodec::E8 { dim, codec } => dim / 8 * codec.bytes_per_block(),
        }
    }

    /// Whether rows carry a scale.
    pub(crate) fn has_scales(&self) -> bool {
        matches!(self, RowCodec::E8 { .. })
    }

    /// Append the codes (and scales) of `rows` to `codes` and `scales`.
    pub(crate) fn encode(
        &self,
        rows: &[f32],
        codes: &mut Vec<u8>,
        scales: &mut Vec<f16>,
    ) -> Result<()> {
        match self {
            RowCodec::F16 { .. } => {
                for &x in rows {
                    codes.extend_from_slice(&f16::from_f32(x).to_le_bytes());
                }
            }
            RowCodec::E8 { dim, codec } => {
                let n = rows.len() / dim;
                let c0 = codes.len();
                let s0 = scales.len();
                codes.resize(c0 + n * self.bytes_per_row(), 0);
                scales.resize(s0 + n, f16::ZERO);
                codec.encode_rows(rows, *dim, &mut codes[c0..], &mut scales[s0..])?;
            }
        }
        Ok(())
    }

    /// Decode `out.len() / dim` rows.
    pub(crate) fn decode(&self, codes: &[u8], scales: &[f16], out: &mut [f32]) -> Result<()> {
        match self {
            RowCodec::F16 { .. } => {
                f16_le_to_f32(codes, out);
            }
            RowCodec::E8 { dim, codec } => codec.decode_rows(codes, scales, *dim, out)?,
        }
        Ok(())
    }

    /// `out[n] = <query, row n>` for the `out.len()` first rows.
    pub(crate) fn dot(
        &self,
        query: &[f32],
        codes: &[u8],
        scales: &[f16],
        out: &mut [f32],
    ) -> Result<()> {
        match self {
            RowCodec::F16 { dim } => {
                let mut row = vec![0f32; *dim];
                for (o, c) in out.iter_mut().zip(codes.chunks_exact(dim * 2)) {
                    f16_le_to_f32(c, &mut row);
                    *o = crate::attention::dot(query, &row);
                }
            }
            RowCodec::E8 { codec, .. } => {
                let n = out.len();
                codec.dot_rows(query, &codes[..n * self.bytes_per_row()], &scales[..n], out)?;
            }
        }
        Ok(())
    }

    /// `acc += sum_n weights[n] * row n`.
    pub(crate) fn axpy(
        &self,
        weights: &[f32],
        codes: &[u8],
        scales: &[f16],
        acc: &mut [f32],
    ) -> Result<()> {
        match self {
            RowCodec::F16 { dim } => {
                let mut row = vec![0f32; *dim];
                for (&w, c) in weights.iter().zip(codes.chunks_exact(dim * 2)) {
                    f16_le_to_f32(c, &mut row);
                    for (a, r) in acc.iter_mut().zip(&row) {
                        *a += w * r;
                    }
                }
            }
            RowCodec::E8 { codec, .. } => {
                let n = weights.len();
                codec.axpy_rows(weights, &codes[..n * self.bytes_per_row()], &scales[..n], acc)?;
            }
        }
        Ok(())
    }
}

/// Convert f16 rows to f32 into `dst`, resized to fit ([`nq_lattice::widen_f16`]).
pub(crate) fn widen(src: &[f16], dst: &mut Vec<f32>) -> Result<()> {
    dst.clear();
    dst.resize(src.len(), 0.0);
    Ok(nq_lattice::widen_f16(src, dst)?)
}

/// Little-endian f16 bytes to f32 values (`out.len()` of them), as the F16 storage holds rows.
fn f16_le_to_f32(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}
