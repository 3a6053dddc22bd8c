//! The runtime's process table: shards of cells keyed by serial.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use crate::cell::ProcessCell;

/// Shards of the process table: spawns and lookups on different shards never contend.
pub(crate) const SHARDS: usize = 64;

/// One slice of the process table, keyed by serial.
pub(crate) type Shard = Mutex<HashMap<u64, Arc<dyn ProcessCell>, SerialHash>>;

/// Serials are sequential: a multiply spreads them well enough for the hash table.
pub(crate) type SerialHash = BuildHasherDefault<SerialHasher>;

#[derive(Default)]
pub(crate) struct SerialHasher(u64);

impl Hasher for SerialHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | *b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
