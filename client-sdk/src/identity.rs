//! The partner's long-term Ed25519 identity key on disk: 32 random bytes as hex, in a file
//! only its owner can read. Written once by `civic-agent keygen`; never overwritten.

use std::io::Write;
use std::path::Path;

use civic_secagg::IdentityKey;
use rand_core::TryRng;
use zeroize::Zeroizing;

use crate::error::AgentError;

/// Generates a key and writes it to `path` (mode 0600), refusing to replace a file. Returns
/// the public key as hex, to register with the coordinator.
pub fn generate(path: &Path) -> Result<String, AgentError> {
    let seed = write_new_seed(path, "an identity key (the board's manifest lists it)")?;
    Ok(hex::encode(IdentityKey::from_seed(&seed).public().0))
}

/// Loads the key, refusing a file that others can read.
pub fn load(path: &Path) -> Result<IdentityKey, AgentError> {
    let seed = read_seed(path, "identity key", "civic-agent keygen")?;
    Ok(IdentityKey::from_seed(&seed))
}

/// Draws 32 random bytes and writes them as hex to a new file of mode 0600 (never replacing
/// one: `what` says what would be lost), returning them.
pub fn write_new_seed(path: &Path, what: &str) -> Result<Zeroizing<[u8; 32]>, AgentError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::SysRng
        .try_fill_bytes(seed.as_mut())
        .map_err(|e| AgentError::local(path, format!("the OS random source failed: {e}")))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            AgentError::local(
                path,
                format!("already exists; refusing to overwrite {what}"),
            )
        } else {
            AgentError::local(path, e)
        }
    })?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(seed.as_ref())));
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| AgentError::local(path, e))?;
    Ok(seed)
}

/// Refuses a secret file (a key, a token) that its group or others can read or write.
pub fn refuse_if_shared(path: &Path, what: &str) -> Result<(), AgentError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| AgentError::local(path, format!("cannot read the {what}: {e}")))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(AgentError::local(
                path,
                format!(
                    "the {what} is readable by others (mode {:o}); run chmod 600",
                    mode & 0o777
                ),
            ));
        }
    }
    Ok(())
}

/// Reads a seed written by [`write_new_seed`], refusing a file that others can read.
pub fn read_seed(
    path: &Path,
    what: &str,
    made_by: &str,
) -> Result<Zeroizing<[u8; 32]>, AgentError> {
    refuse_if_shared(path, what)?;
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| AgentError::local(path, format!("cannot read the {what}: {e}")))?,
    );
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), seed.as_mut()).map_err(|_| {
        AgentError::local(
            path,
            format!("not a {what}: expected 64 hex digits ({made_by} writes one)"),
        )
    })?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_file_once_and_it_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let public = generate(&path).unwrap();
        assert_eq!(public.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let key = load(&path).unwrap();
        assert_eq!(hex::encode(key.public().0), public);
        let again = generate(&path).unwrap_err().to_string();
        assert!(again.contains("refusing to overwrite"), "{again}");
        assert_eq!(
            hex::encode(load(&path).unwrap().public().0),
            public,
            "unchanged"
        );

        std::fs::write(dir.path().join("bad.key"), "zz").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let bad = dir.path().join("bad.key");
            std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(
                load(&bad)
                    .unwrap_err()
                    .to_string()
                    .contains("64 hex digits")
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(load(&path).unwrap_err().to_string().contains("chmod 600"));
        }
    }
}
