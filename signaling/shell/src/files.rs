//! Files that must survive a crash whole: the appliance's installed modules,
//! the plugin's registry.

use std::io::{self, Write as _};
use std::path::Path;

/// Replaces `path` with `bytes` so that a crash at any point leaves either
/// the old contents or the new, never a torn file: written to a temporary
/// file beside it, flushed to disk, renamed over it, and the directory
/// flushed so the rename itself is durable. Creates the directory if needed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write(path, bytes, None)
}

/// [`write_atomically`] for a file only its owner may read (secrets): the
/// temporary file is created with mode 0600, so the bytes are never
/// readable by others, not even for a moment.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write(path, bytes, Some(0o600))
}

fn write(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = dir.join(name);
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    if let Some(m) = mode {
        // A leftover of a crash keeps its old mode: start afresh.
        let _ = std::fs::remove_file(&tmp);
        open.mode(m);
    }
    let mut f = open.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("netserv-files-{}", std::process::id()));
        let path = dir.join("nested").join("state.json");
        write_atomically(&path, b"first").expect("write");
        write_atomically(&path, b"second").expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        let left: Vec<_> = std::fs::read_dir(path.parent().expect("dir")).expect("list").collect();
        assert_eq!(left.len(), 1, "only the file itself: {left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
