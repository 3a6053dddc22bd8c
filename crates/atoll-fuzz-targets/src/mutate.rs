//! Seeded byte mutations, in the manner of libFuzzer's without its coverage feedback: flip
//! bits, set interesting bytes and varints, insert, delete, duplicate, truncate, splice.

use atoll_core::SplitMix64;

/// The longest input a mutation makes.
pub const MAX_LEN: usize = 4096;

/// Bytes that sit on the edges of lengths, tags and varints.
const INTERESTING: [u8; 8] = [0x00, 0x01, 0x02, 0x10, 0x7f, 0x80, 0xfe, 0xff];

/// Makes inputs from a pool of valid ones; the same seed makes the same inputs.
#[derive(Debug, Clone)]
pub struct Mutator {
    rng: SplitMix64,
}

impl Mutator {
    /// A mutator seeded with `seed`.
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            rng: SplitMix64::new(seed),
        }
    }

    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    /// The next input: one in sixteen is random bytes, the rest a pool member with one to
    /// four mutations stacked.
    pub fn next_input(&mut self, pool: &[Vec<u8>]) -> Vec<u8> {
        if pool.is_empty() || self.below(16) == 0 {
            let len = self.below(64);
            return (0..len).map(|_| self.rng.next_u64() as u8).collect();
        }
        let mut input = pool[self.below(pool.len())].clone();
        for _ in 0..1 + self.below(4) {
            self.mutate(&mut input, pool);
        }
        input.truncate(MAX_LEN);
        input
    }

    /// Applies one mutation to `input` (`pool` supplies splices).
    pub fn mutate(&mut self, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
        let len = input.len();
        match self.below(9) {
            // Flip a bit.
            0 if len > 0 => {
                let at = self.below(len);
                input[at] ^= 1 << self.below(8);
            }
            // An interesting byte.
            1 if len > 0 => {
                let at = self.below(len);
                input[at] = INTERESTING[self.below(INTERESTING.len())];
            }
            // A random byte.
            2 if len > 0 => {
                let at = self.below(len);
                input[at] = self.rng.next_u64() as u8;
            }
            // Insert random bytes.
            3 => {
                let at = self.below(len + 1);
                let n = 1 + self.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
                input.splice(at..at, bytes);
            }
            // Delete a range.
            4 if len > 0 => {
                let at = self.below(len);
                let n = 1 + self.below((len - at).min(16));
                input.drain(at..at + n);
            }
            // Duplicate a range in place.
            5 if len > 0 => {
                let at = self.below(len);
                let n = 1 + self.below((len - at).min(32));
                let copy = input[at..at + n].to_vec();
                input.splice(at..at, copy);
            }
            // Truncate.
            6 if len > 0 => input.truncate(self.below(len)),
            // Overwrite with a LEB128 varint (postcard's lengths and tags), often a huge one.
            7 if len > 0 => {
                let at = self.below(len);
                let value = match self.below(3) {
                    0 => self.below(300) as u64,
                    1 => u64::MAX >> self.below(64),
                    _ => self.rng.next_u64(),
                };
                let varint = leb128(value);
                let end = (at + varint.len()).min(len);
                input.splice(at..end, varint);
            }
            // Splice: our head, another pool member's tail.
            8 if !pool.is_empty() => {
                let other = &pool[self.below(pool.len())];
                let cut = self.below(len + 1);
                let from = self.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            _ => input.push(self.rng.next_u64() as u8),
        }
    }
}

/// `value` as an unsigned LEB128 varint.
pub fn leb128(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_inputs_and_another_seed_others() {
        let pool = vec![b"hello world".to_vec(), vec![0; 40]];
        let run = |seed| {
            let mut m = Mutator::new(seed);
            (0..200).map(|_| m.next_input(&pool)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn inputs_stay_within_the_bound_and_vary() {
        let pool = vec![vec![0xaa; MAX_LEN]];
        let mut m = Mutator::new(1);
        let inputs: Vec<Vec<u8>> = (0..2000).map(|_| m.next_input(&pool)).collect();
        assert!(inputs.iter().all(|i| i.len() <= MAX_LEN));
        let distinct: std::collections::BTreeSet<&Vec<u8>> = inputs.iter().collect();
        assert!(distinct.len() > 1500, "{} distinct", distinct.len());
    }

    #[test]
    fn varints_are_leb128() {
        assert_eq!(leb128(0), [0]);
        assert_eq!(leb128(127), [0x7f]);
        assert_eq!(leb128(128), [0x80, 0x01]);
        assert_eq!(leb128(u64::MAX).len(), 10);
    }
}
