//! What can go wrong, and the exit code each failure maps to.

use std::path::PathBuf;

use atoll_net::DirectoryError;

/// Exit code for a bad configuration, bad arguments or missing input files: fix the input
/// and run again.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for everything else that failed.
pub const EXIT_FAILURE: u8 = 1;

/// A command that failed. The `Display` text is the whole message shown to the user: it
/// names the file (and the field) involved and, where some command creates what is
/// missing, that command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read the configuration {}: {source}", path.display())]
    ConfigRead {
        /// The configuration file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML, or is not a node configuration.
    #[error("{}: line {line}, column {column}: {message}", path.display())]
    ConfigSyntax {
        /// The configuration file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A field of the configuration is missing, unknown or has an unusable value.
    #[error("{}: field \"{field}\": {message}", path.display())]
    ConfigField {
        /// The configuration file.
        path: PathBuf,
        /// The field, as a dotted path (`tls.key`, `peers[1]`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file the command needs does not exist.
    #[error("{what} {} does not exist; {hint}", path.display())]
    MissingFile {
        /// What the file is, with the configuration field that names it if there is one.
        what: String,
        /// The missing file.
        path: PathBuf,
        /// How to create it.
        hint: String,
    },
    /// A key, certificate or revocation file exists but cannot be used.
    #[error("{context}: {source}")]
    BadFile {
        /// What the file is, with the configuration field that names it if there is one.
        context: String,
        /// Why it cannot be used (names the file).
        #[source]
        source: atoll_net::LoadError,
    },
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A CA or shared-identity directory operation failed.
    #[error(transparent)]
    Directory(#[from] atoll_net::DirectoryError),
    /// The node could not start.
    #[error("cannot start the node: {0}")]
    Start(#[from] atoll_cluster::StartError),
    /// A node's HTTP service did not answer.
    #[error(
        "cannot reach the node at {addr}: {reason} (is it running, with `http = \"{addr}\"` in its configuration?)"
    )]
    Unreachable {
        /// The address asked.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A node's HTTP service answered something unusable.
    #[error("the node at {addr} gave an unusable answer: {reason}")]
    BadAnswer {
        /// The address asked.
        addr: String,
        /// Why it is unusable.
        reason: String,
    },
    /// A configuration has no `http` address to ask.
    #[error("{}: no `http` address is configured, so the node serves no status", path.display())]
    NoHttp {
        /// The configuration file.
        path: PathBuf,
    },
    /// A step of `atoll demo` did not happen.
    #[error("demo: {0}")]
    Demo(String),
    /// The async runtime or the signal handlers could not be set up.
    #[error("cannot set up the {what}: {source}")]
    Runtime {
        /// What was being set up.
        what: &'static str,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit code for this error: [`EXIT_CONFIG`] for bad input (configuration,
    /// arguments, missing or unusable input files), [`EXIT_FAILURE`] otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::ConfigRead { .. }
            | Error::ConfigSyntax { .. }
            | Error::ConfigField { .. }
            | Error::MissingFile { .. }
            | Error::BadFile { .. }
            | Error::NoHttp { .. } => EXIT_CONFIG,
            Error::Directory(e) => match e {
                DirectoryError::BadName { .. }
                | DirectoryError::NoCa { .. }
                | DirectoryError::Unusable { .. }
                | DirectoryError::UnknownNode { .. } => EXIT_CONFIG,
                DirectoryError::Save(_)
                | DirectoryError::Io { .. }
                | DirectoryError::Create(_)
                | DirectoryError::Generate(_)
                | DirectoryError::Issue(_) => EXIT_FAILURE,
            },
            Error::Io { .. }
            | Error::Start(_)
            | Error::Unreachable { .. }
            | Error::BadAnswer { .. }
            | Error::Demo(_)
            | Error::Runtime { .. } => EXIT_FAILURE,
        }
    }
}
