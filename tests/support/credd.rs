//! Where the tests find `kubex-credd`. It belongs to another package (`crates/kubex-credd`), and a
//! test can ask Cargo only for its own package's binaries, so it is built here, once per test
//! process, into the same target directory as `kubex-cred` (where `kubex-cred` looks for it):
//! never stale, whatever the last build was. `support::bin` calls it for every binary, since
//! the fronts run `kubex-credd` themselves.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn path() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_BIN_EXE_kubex-cred")).parent().expect("the binaries' directory");
            let mut cargo = Command::new(env!("CARGO"));
            cargo.args(["build", "--quiet", "-p", "kubex-credd", "--bin", "kubex-credd"]);
            if dir.file_name().is_some_and(|d| d == "release") {
                cargo.arg("--release");
            }
            // `--target TRIPLE` builds put the binaries one level deeper; follow the same layout.
            if let Some(triple) = dir.parent().and_then(Path::file_name).filter(|t| t.to_string_lossy().contains('-')) {
                cargo.arg("--target").arg(triple);
            }
            let status = cargo.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("run cargo");
            assert!(status.success(), "cannot build kubex-credd (cargo build -p kubex-credd)");
            dir.join(format!("kubex-credd{}", std::env::consts::EXE_SUFFIX))
        })
        .clone()
}
