//! Encryption of backups with `age` (age-encryption.org/v1, X25519 recipients): the
//! machine that backs up holds only the recipient (a public key, `age1...`); reading a
//! backup takes the identity (`AGE-SECRET-KEY-1...`, in a file as `age-keygen` writes it).

use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::{BackupError, Result};

/// The recipient a backup is encrypted to.
#[derive(Clone)]
pub struct Recipient {
    key: age::x25519::Recipient,
    text: String,
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Recipient {
    /// Parses `age1...`.
    pub fn parse(text: &str) -> Result<Recipient> {
        let text = text.trim();
        let key = age::x25519::Recipient::from_str(text).map_err(|e| {
            BackupError::Refused(format!(
                "{text:?} is not an age recipient (an X25519 public key, age1...): {e}"
            ))
        })?;
        Ok(Recipient {
            key,
            text: text.to_string(),
        })
    }

    /// `age1...`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `bytes` encrypted to this recipient.
    pub fn encrypt(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        age::encrypt(&self.key, bytes)
            .map_err(|e| BackupError::Invalid(format!("encrypt to {}: {e}", self.text)))
    }
}

/// Makes a new identity and writes it into the new file `path` (mode 0600, as
/// `age-keygen -o` writes it: a comment with the recipient, then the secret key). Returns
/// the recipient (`age1...`) to give `--encrypt-to`.
pub fn generate_identity(path: &std::path::Path) -> Result<String> {
    use age::secrecy::ExposeSecret;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = age::x25519::Identity::generate();
    let recipient = key.to_public().to_string();
    let text = format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        crate::run::now(),
        key.to_string().expose_secret()
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(crate::error::io(format!("create {}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(crate::error::io(format!("write {}", path.display())))?;
    Ok(recipient)
}

/// The identities that may read encrypted backups (one or more, from a file).
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
}

impl Identities {
    /// Reads an identity file: one `AGE-SECRET-KEY-1...` a line; blank lines and lines
    /// starting with `#` are skipped (what `age-keygen -o FILE` writes).
    pub fn read(path: &std::path::Path) -> Result<Identities> {
        let text = std::fs::read_to_string(path).map_err(crate::error::io(format!(
            "read the identity {}",
            path.display()
        )))?;
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = age::x25519::Identity::from_str(line).map_err(|_| {
                BackupError::Refused(format!(
                    "{} line {}: not an age identity (AGE-SECRET-KEY-1...)",
                    path.display(),
                    n + 1
                ))
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(BackupError::Refused(format!(
                "{} holds no age identity",
                path.display()
            )));
        }
        Ok(Identities { keys })
    }

    /// Whether one of these identities reads what is encrypted to `recipient`.
    pub fn opens(&self, recipient: &str) -> bool {
        self.keys
            .iter()
            .any(|k| k.to_public().to_string() == recipient)
    }

    /// Decrypts `bytes` (what [`Recipient::encrypt`] made).
    pub fn decrypt(&self, bytes: &[u8], what: &str) -> Result<Vec<u8>> {
        let mut last = None;
        for key in &self.keys {
            match age::decrypt(key, bytes) {
                Ok(plain) => return Ok(plain),
                Err(e) => last = Some(e),
            }
        }
        Err(BackupError::Refused(format!(
            "{what} cannot be decrypted with the given identity{}",
            last.map(|e| format!(" ({e})")).unwrap_or_default()
        )))
    }
}

/// The id of a chunk for deduplication: the SHA-256 of `key` and the chunk. For a backup
/// in plaintext the key is empty (the chunk's own hash); for one encrypted to a recipient
/// it is that recipient, so that its ids are not the plaintext's hashes. (The recipient is
/// public: whoever holds it can still test whether a repository holds a given chunk. What
/// the chunk says stays encrypted.)
pub fn chunk_id(key: &str, chunk: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0u8]);
    h.update(chunk);
    h.finalize().into()
}
