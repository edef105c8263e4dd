//! SoftHSM2's own ways, handled here: where its tokens live on disk, and a copy of them kept
//! after a key ceremony. SoftHSM 2.6's file store rewrites a token's `token.object` in place
//! (truncate, then write, without a rename or an fsync) on every successful `C_Login`, so a
//! process killed at that moment leaves an empty file and the token, CA keys included, is
//! gone. A real HSM keeps its keys itself; on SoftHSM the copy is the only way back.

use std::io;
use std::path::{Path, PathBuf};

/// Whether `module` is SoftHSM2's library (by its file name).
pub fn is_softhsm(module: &Path) -> bool {
    module
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains("softhsm"))
}

/// The token directory of the SoftHSM configuration this process uses: `SOFTHSM2_CONF`
/// (which `[hsm] module_env` sets before the module loads), else SoftHSM's default
/// `/etc/softhsm/softhsm2.conf`; `None` when the file names none.
pub fn token_dir() -> Option<PathBuf> {
    let conf = std::env::var_os("SOFTHSM2_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/softhsm/softhsm2.conf"));
    let text = std::fs::read_to_string(&conf).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "directories.tokendir").then(|| PathBuf::from(value.trim()))
    })
}

/// Copy every file under `tokens` into a new directory `{into}/{name}`, each file synced to
/// disk, and return that directory. An existing directory of that name is refused, so a
/// copy is never mixed with an older one.
pub fn backup_tokens(tokens: &Path, into: &Path, name: &str) -> io::Result<PathBuf> {
    let dest = into.join(name);
    if dest.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", dest.display()),
        ));
    }
    copy_tree(tokens, &dest)?;
    std::fs::File::open(&dest)?.sync_all()?;
    Ok(dest)
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
            std::fs::File::open(&target)?.sync_all()?;
        }
    }
    std::fs::File::open(to)?.sync_all()
}

/// Token files SoftHSM left empty (`token.object` of 0 bytes): what a kill during its
/// login rewrite leaves behind. Each one is a token SoftHSM no longer shows.
pub fn emptied_tokens(tokens: &Path) -> Vec<PathBuf> {
    let Ok(dirs) = std::fs::read_dir(tokens) else {
        return Vec::new();
    };
    dirs.filter_map(Result::ok)
        .map(|d| d.path().join("token.object"))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == 0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_copies_every_file_and_refuses_to_reuse_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(tokens.join("uuid-1")).unwrap();
        std::fs::write(tokens.join("uuid-1/token.object"), b"token").unwrap();
        std::fs::write(tokens.join("uuid-1/key.object"), b"key").unwrap();
        let backup = dir.path().join("backup");
        let copy = backup_tokens(&tokens, &backup, "first").unwrap();
        assert_eq!(
            std::fs::read(copy.join("uuid-1/key.object")).unwrap(),
            b"key"
        );
        assert_eq!(
            std::fs::read(copy.join("uuid-1/token.object")).unwrap(),
            b"token"
        );
        let again = backup_tokens(&tokens, &backup, "first").unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert!(emptied_tokens(&tokens).is_empty());
        std::fs::write(tokens.join("uuid-1/token.object"), b"").unwrap();
        assert_eq!(
            emptied_tokens(&tokens),
            vec![tokens.join("uuid-1/token.object")]
        );
    }

    #[test]
    fn only_softhsm_libraries_are_softhsm() {
        assert!(is_softhsm(Path::new("/usr/lib/softhsm/libsofthsm2.so")));
        assert!(!is_softhsm(Path::new(
            "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
        )));
    }
}
