use bytes::{Buf, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::payload::with_received_frame;

/// The wire version this build speaks.
pub const WIRE_VERSION: u8 = 3;

/// Bytes before a frame's body: the 4-byte length and the version byte.
pub const HEADER_LEN: usize = 5;

/// A frame that cannot be accepted. The stream it came from should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The announced length exceeds the configured maximum; nothing was allocated.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The announced length cannot even hold the version byte.
    #[error("empty frame")]
    Empty,
    /// The frame is of a version this build does not speak.
    #[error("unsupported wire version {0} (this build speaks {WIRE_VERSION})")]
    UnsupportedVersion(u8),
}

/// A body that does not decode as the expected envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed envelope: {0}")]
pub struct DecodeError(pub String);

/// An envelope that could not be encoded (a user payload's serializer failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode: {0}")]
pub struct EncodeError(pub String);

/// Encodes `envelope` as one whole frame: header, version and body.
pub fn encode_frame<T: Serialize>(envelope: &T) -> Result<Vec<u8>, EncodeError> {
    // Room for a typical small envelope up front, so encoding rarely reallocates.
    encode_frame_sized(envelope, 128)
}

/// Encodes `envelope` as one whole frame into a buffer of `capacity` bytes to start with:
/// an envelope carrying a large payload is then written without growing (and copying) its
/// buffer on the way.
pub fn encode_frame_sized<T: Serialize>(
    envelope: &T,
    capacity: usize,
) -> Result<Vec<u8>, EncodeError> {
    encode_frame_in(envelope, Vec::with_capacity(capacity))
}

/// Encodes `envelope` as one whole frame into `buf`, replacing what it held but keeping
/// its allocation (a sender can reuse one buffer for its large frames).
pub fn encode_frame_in<T: Serialize>(envelope: &T, buf: Vec<u8>) -> Result<Vec<u8>, EncodeError> {
    let mut out = buf;
    out.clear();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    out = postcard::to_extend(envelope, out).map_err(|e| EncodeError(e.to_string()))?;
    let len = u32::try_from(out.len() - 4).map_err(|_| EncodeError("frame over 4 GiB".into()))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out[4] = WIRE_VERSION;
    Ok(out)
}

/// Reads a frame header: returns the body length once the length and version are accepted.
pub fn parse_header(header: &[u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if header[4] != WIRE_VERSION {
        return Err(FrameError::UnsupportedVersion(header[4]));
    }
    Ok(len - 1)
}

/// Decodes an envelope from a frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    postcard::from_bytes(body).map_err(|e| DecodeError(e.to_string()))
}

/// Decodes an envelope that borrows from the frame body.
pub fn decode_ref<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    postcard::from_bytes(body).map_err(|e| DecodeError(e.to_string()))
}

/// Frames at least this long (header included) are kept whole in a buffer of their own
/// that payloads decoded from them share (see [`Payload`](crate::Payload)); smaller ones are
/// decoded in place and copied where kept.
pub const SHARED_FRAME_MIN: usize = 64 * 1024;

/// Splits a byte stream into frame bodies.
///
/// Feed it bytes as they arrive; it yields whole bodies and refuses a frame as soon as its
/// header is seen to be unacceptable, before buffering its body.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    /// Received bytes not yet returned as frames. A large frame is split off it and shared;
    /// once every view of that frame is dropped, the next push takes the allocation back.
    buf: BytesMut,
}

impl FrameDecoder {
    /// A decoder accepting frames up to `max` bytes (version byte plus body).
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            max,
            buf: BytesMut::new(),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Hands the next whole frame body to `f` without copying it; `None` if more bytes are
    /// needed. While `f` runs on a frame of [`SHARED_FRAME_MIN`] bytes or more, payloads
    /// decoded from it share its buffer.
    pub fn next_frame_with<T>(
        &mut self,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, FrameError> {
        let Some(header) = self.buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let body_len = parse_header(header, self.max)?;
        let frame_len = HEADER_LEN + body_len;
        if self.buf.len() < frame_len {
            // The length was checked against the maximum: make room for the whole frame
            // once, rather than growing the buffer piece by piece as a large one arrives.
            self.buf.reserve(frame_len - self.buf.len());
            return Ok(None);
        }
        if frame_len >= SHARED_FRAME_MIN {
            let frame = self.buf.split_to(frame_len).freeze();
            return Ok(Some(with_received_frame(
                &frame,
                || f(&frame[HEADER_LEN..]),
            )));
        }
        let out = f(&self.buf[HEADER_LEN..frame_len]);
        self.buf.advance(frame_len);
        Ok(Some(out))
    }

    /// The next whole frame body, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        self.next_frame_with(<[u8]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_frames_are_refused_from_the_header_alone() {
        let mut d = FrameDecoder::new(16);
        d.push(&[0, 0, 1, 0, WIRE_VERSION]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 256, max: 16 })
        );
    }

    #[test]
    fn empty_and_unknown_version_frames_are_refused() {
        assert_eq!(parse_header(&[0, 0, 0, 0, 1], 16), Err(FrameError::Empty));
        assert_eq!(
            parse_header(&[0, 0, 0, 2, 9], 16),
            Err(FrameError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn frames_split_across_pushes_are_reassembled() {
        let frame = encode_frame(&(7u32, "hello".to_string())).unwrap();
        let mut d = FrameDecoder::new(1024);
        for b in &frame {
            assert_eq!(d.next_frame(), Ok(None));
            d.push(std::slice::from_ref(b));
        }
        let body = d.next_frame().unwrap().unwrap();
        assert_eq!(
            decode::<(u32, String)>(&body).unwrap(),
            (7, "hello".to_string())
        );
        assert_eq!(d.buffered(), 0);
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;
    use crate::Payload;

    #[test]
    fn a_large_frame_is_shared_by_its_payload_which_outlives_the_decoder() {
        let big = Payload::from(vec![9u8; SHARED_FRAME_MIN]);
        let frame = encode_frame(&(1u8, big.clone())).unwrap();
        let mut d = FrameDecoder::new(1 << 20);
        let mut frames = frame.clone();
        frames.extend_from_slice(&encode_frame(&(2u8, Payload::from(vec![1, 2]))).unwrap());
        for chunk in frames.chunks(1200) {
            d.push(chunk);
        }
        let mut base = std::ptr::null();
        let (tag, p) = d
            .next_frame_with(|body| {
                base = body.as_ptr();
                decode_ref::<(u8, Payload)>(body).unwrap()
            })
            .unwrap()
            .unwrap();
        assert_eq!((tag, &p), (1, &big));
        assert!(base <= p.as_ptr() && p.as_ptr() < base.wrapping_add(frame.len()));
        // The small frame behind it is decoded as usual, and its payload copied.
        let (tag, small) = d
            .next_frame_with(|body| decode_ref::<(u8, Payload)>(body).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!((tag, &small[..]), (2, &[1u8, 2][..]));
        assert_eq!(d.buffered(), 0);
        // The payload outlives the decoder's use of the frame.
        drop(d);
        assert_eq!(p, big);
    }
}
