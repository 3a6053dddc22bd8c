//! Chain replication: an append-only, hash-linked log, copied to replicas by incremental
//! pull.
//!
//! Entry `n` carries the blake3 hash of entry `n - 1`, so two logs that agree on the hash
//! at some sequence agree on everything before it. A replica asks for what follows its
//! head ([`ChainSyncRequest`]), checks that every entry links onto its log, and appends
//! them; entries that do not link are a fork, reported ([`ChainError::Forked`]) and never
//! merged. [`detect_chain_fork`] compares two logs from their heads and a few hashes.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};

/// A blake3 hash.
pub type Hash = [u8; 32];

/// The `prev_hash` of the first entry, and the hash of the empty log.
pub const GENESIS: Hash = [0; 32];

/// Largest payload of one entry.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Largest encoded entry accepted (from disk or the network).
pub const MAX_ENTRY_BYTES: usize = MAX_PAYLOAD + 128;

/// Largest encoded [`ChainSyncResponse`] accepted.
pub const MAX_SYNC_BYTES: usize = 16 << 20;

/// One log entry.
///
/// ```
/// use atoll_data::{ChainEntry, GENESIS};
///
/// let first = ChainEntry::new(1, GENESIS, b"hello".to_vec());
/// let second = ChainEntry::new(2, first.hash, b"world".to_vec());
/// assert!(first.is_valid() && second.links_to(&first));
/// let bytes = second.encode();
/// assert_eq!(ChainEntry::decode(&bytes).unwrap(), second);
/// ```
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ChainEntry {
    /// Position in the log, from 1.
    pub sequence: u64,
    /// Hash of the previous entry ([`GENESIS`] for the first).
    pub prev_hash: Hash,
    /// The application's bytes.
    #[serde(with = "serde_bytes_compat")]
    pub payload: Vec<u8>,
    /// Hash of `sequence`, `prev_hash` and `payload`.
    pub hash: Hash,
}

/// Payload bytes as one length-prefixed byte string (not a sequence of small integers).
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                if v.len() > super::MAX_PAYLOAD {
                    return Err(E::custom("payload too large"));
                }
                Ok(v.to_vec())
            }
        }
        d.deserialize_bytes(V)
    }
}

impl ChainEntry {
    /// The entry at `sequence` after an entry whose hash is `prev_hash`.
    pub fn new(sequence: u64, prev_hash: Hash, payload: Vec<u8>) -> Self {
        let hash = Self::compute_hash(sequence, &prev_hash, &payload);
        ChainEntry {
            sequence,
            prev_hash,
            payload,
            hash,
        }
    }

    /// The hash an entry with these fields must carry.
    pub fn compute_hash(sequence: u64, prev_hash: &Hash, payload: &[u8]) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(b"atoll chain entry");
        h.update(&sequence.to_le_bytes());
        h.update(prev_hash);
        h.update(&(payload.len() as u64).to_le_bytes());
        h.update(payload);
        *h.finalize().as_bytes()
    }

    /// True if the hash matches the fields and the payload is within limits.
    pub fn is_valid(&self) -> bool {
        self.sequence > 0
            && self.payload.len() <= MAX_PAYLOAD
            && self.hash == Self::compute_hash(self.sequence, &self.prev_hash, &self.payload)
    }

    /// True if this entry directly follows `prev`.
    pub fn links_to(&self, prev: &ChainEntry) -> bool {
        self.sequence == prev.sequence + 1 && self.prev_hash == prev.hash
    }

    /// The entry in its versioned form (for disk and wire).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes an entry read from disk or received, checking its size before decoding
    /// and its hash after.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let e: ChainEntry = codec::decode(bytes, MAX_ENTRY_BYTES)?;
        if !e.is_valid() {
            return Err(DecodeError::Invalid(format!(
                "entry {} does not match its hash",
                e.sequence
            )));
        }
        Ok(e)
    }
}

/// The last entry of a log: its sequence (0 for an empty log) and hash ([`GENESIS`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ChainHead {
    /// Sequence of the last entry.
    pub sequence: u64,
    /// Its hash.
    pub hash: Hash,
}

impl ChainHead {
    /// The head of an empty log.
    pub const EMPTY: ChainHead = ChainHead {
        sequence: 0,
        hash: GENESIS,
    };
}

/// A replica's request for the entries after its head.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ChainSyncRequest {
    /// The replica's last sequence; it wants what follows.
    pub after_sequence: u64,
    /// The hash of that entry, so the source can tell a fork at once.
    pub after_hash: Hash,
    /// At most about this many bytes of entries.
    pub max_bytes: u32,
}

/// The answer to a [`ChainSyncRequest`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ChainSyncResponse {
    /// The source's head when it answered.
    pub head: ChainHead,
    /// The source's hash at the requested `after_sequence` (`None` if it has no such
    /// entry).
    pub hash_at_request: Option<Hash>,
    /// Entries from `after_sequence + 1`, in order.
    pub entries: Vec<ChainEntry>,
}

impl ChainSyncResponse {
    /// The response in its versioned wire form.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a response from the network, checking its size first and every entry's
    /// hash after.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let r: ChainSyncResponse = codec::decode(bytes, MAX_SYNC_BYTES)?;
        if let Some(e) = r.entries.iter().find(|e| !e.is_valid()) {
            return Err(DecodeError::Invalid(format!(
                "entry {} does not match its hash",
                e.sequence
            )));
        }
        Ok(r)
    }
}

/// How two logs relate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ForkStatus {
    /// Same head.
    InSync,
    /// The remote log extends ours: pull.
    LocalBehind {
        /// The remote head's sequence.
        remote: u64,
    },
    /// Our log extends the remote one: it should pull from us.
    RemoteBehind {
        /// The remote head's sequence.
        remote: u64,
    },
    /// The logs hold different entries at `sequence` (the first such one known).
    Forked {
        /// The first diverging sequence found.
        sequence: u64,
    },
}

/// Why a chain operation failed. A failed append or sync leaves the log unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The received log diverges from ours at `sequence`: a fork, not merged.
    #[error("fork at sequence {sequence}")]
    Forked {
        /// First sequence where the logs differ.
        sequence: u64,
    },
    /// An entry's hash does not match its fields.
    #[error("entry {sequence} does not match its hash")]
    BadHash {
        /// Its sequence.
        sequence: u64,
    },
    /// Entries are not consecutive or not linked.
    #[error("entry {sequence} does not follow the one before it")]
    BadLink {
        /// Its sequence.
        sequence: u64,
    },
    /// The response starts beyond our head.
    #[error("expected entry {expected}, got {got}")]
    Gap {
        /// What would follow our head.
        expected: u64,
        /// What came.
        got: u64,
    },
    /// A payload larger than [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes is too large")]
    PayloadTooLarge(usize),
    /// A view could not tell its hash at `sequence`.
    #[error("no hash known at sequence {sequence}")]
    MissingHash {
        /// The sequence asked.
        sequence: u64,
    },
    /// A stored entry did not decode.
    #[error("corrupt stored entry: {0}")]
    Corrupt(#[from] DecodeError),
    /// The storage failed.
    #[error("storage: {0}")]
    Store(String),
}

/// Read access to a log, local or what is known of a remote one.
pub trait ChainView {
    /// The last entry.
    fn head(&self) -> ChainHead;
    /// The hash of the entry at `sequence` (sequence 0: [`GENESIS`]), if known.
    fn hash_at(&self, sequence: u64) -> Result<Option<Hash>, ChainError>;
}

/// What is known of a remote log: its head and the hashes it told us.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RemoteChain {
    /// Its head.
    pub head: ChainHead,
    /// Hashes it reported, by sequence.
    pub known: std::collections::BTreeMap<u64, Hash>,
}

impl RemoteChain {
    /// What a sync response (to a request after `after_sequence`) tells of the source.
    pub fn from_response(after_sequence: u64, r: &ChainSyncResponse) -> Self {
        let mut known: std::collections::BTreeMap<u64, Hash> =
            r.entries.iter().map(|e| (e.sequence, e.hash)).collect();
        if let Some(h) = r.hash_at_request {
            known.insert(after_sequence, h);
        }
        known.insert(r.head.sequence, r.head.hash);
        RemoteChain {
            head: r.head,
            known,
        }
    }
}

impl ChainView for RemoteChain {
    fn head(&self) -> ChainHead {
        self.head
    }

    fn hash_at(&self, sequence: u64) -> Result<Option<Hash>, ChainError> {
        Ok(if sequence == 0 {
            Some(GENESIS)
        } else {
            self.known.get(&sequence).copied()
        })
    }
}

/// Compares two logs: in sync, one behind the other, or forked (and where).
///
/// Needs both hashes at the lower of the two heads; where both views know more, the first
/// diverging sequence is found by bisection (logs that agree at `n` agree before `n`).
///
/// ```
/// use atoll_data::{detect_chain_fork, Chain, ForkStatus, MemoryChainStore};
///
/// let mut a = Chain::new(MemoryChainStore::default());
/// a.append(b"one".to_vec()).unwrap();
/// let mut b = a.clone();
/// a.append(b"two".to_vec()).unwrap();
/// assert_eq!(detect_chain_fork(&b, &a).unwrap(), ForkStatus::LocalBehind { remote: 2 });
/// b.append(b"TWO".to_vec()).unwrap();
/// assert_eq!(detect_chain_fork(&b, &a).unwrap(), ForkStatus::Forked { sequence: 2 });
/// ```
pub fn detect_chain_fork(
    local: &impl ChainView,
    remote: &impl ChainView,
) -> Result<ForkStatus, ChainError> {
    let (lh, rh) = (local.head(), remote.head());
    let common = lh.sequence.min(rh.sequence);
    let at = |v: &dyn Fn(u64) -> Result<Option<Hash>, ChainError>, s: u64| {
        v(s)?.ok_or(ChainError::MissingHash { sequence: s })
    };
    let l = |s| local.hash_at(s);
    let r = |s| remote.hash_at(s);
    if at(&l, common)? == at(&r, common)? {
        return Ok(match lh.sequence.cmp(&rh.sequence) {
            std::cmp::Ordering::Equal => ForkStatus::InSync,
            std::cmp::Ordering::Less => ForkStatus::LocalBehind {
                remote: rh.sequence,
            },
            std::cmp::Ordering::Greater => ForkStatus::RemoteBehind {
                remote: rh.sequence,
            },
        });
    }
    // Agreement is monotone: find the first sequence where they differ, as far as both
    // views can tell.
    let (mut agree, mut differ) = (0u64, common);
    while differ - agree > 1 {
        let mid = agree + (differ - agree) / 2;
        match (local.hash_at(mid)?, remote.hash_at(mid)?) {
            (Some(a), Some(b)) if a == b => agree = mid,
            (Some(_), Some(_)) => differ = mid,
            _ => break,
        }
    }
    Ok(ForkStatus::Forked { sequence: differ })
}

/// Storage of a log. Implementations only store: [`Chain`] checks hashes and links
/// before it calls [`append`](ChainStore::append).
pub trait ChainStore {
    /// The last entry.
    fn head(&self) -> ChainHead;
    /// The entry at `sequence`.
    fn get(&self, sequence: u64) -> Result<Option<ChainEntry>, ChainError>;
    /// Entries after `after`, in order, up to about `max_bytes` of payload (at least one
    /// if any).
    fn range(&self, after: u64, max_bytes: usize) -> Result<Vec<ChainEntry>, ChainError>;
    /// Appends checked, consecutive entries that follow the head, all or none.
    fn append(&mut self, entries: &[ChainEntry]) -> Result<(), ChainError>;
}

/// A log kept in memory.
#[derive(Clone, Debug, Default)]
pub struct MemoryChainStore {
    entries: Vec<ChainEntry>,
}

impl ChainStore for MemoryChainStore {
    fn head(&self) -> ChainHead {
        self.entries.last().map_or(ChainHead::EMPTY, |e| ChainHead {
            sequence: e.sequence,
            hash: e.hash,
        })
    }

    fn get(&self, sequence: u64) -> Result<Option<ChainEntry>, ChainError> {
        let i = usize::try_from(sequence).unwrap_or(usize::MAX);
        Ok(i.checked_sub(1).and_then(|i| self.entries.get(i)).cloned())
    }

    fn range(&self, after: u64, max_bytes: usize) -> Result<Vec<ChainEntry>, ChainError> {
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        Ok(take_budget(
            self.entries[start..].iter().cloned(),
            max_bytes,
        ))
    }

    fn append(&mut self, entries: &[ChainEntry]) -> Result<(), ChainError> {
        self.entries.extend_from_slice(entries);
        Ok(())
    }
}

/// Takes entries while their payloads fit in `max_bytes` (always the first).
pub(crate) fn take_budget(
    entries: impl Iterator<Item = ChainEntry>,
    max_bytes: usize,
) -> Vec<ChainEntry> {
    let mut used = 0usize;
    let mut out = Vec::new();
    for e in entries {
        used = used.saturating_add(e.payload.len() + 80);
        if used > max_bytes && !out.is_empty() {
            break;
        }
        out.push(e);
    }
    out
}

/// A hash-linked log over a [`ChainStore`]: the source appends, replicas pull.
///
/// ```
/// use atoll_data::{Chain, ChainSyncResponse, ChainView, ForkStatus, MemoryChainStore};
///
/// let mut source = Chain::new(MemoryChainStore::default());
/// for i in 0..10u8 {
///     source.append(vec![i; 100]).unwrap();
/// }
/// let mut replica = Chain::new(MemoryChainStore::default());
/// loop {
///     // About 500 bytes per pull: several rounds.
///     let request = replica.sync_request(500);
///     let bytes = source.serve(&request).unwrap().encode();
///     let response = ChainSyncResponse::decode(&bytes).unwrap();
///     let outcome = replica.apply(request.after_sequence, &response).unwrap();
///     if outcome.status == ForkStatus::InSync {
///         break;
///     }
/// }
/// assert_eq!(replica.head(), source.head());
/// ```
#[derive(Clone, Debug)]
pub struct Chain<S> {
    store: S,
}

impl<S: ChainStore> ChainView for Chain<S> {
    fn head(&self) -> ChainHead {
        self.store.head()
    }

    fn hash_at(&self, sequence: u64) -> Result<Option<Hash>, ChainError> {
        if sequence == 0 {
            return Ok(Some(GENESIS));
        }
        Ok(self.store.get(sequence)?.map(|e| e.hash))
    }
}

/// What one sync response did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SyncOutcome {
    /// Entries appended.
    pub appended: usize,
    /// Where we stand against the source afterwards.
    pub status: ForkStatus,
}

impl<S: ChainStore> Chain<S> {
    /// A log over `store`.
    pub fn new(store: S) -> Self {
        Chain { store }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The entry at `sequence`.
    pub fn get(&self, sequence: u64) -> Result<Option<ChainEntry>, ChainError> {
        self.store.get(sequence)
    }

    /// Appends `payload` as the next entry.
    pub fn append(&mut self, payload: Vec<u8>) -> Result<ChainEntry, ChainError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(ChainError::PayloadTooLarge(payload.len()));
        }
        let head = self.store.head();
        let entry = ChainEntry::new(head.sequence + 1, head.hash, payload);
        self.store.append(std::slice::from_ref(&entry))?;
        Ok(entry)
    }

    /// The request for what follows our head, in at most about `max_bytes`.
    pub fn sync_request(&self, max_bytes: u32) -> ChainSyncRequest {
        let head = self.store.head();
        ChainSyncRequest {
            after_sequence: head.sequence,
            after_hash: head.hash,
            max_bytes,
        }
    }

    /// Answers a replica's request. When the replica has forked from us, no entries are
    /// sent: its `apply` then reports the fork.
    pub fn serve(&self, request: &ChainSyncRequest) -> Result<ChainSyncResponse, ChainError> {
        let hash_at_request = self.hash_at(request.after_sequence)?;
        let entries = if hash_at_request == Some(request.after_hash) {
            self.store
                .range(request.after_sequence, request.max_bytes as usize)?
        } else {
            Vec::new()
        };
        Ok(ChainSyncResponse {
            head: self.store.head(),
            hash_at_request,
            entries,
        })
    }

    /// Applies the answer to our [`sync_request`](Self::sync_request): appends what links
    /// onto our log. Entries we already hold are skipped if identical; anything that does
    /// not link is a fork, reported and not merged.
    pub fn apply(
        &mut self,
        after_sequence: u64,
        response: &ChainSyncResponse,
    ) -> Result<SyncOutcome, ChainError> {
        let remote = RemoteChain::from_response(after_sequence, response);
        let mut head = self.store.head();
        let mut fresh = Vec::new();
        for e in &response.entries {
            if !e.is_valid() {
                return Err(ChainError::BadHash {
                    sequence: e.sequence,
                });
            }
            if e.sequence <= head.sequence && fresh.is_empty() {
                if self.hash_at(e.sequence)? != Some(e.hash) {
                    return Err(ChainError::Forked {
                        sequence: e.sequence,
                    });
                }
                continue;
            }
            if e.sequence > head.sequence + 1 {
                return Err(ChainError::Gap {
                    expected: head.sequence + 1,
                    got: e.sequence,
                });
            }
            if e.sequence != head.sequence + 1 {
                return Err(ChainError::BadLink {
                    sequence: e.sequence,
                });
            }
            if e.prev_hash != head.hash {
                // Linked onto another history than ours.
                return Err(if head.sequence == 0 {
                    ChainError::BadLink {
                        sequence: e.sequence,
                    }
                } else {
                    ChainError::Forked {
                        sequence: head.sequence,
                    }
                });
            }
            head = ChainHead {
                sequence: e.sequence,
                hash: e.hash,
            };
            fresh.push(e.clone());
        }
        // Checked before anything is stored: a fork is reported, never merged.
        if let ForkStatus::Forked { sequence } = detect_chain_fork(self, &remote)? {
            return Err(ChainError::Forked { sequence });
        }
        self.store.append(&fresh)?;
        Ok(SyncOutcome {
            appended: fresh.len(),
            status: detect_chain_fork(self, &remote)?,
        })
    }
}
