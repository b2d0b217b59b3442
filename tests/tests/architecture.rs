//! Checks on the workspace's shape that keep its rules true.

use std::process::Command;

#[test]
fn the_scheduler_depends_on_neither_tokio_nor_tonic() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "beowulf-scheduler",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(beowulf_tests::repo_root())
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("beowulf-scheduler"), "{tree}");
    for forbidden in ["tokio", "tonic", "redb", "hyper"] {
        assert!(
            !tree.lines().any(|l| l.starts_with(forbidden)),
            "the pure scheduler depends on {forbidden}:\n{tree}"
        );
    }
}
