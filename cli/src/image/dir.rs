//! A directory (a rootfs) archived as a tar rooted at `./`: entries in name order, numeric owners,
//! modes and mtimes kept, symlinks kept as symlinks, hard links as hard links, device nodes and
//! FIFOs as such (sockets are skipped). The same tree gives the same bytes, so the same digest.

use super::tar_writer::{TarWriter, archive_name};
use anyhow::Context;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use tar::{EntryType, Header, HeaderMode};

/// Archives the tree under `root` into `out`.
pub fn archive<W: Write>(root: &Path, out: &mut TarWriter<W>) -> anyhow::Result<()> {
    let mut walk = Walk {
        root,
        out,
        links: HashMap::new(),
    };
    let meta = fs::symlink_metadata(root)
        .with_context(|| format!("{}: cannot read it", root.display()))?;
    walk.entry(&mut Vec::new(), &meta)
}

struct Walk<'a, W: Write> {
    root: &'a Path,
    out: &'a mut TarWriter<W>,
    /// Files with several links already archived, by (device, inode): their archive path.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: Write> Walk<'_, W> {
    /// Archives the entry at `rel` (relative to the root, empty for the root itself), and what
    /// is under it.
    fn entry(&mut self, rel: &mut Vec<u8>, meta: &fs::Metadata) -> anyhow::Result<()> {
        let path = self.root.join(std::ffi::OsStr::from_bytes(rel));
        let shown = || path.display().to_string();
        let mut header = Header::new_gnu();
        header.set_metadata_in_mode(meta, HeaderMode::Complete);
        let kind = meta.file_type();
        if kind.is_socket() {
            eprintln!("warning: {}: a socket, left out of the image", shown());
            return Ok(());
        }
        if kind.is_file() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let target = archive_name(first, false);
                header.set_entry_type(EntryType::Link);
                header.set_size(0);
                return self
                    .out
                    .append(&mut header, rel, Some(&target), &mut io::empty())
                    .with_context(shown);
            }
            self.links.insert(key, rel.clone());
        }
        if kind.is_block_device() || kind.is_char_device() {
            let rdev = meta.rdev();
            header.set_device_major(nix::sys::stat::major(rdev) as u32)?;
            header.set_device_minor(nix::sys::stat::minor(rdev) as u32)?;
            header.set_size(0);
        }
        if kind.is_fifo() {
            header.set_size(0);
        }
        if kind.is_symlink() {
            let target = fs::read_link(&path)
                .with_context(|| format!("{}: cannot read the link", shown()))?;
            return self
                .out
                .append(
                    &mut header,
                    rel,
                    Some(target.as_os_str().as_bytes()),
                    &mut io::empty(),
                )
                .with_context(shown);
        }
        if kind.is_file() {
            let mut file = fs::File::open(&path).with_context(|| {
                format!(
                    "{}: cannot read it (import as a user who can, e.g. root)",
                    shown()
                )
            })?;
            return self
                .out
                .append(&mut header, rel, None, &mut file)
                .with_context(shown);
        }
        self.out
            .append(&mut header, rel, None, &mut io::empty())
            .with_context(shown)?;
        if kind.is_dir() {
            let mut children: Vec<_> = fs::read_dir(&path)
                .with_context(|| {
                    format!(
                        "{}: cannot list it (import as a user who can, e.g. root)",
                        shown()
                    )
                })?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .with_context(|| format!("{}: cannot list it", shown()))?;
            children.sort();
            for child in children {
                let len = rel.len();
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(child.as_bytes());
                let child_path = self.root.join(std::ffi::OsStr::from_bytes(rel));
                let meta = fs::symlink_metadata(&child_path)
                    .with_context(|| format!("{}: cannot read it", child_path.display()))?;
                self.entry(rel, &meta)?;
                rel.truncate(len);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn archive_bytes(root: &Path) -> Vec<u8> {
        let mut out = TarWriter::new(Vec::new());
        archive(root, &mut out).unwrap();
        out.finish().unwrap()
    }

    #[test]
    fn a_directory_becomes_a_sorted_tar_with_links_and_modes_and_the_same_bytes_twice() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o751)).unwrap();
        fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/alias")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        fs::write(root.join("a"), b"first").unwrap();

        let bytes = archive_bytes(root);
        assert_eq!(
            bytes,
            archive_bytes(root),
            "the same tree gives the same bytes"
        );
        let mut ar = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, EntryType, u32, Option<String>)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    String::from_utf8(e.path_bytes().to_vec()).unwrap(),
                    e.header().entry_type(),
                    e.header().mode().unwrap() & 0o7777,
                    e.link_name_bytes()
                        .map(|l| String::from_utf8(l.to_vec()).unwrap()),
                )
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "./",
                "./a",
                "./bin",
                "./usr/",
                "./usr/bin/",
                "./usr/bin/alias",
                "./usr/bin/tool"
            ]
        );
        assert_eq!(entries[2].1, EntryType::Symlink);
        assert_eq!(entries[2].3.as_deref(), Some("usr/bin"));
        // The first of the two links carries the data, the second points at it.
        assert_eq!(entries[5].1, EntryType::Regular);
        assert_eq!(entries[5].2, 0o751);
        assert_eq!(entries[6].1, EntryType::Link);
        assert_eq!(entries[6].3.as_deref(), Some("./usr/bin/alias"));
    }
}
