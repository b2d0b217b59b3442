//! An OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) flattened into one rootfs
//! tar: the manifest for linux/amd64 (or the only one), its layers applied in order, whiteouts
//! (`.wh.NAME`) and opaque directories (`.wh..wh..opq`) honoured.
//!
//! Two passes over the layers: the first reads only headers and works out which entry of which
//! layer is in the final tree (and checks each layer's digest); the second writes the
//! directories (sorted, from memory), then the surviving entries layer by layer, then the hard
//! links, whose targets are all there by then.

use super::compression::{Compression, decompress};
use super::tar_writer::{TarWriter, archive_name, new_header};
use anyhow::{Context, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    os: String,
    architecture: String,
}

/// A layout whose manifest has been chosen and whose layers exist.
#[derive(Debug)]
pub struct OciLayout {
    root: PathBuf,
    /// The layers' descriptors, bottom first.
    layers: Vec<Descriptor>,
}

/// Is `dir` an OCI image layout?
pub fn is_layout(dir: &Path) -> bool {
    dir.join("oci-layout").is_file() && dir.join("index.json").is_file()
}

impl OciLayout {
    /// Reads `index.json` and the chosen manifest.
    pub fn open(root: &Path) -> anyhow::Result<OciLayout> {
        let shown = root.display();
        let index: Index = read_json(&root.join("index.json"))?;
        let mut chosen = choose(&index.manifests)
            .with_context(|| format!("{shown}/index.json"))?
            .clone();
        // An index may point at another index (a multi-platform image): follow it.
        for _ in 0..4 {
            if !INDEX_TYPES.contains(&chosen.media_type.as_str()) {
                break;
            }
            let nested: Index = read_json(&blob_path(root, &chosen.digest)?)?;
            chosen = choose(&nested.manifests)
                .with_context(|| format!("{shown}: index {}", chosen.digest))?
                .clone();
        }
        let manifest: Manifest = read_json(&blob_path(root, &chosen.digest)?)?;
        if manifest.layers.is_empty() {
            bail!("{shown}: manifest {} has no layers", chosen.digest);
        }
        for layer in &manifest.layers {
            let path = blob_path(root, &layer.digest)?;
            if !path.is_file() {
                bail!(
                    "{shown}: layer {} is missing ({} does not exist); copy the whole layout",
                    layer.digest,
                    path.display()
                );
            }
        }
        Ok(OciLayout {
            root: root.to_path_buf(),
            layers: manifest.layers,
        })
    }

    /// Writes the flattened rootfs.
    pub fn flatten<W: Write>(&self, out: &mut TarWriter<W>) -> anyhow::Result<()> {
        let tree = self.plan()?;
        for (path, mut header) in tree.dirs {
            out.append(&mut header, &path, None, &mut io::empty())?;
        }
        for (index, layer) in self.layers.iter().enumerate() {
            let keep = &tree.survivors[index];
            if keep.is_empty() {
                continue;
            }
            self.read_layer(layer, |position, path, entry| {
                if keep.contains(&position) {
                    let link = entry.link_name_bytes().map(|l| l.into_owned());
                    let mut header = fresh_header(entry.header(), entry.size())?;
                    out.append(&mut header, &path, link.as_deref(), entry)?;
                }
                Ok(())
            })?;
        }
        for (path, (mut header, target)) in tree.hard_links {
            if tree.present.contains(&target) {
                let target = archive_name(&target, false);
                out.append(&mut header, &path, Some(&target), &mut io::empty())?;
            } else {
                let path = String::from_utf8_lossy(&path);
                eprintln!("warning: {path}: a hard link to a file a later layer removed; left out");
            }
        }
        Ok(())
    }

    /// The first pass: which entries make the final tree.
    fn plan(&self) -> anyhow::Result<Tree> {
        let mut tree = Tree {
            survivors: vec![BTreeSet::new(); self.layers.len()],
            ..Tree::default()
        };
        // Path → (layer, position) of the entry that provides it.
        let mut state: BTreeMap<Vec<u8>, (usize, usize, Kind)> = BTreeMap::new();
        for (index, layer) in self.layers.iter().enumerate() {
            let mut entries: Vec<(Vec<u8>, usize, Kind)> = Vec::new();
            let mut whiteouts: Vec<Vec<u8>> = Vec::new();
            let mut opaque: Vec<Vec<u8>> = Vec::new();
            self.read_layer(layer, |position, path, entry| {
                let (parent, base) = match path.iter().rposition(|b| *b == b'/') {
                    Some(i) => (&path[..i], &path[i + 1..]),
                    None => (&path[..0], &path[..]),
                };
                if base == b".wh..wh..opq" {
                    opaque.push(parent.to_vec());
                } else if let Some(hidden) = base.strip_prefix(b".wh.") {
                    if !hidden.starts_with(b".wh.") {
                        whiteouts.push(join(parent, hidden));
                    }
                } else {
                    let header = entry.header();
                    let kind = match header.entry_type() {
                        EntryType::Directory => Kind::Dir(Box::new(fresh_header(header, 0)?)),
                        EntryType::Link => {
                            let target = entry
                                .link_name_bytes()
                                .map(|t| normalize(&t))
                                .transpose()?
                                .unwrap_or_default();
                            Kind::HardLink(Box::new(fresh_header(header, 0)?), target)
                        }
                        EntryType::Regular
                        | EntryType::Continuous
                        | EntryType::Symlink
                        | EntryType::Char
                        | EntryType::Block
                        | EntryType::Fifo => Kind::Streamed,
                        EntryType::XGlobalHeader => return Ok(()),
                        other => bail!(
                            "{}: entry type {other:?} is not supported",
                            String::from_utf8_lossy(&path)
                        ),
                    };
                    entries.push((path, position, kind));
                }
                Ok(())
            })?;
            // Whiteouts hide what lower layers had; this layer's own entries stay.
            for hidden in whiteouts {
                state.remove(&hidden);
                remove_under(&mut state, &hidden);
            }
            for dir in opaque {
                remove_under(&mut state, &dir);
            }
            for (path, position, kind) in entries {
                if !matches!(kind, Kind::Dir(_)) {
                    // A file over a directory hides what the lower layers had under it.
                    remove_under_where(&mut state, &path, |(l, _, _)| *l < index);
                }
                state.insert(path, (index, position, kind));
            }
        }
        for (path, (layer, position, kind)) in state {
            tree.present.insert(path.clone());
            match kind {
                Kind::Dir(header) => {
                    tree.dirs.insert(path, *header);
                }
                Kind::HardLink(header, target) => {
                    tree.hard_links.insert(path, (*header, target));
                }
                Kind::Streamed => {
                    tree.survivors[layer].insert(position);
                }
            }
        }
        tree.dirs.entry(Vec::new()).or_insert_with(|| {
            let mut root = new_header(EntryType::Directory);
            root.set_mode(0o755);
            root
        });
        Ok(tree)
    }

    /// Calls `each(position, normalized path, entry)` for every entry of `layer`, then checks the
    /// layer's digest.
    fn read_layer(
        &self,
        layer: &Descriptor,
        mut each: impl FnMut(
            usize,
            Vec<u8>,
            &mut tar::Entry<'_, Box<dyn Read + '_>>,
        ) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let path = blob_path(&self.root, &layer.digest)?;
        let what = || format!("{}: layer {}", self.root.display(), layer.digest);
        let file =
            File::open(&path).with_context(|| format!("{}: cannot read it", path.display()))?;
        let mut raw = HashingReader {
            inner: file,
            hasher: Sha256::new(),
        };
        {
            let (compression, decoded) = decompress(BufReader::new(&mut raw)).with_context(what)?;
            if compression == Compression::Zstd {
                bail!(
                    "{}: zstd-compressed layers are not supported; convert the image to gzip \
                     layers (skopeo copy --dest-compress-format gzip ...)",
                    what()
                );
            }
            let mut archive = tar::Archive::new(decoded);
            let entries = archive.entries().with_context(what)?;
            for (position, entry) in entries.enumerate() {
                let mut entry = entry.with_context(what)?;
                let path = normalize(&entry.path_bytes()).with_context(what)?;
                each(position, path, &mut entry).with_context(what)?;
            }
            // Read to the end, so that the digest covers the whole blob.
            io::copy(&mut archive.into_inner(), &mut io::sink()).with_context(what)?;
        }
        io::copy(&mut raw, &mut io::sink()).with_context(what)?;
        let actual = format!("sha256:{:x}", raw.hasher.finalize());
        if layer.digest.starts_with("sha256:") && actual != layer.digest {
            bail!("{}: the blob is corrupt (its content is {actual})", what());
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Tree {
    /// Directories, by path (parents first), with their headers.
    dirs: BTreeMap<Vec<u8>, Header>,
    /// Hard links, by path, with their headers and targets.
    hard_links: BTreeMap<Vec<u8>, (Header, Vec<u8>)>,
    /// For each layer, the positions of its entries written with their data.
    survivors: Vec<BTreeSet<usize>>,
    /// Every path of the final tree.
    present: BTreeSet<Vec<u8>>,
}

#[derive(Debug)]
enum Kind {
    Dir(Box<Header>),
    HardLink(Box<Header>, Vec<u8>),
    /// Files, symlinks, devices, FIFOs: written from the layer in the second pass.
    Streamed,
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The manifest for linux/amd64, or the only one.
fn choose(manifests: &[Descriptor]) -> anyhow::Result<&Descriptor> {
    if let [only] = manifests {
        return Ok(only);
    }
    manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .with_context(|| {
            let platforms: Vec<String> = manifests
                .iter()
                .map(|m| match &m.platform {
                    Some(p) => format!("{}/{}", p.os, p.architecture),
                    None => "unknown".into(),
                })
                .collect();
            format!(
                "{} manifests and none for linux/amd64 (found: {})",
                manifests.len(),
                platforms.join(", ")
            )
        })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read(path).with_context(|| format!("{}: cannot read it", path.display()))?;
    serde_json::from_slice(&text)
        .with_context(|| format!("{}: not valid JSON for an OCI layout", path.display()))
}

/// `blobs/<algorithm>/<hex>` for a digest `<algorithm>:<hex>`.
fn blob_path(root: &Path, digest: &str) -> anyhow::Result<PathBuf> {
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    match digest.split_once(':') {
        Some((algorithm, hex)) if valid(algorithm) && valid(hex) => {
            Ok(root.join("blobs").join(algorithm).join(hex))
        }
        _ => bail!("{}: {digest:?} is not a digest", root.display()),
    }
}

/// An entry's path without `/`, `./` or a trailing `/`; empty for the root. `..` is refused.
fn normalize(path: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len());
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => bail!(
                "{}: a path that leaves the root",
                String::from_utf8_lossy(path)
            ),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part);
            }
        }
    }
    Ok(out)
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

/// Removes every path strictly under `dir` (all paths for the root).
fn remove_under<V>(state: &mut BTreeMap<Vec<u8>, V>, dir: &[u8]) {
    remove_under_where(state, dir, |_| true);
}

fn remove_under_where<V>(state: &mut BTreeMap<Vec<u8>, V>, dir: &[u8], pred: impl Fn(&V) -> bool) {
    let prefix = if dir.is_empty() {
        Vec::new()
    } else {
        join(dir, b"")
    };
    let doomed: Vec<Vec<u8>> = state
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(k, v)| !k.is_empty() && pred(v))
        .map(|(k, _)| k.clone())
        .collect();
    for key in doomed {
        state.remove(&key);
    }
}

/// A GNU header with the entry's metadata but no names (written by the [`TarWriter`]).
fn fresh_header(src: &Header, size: u64) -> anyhow::Result<Header> {
    let kind = match src.entry_type() {
        EntryType::Continuous => EntryType::Regular,
        other => other,
    };
    let mut h = new_header(kind);
    h.set_mode(src.mode()?);
    h.set_uid(src.uid()?);
    h.set_gid(src.gid()?);
    h.set_mtime(src.mtime()?);
    h.set_size(if kind == EntryType::Regular { size } else { 0 });
    if matches!(kind, EntryType::Char | EntryType::Block) {
        h.set_device_major(src.device_major()?.unwrap_or(0))?;
        h.set_device_minor(src.device_minor()?.unwrap_or(0))?;
    }
    if let Ok(Some(user)) = src.username() {
        let _ = h.set_username(user);
    }
    if let Ok(Some(group)) = src.groupname() {
        let _ = h.set_groupname(group);
    }
    Ok(h)
}

#[cfg(test)]
mod tests;
