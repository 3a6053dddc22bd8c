//! The fenced resource: one register per lock that refuses any write whose token is older
//! than the newest it accepted, and logs every write offered.

use std::collections::HashMap;

use crate::history::Write;

/// Registers guarded by fencing tokens.
#[derive(Debug, Default)]
pub struct FencedResource {
    newest: HashMap<String, u64>,
    log: Vec<Write>,
}

impl FencedResource {
    /// Offers a write of lock operation `op` with `token` at `at_ms`; returns whether it
    /// was accepted.
    pub fn write(&mut self, at_ms: u64, op: u64, lock: &str, token: u64) -> bool {
        let newest = self.newest.entry(lock.to_string()).or_insert(0);
        let accepted = token >= *newest;
        if accepted {
            *newest = token;
        }
        self.log.push(Write {
            at_ms,
            op,
            lock: lock.to_string(),
            token,
            accepted,
        });
        accepted
    }

    /// Every write offered, in order.
    pub fn log(&self) -> &[Write] {
        &self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_tokens_older_than_the_newest_accepted() {
        let mut r = FencedResource::default();
        assert!(r.write(1, 1, "l", 3));
        assert!(r.write(2, 1, "l", 3));
        assert!(r.write(3, 2, "l", 5));
        assert!(!r.write(4, 1, "l", 3));
        assert!(r.write(5, 3, "other", 1));
        assert_eq!(r.log().iter().filter(|w| !w.accepted).count(), 1);
    }
}
