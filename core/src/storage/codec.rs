//! The small binary layout shared by every role's log records: a tag byte, little-endian
//! integers, length-prefixed UTF-8 (keys with a u16 length, values with a u32 length).

use std::fmt;

/// Why a frame's payload (whose checksum was right) is not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The payload ended inside a field.
    Truncated,
    /// The first byte names no record.
    UnknownTag(u8),
    /// A key or value is not UTF-8.
    NotUtf8,
    /// Bytes follow the record.
    TrailingBytes,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated => f.write_str("record ends inside a field"),
            RecordError::UnknownTag(tag) => write!(f, "unknown record tag {tag}"),
            RecordError::NotUtf8 => f.write_str("key or value is not UTF-8"),
            RecordError::TrailingBytes => f.write_str("bytes after the record"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Reads a record's fields in order; every read fails cleanly at the end of the bytes.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over a whole payload.
    pub(crate) fn new(payload: &'a [u8]) -> Self {
        Self { rest: payload }
    }

    /// Whether every byte was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&[u8], RecordError> {
        if self.rest.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.bytes(1)?.first().copied().unwrap_or(0))
    }

    pub(crate) fn u16(&mut self) -> Result<u16, RecordError> {
        let mut le = [0u8; 2];
        le.copy_from_slice(self.bytes(2)?);
        Ok(u16::from_le_bytes(le))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, RecordError> {
        let mut le = [0u8; 4];
        le.copy_from_slice(self.bytes(4)?);
        Ok(u32::from_le_bytes(le))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, RecordError> {
        let mut le = [0u8; 8];
        le.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(le))
    }

    pub(crate) fn key(&mut self) -> Result<String, RecordError> {
        let len = self.u16()? as usize;
        self.text(len)
    }

    pub(crate) fn text(&mut self, len: usize) -> Result<String, RecordError> {
        let bytes = self.bytes(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::NotUtf8)
    }
}

/// Appends a key: its u16 length, then its bytes.
pub(crate) fn push_key(out: &mut Vec<u8>, key: &str) {
    let len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    assert!(len as usize == key.len(), "key too long for a record");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(key.as_bytes());
}

/// Appends a value: its u32 length, then its bytes.
pub(crate) fn push_text(out: &mut Vec<u8>, text: &str) {
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    assert!(len as usize == text.len(), "value too long for a record");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}
