//! Signed checkpoints of the event log: the newest event's sequence number and hash, signed with
//! the server's Ed25519 key (`<data>/audit.key`, mode 0600). Whoever keeps a checkpoint (another
//! machine, a ticket, a mail) can later prove that the log still holds that event with that hash,
//! and so everything before it — which detects even a rewrite of the whole database, that the
//! hash chain alone cannot.

use std::path::Path;

use api::Checkpoint;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// What is signed.
pub fn message(seq: i64, hash: &str, time: &str) -> String {
    format!("tandem audit checkpoint v1\nseq {seq}\nhash {hash}\ntime {time}\n")
}

/// Checking a checkpoint's signature.
pub trait Verify {
    /// Checks the signature, and that the signer is `pinned` when one is given (hex public key).
    fn verify_signature(&self, pinned: Option<&str>) -> Result<(), String>;
}

impl Verify for Checkpoint {
    fn verify_signature(&self, pinned: Option<&str>) -> Result<(), String> {
        if let Some(pinned) = pinned
            && !pinned.trim().eq_ignore_ascii_case(&self.public_key)
        {
            return Err(format!(
                "the checkpoint is signed by {}, not by the key given ({})",
                self.public_key,
                pinned.trim()
            ));
        }
        let key: [u8; 32] = hex::decode(&self.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the checkpoint's public key is not 32 bytes of hex")?;
        let key =
            VerifyingKey::from_bytes(&key).map_err(|_| "the checkpoint's public key is not a valid Ed25519 key")?;
        let signature = hex::decode(&self.signature).map_err(|_| "the checkpoint's signature is not hex")?;
        let signature = Signature::from_slice(&signature).map_err(|_| "the checkpoint's signature is not 64 bytes")?;
        key.verify_strict(message(self.seq, &self.hash, &self.time).as_bytes(), &signature).map_err(|_| {
            "the checkpoint's signature does not match its content (it was altered, or signed by another key)"
                .to_string()
        })
    }
}

/// The server's signing key, made at first use.
pub fn signing_key(data_dir: &Path) -> Result<SigningKey, String> {
    let path = data_dir.join("audit.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let seed: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{} is not 32 bytes of hex", path.display()))?;
        return Ok(SigningKey::from_bytes(&seed));
    }
    let seed = random_seed()?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(hex::encode(seed).as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// 32 random bytes for a new key.
fn random_seed() -> Result<[u8; 32], String> {
    use std::io::Read;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed)).map_err(|e| e.to_string())?;
    Ok(seed)
}

/// Signs the newest event of the log; `None` when the log is empty.
pub async fn make(app: &crate::App) -> Result<Option<Checkpoint>, String> {
    let Some(event) = app.store.last_event().await.map_err(|e| e.to_string())? else { return Ok(None) };
    let key = signing_key(&app.config.data_dir)?;
    let signature = key.sign(message(event.seq, &event.hash, &event.time).as_bytes());
    let checkpoint = Checkpoint {
        seq: event.seq,
        hash: event.hash,
        time: event.time,
        public_key: hex::encode(key.verifying_key().to_bytes()),
        signature: hex::encode(signature.to_bytes()),
    };
    // Kept beside the database too; the copies that matter are the ones kept elsewhere.
    let dir = app.config.data_dir.join("checkpoints");
    if std::fs::create_dir_all(&dir).is_ok()
        && let Ok(text) = serde_json::to_string_pretty(&checkpoint)
    {
        let _ = std::fs::write(dir.join(format!("{}.json", checkpoint.seq)), text);
    }
    Ok(Some(checkpoint))
}

/// Signs a checkpoint every hour while the log grows.
pub async fn every_hour(app: std::sync::Arc<crate::App>) {
    let mut last = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        match app.store.last_event().await {
            Ok(Some(event)) if event.seq > last => match make(&app).await {
                Ok(Some(checkpoint)) => last = checkpoint.seq,
                Ok(None) => {}
                Err(error) => tracing::warn!("audit checkpoint: {error}"),
            },
            _ => {}
        }
    }
}
