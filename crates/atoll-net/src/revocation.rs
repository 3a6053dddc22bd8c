//! The revocation list: node ids refused at every new handshake, read from a text file and
//! kept in step with it while a node runs.

use std::collections::BTreeSet;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use atoll_core::{NodeId, ParseNodeIdError};

use crate::files::{self, LoadError, Replace, SaveError};

/// The set of revoked node ids, shared by every clone of the handle.
///
/// Give a clone to [`TrustConfig::Ca`](crate::TrustConfig::Ca); revoking through any clone (or reloading from a
/// file) affects every handshake that starts afterwards, on every endpoint built with it.
/// Connections already established are not closed: close them with the revoked peer.
///
/// The file format is text, one node id (32 hex digits) a line; blank lines and lines
/// starting with `#` are ignored.
///
/// # Example
///
/// ```
/// use atoll_net::RevocationList;
/// use atoll_core::NodeId;
///
/// let list = RevocationList::new();
/// let shared = list.clone();
/// let id = NodeId::from_bytes([7; 16]);
/// assert!(list.revoke(id));
/// assert!(shared.is_revoked(&id));
/// let parsed = RevocationList::parse(&list.to_text())?;
/// assert_eq!(parsed.ids(), vec![id]);
/// # Ok::<(), atoll_net::ParseRevocationError>(())
/// ```
#[derive(Clone, Default)]
pub struct RevocationList {
    ids: Arc<RwLock<BTreeSet<NodeId>>>,
}

/// A line of a revocation list that is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {source}")]
pub struct ParseRevocationError {
    /// The 1-based line number.
    pub line: usize,
    /// Why it is not a node id.
    #[source]
    pub source: ParseNodeIdError,
}

impl RevocationList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new list holding `ids` (not shared with any other list).
    pub fn from_ids(ids: impl IntoIterator<Item = NodeId>) -> Self {
        RevocationList {
            ids: Arc::new(RwLock::new(ids.into_iter().collect())),
        }
    }

    /// Revokes `id`; true if it was not revoked before.
    pub fn revoke(&self, id: NodeId) -> bool {
        self.ids
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
    }

    /// Lifts the revocation of `id`; true if it was revoked.
    pub fn reinstate(&self, id: &NodeId) -> bool {
        self.ids
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }

    /// Whether `id` is revoked.
    pub fn is_revoked(&self, id: &NodeId) -> bool {
        self.ids
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(id)
    }

    /// The revoked ids, in order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.ids
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// How many ids are revoked.
    pub fn len(&self) -> usize {
        self.ids
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no id is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the contents of this list (and so of every clone) with `other`'s.
    pub fn replace_with(&self, other: &RevocationList) {
        if Arc::ptr_eq(&self.ids, &other.ids) {
            return;
        }
        let new = other
            .ids
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        *self.ids.write().unwrap_or_else(PoisonError::into_inner) = new;
    }

    /// The list as text, one id a line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for id in self.ids() {
            out.push_str(&id.to_string());
            out.push('\n');
        }
        out
    }

    /// Parses the text format (see the type docs) into a new list.
    pub fn parse(text: &str) -> Result<Self, ParseRevocationError> {
        let mut ids = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let line_text = line.trim();
            if line_text.is_empty() || line_text.starts_with('#') {
                continue;
            }
            let id = line_text
                .parse::<NodeId>()
                .map_err(|source| ParseRevocationError {
                    line: i + 1,
                    source,
                })?;
            ids.insert(id);
        }
        Ok(RevocationList {
            ids: Arc::new(RwLock::new(ids)),
        })
    }

    /// Reads a list saved by [`RevocationList::save`] into a new, unshared list.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let text = files::read_text(path)?;
        Self::parse(&text).map_err(|e| LoadError::RevocationEntry {
            path: path.to_path_buf(),
            line: e.line,
            source: e.source,
        })
    }

    /// Reloads this list (and every clone) from `path`. On error the list is unchanged.
    pub fn reload(&self, path: impl AsRef<Path>) -> Result<(), LoadError> {
        self.replace_with(&Self::load(path)?);
        Ok(())
    }

    /// Writes the list to `path` (mode 0644), atomically replacing any existing file:
    /// a revocation list is meant to be updated in place.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), SaveError> {
        files::write(
            path.as_ref(),
            self.to_text().as_bytes(),
            0o644,
            Replace::Yes,
        )
    }
}

impl fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.ids()).finish()
    }
}

/// How often [`RevocationList::watch`] looks at the file by default.
pub const REVOCATION_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// What identifies one version of a file: replacing it (a new inode), appending to it or
/// rewriting it in place all change the stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// `None` when the file cannot be looked at (it is missing, say): a change too.
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Keeps a [`RevocationList`] in step with its file: [`RevocationWatcher::check`] reloads
/// the list (and so every clone of it) when the file has changed since the last look.
///
/// Driven by hand or, on a tokio runtime, by [`RevocationList::watch`]. A file that
/// cannot be read or parsed leaves the list as it was; the next change is tried again.
///
/// # Example
///
/// ```
/// use atoll_net::{NodeId, RevocationList, RevocationWatcher};
///
/// let dir = std::env::temp_dir().join(format!("atoll-doc-watch-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("revoked.txt");
/// std::fs::write(&path, "")?;
/// let list = RevocationList::load(&path)?;
/// let mut watcher = RevocationWatcher::new(list.clone(), &path);
/// assert!(!watcher.check()?);
///
/// let id = NodeId::from_bytes([7; 16]);
/// std::fs::write(&path, format!("{id}\n"))?;
/// assert!(watcher.check()?);
/// assert!(list.is_revoked(&id));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RevocationWatcher {
    list: RevocationList,
    path: PathBuf,
    seen: Option<FileStamp>,
}

impl RevocationWatcher {
    /// Watches `path` on behalf of `list`. The file as it is now counts as already loaded:
    /// load it into the list first ([`RevocationList::load`]).
    pub fn new(list: RevocationList, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        RevocationWatcher {
            seen: FileStamp::of(&path),
            list,
            path,
        }
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads the list if the file changed since the last check: `Ok(true)` if it was
    /// reloaded, `Ok(false)` if the file is unchanged. On error the list is unchanged, and
    /// the file is not tried again until it changes once more.
    pub fn check(&mut self) -> Result<bool, LoadError> {
        let now = FileStamp::of(&self.path);
        if now == self.seen {
            return Ok(false);
        }
        self.seen = now;
        self.list.reload(&self.path)?;
        Ok(true)
    }

    /// Checks every `interval`, forever, logging each reload (`revocation list reloaded`,
    /// with the file and the number of ids) and each failure (the previous list stays).
    pub async fn run(mut self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the file as it was at `new` is already loaded.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match self.check() {
                Ok(false) => {}
                Ok(true) => tracing::info!(
                    file = %self.path.display(),
                    revoked = self.list.len(),
                    "revocation list reloaded"
                ),
                Err(e) => tracing::warn!("keeping the previous revocation list: {e}"),
            }
        }
    }
}

/// A running [`RevocationList::watch`]; the watching stops when this is dropped.
#[derive(Debug)]
pub struct RevocationWatch(tokio::task::JoinHandle<()>);

impl Drop for RevocationWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RevocationList {
    /// Re-reads this list from `path` whenever the file changes (looking every
    /// `interval`, e.g. [`REVOCATION_CHECK_INTERVAL`]), on the current tokio runtime,
    /// until the returned handle is dropped. New handshakes consult the reloaded list;
    /// connections already up stay up.
    ///
    /// The file as it is now counts as loaded: load it into this list first.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn watch(&self, path: impl Into<PathBuf>, interval: Duration) -> RevocationWatch {
        let watcher = RevocationWatcher::new(self.clone(), path);
        RevocationWatch(tokio::spawn(watcher.run(interval)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = crate::test_path(&format!("revocation-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn revocation_list_round_trip() {
        let dir = temp_dir("revoked");
        let path = dir.join("revoked.txt");
        let list = RevocationList::new();
        let shared = list.clone();
        let a = NodeId::from_bytes([1; 16]);
        let b = NodeId::from_bytes([2; 16]);
        assert!(list.revoke(b));
        assert!(list.revoke(a));
        assert!(!list.revoke(a));
        assert!(shared.is_revoked(&a) && shared.is_revoked(&b));
        assert_eq!(shared.len(), 2);
        list.save(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{a}\n{b}\n")
        );
        let loaded = RevocationList::load(&path).unwrap();
        assert_eq!(loaded.ids(), vec![a, b]);

        // Reloading updates every clone in place.
        assert!(list.reinstate(&a));
        assert!(!shared.is_revoked(&a));
        shared.reload(&path).unwrap();
        assert!(list.is_revoked(&a));

        // Comments and blank lines are ignored; a bad line is reported with its number.
        let parsed = RevocationList::parse(&format!("# revoked\n\n  {a}  \n")).unwrap();
        assert_eq!(parsed.ids(), vec![a]);
        let err = RevocationList::parse(&format!("{a}\nnot-an-id\n")).unwrap_err();
        assert_eq!(err.line, 2);
        std::fs::write(&path, format!("{a}\nzz\n")).unwrap();
        assert!(matches!(
            RevocationList::load(&path),
            Err(LoadError::RevocationEntry { line: 2, .. })
        ));
        // A failed reload leaves the list as it was.
        assert!(shared.reload(&path).is_err());
        assert_eq!(shared.ids(), vec![a, b]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_watcher_reloads_on_every_change_and_keeps_the_list_on_errors() {
        let dir = temp_dir("watcher");
        let path = dir.join("revoked.txt");
        let (a, b) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
        std::fs::write(&path, format!("{a}\n")).unwrap();
        let list = RevocationList::load(&path).unwrap();
        let clone = list.clone();
        let mut watcher = RevocationWatcher::new(list.clone(), &path);
        assert!(!watcher.check().unwrap(), "nothing changed yet");

        // An append, as `atoll ca revoke` does.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, format!("# b\n{b}\n").as_bytes()).unwrap();
        drop(file);
        assert!(watcher.check().unwrap());
        assert_eq!(clone.ids(), vec![a, b]);
        assert!(!watcher.check().unwrap());

        // A broken file keeps the list, and is not reported again until it changes.
        std::fs::write(&path, "not an id\n").unwrap();
        assert!(matches!(
            watcher.check(),
            Err(LoadError::RevocationEntry { line: 1, .. })
        ));
        assert_eq!(clone.ids(), vec![a, b]);
        assert!(!watcher.check().unwrap());

        // Replaced by rename (a new inode), as `RevocationList::save` does.
        RevocationList::from_ids([b]).save(&path).unwrap();
        assert!(watcher.check().unwrap());
        assert_eq!(clone.ids(), vec![b]);

        // A missing file is an error too; the list stays.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(watcher.check(), Err(LoadError::Read { .. })));
        assert_eq!(clone.ids(), vec![b]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn watch_picks_up_a_revocation_until_dropped() {
        let dir = temp_dir("watch");
        let path = dir.join("revoked.txt");
        std::fs::write(&path, "").unwrap();
        let list = RevocationList::load(&path).unwrap();
        let watch = list.watch(&path, Duration::from_millis(10));
        let id = NodeId::from_bytes([3; 16]);
        std::fs::write(&path, format!("{id}\n")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !list.is_revoked(&id) {
            assert!(Instant::now() < deadline, "the list was not reloaded");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(watch);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
