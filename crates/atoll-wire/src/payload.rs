//! [`Payload`]: bytes a message carries that a receiving node hands over without copying.
//!
//! A large frame is kept whole in a shared buffer when it arrives, and while its message is
//! decoded that buffer is this thread's *received frame*: a `Payload` decoded from inside
//! it becomes a view of it (a reference count, no copy), as a large binary stays one shared
//! block when an Erlang process receives it. Elsewhere (small frames, other formats) a
//! `Payload` is an ordinary copy.

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

thread_local! {
    /// The large frame whose message this thread is decoding, if any.
    static RECEIVED_FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `f` with `frame` as this thread's received frame: payloads decoded inside `f` from
/// bytes within `frame` share it instead of copying.
pub(crate) fn with_received_frame<T>(frame: &Bytes, f: impl FnOnce() -> T) -> T {
    let previous = RECEIVED_FRAME.with(|r| r.replace(Some(frame.clone())));
    // Restored even if `f` unwinds, so no later decode sees a stale frame.
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            RECEIVED_FRAME.with(|r| *r.borrow_mut() = previous);
        }
    }
    let _restore = Restore(previous);
    f()
}

/// `bytes` as a view of the received frame if they lie inside it, else a copy.
fn share_or_copy(bytes: &[u8]) -> Bytes {
    RECEIVED_FRAME.with(|r| {
        let frame = r.borrow();
        match frame.as_ref() {
            Some(f) if contains(f, bytes) => f.slice_ref(bytes),
            _ => Bytes::copy_from_slice(bytes),
        }
    })
}

fn contains(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr_range(), inner.as_ptr_range());
    !inner.is_empty() && o.start <= i.start && i.end <= o.end
}

/// Bytes carried by a message, encoded as one block, shared rather than copied where the
/// runtime can: cloning one is a reference count, and a large one received from another
/// node is a view of the frame it arrived in.
///
/// ```
/// use atoll_wire::Payload;
///
/// let p = Payload::from(vec![1, 2, 3]);
/// let encoded = postcard::to_allocvec(&p).unwrap();
/// let back: Payload = postcard::from_bytes(&encoded).unwrap();
/// assert_eq!(back, p);
/// assert_eq!(&back[..], &[1, 2, 3]);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Payload(pub Bytes);

impl Payload {
    /// The bytes as a `Bytes` handle (a reference count, no copy).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(Bytes::from(v))
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Payload(b)
    }
}

impl From<&'static [u8]> for Payload {
    fn from(b: &'static [u8]) -> Self {
        Payload(Bytes::from_static(b))
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(PayloadVisitor)
    }
}

struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Payload;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Payload, E> {
        Ok(Payload(share_or_copy(v)))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Payload, E> {
        Ok(Payload(Bytes::copy_from_slice(v)))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
        Ok(Payload(Bytes::from(v)))
    }

    /// Formats without byte strings (JSON) write a sequence of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        Ok(Payload(Bytes::from(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_inside_the_received_frame_shares_it() {
        let inner = vec![7u8; 1000];
        let frame = Bytes::from(postcard::to_allocvec(&Payload::from(inner.clone())).unwrap());
        let p: Payload = with_received_frame(&frame, || postcard::from_bytes(&frame).unwrap());
        assert_eq!(&p[..], &inner[..]);
        assert!(contains(&frame, &p), "decoded as a view of the frame");

        // Outside the frame's scope, or from other bytes, it is a copy.
        let copy: Payload = postcard::from_bytes(&frame).unwrap();
        assert_eq!(copy, p);
        assert!(!contains(&frame, &copy));
        let other = frame.to_vec();
        let copy: Payload = with_received_frame(&frame, || postcard::from_bytes(&other).unwrap());
        assert!(!contains(&frame, &copy));
    }

    #[test]
    fn the_received_frame_is_restored_after_nesting_and_unwinding() {
        let a = Bytes::from(vec![1u8; 8]);
        let b = Bytes::from(vec![2u8; 8]);
        with_received_frame(&a, || {
            with_received_frame(&b, || {});
            assert_eq!(share_or_copy(&a[..4]).as_ptr(), a.as_ptr());
        });
        let _ = std::panic::catch_unwind(|| with_received_frame(&a, || panic!("decoder bug")));
        assert_ne!(share_or_copy(&a[..4]).as_ptr(), a.as_ptr());
    }

    #[test]
    fn json_round_trips_a_payload() {
        let p = Payload::from(vec![1, 2, 255]);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Payload>(&json).unwrap(), p);
    }
}
