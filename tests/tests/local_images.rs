//! Local tier: `cluster image import` and `cluster image list` through the real daemons.

use beowulf_tests::{LocalCluster, json, text};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        text(&out.stderr)
    );
    out
}

/// A small rootfs every user may read.
fn rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::fs::write(dir.join("etc/os-release"), "ID=beowulf-test\n").unwrap();
    std::fs::write(dir.join("usr/bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
    std::fs::set_permissions(
        dir.join("usr/bin/hello"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("usr/bin", dir.join("bin")).unwrap();
}

fn import(cluster: &LocalCluster, name: &str, source: &Path) -> String {
    let out = cluster.cluster(&["image", "import", name, source.to_str().unwrap()]);
    assert!(out.status.success(), "import {name}: {}", text(&out.stderr));
    let line = text(&out.stdout);
    let digest = line
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {line:?}"))
        .to_string();
    assert!(
        line.starts_with(&format!("imported {name} {digest} ("))
            && line.trim_end().ends_with("MiB)"),
        "{line}"
    );
    digest
}

#[test]
fn images_are_imported_from_directories_and_tarballs_listed_and_guarded() {
    let cluster = LocalCluster::start(1, 10);
    let work = cluster.work.path();
    let dir = work.join("rootfs");
    rootfs(&dir);
    let tarball = work.join("rootfs.tar");
    run(
        "tar",
        &[
            "-C",
            dir.to_str().unwrap(),
            "--numeric-owner",
            "-cf",
            tarball.to_str().unwrap(),
            ".",
        ],
    );
    let gzipped = work.join("rootfs.tar.gz");
    let gz = run("gzip", &["-c", tarball.to_str().unwrap()]);
    std::fs::write(&gzipped, gz.stdout).unwrap();

    // The same content gives the same digest, stored once.
    let from_dir = import(&cluster, "base", &dir);
    assert_eq!(import(&cluster, "base-again", &dir), from_dir);
    let from_tar = import(&cluster, "tarball", &tarball);
    assert_eq!(import(&cluster, "tarball-gz", &gzipped), from_tar);
    // A tarball is stored as it is: its digest is the file's.
    let sha = text(&run("sha256sum", &[tarball.to_str().unwrap()]).stdout);
    assert_eq!(
        from_tar,
        format!("sha256:{}", sha.split_whitespace().next().unwrap())
    );

    let out = cluster.cluster(&["image", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = json(&out.stdout);
    let images = list.as_array().unwrap();
    let names: Vec<&str> = images.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["base", "base-again", "tarball", "tarball-gz"]);
    for image in images {
        assert_eq!(image["owner"], "root", "{image}");
        let path = Path::new(image["tar_path"].as_str().unwrap());
        assert!(
            path.starts_with(cluster.state.path().join("images/blobs")),
            "{image}"
        );
        assert!(path.is_file(), "{image}");
        assert!(image["size_bytes"].as_u64().unwrap() >= 1024, "{image}");
    }
    let blobs = std::fs::read_dir(cluster.state.path().join("images/blobs"))
        .unwrap()
        .count();
    assert_eq!(blobs, 2, "one blob per content");

    let out = cluster.cluster(&["image", "list"]);
    let table = text(&out.stdout);
    assert!(
        table.contains("NAME") && table.contains("DIGEST") && table.contains("OWNER"),
        "{table}"
    );
    let short = &from_dir["sha256:".len().."sha256:".len() + 12];
    assert!(table.contains(short), "{table}");
    assert!(
        !table.contains(&from_dir["sha256:".len()..]),
        "digests are cut: {table}"
    );

    // Another user may not replace root's image, but may import their own.
    let out = cluster.cluster_as(
        65534,
        65534,
        &["image", "import", "base", tarball.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("\"base\" belongs to root"), "{err}");
    let out = cluster.cluster_as(
        65534,
        65534,
        &["image", "import", "nobodys", dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = json(&cluster.cluster(&["image", "list", "--json"]).stdout);
    let nobodys = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "nobodys")
        .expect("nobody's image is listed")
        .clone();
    assert_eq!(nobodys["digest"].as_str(), Some(from_dir.as_str()));
    assert_ne!(nobodys["owner"], "root");

    // A bad source or name is refused, saying what to do.
    let bad = work.join("mpi.tar");
    std::fs::write(&bad, "this is not an archive\n").unwrap();
    let out = cluster.cluster(&["image", "import", "mpi", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("mpi.tar: not a tar archive (neither plain nor gzip); give a rootfs tarball, a directory or an OCI image layout"),
        "{err}"
    );
    let out = cluster.cluster(&["image", "import", "Bad/Name", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("image name \"Bad/Name\" is not valid"),
        "{err}"
    );
    let list = json(&cluster.cluster(&["image", "list", "--json"]).stdout);
    assert_eq!(list.as_array().unwrap().len(), 5);
    // Nothing half-written is left in the store.
    let leftovers: Vec<_> = std::fs::read_dir(cluster.state.path().join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "blobs")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
