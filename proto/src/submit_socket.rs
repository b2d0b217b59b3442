//! headnoded's submit socket: the one request scripts make in a loop, without HTTP/2.
//!
//! `submit job.toml` is what users run hundreds of times from a shell loop, and each run pays for
//! its own connection. Over the gRPC socket that is an HTTP/2 connection set-up and a tokio runtime
//! in the client, and a hyper connection in the head: about a third of a submit's round trip and a
//! fifth of the head's CPU time in a run of short jobs (issue 7). On this socket a submit is one
//! length-prefixed protobuf message each way on a unix stream, answered by the same
//! `Head::submit_jobs` behind the same peer-uid check. Everything else, and `submit --wait`,
//! uses the gRPC API.
//!
//! ```text
//!   client: connect ─ [len u32 LE][SubmitRequest] ─▶
//!   head:                                         ◀─ [len u32 LE][SubmitAnswer] ─ close
//! ```

use prost::Message;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Largest frame either side accepts: gRPC's default message limit, far above any job file.
pub const MAX_FRAME_BYTES: usize = 4 << 20;

/// Bytes before a frame's message: its length.
pub const HEADER_BYTES: usize = 4;

/// The submit socket beside the gRPC socket `api_socket` (`headnoded.sock` →
/// `headnoded.submit.sock`).
pub fn path_beside(api_socket: &Path) -> PathBuf {
    api_socket.with_extension("submit.sock")
}

/// `message` as one frame.
pub fn frame(message: &impl Message) -> Vec<u8> {
    let len = u32::try_from(message.encoded_len()).expect("a frame is under 4 GiB");
    let mut bytes = Vec::with_capacity(HEADER_BYTES + len as usize);
    bytes.extend(len.to_le_bytes());
    message
        .encode(&mut bytes)
        .expect("a Vec grows to hold the message");
    bytes
}

/// The message length a frame header announces, if it is within [`MAX_FRAME_BYTES`].
pub fn announced_len(header: [u8; HEADER_BYTES]) -> io::Result<usize> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a submit socket frame of {len} bytes is over the {MAX_FRAME_BYTES}-byte limit"
            ),
        ));
    }
    Ok(len)
}

/// The message in a frame's body.
pub fn decode<M: Message + Default>(body: &[u8]) -> io::Result<M> {
    M::decode(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one frame and reads the one that answers it (blocking).
pub fn exchange<M: Message + Default>(
    stream: &mut (impl Read + Write),
    request: &impl Message,
) -> io::Result<M> {
    stream.write_all(&frame(request))?;
    let mut header = [0; HEADER_BYTES];
    stream.read_exact(&mut header)?;
    let mut body = vec![0; announced_len(header)?];
    stream.read_exact(&mut body)?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    #[test]
    fn frames_carry_their_length_and_round_trip() {
        let reply = v1::SubmitAnswer {
            result: Some(v1::submit_answer::Result::Reply(v1::SubmitReply {
                job_id: 7,
                count: 1,
                warnings: vec!["job.sh:3: #SBATCH --mail-user is accepted".into()],
                test_only: String::new(),
            })),
        };
        let bytes = frame(&reply);
        let header: [u8; HEADER_BYTES] = bytes[..HEADER_BYTES].try_into().unwrap();
        assert_eq!(announced_len(header).unwrap(), bytes.len() - HEADER_BYTES);
        // A peer that answers with that frame.
        let mut peer = io::Cursor::new(bytes.clone());
        let mut duplex = Duplex {
            input: &mut peer,
            output: Vec::new(),
        };
        let request = v1::SubmitRequest {
            file_name: "job.toml".into(),
            ..Default::default()
        };
        let answer: v1::SubmitAnswer = exchange(&mut duplex, &request).unwrap();
        assert_eq!(answer, reply);
        assert_eq!(duplex.output, frame(&request));
    }

    #[test]
    fn an_oversized_or_cut_frame_is_an_error() {
        let err = announced_len((MAX_FRAME_BYTES as u32 + 1).to_le_bytes()).unwrap_err();
        assert!(err.to_string().contains("over the"), "{err}");
        let mut bytes = frame(&v1::SubmitReply {
            job_id: 1,
            count: 1,
            warnings: Vec::new(),
            test_only: String::new(),
        });
        bytes.pop();
        let mut duplex = Duplex {
            input: &mut io::Cursor::new(bytes),
            output: Vec::new(),
        };
        let err =
            exchange::<v1::SubmitReply>(&mut duplex, &v1::SubmitRequest::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn the_submit_socket_sits_beside_the_api_socket() {
        assert_eq!(
            path_beside(Path::new("/var/lib/beowulf/headnoded.sock")),
            PathBuf::from("/var/lib/beowulf/headnoded.submit.sock")
        );
    }

    /// Reads from one side, records what is written.
    struct Duplex<'a, R> {
        input: &'a mut R,
        output: Vec<u8>,
    }

    impl<R: Read> Read for Duplex<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl<R> Write for Duplex<'_, R> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
