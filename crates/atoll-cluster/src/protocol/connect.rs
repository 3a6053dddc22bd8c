//! Connection establishment decisions: whether a peer's introduction is accepted, and which
//! of two connections between the same pair of nodes survives.
//!
//! Both nodes may dial each other at once. Each side decides alone, with the same rule, so
//! both keep the same connection: of two live connections of one incarnation, the one
//! dialed by the smaller node id survives. A connection from a new incarnation of the peer
//! always replaces the old one (the old one's processes are gone).

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

/// One connection to a peer, as the duplicate rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// The node that dialed it.
    pub dialer: NodeId,
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
    /// The new connection wins over the other of two simultaneous ones to the same
    /// incarnation: close the existing one; links and monitors stand.
    ReplaceDuplicate,
    /// The existing connection is closed or to an older incarnation: close it and forget
    /// what the peer had (links and monitors across it break).
    ReplaceStale,
}

/// The duplicate rule, decided on the node `me` for a new connection to `peer`.
pub fn adopt(me: NodeId, peer: NodeId, existing: Option<Connection>, new: Connection) -> Adopt {
    let Some(existing) = existing else {
        return Adopt::Take;
    };
    if !(existing.alive && existing.creation == new.creation) {
        return Adopt::ReplaceStale;
    }
    if new.dialer == peer.min(me) && existing.dialer != new.dialer {
        Adopt::ReplaceDuplicate
    } else {
        Adopt::KeepExisting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeId {
        NodeId::from_bytes([b; 16])
    }

    fn conn(dialer: u8, creation: u32) -> Connection {
        Connection {
            dialer: node(dialer),
            creation,
            alive: true,
        }
    }

    #[test]
    fn both_sides_of_simultaneous_connects_keep_the_same_connection() {
        // Nodes 1 and 2 dial each other; each side sees both orders of arrival.
        for (first, second) in [(1, 2), (2, 1)] {
            let on_1 = adopt(node(1), node(2), Some(conn(first, 5)), conn(second, 5));
            let on_2 = adopt(node(2), node(1), Some(conn(first, 5)), conn(second, 5));
            assert_eq!(on_1, on_2);
            let survivor = if on_1 == Adopt::KeepExisting {
                first
            } else {
                second
            };
            assert_eq!(survivor, 1, "the smaller id's dial survives");
        }
    }

    #[test]
    fn a_new_incarnation_or_a_closed_connection_is_replaced() {
        assert_eq!(
            adopt(node(1), node(2), Some(conn(1, 5)), conn(2, 6)),
            Adopt::ReplaceStale
        );
        let closed = Connection {
            alive: false,
            ..conn(1, 5)
        };
        assert_eq!(
            adopt(node(1), node(2), Some(closed), conn(2, 5)),
            Adopt::ReplaceStale
        );
        assert_eq!(adopt(node(1), node(2), None, conn(2, 5)), Adopt::Take);
    }

    #[test]
    fn a_second_dial_the_same_way_does_not_replace_the_first() {
        assert_eq!(
            adopt(node(1), node(2), Some(conn(1, 5)), conn(1, 5)),
            Adopt::KeepExisting
        );
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
