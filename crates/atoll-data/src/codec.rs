//! The versioned envelope every wire and disk record of this crate travels in: one format
//! version byte, then postcard. Decoders check the size before decoding anything.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format version written by this build.
pub const FORMAT_VERSION: u8 = 1;

/// Why bytes from the network or the disk were refused. Nothing was changed by a refused
/// record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// More bytes than the record may have; refused before decoding.
    #[error("{len} bytes is more than the {max} accepted")]
    TooLarge {
        /// Bytes offered.
        len: usize,
        /// The most accepted.
        max: usize,
    },
    /// No bytes at all.
    #[error("empty record")]
    Empty,
    /// A format version this build does not read.
    #[error("unknown format version {0}")]
    Version(u8),
    /// The bytes are not a well-formed record.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// Bytes were left over after the record.
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    /// The record decoded but breaks a limit or an invariant.
    #[error("invalid record: {0}")]
    Invalid(String),
}

/// Encodes `value` in the versioned envelope.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let out = vec![FORMAT_VERSION];
    // Serializing into a Vec fails only for types postcard does not support (maps with
    // non-string keys are fine, unknown-length sequences are not); none are used here.
    postcard::to_extend(value, out).expect("every record type here is postcard-encodable")
}

/// Decodes a versioned record of at most `max` bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    // serde's sequence decoding preallocates at most a cautious, bounded capacity, and the
    // whole input is at most `max` bytes, so a forged length cannot make us allocate more
    // than a small multiple of the input.
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(value)
}

/// The encoded size of `value` without its envelope byte.
pub(crate) fn encoded_len<T: Serialize>(value: &T) -> usize {
    postcard::experimental::serialized_size(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let bytes = encode(&(7u32, "x".to_string()));
        assert_eq!(bytes.len(), 1 + encoded_len(&(7u32, "x".to_string())));
        assert_eq!(
            decode::<(u32, String)>(&bytes, 64).unwrap(),
            (7, "x".into())
        );
        assert!(matches!(
            decode::<(u32, String)>(&bytes, 2),
            Err(DecodeError::TooLarge { .. })
        ));
        assert_eq!(decode::<u32>(&[], 8), Err(DecodeError::Empty));
        assert_eq!(decode::<u32>(&[9, 1], 8), Err(DecodeError::Version(9)));
        assert_eq!(decode::<u8>(&[1, 1, 2], 8), Err(DecodeError::Trailing(1)));
        assert!(matches!(
            decode::<String>(&[1, 5, b'a'], 8),
            Err(DecodeError::Malformed(_))
        ));
    }
}
