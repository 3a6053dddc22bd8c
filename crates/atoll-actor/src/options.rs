//! How a process is spawned.

/// How a process is spawned.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// Bound the mailbox to this many waiting messages (`None`: unbounded).
    pub mailbox_capacity: Option<usize>,
    /// Trap exit signals from the first instant (before `started` runs).
    pub trap_exit: bool,
    /// What the process can do, e.g. `"gpu"`: a node advertises them in the cluster's
    /// process table, where `find_by_capability` and placement read them.
    pub capabilities: Vec<String>,
}

impl SpawnOptions {
    /// A bounded mailbox of `capacity` messages.
    pub fn bounded(capacity: usize) -> Self {
        SpawnOptions {
            mailbox_capacity: Some(capacity),
            ..Default::default()
        }
    }

    /// These options with the capabilities `caps`.
    ///
    /// ```
    /// use atoll_actor::SpawnOptions;
    ///
    /// let opts = SpawnOptions::default().with_capabilities(["gpu", "ssd"]);
    /// assert_eq!(opts.capabilities, ["gpu", "ssd"]);
    /// ```
    pub fn with_capabilities<S: Into<String>>(mut self, caps: impl IntoIterator<Item = S>) -> Self {
        self.capabilities = caps.into_iter().map(Into::into).collect();
        self
    }
}
