//! atoll's wire format, pure and I/O-free.
//!
//! Every unit on the wire is a **frame**: a 4-byte big-endian length, then a version byte,
//! then the body. The length counts the version byte and the body, and is checked against
//! the receiver's configured maximum *before* anything is allocated for the body. Bodies
//! are postcard-encoded envelopes: [`Control`] on a peer's control stream, [`Data`] on its
//! message streams.
//!
//! ```
//! use atoll_wire::{Data, FrameDecoder, decode, encode_frame};
//! use atoll_core::{NodeId, Pid};
//!
//! let to = Pid::new(NodeId::from_bytes([1; 16]), 1, 7);
//! let frame = encode_frame(&Data::Send { to, payload: vec![1, 2, 3] }).unwrap();
//!
//! let mut decoder = FrameDecoder::new(1 << 20);
//! decoder.push(&frame);
//! let body = decoder.next_frame().unwrap().expect("a whole frame");
//! assert_eq!(decode::<Data>(&body).unwrap(), Data::Send { to, payload: vec![1, 2, 3] });
//! ```
#![deny(missing_docs)]

mod envelope;
mod frame;
mod in_place;
mod payload;

pub use atoll_core::{ExitKind, Signal};
pub use envelope::{Control, Data, DataRef, GroupMessage, LockWait};
pub use envelope::{
    Hello, ProcessInfoWire, RegistryDelta, RegistryGossip, RegistryView, RemoteError, Request,
    Response, StatusWire,
};
pub use frame::{
    DecodeError, EncodeError, FrameDecoder, FrameError, HEADER_LEN, SHARED_FRAME_MIN, WIRE_VERSION,
    decode, decode_ref, encode_frame, encode_frame_in, encode_frame_sized, parse_header,
};
pub use in_place::{DATA_HEAD_ROOM, DataHead, finish_data_frame};
pub use payload::Payload;
