//! Flattening a tiny OCI layout built here: two gzip layers, whiteouts, an opaque directory, a
//! hard link, and an index with two platforms.

use super::*;
use flate2::{Compression as Level, write::GzEncoder};
use std::fs;

/// One entry of a layer: path, type, data or link target.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    Link(&'a str, &'a str),
}

fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Level::default()));
    for e in entries {
        let mut h = Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match e {
            E::Dir(p) => {
                h.set_entry_type(EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, io::empty()).unwrap();
            }
            E::File(p, text) => {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(text.len() as u64);
                b.append_data(&mut h, p, text.as_bytes()).unwrap();
            }
            E::Link(p, target) => {
                h.set_entry_type(EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn put_blob(root: &Path, bytes: &[u8]) -> String {
    let hex = format!("{:x}", Sha256::digest(bytes));
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    fs::write(root.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// Builds the layout; returns the digests of its two layers.
fn build(root: &Path) -> [String; 2] {
    let lower = layer(&[
        E::Dir("./"),
        E::Dir("./etc/"),
        E::File("./etc/a", "a from the lower layer"),
        E::File("./etc/b", "b, whited out above"),
        E::Dir("./opt/"),
        E::File("./opt/old", "hidden by the opaque directory above"),
        E::Dir("./opt/sub/"),
        E::File("./opt/sub/deep", "also hidden"),
        E::Dir("usr/"),
        E::File("usr/x", "x stays"),
        E::Dir("var/"),
        E::File("var/gone/file", "under a whited-out directory"),
    ]);
    let upper = layer(&[
        E::File("etc/.wh.b", ""),
        E::File("etc/a", "a from the upper layer"),
        E::Link("etc/c", "etc/a"),
        E::Dir("opt/"),
        E::File("opt/.wh..wh..opq", ""),
        E::File("opt/new", "new in the upper layer"),
        E::File("var/.wh.gone", ""),
    ]);
    let layers = [put_blob(root, &lower), put_blob(root, &upper)];
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:00", "size": 2},
        "layers": layers.iter().map(|d| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 1
        })).collect::<Vec<_>>(),
    });
    let manifest = put_blob(root, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:0123abcd",
             "size": 1, "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest,
             "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    });
    fs::write(root.join("index.json"), index.to_string()).unwrap();
    fs::write(
        root.join("oci-layout"),
        r#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .unwrap();
    layers
}

fn flatten(root: &Path) -> anyhow::Result<Vec<u8>> {
    let layout = OciLayout::open(root)?;
    let mut out = TarWriter::new(Vec::new());
    layout.flatten(&mut out)?;
    Ok(out.finish()?)
}

#[test]
fn layers_are_applied_in_order_with_whiteouts_and_opaque_directories() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!is_layout(dir.path()));
    build(dir.path());
    assert!(is_layout(dir.path()));
    let bytes = flatten(dir.path()).unwrap();

    let mut archive = tar::Archive::new(&bytes[..]);
    let mut found = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
        let what = match entry.header().entry_type() {
            EntryType::Directory => "dir".to_string(),
            EntryType::Link => format!(
                "link to {}",
                String::from_utf8(entry.link_name_bytes().unwrap().to_vec()).unwrap()
            ),
            _ => {
                let mut text = String::new();
                entry.read_to_string(&mut text).unwrap();
                text
            }
        };
        found.push((path, what));
    }
    let found: Vec<(&str, &str)> = found
        .iter()
        .map(|(p, w)| (p.as_str(), w.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("./", "dir"),
            ("./etc/", "dir"),
            ("./opt/", "dir"),
            ("./usr/", "dir"),
            ("./var/", "dir"),
            ("./usr/x", "x stays"),
            ("./etc/a", "a from the upper layer"),
            ("./opt/new", "new in the upper layer"),
            ("./etc/c", "link to ./etc/a"),
        ]
    );
    // The same layout flattens to the same bytes (so the same digest).
    assert_eq!(bytes, flatten(dir.path()).unwrap());
}

#[test]
fn a_corrupt_layer_or_a_missing_platform_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let [_, upper] = build(dir.path());
    let hex = upper.strip_prefix("sha256:").unwrap();
    let blob = dir.path().join("blobs/sha256").join(hex);
    // Another valid layer under the old digest.
    fs::write(&blob, layer(&[E::File("z", "not what the digest says")])).unwrap();
    let err = format!("{:#}", flatten(dir.path()).unwrap_err());
    assert!(err.contains(&upper) && err.contains("corrupt"), "{err}");

    let index = r#"{"schemaVersion": 2, "manifests": [
        {"digest": "sha256:aa", "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": "sha256:bb", "platform": {"os": "windows", "architecture": "amd64"}}]}"#;
    fs::write(dir.path().join("index.json"), index).unwrap();
    let err = format!("{:#}", OciLayout::open(dir.path()).unwrap_err());
    assert!(
        err.contains("none for linux/amd64 (found: linux/arm64, windows/amd64)"),
        "{err}"
    );
}

#[test]
fn paths_are_normalized_and_may_not_leave_the_root() {
    assert_eq!(normalize(b"./etc//passwd").unwrap(), b"etc/passwd");
    assert_eq!(normalize(b"/usr/bin/").unwrap(), b"usr/bin");
    assert_eq!(normalize(b"./").unwrap(), b"");
    assert!(normalize(b"etc/../../x").is_err());
}
