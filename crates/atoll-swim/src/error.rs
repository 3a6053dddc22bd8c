/// Why an identity cannot be used for membership.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// Every member needs a name.
    #[error("a member needs a non-empty name")]
    EmptyName,
    /// A name, role or capability is longer than the limit.
    #[error("label {0:?} is longer than {1} bytes")]
    LabelTooLong(String, usize),
    /// Too many roles and capabilities.
    #[error("more than {0} roles and capabilities")]
    TooManyLabels(usize),
}

/// Why a membership datagram was refused. Refused datagrams are counted and dropped; none of
/// these ever stops the node.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    /// The datagram is shorter than the envelope or longer than the limit.
    #[error("datagram of {0} bytes is outside the accepted size")]
    BadSize(usize),
    /// The envelope names a version or kind this node does not speak.
    #[error("unknown envelope version {0} or kind {1}")]
    UnknownEnvelope(u8, u8),
    /// The bytes do not decode.
    #[error("malformed membership packet")]
    Malformed,
    /// The packet claims to come from a node other than the authenticated sender.
    #[error("packet claims to come from another node than its connection")]
    ForgedSender,
    /// The packet is addressed to another node.
    #[error("packet addressed to another node")]
    NotForUs,
    /// The sender's generation was superseded or declared down.
    #[error("sender generation is fenced")]
    Fenced,
}
