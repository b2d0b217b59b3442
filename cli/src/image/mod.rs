//! `cluster image import NAME SOURCE`: SOURCE is read here, as the calling user, and sent to the
//! head as one uncompressed rootfs tar. SOURCE is a tarball (plain or gzip, told by its magic
//! bytes; sent byte for byte, so its digest is the tarball's), a directory (archived), or an OCI
//! image layout (its layers flattened).

mod compression;
mod dir;
mod oci;
mod tar_writer;
mod upload;

pub use compression::{Compression, decompress};
pub use tar_writer::TarWriter;
pub use upload::{import, list};

use crate::{local, output};
use clap::Subcommand;

use anyhow::{Context, bail};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// What to do when SOURCE is not usable.
const SOURCE_HINT: &str = "give a rootfs tarball, a directory or an OCI image layout";

/// An image source, checked and ready to be sent.
#[derive(Debug)]
pub enum Source {
    Tarball {
        path: PathBuf,
        compression: Compression,
    },
    Dir(PathBuf),
    Oci(oci::OciLayout),
}

impl Source {
    /// Tells what `path` is and checks it enough that sending it should succeed.
    pub fn open(path: &Path) -> anyhow::Result<Source> {
        let shown = path.display();
        let meta = std::fs::metadata(path).with_context(|| format!("{shown}: cannot read it"))?;
        if meta.is_dir() {
            if oci::is_layout(path) {
                return Ok(Source::Oci(oci::OciLayout::open(path)?));
            }
            std::fs::read_dir(path).with_context(|| format!("{shown}: cannot list it"))?;
            return Ok(Source::Dir(path.to_path_buf()));
        }
        if !meta.is_file() {
            bail!("{shown}: not a file or a directory; {SOURCE_HINT}");
        }
        let file = File::open(path).with_context(|| format!("{shown}: cannot read it"))?;
        let (compression, mut stream) =
            decompress(BufReader::new(file)).with_context(|| format!("{shown}: cannot read it"))?;
        let unsupported = |name: &str, tool: &str| {
            anyhow::anyhow!(
                "{shown}: {name}-compressed, which is not supported; decompress it first \
                 ({tool} -d) or give a plain or gzip-compressed tarball"
            )
        };
        match compression {
            Compression::Zstd => return Err(unsupported("zstd", "zstd")),
            Compression::Xz => return Err(unsupported("xz", "xz")),
            Compression::Bzip2 => return Err(unsupported("bzip2", "bzip2")),
            Compression::None | Compression::Gzip => {}
        }
        let mut block = Vec::with_capacity(512);
        stream
            .by_ref()
            .take(512)
            .read_to_end(&mut block)
            .with_context(|| format!("{shown}: the gzip data is corrupt"))?;
        if block.len() == 512 && block.iter().all(|b| *b == 0) {
            bail!("{shown}: an empty tar archive; {SOURCE_HINT}");
        }
        if !is_tar_header(&block) {
            bail!("{shown}: not a tar archive (neither plain nor gzip); {SOURCE_HINT}");
        }
        Ok(Source::Tarball {
            path: path.to_path_buf(),
            compression,
        })
    }

    /// What it is, for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Source::Tarball {
                compression: Compression::Gzip,
                ..
            } => "a gzip-compressed tarball",
            Source::Tarball { .. } => "a tarball",
            Source::Dir(_) => "a directory",
            Source::Oci(_) => "an OCI image layout",
        }
    }

    /// Writes the rootfs tar to `out`.
    pub fn write_tar(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        match self {
            Source::Tarball { path, .. } => pass_tarball(path, out),
            Source::Dir(path) => {
                let mut tar = TarWriter::new(out);
                dir::archive(path, &mut tar)?;
                tar.finish()?;
                Ok(())
            }
            Source::Oci(layout) => {
                let mut tar = TarWriter::new(out);
                layout.flatten(&mut tar)?;
                tar.finish()?;
                Ok(())
            }
        }
    }
}

/// Sends a tarball's (decompressed) bytes unchanged, checking each entry on the way.
fn pass_tarball(path: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let shown = path.display();
    let file = File::open(path).with_context(|| format!("{shown}: cannot read it"))?;
    let (_, stream) = decompress(BufReader::new(file))?;
    let mut archive = tar::Archive::new(Tee { inner: stream, out });
    let entries = archive
        .entries()
        .with_context(|| format!("{shown}: not a valid tar archive (corrupt or cut short)"))?;
    for entry in entries {
        let entry = entry
            .with_context(|| format!("{shown}: not a valid tar archive (corrupt or cut short)"))?;
        let name = entry.path_bytes();
        if name.split(|b| *b == b'/').any(|part| part == b"..") {
            bail!(
                "{shown}: entry {} leaves the root; this is not a rootfs tarball",
                String::from_utf8_lossy(&name)
            );
        }
    }
    // The end-of-archive blocks and any padding after them.
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .with_context(|| format!("{shown}: cannot read it"))?;
    Ok(())
}

/// Passes on every byte it reads.
struct Tee<R, W> {
    inner: R,
    out: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// True when `block` is a whole tar header with a good checksum.
fn is_tar_header(block: &[u8]) -> bool {
    block.len() == 512
        && tar::Archive::new(block)
            .entries()
            .ok()
            .and_then(|mut entries| entries.next())
            .is_some_and(|entry| entry.is_ok())
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Put an image into the cluster's image store, addressed by digest. SOURCE is a rootfs
    /// tarball (plain or gzip), a rootfs directory, or an OCI image layout directory; it is read
    /// as you, and re-importing a NAME replaces it.
    Import { name: String, source: PathBuf },
    /// The images in the store.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// `cluster image import|list`.
pub async fn run(socket: &Path, command: ImageCommand) -> anyhow::Result<i32> {
    match command {
        ImageCommand::Import { name, source } => {
            let info = import(socket, &name, &source).await?;
            println!(
                "imported {} {} ({})",
                info.name,
                info.digest,
                output::mib(info.size_bytes)
            );
            Ok(0)
        }
        ImageCommand::List { json } => {
            let images = list(socket).await?;
            if json {
                let list: Vec<_> = images.iter().map(output::image_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{}",
                    output::printable(&output::images_table(&images, local::now_ms()))
                );
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests;
