//! Connection establishment decisions: whether a peer's introduction is accepted, and which
//! of two connections between the same pair of nodes survives.
//!
//! Both nodes may dial each other at once. One node of each pair, the smaller id, decides
//! which connection survives; the other uses a connection only after the decider kept it.
//! A connection from a new incarnation of the peer always replaces the old one (the old
//! one's processes are gone).

use atoll_core::NodeId;
use atoll_wire::Hello;

use crate::error::ConnectError;

/// What the transport proved about a connection, for checking the peer's introduction.
#[derive(Debug, Clone, Copy)]
pub struct Proven<'a> {
    /// The connection's TLS exporter secret, which the peer signs to prove its key.
    pub secret: &'a [u8; 32],
    /// The node id the peer's certificate names, if any.
    pub certificate_id: Option<NodeId>,
    /// Whether certificates name node ids (CA mode) and so must match the introduction.
    pub certificate_proves_id: bool,
}

/// Checks a peer's introduction on a connection to or from the node `me`: its key derives
/// to the id it claims, it signed this connection's secret with that key, and (in CA mode)
/// its certificate is for that id.
pub fn check_hello(me: NodeId, hello: &Hello, proven: Proven<'_>) -> Result<(), ConnectError> {
    let refuse = |why: &str| Err(ConnectError::Handshake(why.to_string()));
    let Ok(public_key) = <[u8; 32]>::try_from(hello.public_key.as_slice()) else {
        return refuse("public key is not 32 bytes");
    };
    let Ok(proof) = <[u8; 64]>::try_from(hello.proof.as_slice()) else {
        return refuse("proof is not 64 bytes");
    };
    if atoll_net::node_id_of(&public_key) != hello.node_id {
        return refuse("claimed node id does not derive from the public key");
    }
    if !atoll_net::verify(&public_key, proven.secret, &proof) {
        return refuse("proof of key possession does not verify");
    }
    if proven.certificate_proves_id && proven.certificate_id != Some(hello.node_id) {
        return refuse("certificate is for another node id");
    }
    if hello.node_id == me {
        return Err(ConnectError::ToItself);
    }
    Ok(())
}

/// Whether the node `me` decides which connection to `peer` survives: of each pair, the
/// smaller id does. The other node uses a connection only once the decider kept it (its
/// introduction answers a dial, a [`atoll_wire::Control::Kept`] confirms one it opened), so
/// nothing is ever sent on a connection one side is about to drop.
pub fn decides(me: NodeId, peer: NodeId) -> bool {
    me < peer
}

/// One connection to a peer, as the duplicate rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// The peer's incarnation on it.
    pub creation: u32,
    /// Not closed yet.
    pub alive: bool,
}

/// What to do with a freshly introduced connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopt {
    /// No other connection to the peer: take it.
    Take,
    /// The existing connection wins: close the new one as a duplicate.
    KeepExisting,
    /// The existing connection is closed, to an older incarnation, or (on the node that
    /// does not decide) one the decider has dropped: close it and forget what the peer had
    /// (links and monitors across it break, as messages on it may be lost).
    Replace,
}

/// The duplicate rule for a new connection, on a node that [`decides`] for its pair or
/// follows the decider. The decider keeps a live connection to the same incarnation; a
/// follower takes whatever the decider kept.
pub fn adopt(decides: bool, existing: Option<Connection>, new: Connection) -> Adopt {
    match existing {
        None => Adopt::Take,
        Some(e) if decides && e.alive && e.creation >= new.creation => Adopt::KeepExisting,
        Some(_) => Adopt::Replace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeId {
        NodeId::from_bytes([b; 16])
    }

    fn conn(creation: u32) -> Connection {
        Connection {
            creation,
            alive: true,
        }
    }

    #[test]
    fn the_smaller_id_decides_and_only_one_side_does() {
        assert!(decides(node(1), node(2)));
        assert!(!decides(node(2), node(1)));
    }

    #[test]
    fn the_decider_keeps_a_live_connection_and_the_follower_takes_the_kept_one() {
        // Simultaneous dials: whichever arrives second at the decider is closed; the
        // follower adopts only the one the decider kept, so it never holds the other.
        assert_eq!(adopt(true, Some(conn(5)), conn(5)), Adopt::KeepExisting);
        assert_eq!(adopt(false, None, conn(5)), Adopt::Take);
        // A kept connection replaces whatever the follower still holds: the decider has
        // dropped that one.
        assert_eq!(adopt(false, Some(conn(5)), conn(5)), Adopt::Replace);
    }

    #[test]
    fn a_new_incarnation_or_a_closed_connection_is_replaced() {
        assert_eq!(adopt(true, Some(conn(5)), conn(6)), Adopt::Replace);
        let closed = Connection {
            alive: false,
            ..conn(5)
        };
        assert_eq!(adopt(true, Some(closed), conn(5)), Adopt::Replace);
        assert_eq!(adopt(true, None, conn(5)), Adopt::Take);
    }

    #[test]
    fn introductions_are_checked() {
        let key = atoll_net::NodeIdentity::generate().unwrap();
        let secret = [7u8; 32];
        let hello = Hello {
            node_name: "n".into(),
            node_id: key.node_id(),
            creation: 1,
            listen: None,
            public_key: key.public_key().to_vec(),
            proof: key.sign(&secret).to_vec(),
        };
        let proven = Proven {
            secret: &secret,
            certificate_id: Some(key.node_id()),
            certificate_proves_id: true,
        };
        assert_eq!(check_hello(node(1), &hello, proven), Ok(()));
        assert_eq!(
            check_hello(key.node_id(), &hello, proven),
            Err(ConnectError::ToItself)
        );
        let other = Proven {
            secret: &[8u8; 32],
            ..proven
        };
        assert!(check_hello(node(1), &hello, other).is_err());
        let wrong_cert = Proven {
            certificate_id: Some(node(9)),
            ..proven
        };
        assert!(check_hello(node(1), &hello, wrong_cert).is_err());
        let mut forged = hello.clone();
        forged.node_id = node(3);
        assert!(check_hello(node(1), &forged, proven).is_err());
    }
}
