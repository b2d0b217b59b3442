//! The image store through the head: names, imports, replacement rights, resolution.

use super::*;
use crate::config::HeadConfig;
use beowulf_as_user::UserCredentials;

fn config(dir: &Path) -> HeadConfig {
    HeadConfig::parse(
        &dir.join("headnoded.toml"),
        &format!("state_dir = {:?}\nsocket = {:?}\n", dir, dir.join("sock")),
    )
    .unwrap()
}

const ROOT: Caller = Caller { uid: 0, gid: 0 };
const ALICE: Caller = Caller {
    uid: 64000,
    gid: 64000,
};

/// A tar of one file `./hello` holding `text`, as `tar` would write it.
fn tiny_tar(text: &str) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..7].copy_from_slice(b"./hello");
    header[100..107].copy_from_slice(b"0000644");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(format!("{:011o}", text.len()).as_bytes());
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(text.as_bytes());
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    tar
}

fn import(head: &Head, caller: &Caller, name: &str, tar: &[u8]) -> Result<ImageRecord, HeadError> {
    let mut upload = head.begin_import(caller, name)?;
    // Several writes, as chunks arrive.
    for chunk in tar.chunks(300) {
        upload.write(chunk)?;
    }
    head.finish_import(caller, upload)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn blobs(head: &Head) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(head.config.image_store().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn names_are_lowercase_words_of_at_most_128_characters() {
    for good in ["mpi", "openmpi-4.1_debian12", "0day", &"a".repeat(128)] {
        assert!(validate_image_name(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "MPI",
        "-mpi",
        ".mpi",
        "mpi/x",
        "mpi x",
        "mpï",
        &"a".repeat(129),
    ] {
        let err = validate_image_name(bad).unwrap_err().to_string();
        assert!(err.contains("lowercase letters"), "{bad}: {err}");
        assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
    }
}

#[test]
fn an_import_stores_the_tar_by_digest_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tar = tiny_tar("hello\n");
    let image = {
        let head = Head::open(config(dir.path())).unwrap();
        let image = import(&head, &ROOT, "hello", &tar).unwrap();
        assert_eq!(image.digest, sha256(&tar));
        assert_eq!(image.size_bytes, tar.len() as u64);
        assert_eq!(image.owner.uid, 0);
        let hex = image.digest.strip_prefix("sha256:").unwrap();
        assert_eq!(
            image.tar_path,
            dir.path().join(format!("images/blobs/sha256-{hex}.tar"))
        );
        assert_eq!(fs::read(&image.tar_path).unwrap(), tar);
        let mode = fs::metadata(&image.tar_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let mode = fs::metadata(dir.path().join("images/blobs"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        image
    };
    // A fresh head loads the record from the store.
    let head = Head::open(config(dir.path())).unwrap();
    assert_eq!(head.list_images(), vec![image.clone()]);
    let resolved = head.resolve_image("hello", &root()).unwrap();
    assert_eq!(resolved.digest, image.digest);
    assert_eq!(resolved.tar_path, image.tar_path);
    // No temporary file is left behind.
    let left: Vec<_> = fs::read_dir(dir.path().join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("blobs")]);
}

#[test]
fn same_content_shares_a_blob_and_a_replaced_blob_goes_when_unused() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let one = import(&head, &ROOT, "one", &tiny_tar("1")).unwrap();
    let also_one = import(&head, &ROOT, "also-one", &tiny_tar("1")).unwrap();
    assert_eq!(one.digest, also_one.digest);
    assert_eq!(blobs(&head).len(), 1);

    // Replacing `one`: its old blob stays, `also-one` still uses it.
    let two = import(&head, &ROOT, "one", &tiny_tar("2")).unwrap();
    assert_eq!(blobs(&head).len(), 2);
    assert!(also_one.tar_path.exists());
    // Replacing `also-one` too: nothing uses the first blob any more.
    import(&head, &ROOT, "also-one", &tiny_tar("2")).unwrap();
    assert_eq!(
        blobs(&head),
        vec![format!(
            "sha256-{}.tar",
            two.digest.strip_prefix("sha256:").unwrap()
        )]
    );
    assert_eq!(head.list_images().len(), 2);
}

#[test]
fn only_the_owner_or_root_may_replace_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    import(&head, &ROOT, "base", &tiny_tar("root's")).unwrap();
    let err = head.begin_import(&ALICE, "base").unwrap_err();
    assert!(matches!(err, HeadError::PermissionDenied(_)), "{err}");
    assert!(err.to_string().contains("only they or root"), "{err}");

    import(&head, &ALICE, "alices", &tiny_tar("alice's")).unwrap();
    import(&head, &ALICE, "alices", &tiny_tar("alice's, again")).unwrap();
    let image = import(&head, &ROOT, "alices", &tiny_tar("root's now")).unwrap();
    assert_eq!(image.owner.uid, 0);

    // Refused at the end too, when someone else took the name during the upload.
    let mut upload = head.begin_import(&ALICE, "late").unwrap();
    upload.write(&tiny_tar("alice's, late")).unwrap();
    import(&head, &ROOT, "late", &tiny_tar("first")).unwrap();
    let err = head.finish_import(&ALICE, upload).unwrap_err();
    assert!(matches!(err, HeadError::PermissionDenied(_)), "{err}");
    assert_eq!(blobs(&head).len(), 3, "the refused upload left no blob");
}

#[test]
fn data_that_is_not_a_tar_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    for data in [&b""[..], b"not a tar", &[7u8; 1024]] {
        let err = import(&head, &ROOT, "junk", data).unwrap_err();
        assert!(err.to_string().contains("not a tar archive"), "{err}");
    }
    assert!(head.list_images().is_empty());
    assert!(blobs(&head).is_empty());
    assert_eq!(fs::read_dir(dir.path().join("images")).unwrap().count(), 1);
}

#[test]
fn a_tarball_named_by_path_resolves_to_its_digest_hashed_once() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let tarball = dir.path().join("rootfs.tar");
    fs::write(&tarball, tiny_tar("by path")).unwrap();
    let reference = tarball.to_str().unwrap();
    let resolved = head.resolve_image(reference, &root()).unwrap();
    assert_eq!(resolved.digest, sha256(&tiny_tar("by path")));
    assert_eq!(resolved.tar_path, tarball);
    assert_eq!(resolved.reference, reference);
    assert_eq!(head.lock().image_digests.len(), 1);
    // Cached: the same answer even through a mutation.
    let again = head
        .mutate(|tx| tx.resolve_image(reference, &root()))
        .unwrap();
    assert_eq!(again, resolved);
    assert_eq!(head.lock().image_digests.len(), 1);
    // A changed file (size and mtime) is hashed again.
    fs::write(&tarball, tiny_tar("changed, longer")).unwrap();
    let changed = head.resolve_image(reference, &root()).unwrap();
    assert_eq!(changed.digest, sha256(&tiny_tar("changed, longer")));
}

#[test]
fn anything_else_is_no_image_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let err = head.resolve_image("foo", &root()).unwrap_err();
    assert!(matches!(err, HeadError::NoSuchImage(_)));
    assert_eq!(
        err.to_string(),
        "image \"foo\": no such image; import it with `cluster image import foo PATH` or give an \
         absolute path to a rootfs tarball"
    );
    let missing = dir.path().join("missing.tar");
    let err = head
        .resolve_image(missing.to_str().unwrap(), &root())
        .unwrap_err();
    assert!(err.to_string().contains("No such file"), "{err}");
    let err = head
        .resolve_image(dir.path().to_str().unwrap(), &root())
        .unwrap_err();
    assert!(err.to_string().contains("not a file"), "{err}");
}

#[test]
fn stale_uploads_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("images")).unwrap();
    fs::write(dir.path().join("images/tmp-0123"), b"half").unwrap();
    let _head = Head::open(config(dir.path())).unwrap();
    assert!(!dir.path().join("images/tmp-0123").exists());
}

fn root() -> UserCredentials {
    UserCredentials::primary_only(0, 0)
}

#[test]
fn a_tarball_path_is_read_with_the_submitters_credentials() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.path().join("root-only.tar");
    fs::write(&secret, tiny_tar("root's secret")).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let stranger = UserCredentials::primary_only(64_999, 64_999);
    let reference = secret.to_str().unwrap();
    let err = head.resolve_image(reference, &stranger).unwrap_err();
    assert!(err.to_string().contains("Permission denied"), "{err}");
    assert!(err.to_string().contains("as uid 64999"), "{err}");
    // Root resolves it, and that cached digest is still not given to the stranger.
    head.resolve_image(reference, &root()).unwrap();
    assert!(head.resolve_image(reference, &stranger).is_err());
}
