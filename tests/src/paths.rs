//! Where the built binaries and modules are. Tests run from
//! `target/<profile>/deps/`, so the workspace's artifacts are found relative to
//! the running executable, whatever the profile.

use std::path::PathBuf;

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") { dir.parent().expect("profile dir").to_path_buf() } else { dir }
}

/// A binary of the workspace (`netserv-appliance`, `netserv-probe`, ...).
pub fn bin(name: &str) -> PathBuf {
    let p = profile_dir().join(name);
    assert!(p.exists(), "{} is not built: run `cargo build --workspace` first", p.display());
    p
}

/// A wasm module built for wasm32-wasip2 (`netserv_keepalive`, ...).
pub fn module(name: &str) -> PathBuf {
    let target = profile_dir().parent().expect("target dir").to_path_buf();
    let p = target.join("wasm32-wasip2/release").join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --release --target wasm32-wasip2 -p {}` first",
        p.display(),
        name.replace('_', "-")
    );
    p
}

/// Test fixtures (sipp scenarios, payloads).
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

/// The repository root (for files other crates ship, e.g. the Kamailio fragment).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}
