//! Reading GGUF files: header check, typed metadata getters, tensors.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_core::quantized::{QTensor, gguf_file};

use crate::{Error, Result};

/// An open GGUF file: its parsed header and a reader for tensor data.
pub struct GgufFile {
    path: PathBuf,
    content: gguf_file::Content,
    reader: BufReader<File>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("tensors", &self.content.tensor_infos.len())
            .field("metadata", &self.content.metadata.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens `path`, checks the `GGUF` magic and parses the header and tensor table.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::NotGguf`] when the magic is wrong
    /// or the header is corrupt.
    pub fn open(path: &Path) -> Result<Self> {
        const OP: &str = "GgufFile::open";
        let io = |source| Error::Io { op: OP, path: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(io)?;
        let mut magic = [0u8; 4];
        if let Err(e) = file.read_exact(&mut magic) {
            return Err(Error::NotGguf {
                op: OP,
                path: path.to_path_buf(),
                reason: format!("cannot read the 4-byte magic: {e}"),
            });
        }
        if &magic != b"GGUF" {
            return Err(Error::NotGguf {
                op: OP,
                path: path.to_path_buf(),
                reason: format!("magic is {magic:02x?}, expected \"GGUF\""),
            });
        }
        let mut reader = BufReader::new(File::open(path).map_err(io)?);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| Error::NotGguf {
            op: OP,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self { path: path.to_path_buf(), content, reader })
    }

    /// The file path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header (metadata and tensor table).
    #[must_use]
    pub fn content(&self) -> &gguf_file::Content {
        &self.content
    }

    /// The metadata value under `key`, if any.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&gguf_file::Value> {
        self.content.metadata.get(key)
    }

    /// True when the tensor table has `name`.
    #[must_use]
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Reads tensor `name` onto `device`.
    ///
    /// # Errors
    /// [`Error::Tensor`] when the tensor is absent or its data cannot be read.
    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.has_tensor(name) {
            return Err(Error::Tensor {
                op: "GgufFile::tensor",
                name: name.to_string(),
                reason: "not in the file".to_string(),
            });
        }
        self.content.tensor(&mut self.reader, name, device).map_err(|e| Error::Tensor {
            op: "GgufFile::tensor",
            name: name.to_string(),
            reason: e.to_string(),
        })
    }
}

/// Typed metadata getters over a GGUF metadata map.
pub(crate) struct Meta<'a> {
    pub(crate) md: &'a std::collections::HashMap<String, gguf_file::Value>,
    pub(crate) op: &'static str,
}

impl Meta<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Metadata { op: self.op, key: key.to_string(), reason: reason.into() }
    }

    pub(crate) fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        use gguf_file::Value as V;
        let Some(v) = self.md.get(key) else {
            return Ok(None);
        };
        let signed = |x: i64| u64::try_from(x).map_err(|_| self.err(key, format!("negative {x}")));
        Ok(Some(match v {
            V::U8(x) => u64::from(*x),
            V::U16(x) => u64::from(*x),
            V::U32(x) => u64::from(*x),
            V::U64(x) => *x,
            V::I8(x) => signed(i64::from(*x))?,
            V::I16(x) => signed(i64::from(*x))?,
            V::I32(x) => signed(i64::from(*x))?,
            V::I64(x) => signed(*x)?,
            other => return Err(self.err(key, format!("expected an integer, found {other:?}"))),
        }))
    }

    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.opt_u64(key)?
            .map(|x| usize::try_from(x).map_err(|_| self.err(key, format!("{x} overflows usize"))))
            .transpose()
    }

    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.err(key, "missing"))
    }

    pub(crate) fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.opt_u64(key)?
            .map(|x| u32::try_from(x).map_err(|_| self.err(key, format!("{x} overflows u32"))))
            .transpose()
    }

    #[allow(clippy::cast_possible_truncation)]
    pub(crate) fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        use gguf_file::Value as V;
        Ok(match self.md.get(key) {
            None => None,
            Some(V::F32(x)) => Some(*x),
            Some(V::F64(x)) => Some(*x as f32),
            Some(other) => return Err(self.err(key, format!("expected a float, found {other:?}"))),
        })
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(gguf_file::Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.err(key, format!("expected a bool, found {other:?}"))),
        }
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(gguf_file::Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(self.err(key, format!("expected a string, found {other:?}"))),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Result<&str> {
        self.opt_str(key)?.ok_or_else(|| self.err(key, "missing"))
    }

    pub(crate) fn array(&self, key: &str) -> Result<&[gguf_file::Value]> {
        match self.md.get(key) {
            None => Err(self.err(key, "missing")),
            Some(gguf_file::Value::Array(a)) => Ok(a.as_slice()),
            Some(other) => Err(self.err(key, format!("expected an array, found {other:?}"))),
        }
    }

    pub(crate) fn string_array(&self, key: &str) -> Result<Vec<&str>> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                gguf_file::Value::String(s) => Ok(s.as_str()),
                other => Err(self.err(key, format!("element {i} is {other:?}, not a string"))),
            })
            .collect()
    }
}
