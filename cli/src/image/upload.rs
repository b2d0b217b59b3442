//! Streams a source's rootfs tar to the head in ~1 MiB chunks, with progress on stderr.
//!
//! The tar is produced by a blocking task writing into a bounded channel that feeds the RPC. If
//! the source fails half-way, the RPC is cancelled (never ended normally), so the head drops the
//! partial tar instead of storing it.

use super::Source;
use crate::client;
use anyhow::Context;
use beowulf_proto::v1;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

const CHUNK: usize = 1 << 20;

/// Imports `source` as `name`; returns what the head stored.
pub async fn import(socket: &Path, name: &str, source: &Path) -> anyhow::Result<v1::ImageInfo> {
    let source = Source::open(source)?;
    let mut c = client::connect(socket).await?;
    let (tx, rx) = mpsc::channel::<v1::ImageChunk>(4);
    tx.send(v1::ImageChunk {
        name: name.to_string(),
        data: Vec::new(),
    })
    .await
    .context("cannot start the import")?;

    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {bytes} sent ({bytes_per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(format!("{name} from {}", source.describe()));
    bar.enable_steady_tick(Duration::from_millis(200));

    let mut writer = ChunkWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
        bar: bar.clone(),
        closed: false,
    };
    let mut producer = tokio::task::spawn_blocking(move || {
        let result = source.write_tar(&mut writer).and_then(|()| {
            writer.flush()?;
            Ok(())
        });
        (result, writer)
    });
    let mut call = Box::pin(c.import_image(tokio_stream::wrappers::ReceiverStream::new(rx)));

    let reply = tokio::select! {
        // The head answered before the whole tar was sent: it refused the import.
        reply = &mut call => reply.map_err(client::status_error),
        joined = &mut producer => {
            let (result, writer) = joined.context("the image reader failed")?;
            match result {
                Ok(()) => {
                    drop(writer); // ends the stream: the head stores the image
                    call.await.map_err(client::status_error)
                }
                Err(e) if writer.closed => {
                    // The head stopped reading: its answer says why.
                    match tokio::time::timeout(Duration::from_secs(5), &mut call).await {
                        Ok(Err(status)) => Err(client::status_error(status)),
                        _ => Err(e),
                    }
                }
                Err(e) => {
                    // Cancel the call before the stream could end normally.
                    drop(call);
                    drop(writer);
                    Err(e)
                }
            }
        }
    };
    bar.finish_and_clear();
    Ok(reply?.into_inner())
}

/// `cluster image list`.
pub async fn list(socket: &Path) -> anyhow::Result<Vec<v1::ImageInfo>> {
    let mut c = client::connect(socket).await?;
    Ok(c.list_images(v1::ListImagesRequest {})
        .await
        .map_err(client::status_error)?
        .into_inner()
        .images)
}

/// Cuts what is written into chunks and sends them (blocking: it runs off the async workers).
struct ChunkWriter {
    tx: mpsc::Sender<v1::ImageChunk>,
    buf: Vec<u8>,
    bar: ProgressBar,
    /// The head stopped reading (the channel closed).
    closed: bool,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let len = data.len() as u64;
        let chunk = v1::ImageChunk {
            name: String::new(),
            data,
        };
        if self.tx.blocking_send(chunk).is_err() {
            self.closed = true;
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "headnoded stopped reading the image",
            ));
        }
        self.bar.inc(len);
        Ok(())
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl std::fmt::Debug for ChunkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkWriter")
            .field("buffered", &self.buf.len())
            .field("closed", &self.closed)
            .finish()
    }
}
