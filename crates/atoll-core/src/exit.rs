use std::fmt;
use std::sync::Arc;

/// Why a process exited. Carried by exit signals (links) and monitor notifications.
#[derive(Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ExitReason {
    /// The process finished its work. Linked processes do not die of it.
    Normal,
    /// The process was told to stop (by its supervisor or the runtime shutting down).
    Shutdown,
    /// The process failed: a handler returned an error or panicked.
    Error(Arc<str>),
    /// The process was killed unconditionally.
    Killed,
    /// The process did not exist when it was linked or monitored.
    NoProc,
    /// The connection to the process's node was lost.
    NoConnection,
}

impl ExitReason {
    /// An error reason with the given text.
    pub fn error(text: impl Into<Arc<str>>) -> Self {
        ExitReason::Error(text.into())
    }

    /// True for `Normal` only: the one reason a linked process ignores.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal)
    }

    /// True for `Normal` and `Shutdown`: the reasons a transient child is not restarted for.
    pub fn is_clean(&self) -> bool {
        matches!(self, ExitReason::Normal | ExitReason::Shutdown)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Error(text) => write!(f, "error: {text}"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::NoProc => f.write_str("noproc"),
            ExitReason::NoConnection => f.write_str("noconnection"),
        }
    }
}

impl fmt::Debug for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_normal_is_normal_and_shutdown_is_clean() {
        assert!(ExitReason::Normal.is_normal());
        assert!(!ExitReason::Shutdown.is_normal());
        assert!(ExitReason::Shutdown.is_clean());
        assert!(!ExitReason::Killed.is_clean());
        assert_eq!(ExitReason::error("x").to_string(), "error: x");
    }
}
