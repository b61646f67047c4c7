//! The secrets vault: values sealed with XChaCha20-Poly1305 before they reach the store, under a
//! key from `TANDEM_SECRETS_KEY` (64 hex digits) or the key file `<data>/secrets.key` (made at
//! first start, mode 0600). The key file is a key ring, newest first: a rotation adds a key,
//! re-seals every secret with it in one transaction, then drops the old one — a crash between
//! those steps leaves every value readable, because each sealed value names its key.
//!
//! Sealed layout: `b"tv1"`, the key's id (the first 8 bytes of its SHA-256), a 24-byte random
//! nonce, then the ciphertext with its tag. The secret's scope and name are the associated data,
//! so a sealed value moved to another secret does not open.

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::Aead;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use sha2::{Digest, Sha256};

const MAGIC: &[u8] = b"tv1";

/// One key of the ring.
#[derive(Clone)]
struct RingKey {
    id: [u8; 8],
    key: [u8; 32],
}

impl std::fmt::Debug for RingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RingKey({})", hex::encode(self.id))
    }
}

/// The keys that open secrets, newest (the one that seals) first.
#[derive(Debug)]
pub struct Vault {
    keys: std::sync::RwLock<Vec<RingKey>>,
    /// The key file, or `None` when the key comes from the environment (it cannot be rotated).
    file: Option<PathBuf>,
}

fn ring_key(key: [u8; 32]) -> RingKey {
    let digest = Sha256::digest(key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    RingKey { id, key }
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    use std::io::Read;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("no randomness for the vault: {e}"))?;
    Ok(bytes)
}

fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text.trim()).map_err(|_| "a secrets key is 64 hex digits".to_string())?;
    bytes.try_into().map_err(|_| "a secrets key is 64 hex digits (32 bytes)".to_string())
}

impl Vault {
    /// The vault of a data directory: the key from `env_key` when given, else the key file
    /// (made when missing).
    pub fn open(data_dir: &Path, env_key: Option<&str>) -> Result<Vault, String> {
        if let Some(text) = env_key.filter(|k| !k.trim().is_empty()) {
            let key = parse_key(text).map_err(|e| format!("TANDEM_SECRETS_KEY: {e}"))?;
            return Ok(Vault { keys: std::sync::RwLock::new(vec![ring_key(key)]), file: None });
        }
        let file = data_dir.join("secrets.key");
        let keys = match std::fs::read_to_string(&file) {
            Ok(text) => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| parse_key(l).map(ring_key).map_err(|e| format!("{}: {e}", file.display())))
                .collect::<Result<Vec<_>, _>>()?,
            Err(_) => {
                let key = random::<32>()?;
                write_ring(&file, &[ring_key(key)])?;
                vec![ring_key(key)]
            }
        };
        if keys.is_empty() {
            return Err(format!("{} holds no key", file.display()));
        }
        Ok(Vault { keys: std::sync::RwLock::new(keys), file: Some(file) })
    }

    /// Seals `value` for the secret `scope`/`name`.
    pub fn seal(&self, scope: &str, name: &str, value: &[u8]) -> Result<Vec<u8>, String> {
        let keys = self.keys.read().map_err(|_| "the vault is poisoned".to_string())?;
        seal_with(&keys[0], scope, name, value)
    }

    /// Opens a sealed value of the secret `scope`/`name`.
    pub fn open_value(&self, scope: &str, name: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let keys = self.keys.read().map_err(|_| "the vault is poisoned".to_string())?;
        open_with(&keys, scope, name, sealed)
    }

    /// A new key seals everything: `reseal` gets every secret opened and sealed again with it and
    /// must store them all (one transaction); the old keys are dropped after. Returns how many.
    pub async fn rotate<F, Fut>(&self, rows: Vec<store::SecretRow>, reseal: F) -> Result<usize, String>
    where
        F: FnOnce(Vec<store::SecretRow>) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let Some(file) = &self.file else {
            return Err(
                "the secrets key comes from TANDEM_SECRETS_KEY: set a new one there, then set each secret again".into(),
            );
        };
        let new = ring_key(random::<32>()?);
        let ring: Vec<RingKey> = {
            let keys = self.keys.read().map_err(|_| "the vault is poisoned".to_string())?;
            std::iter::once(new.clone()).chain(keys.iter().cloned()).collect()
        };
        // 1. The new key joins the ring on disk before anything is sealed with it.
        write_ring(file, &ring)?;
        let mut resealed = Vec::with_capacity(rows.len());
        for row in rows {
            let value = open_with(&ring, &row.scope, &row.name, &row.value)?;
            resealed.push(store::SecretRow { value: seal_with(&new, &row.scope, &row.name, &value)?, ..row });
        }
        let n = resealed.len();
        // 2. Every value sealed with it, in one transaction.
        reseal(resealed).await?;
        // 3. The old keys go.
        write_ring(file, std::slice::from_ref(&new))?;
        if let Ok(mut keys) = self.keys.write() {
            *keys = vec![new];
        }
        Ok(n)
    }
}

fn seal_with(key: &RingKey, scope: &str, name: &str, value: &[u8]) -> Result<Vec<u8>, String> {
    let cipher = XChaCha20Poly1305::new(&key.key.into());
    let nonce = random::<24>()?;
    let aad = format!("{scope}\0{name}");
    let payload = chacha20poly1305::aead::Payload { msg: value, aad: aad.as_bytes() };
    let sealed = cipher.encrypt(&nonce.into(), payload).map_err(|_| "sealing failed".to_string())?;
    Ok([MAGIC, &key.id, &nonce, &sealed].concat())
}

fn open_with(keys: &[RingKey], scope: &str, name: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
    if sealed.len() < MAGIC.len() + 8 + 24 || !sealed.starts_with(MAGIC) {
        return Err(format!("secret `{name}` of {scope} is not a sealed value"));
    }
    let id = &sealed[3..11];
    let Some(key) = keys.iter().find(|k| k.id == id) else {
        return Err(format!(
            "secret `{name}` of {scope} was sealed with a key this server does not have ({})",
            hex::encode(id)
        ));
    };
    let nonce: [u8; 24] = sealed[11..35].try_into().map_err(|_| "bad nonce".to_string())?;
    let aad = format!("{scope}\0{name}");
    let cipher = XChaCha20Poly1305::new(&key.key.into());
    cipher
        .decrypt(&nonce.into(), chacha20poly1305::aead::Payload { msg: &sealed[35..], aad: aad.as_bytes() })
        .map_err(|_| format!("secret `{name}` of {scope} does not open: altered, or moved from another secret"))
}

/// Writes the key ring atomically with mode 0600.
fn write_ring(file: &Path, keys: &[RingKey]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text: String = keys.iter().map(|k| format!("{}\n", hex::encode(k.key))).collect();
    let temp = file.with_extension("key.new");
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
    std::fs::rename(&temp, file).map_err(|e| format!("cannot write {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_as_the_secret_it_was_sealed_for() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path(), None).unwrap();
        let sealed = vault.seal("repo/app", "TOKEN", b"s3cret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"), "the value is not in clear");
        assert_eq!(vault.open_value("repo/app", "TOKEN", &sealed).unwrap(), b"s3cret");
        assert!(vault.open_value("repo/other", "TOKEN", &sealed).is_err(), "moved to another scope");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(vault.open_value("repo/app", "TOKEN", &altered).is_err(), "altered");
        // The key file is private and reopens the same vault.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secrets.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Vault::open(dir.path(), None).unwrap();
        assert_eq!(again.open_value("repo/app", "TOKEN", &sealed).unwrap(), b"s3cret");
        let other = tempfile::tempdir().unwrap();
        assert!(Vault::open(other.path(), None).unwrap().open_value("repo/app", "TOKEN", &sealed).is_err());
    }
}
