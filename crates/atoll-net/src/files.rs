//! Reading and writing the key, certificate and revocation files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

use crate::certificate::CertificateError;
use crate::identity::KeyError;

/// Why a key, certificate or revocation file could not be written.
///
/// When saving several files at once (a CA's certificate and key), every target is checked
/// before anything is written, so [`SaveError::Exists`] leaves the directory untouched.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The target exists and the caller did not ask to replace it; nothing was written.
    #[error("{} already exists; refusing to overwrite it (nothing was written)", path.display())]
    Exists {
        /// The file that is already there.
        path: PathBuf,
    },
    /// Creating, writing or renaming the file failed; the previous file, if any, is intact.
    #[error("could not write {}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

/// Why a key, certificate or revocation file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("could not read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The file is not UTF-8 text, so it cannot be PEM or a revocation list.
    #[error("{} is not UTF-8 text", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The file does not hold a usable Ed25519 private key.
    #[error("{} does not hold a usable Ed25519 private key: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents.
        #[source]
        source: KeyError,
    },
    /// The file does not hold a usable certificate.
    #[error("{} does not hold a usable certificate: {source}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents.
        #[source]
        source: CertificateError,
    },
    /// A line of a revocation list is not a node id.
    #[error("{} line {line}: {source}", path.display())]
    RevocationEntry {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// Why the line is not a node id.
        #[source]
        source: atoll_core::ParseNodeIdError,
    },
    /// The private key does not belong to the certificate stored next to it.
    #[error(
        "the key in {} does not belong to the certificate in {}",
        key_path.display(),
        cert_path.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert_path: PathBuf,
        /// The key file.
        key_path: PathBuf,
    },
}

/// Whether a save may replace an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replace {
    No,
    Yes,
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read_text(path: &Path) -> Result<String, LoadError> {
    String::from_utf8(read(path)?).map_err(|_| LoadError::NotText {
        path: path.to_path_buf(),
    })
}

pub(crate) fn ensure_absent(path: &Path) -> Result<(), SaveError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Err(SaveError::Exists {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SaveError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), SaveError> {
    fs::create_dir_all(dir).map_err(|source| SaveError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path`, creating the file with `mode`.
///
/// With [`Replace::No`] the file is created exclusively (`O_EXCL`), so an existing file is
/// never touched. With [`Replace::Yes`] the contents go to a fresh temporary file next to
/// the target, which is then renamed over it: readers see the old or the new file, never a
/// torn one, and the mode is `mode` even if the old file had looser permissions.
pub(crate) fn write(
    path: &Path,
    contents: &[u8],
    mode: u32,
    replace: Replace,
) -> Result<(), SaveError> {
    let io_err = |source| SaveError::Io {
        path: path.to_path_buf(),
        source,
    };
    match replace {
        Replace::No => {
            let mut file = match create_new(path, mode) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(SaveError::Exists {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) => return Err(io_err(e)),
            };
            let written = file.write_all(contents).and_then(|()| file.sync_all());
            if let Err(e) = written {
                // Do not leave a truncated key or certificate behind.
                let _ = fs::remove_file(path);
                return Err(io_err(e));
            }
            Ok(())
        }
        Replace::Yes => {
            let tmp = temp_path(path);
            let result = create_new(&tmp, mode)
                .and_then(|mut file| {
                    file.write_all(contents)?;
                    file.sync_all()
                })
                .and_then(|()| fs::rename(&tmp, path));
            if let Err(e) = result {
                let _ = fs::remove_file(&tmp);
                return Err(io_err(e));
            }
            Ok(())
        }
    }
}

fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

/// A fresh name next to `path`; random, so concurrent saves of one file never share it.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut nonce = [0u8; 8];
    if SystemRandom::new().fill(&mut nonce).is_err() {
        // Exclusive creation still guards against a clash; this only makes one likelier.
        nonce = u64::from(std::process::id()).to_le_bytes();
    }
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    path.with_file_name(format!(".{name}.{nonce}.tmp"))
}
