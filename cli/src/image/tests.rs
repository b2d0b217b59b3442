//! Telling sources apart, and what each sends.

use super::*;
use flate2::{Compression as Level, write::GzEncoder};
use std::fs;

fn tarball() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(5);
    b.append_data(&mut h, "./hello", &b"hello"[..]).unwrap();
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Level::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn sent(source: &Source) -> Vec<u8> {
    let mut out = Vec::new();
    source.write_tar(&mut out).unwrap();
    out
}

#[test]
fn a_tarball_is_sent_unchanged_and_a_gzip_one_decompressed() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("rootfs.tar");
    let gz = dir.path().join("rootfs.tgz");
    fs::write(&plain, tarball()).unwrap();
    fs::write(&gz, gzip(&tarball())).unwrap();
    let plain = Source::open(&plain).unwrap();
    let gz = Source::open(&gz).unwrap();
    assert_eq!(plain.describe(), "a tarball");
    assert_eq!(gz.describe(), "a gzip-compressed tarball");
    assert_eq!(sent(&plain), tarball());
    assert_eq!(sent(&gz), tarball());
}

#[test]
fn a_directory_is_archived_and_an_oci_layout_recognized() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("file"), b"data").unwrap();
    let source = Source::open(dir.path()).unwrap();
    assert_eq!(source.describe(), "a directory");
    let bytes = sent(&source);
    let names: Vec<String> = tar::Archive::new(&bytes[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().to_vec()).unwrap())
        .collect();
    assert_eq!(names, ["./", "./file"]);

    fs::write(dir.path().join("oci-layout"), "{}").unwrap();
    fs::write(dir.path().join("index.json"), r#"{"manifests": []}"#).unwrap();
    let err = format!("{:#}", Source::open(dir.path()).unwrap_err());
    assert!(err.contains("index.json"), "{err}");
}

#[test]
fn a_bad_source_is_an_error_naming_the_file_and_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let err = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        format!("{:#}", Source::open(&path).unwrap_err())
    };
    let e = err("mpi.tar", b"just some text, not an archive at all");
    assert!(e.contains("mpi.tar: not a tar archive (neither plain nor gzip); give a rootfs tarball, a directory or an OCI image layout"), "{e}");
    let e = err("mpi.tar.gz", &gzip(b"text, compressed"));
    assert!(e.contains("mpi.tar.gz: not a tar archive"), "{e}");
    let e = err("mpi.tar.zst", &[0x28, 0xb5, 0x2f, 0xfd, 0, 0]);
    assert!(
        e.contains("zstd-compressed") && e.contains("zstd -d"),
        "{e}"
    );
    let e = err("empty.tar", &[0; 1024]);
    assert!(e.contains("empty tar archive"), "{e}");
    let missing = dir.path().join("missing.tar");
    let e = format!("{:#}", Source::open(&missing).unwrap_err());
    assert!(
        e.contains("missing.tar: cannot read it") && e.contains("No such file"),
        "{e}"
    );
}

#[test]
fn a_tarball_whose_entries_leave_the_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    // `set_path` refuses `..`: write the name field directly.
    h.as_old_mut().name[..11].copy_from_slice(b"../../x.txt");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let path = dir.path().join("evil.tar");
    fs::write(&path, b.into_inner().unwrap()).unwrap();
    let source = Source::open(&path).unwrap();
    let e = format!("{:#}", source.write_tar(&mut Vec::new()).unwrap_err());
    assert!(e.contains("leaves the root"), "{e}");
}
