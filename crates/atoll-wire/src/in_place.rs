//! Data frames whose payload is encoded straight into the frame's buffer: a message is then
//! written once, instead of encoded into a buffer of its own and copied into its frame.

use atoll_core::Pid;

use crate::frame::{EncodeError, HEADER_LEN, WIRE_VERSION};

/// Room kept ahead of a payload encoded in place ([`finish_data_frame`]): the frame header,
/// the envelope's fields before the payload and the payload's length, at their largest.
pub const DATA_HEAD_ROOM: usize = 64;

/// The position of [`crate::Data::Send`] among `Data`'s variants, as postcard writes it.
const SEND_VARIANT: u32 = 0;
/// The position of [`crate::Data::Reply`].
const REPLY_VARIANT: u32 = 2;

/// The fields of a [`crate::Data`] envelope that come before its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataHead {
    /// [`crate::Data::Send`] to this process.
    Send {
        /// The receiving process.
        to: Pid,
    },
    /// [`crate::Data::Reply`] to this pending call.
    Reply {
        /// The call.
        call: u64,
    },
}

/// Completes a frame whose payload was encoded in place: `buf` holds [`DATA_HEAD_ROOM`]
/// bytes of any content, then the payload. Writes the frame header, the envelope's fields
/// and the payload's length just ahead of the payload, and returns where the frame starts:
/// `buf[start..]` is the frame [`crate::encode_frame`] makes of the same envelope.
///
/// ```
/// use atoll_core::{NodeId, Pid};
/// use atoll_wire::{DATA_HEAD_ROOM, Data, DataHead, encode_frame, finish_data_frame};
///
/// let to = Pid::new(NodeId::from_bytes([7; 16]), 1, 42);
/// let mut buf = vec![0; DATA_HEAD_ROOM];
/// buf.extend_from_slice(b"hello");
/// let start = finish_data_frame(DataHead::Send { to }, &mut buf).unwrap();
/// let whole = encode_frame(&Data::Send { to, payload: b"hello".to_vec() }).unwrap();
/// assert_eq!(&buf[start..], &whole[..]);
/// ```
pub fn finish_data_frame(head: DataHead, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let payload_len = buf
        .len()
        .checked_sub(DATA_HEAD_ROOM)
        .ok_or_else(|| EncodeError("no room ahead of the payload".into()))?;
    let mut head_bytes = [0u8; DATA_HEAD_ROOM];
    // A derived enum variant is its index, then its fields; a byte string's length comes
    // before its bytes. All as varints, as postcard writes them.
    let fields = &mut head_bytes[HEADER_LEN..];
    let fields = match head {
        DataHead::Send { to } => postcard::to_slice(&(SEND_VARIANT, to, payload_len), fields),
        DataHead::Reply { call } => postcard::to_slice(&(REPLY_VARIANT, call, payload_len), fields),
    }
    .map_err(|e| EncodeError(e.to_string()))?
    .len();
    let head_len = HEADER_LEN + fields;
    let start = DATA_HEAD_ROOM - head_len;
    // The header's length counts the version byte and the body.
    let len =
        u32::try_from(buf.len() - start - 4).map_err(|_| EncodeError("frame over 4 GiB".into()))?;
    head_bytes[..4].copy_from_slice(&len.to_be_bytes());
    head_bytes[4] = WIRE_VERSION;
    buf[start..DATA_HEAD_ROOM].copy_from_slice(&head_bytes[..head_len]);
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Data, encode_frame};
    use atoll_core::NodeId;

    fn in_place(head: DataHead, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0xAA; DATA_HEAD_ROOM];
        buf.extend_from_slice(payload);
        let start = finish_data_frame(head, &mut buf).unwrap();
        buf.split_off(start)
    }

    #[test]
    fn frames_finished_in_place_are_the_frames_of_the_whole_envelope() {
        let pids = [
            Pid::new(NodeId::from_bytes([0; 16]), 0, 0),
            Pid::new(NodeId::from_bytes([0xFF; 16]), u32::MAX, u64::MAX),
            Pid::new(NodeId::from_bytes([3; 16]), 70_000, 1 << 40),
        ];
        for len in [0, 1, 127, 128, 16_383, 16_384, 70_000, 2_100_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let sends = pids.map(|to| {
                let whole = Data::Send {
                    to,
                    payload: payload.clone(),
                };
                (DataHead::Send { to }, whole)
            });
            let replies = [0, 1, 300, u64::MAX].map(|call| {
                let whole = Data::Reply {
                    call,
                    payload: payload.clone(),
                };
                (DataHead::Reply { call }, whole)
            });
            for (head, whole) in sends.into_iter().chain(replies) {
                assert_eq!(in_place(head, &payload), encode_frame(&whole).unwrap());
            }
        }
    }

    #[test]
    fn a_buffer_without_room_ahead_is_refused() {
        let mut buf = vec![0; DATA_HEAD_ROOM - 1];
        assert!(finish_data_frame(DataHead::Reply { call: 1 }, &mut buf).is_err());
    }
}
