//! The CA directory on disk, in Istio's plugged-in CA layout, so an operator who already
//! has `cacerts` for Istio can point weft at the same files.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::CaError;
use crate::pem::MAX_PEM_LEN;

/// The root bundle: every root a peer may chain to (more than one while a root rotates).
pub const ROOT_CERT: &str = "root-cert.pem";
/// The issuing CA's certificate: the root itself when generated, else an intermediate.
pub const CA_CERT: &str = "ca-cert.pem";
/// The issuing CA's private key (mode 0600).
pub const CA_KEY: &str = "ca-key.pem";
/// The chain from `ca-cert.pem` up to the root, in that order.
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// The PEM texts of a CA directory.
pub(super) struct CaFiles {
    pub root_cert: String,
    pub ca_cert: String,
    pub ca_key: String,
    /// `None` when the operator supplied no `cert-chain.pem` (then `ca-cert.pem` alone).
    pub cert_chain: Option<String>,
}

/// Whether `dir` holds any CA material (then it is loaded, never overwritten).
pub(super) fn has_ca_material(dir: &Path) -> bool {
    [ROOT_CERT, CA_CERT, CA_KEY, CERT_CHAIN].iter().any(|name| dir.join(name).exists())
}

pub(super) fn read(dir: &Path) -> Result<CaFiles, CaError> {
    let missing: Vec<&str> = [ROOT_CERT, CA_CERT, CA_KEY].into_iter().filter(|name| !dir.join(name).exists()).collect();
    if !missing.is_empty() {
        return Err(CaError::Incomplete { dir: dir.to_owned(), missing: missing.join(", ") });
    }
    let chain_path = dir.join(CERT_CHAIN);
    Ok(CaFiles {
        root_cert: read_text(&dir.join(ROOT_CERT))?,
        ca_cert: read_text(&dir.join(CA_CERT))?,
        ca_key: read_text(&dir.join(CA_KEY))?,
        cert_chain: match chain_path.exists() {
            true => Some(read_text(&chain_path)?),
            false => None,
        },
    })
}

/// Writes a freshly generated CA. Each file goes to a temporary name first and is renamed
/// into place, `ca-cert.pem` last; the key is created with mode 0600 so it is never
/// readable by others, not even for a moment.
pub(super) fn write(dir: &Path, files: &CaFiles) -> Result<(), CaError> {
    create_dir(dir)?;
    write_file(&dir.join(CA_KEY), &files.ca_key, 0o600)?;
    write_file(&dir.join(ROOT_CERT), &files.root_cert, 0o644)?;
    if let Some(chain) = &files.cert_chain {
        write_file(&dir.join(CERT_CHAIN), chain, 0o644)?;
    }
    write_file(&dir.join(CA_CERT), &files.ca_cert, 0o644)
}

fn create_dir(dir: &Path) -> Result<(), CaError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| io_err(dir, e))
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    let tmp = tmp_path(path);
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(|e| io_err(&tmp, e))?;
    file.write_all(contents.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn read_text(path: &Path) -> Result<String, CaError> {
    let len = fs::metadata(path).map_err(|e| io_err(path, e))?.len();
    if len > MAX_PEM_LEN as u64 {
        return Err(CaError::Io { path: path.to_owned(), reason: format!("{len} bytes, over the limit of {MAX_PEM_LEN}") });
    }
    fs::read_to_string(path).map_err(|e| io_err(path, e))
}

fn io_err(path: &Path, e: io::Error) -> CaError {
    CaError::Io { path: path.to_owned(), reason: e.to_string() }
}
