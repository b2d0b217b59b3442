//! Writes a rootfs tar rooted at `./` (`./`, `./etc/`, `./etc/passwd`), as `tar -C DIR -cf - .`
//! does. The `tar` crate's builder drops the `./` prefix, so names are written here, with GNU
//! long-name records for names and link targets over 100 bytes.

use std::io::{self, Read, Write};
use tar::{EntryType, Header};

const BLOCK: u64 = 512;
const NAME_FIELD: usize = 100;

#[derive(Debug)]
pub struct TarWriter<W: Write> {
    out: W,
}

/// The name of `path` (relative, without `./`; empty for the root) in the archive.
pub fn archive_name(path: &[u8], is_dir: bool) -> Vec<u8> {
    let mut name = b"./".to_vec();
    if !path.is_empty() {
        name.extend_from_slice(path);
        if is_dir {
            name.push(b'/');
        }
    }
    name
}

/// A GNU header of `kind` with every numeric field set (owner root, mode 0644, size 0, mtime 0).
pub fn new_header(kind: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    h
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    /// Appends one entry: `header` carries everything but the names (mode, owners, times, type,
    /// size); `path` is relative without `./`; `data` gives exactly the header's size in bytes.
    pub fn append(
        &mut self,
        header: &mut Header,
        path: &[u8],
        link: Option<&[u8]>,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        let name = archive_name(path, header.entry_type() == EntryType::Directory);
        set_name(&mut self.out, &mut header.as_old_mut().name, &name, b'L')?;
        if let Some(link) = link {
            set_name(&mut self.out, &mut header.as_old_mut().linkname, link, b'K')?;
        }
        header.set_cksum();
        self.out.write_all(header.as_bytes())?;
        let size = header.size()?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: {copied} bytes where {size} were expected (did it change while being read?)",
                    String::from_utf8_lossy(&name)
                ),
            ));
        }
        self.pad(size)
    }

    /// Writes the end-of-archive marker (two zero blocks) and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0; 2 * BLOCK as usize])?;
        Ok(self.out)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rest = (BLOCK - size % BLOCK) % BLOCK;
        self.out.write_all(&[0; BLOCK as usize][..rest as usize])
    }
}

/// Puts `name` in a header's name (or link name) field, preceded by a GNU long-name record
/// (`kind` `L` or `K`) when it does not fit.
fn set_name(
    out: &mut dyn Write,
    field: &mut [u8; NAME_FIELD],
    name: &[u8],
    kind: u8,
) -> io::Result<()> {
    field.fill(0);
    if name.len() <= NAME_FIELD {
        field[..name.len()].copy_from_slice(name);
        return Ok(());
    }
    field.copy_from_slice(&name[..NAME_FIELD]);
    let mut long = new_header(EntryType::new(kind));
    long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    let size = name.len() as u64 + 1;
    long.set_size(size);
    long.set_cksum();
    out.write_all(long.as_bytes())?;
    out.write_all(name)?;
    out.write_all(&[0])?;
    let rest = (BLOCK - size % BLOCK) % BLOCK;
    out.write_all(&[0; BLOCK as usize][..rest as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_rooted_at_dot_slash_and_long_names_survive() {
        let mut w = TarWriter::new(Vec::new());
        let mut dir = new_header(EntryType::Directory);
        dir.set_mode(0o755);
        w.append(&mut dir.clone(), b"", None, &mut io::empty())
            .unwrap();
        w.append(&mut dir, b"etc", None, &mut io::empty()).unwrap();
        let long = format!("etc/{}", "x".repeat(150));
        let mut file = new_header(EntryType::Regular);
        file.set_mode(0o600);
        file.set_uid(1000);
        file.set_size(5);
        w.append(&mut file, long.as_bytes(), None, &mut &b"hello"[..])
            .unwrap();
        let target = format!("/{}", "y".repeat(120));
        let mut link = new_header(EntryType::Symlink);
        w.append(
            &mut link,
            b"etc/link",
            Some(target.as_bytes()),
            &mut io::empty(),
        )
        .unwrap();
        let bytes = w.finish().unwrap();

        let mut archive = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, Option<String>, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    String::from_utf8(e.path_bytes().to_vec()).unwrap(),
                    e.link_name_bytes()
                        .map(|l| String::from_utf8(l.to_vec()).unwrap()),
                    e.header().mode().unwrap(),
                    e.header().uid().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("./".into(), None, 0o755, 0),
                ("./etc/".into(), None, 0o755, 0),
                (format!("./{long}"), None, 0o600, 1000),
                ("./etc/link".into(), Some(target), 0o644, 0),
            ]
        );
    }
}
