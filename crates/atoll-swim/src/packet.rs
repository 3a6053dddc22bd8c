//! The membership datagram: `[version][kind][load summary][foca packet]`, and the split of a
//! foca packet into its header and updates so that the updates can be checked before foca
//! sees them.

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member, PostcardCodec};
use serde::{Deserialize, Serialize};

use atoll_core::NodeId;

use crate::error::PacketError;
use crate::identity::Identity;

const VERSION: u8 = 2;
const KIND_FOCA: u8 = 0;
/// Smallest possible datagram: version, kind, an empty load, one header byte.
const MIN_LEN: usize = 4;
/// Updates kept per packet; a packet under the datagram limit holds far fewer.
const MAX_UPDATES: usize = 256;

/// A small summary of how busy a member is, sent by the member itself with every membership
/// packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// Live processes on the node.
    pub processes: u32,
}

/// What every packet says about its sender, on the sender's own connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Status {
    pub load: Load,
    /// Whether the sender holds the receiver's generation down, and how many members agree
    /// to its knowledge. Settles which side of a healed partition rejoins.
    pub verdict: Option<Agreement>,
}

/// How many members hold one generation down, to one node's knowledge: itself and those
/// whose gossip said so (generations still live), out of every member it knows (itself
/// included, not those that left); and the node's side when it declared it down: itself and
/// the members it had held active, never doubting them longer than a probe interval, for a
/// suspect timeout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Agreement {
    pub holders: u32,
    pub known: u32,
    pub side: u32,
}

impl Agreement {
    /// The verdict stands: a strict majority of the members known holds it down, or it was
    /// made from a side that was a strict majority.
    pub fn quorum(self) -> bool {
        let majority = |n: u32| 2 * u64::from(n) > u64::from(self.known);
        majority(self.holders) || majority(self.side)
    }

    /// In a dispute where two members hold each other down and neither verdict has a
    /// majority, whether the one whose verdict is `self` gives way to the other (node `them`,
    /// verdict `theirs`): the verdict with fewer holders gives way, then the one made from
    /// the smaller side, then that of the larger node id. Each side computes the same answer
    /// from the other's figures, so exactly one gives way.
    pub fn gives_way_to(self, theirs: Agreement, me: NodeId, them: NodeId) -> bool {
        theirs.quorum() || (theirs.holders, theirs.side, me) > (self.holders, self.side, them)
    }
}

/// Wraps a foca packet for the wire.
pub(crate) fn seal(status: &Status, foca_packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(foca_packet.len() + 12);
    out.push(VERSION);
    out.push(KIND_FOCA);
    // Cannot fail: a Vec grows.
    out = postcard::to_extend(status, out).unwrap_or_default();
    out.extend_from_slice(foca_packet);
    out
}

/// Unwraps a datagram into the sender's status and the foca packet.
pub(crate) fn open(datagram: &[u8], max_len: usize) -> Result<(Status, &[u8]), PacketError> {
    if datagram.len() < MIN_LEN || datagram.len() > max_len {
        return Err(PacketError::BadSize(datagram.len()));
    }
    if datagram[0] != VERSION || datagram[1] != KIND_FOCA {
        return Err(PacketError::UnknownEnvelope(datagram[0], datagram[1]));
    }
    postcard::take_from_bytes::<Status>(&datagram[2..]).map_err(|_| PacketError::Malformed)
}

/// A foca packet taken apart.
#[derive(Debug, Clone)]
pub(crate) struct FocaPacket {
    pub header: Header<Identity>,
    pub updates: Vec<Member<Identity>>,
}

impl FocaPacket {
    /// Decodes header and updates (the layout foca writes: header, `u16` count, members).
    pub fn decode(mut data: &[u8]) -> Result<FocaPacket, PacketError> {
        let mut codec = PostcardCodec;
        let header = codec
            .decode_header(&mut data)
            .map_err(|_| PacketError::Malformed)?;
        let mut updates = Vec::new();
        if data.remaining() >= 2 && header.message != foca::Message::Broadcast {
            let count = usize::from(data.get_u16());
            if count > MAX_UPDATES {
                return Err(PacketError::Malformed);
            }
            updates.reserve(count.min(32));
            for _ in 0..count {
                updates.push(
                    codec
                        .decode_member(&mut data)
                        .map_err(|_| PacketError::Malformed)?,
                );
            }
        }
        if data.has_remaining() {
            // No custom broadcasts are in use; trailing bytes mean a malformed packet.
            return Err(PacketError::Malformed);
        }
        Ok(FocaPacket { header, updates })
    }

    /// Encodes in the layout foca reads.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let mut codec = PostcardCodec;
        // Encoding into a growing Vec cannot run out of room.
        let _ = codec.encode_header(&self.header, &mut out);
        if !self.updates.is_empty() {
            out.put_u16(self.updates.len() as u16);
            for m in &self.updates {
                let _ = codec.encode_member(m, &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::MemberMeta;
    use atoll_core::NodeId;
    use foca::{Message, State};

    fn ident(n: u8) -> Identity {
        Identity::new(
            NodeId::from_bytes([n; 16]),
            7,
            "127.0.0.1:4000".parse().unwrap(),
            MemberMeta::named(format!("n{n}")),
        )
        .unwrap()
    }

    #[test]
    fn envelope_and_packet_round_trip() {
        let p = FocaPacket {
            header: Header {
                src: ident(1),
                src_incarnation: 3,
                dst: ident(2),
                message: Message::Ping(9),
            },
            updates: vec![Member::new(ident(3), 1, State::Suspect)],
        };
        let status = Status {
            load: Load { processes: 12 },
            verdict: Some(Agreement {
                holders: 4,
                known: 5,
                side: 3,
            }),
        };
        let wire = seal(&status, &p.encode());
        let (st, body) = open(&wire, 2000).unwrap();
        assert_eq!(st, status);
        let back = FocaPacket::decode(body).unwrap();
        assert_eq!(back.header, p.header);
        assert_eq!(back.updates, p.updates);
    }

    #[test]
    fn a_majority_verdict_wins_then_more_holders_then_the_larger_side_then_the_smaller_id() {
        let (a, b) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
        let v = |holders, known, side| Agreement {
            holders,
            known,
            side,
        };
        assert!(v(3, 5, 1).quorum() && v(1, 5, 3).quorum());
        assert!(!v(2, 5, 2).quorum() && !v(2, 4, 2).quorum());
        // Against a majority, anything gives way.
        assert!(v(2, 5, 2).gives_way_to(v(3, 5, 2), b, a));
        assert!(v(2, 5, 2).gives_way_to(v(1, 5, 3), a, b));
        // Neither has one: more holders win, then the larger side, then the smaller id.
        assert!(v(1, 5, 2).gives_way_to(v(2, 5, 1), a, b));
        assert!(!v(2, 5, 1).gives_way_to(v(1, 5, 2), b, a));
        assert!(v(1, 6, 2).gives_way_to(v(1, 6, 3), a, b));
        assert!(!v(1, 6, 3).gives_way_to(v(1, 6, 2), b, a));
        assert!(v(2, 4, 2).gives_way_to(v(2, 4, 2), b, a));
        assert!(!v(2, 4, 2).gives_way_to(v(2, 4, 2), a, b));
    }

    #[test]
    fn bad_envelopes_are_typed_errors() {
        assert_eq!(open(&[1, 0], 2000), Err(PacketError::BadSize(2)));
        assert_eq!(
            open(&[9, 0, 0, 0, 0], 2000),
            Err(PacketError::UnknownEnvelope(9, 0))
        );
        // The first version carried no verdict: refused, not misread.
        assert_eq!(
            open(&[1, 0, 0, 0, 0], 2000),
            Err(PacketError::UnknownEnvelope(1, 0))
        );
        assert_eq!(open(&[2, 0, 0, 0, 0], 4), Err(PacketError::BadSize(5)));
        assert!(FocaPacket::decode(&[0xff; 40]).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = atoll_core::SplitMix64::new(11);
        let good = seal(
            &Status::default(),
            &FocaPacket {
                header: Header {
                    src: ident(1),
                    src_incarnation: 0,
                    dst: ident(2),
                    message: Message::Gossip,
                },
                updates: vec![Member::new(ident(4), 0, State::Alive); 3],
            }
            .encode(),
        );
        for _ in 0..20_000 {
            let mut bytes = good.clone();
            let flips = 1 + rng.next_u64() % 4;
            for _ in 0..flips {
                let i = (rng.next_u64() as usize) % bytes.len();
                bytes[i] = rng.next_u64() as u8;
            }
            let cut = (rng.next_u64() as usize) % (bytes.len() + 1);
            if let Ok((_, body)) = open(&bytes[..cut], 2000) {
                let _ = FocaPacket::decode(body);
            }
        }
    }
}
