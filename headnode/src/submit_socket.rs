//! Serves headnoded's submit socket (`headnoded.submit.sock`): one framed SubmitRequest per
//! connection, answered by the same `Head::submit_jobs` as the gRPC API's Submit, for the same
//! caller (the socket peer's uid and gid). Why it exists: `beowulf_proto::submit_socket`.

use crate::api::submit_as;
use crate::head::{Caller, Head};
use beowulf_proto::submit_socket::{HEADER_BYTES, announced_len, decode, frame};
use beowulf_proto::v1::{self, submit_answer};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tonic::Status;

/// A client gets this long to send its request: a connection that sends nothing does not hold a
/// task for ever. A job file is read before connecting, so a real client needs microseconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the accept loop waits after a refusal for lack of resources (no file descriptors
/// left, no memory): the condition lasts until some connection closes, and retrying at once
/// would spin a core that the connections need to finish. axum waits 1 s; submits are short.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Accepts connections until the listener itself fails; each is answered on its own task. A
/// failure to accept one connection (out of file descriptors, the peer gone) is logged and the
/// loop goes on: it must not stop headnoded.
pub async fn serve(listener: UnixListener, head: Arc<Head>) -> std::io::Result<()> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if accept_error_is_transient(&e) => {
                tracing::warn!(error = %e, "submit socket: cannot accept a connection; retrying");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let head = head.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, head).await {
                tracing::debug!(error = %e, "submit socket connection ended without an answer");
            }
        });
    }
}

/// Errors of one `accept` that leave the listener usable (accept(2)).
fn accept_error_is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            nix::libc::EMFILE
                | nix::libc::ENFILE
                | nix::libc::ENOBUFS
                | nix::libc::ENOMEM
                | nix::libc::ECONNABORTED
                | nix::libc::EINTR
                | nix::libc::EPROTO
                | nix::libc::EPERM
        )
    )
}

async fn answer(mut stream: UnixStream, head: Arc<Head>) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let caller = Caller {
        uid: cred.uid(),
        gid: cred.gid(),
    };
    let request = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request in time"))?;
    let result = match request {
        Ok(request) => submit_as(head, caller, request).await,
        Err(e) => Err(Status::invalid_argument(format!(
            "unreadable submit request: {e}"
        ))),
    };
    let answer = v1::SubmitAnswer {
        result: Some(match result {
            Ok(reply) => submit_answer::Result::Reply(reply),
            Err(status) => submit_answer::Result::Failure(v1::SubmitFailure {
                code: status.code() as i32,
                message: status.message().to_string(),
            }),
        }),
    };
    stream.write_all(&frame(&answer)).await?;
    stream.shutdown().await
}

async fn read_request(stream: &mut UnixStream) -> std::io::Result<v1::SubmitRequest> {
    let mut header = [0; HEADER_BYTES];
    stream.read_exact(&mut header).await?;
    let mut body = vec![0; announced_len(header)?];
    stream.read_exact(&mut body).await?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HeadConfig;
    use beowulf_proto::submit_socket::exchange;
    use beowulf_types::JobId;

    fn head(dir: &std::path::Path) -> Arc<Head> {
        let config = HeadConfig::parse(
            &dir.join("headnoded.toml"),
            &format!("state_dir = {:?}\nsocket = {:?}\n", dir, dir.join("sock")),
        )
        .unwrap();
        Arc::new(Head::open(config).unwrap())
    }

    #[test]
    fn running_out_of_descriptors_does_not_stop_the_accept_loop_but_a_broken_listener_does() {
        let os = std::io::Error::from_raw_os_error;
        assert!(accept_error_is_transient(&os(nix::libc::EMFILE)));
        assert!(accept_error_is_transient(&os(nix::libc::ECONNABORTED)));
        assert!(!accept_error_is_transient(&os(nix::libc::EBADF)));
        assert!(!accept_error_is_transient(&os(nix::libc::EINVAL)));
    }

    fn request(text: &str) -> v1::SubmitRequest {
        v1::SubmitRequest {
            file_name: "job.toml".into(),
            file_text: text.into(),
            cwd: "/tmp".into(),
            ..Default::default()
        }
    }

    /// One framed exchange with the socket at `path`, from a blocking thread (as the CLI makes it).
    async fn ask(path: &std::path::Path, request: v1::SubmitRequest) -> v1::SubmitAnswer {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut stream = std::os::unix::net::UnixStream::connect(path).unwrap();
            exchange(&mut stream, &request).unwrap()
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn submits_are_queued_for_the_socket_peer_and_refusals_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let head = head(dir.path());
        let (agent, _desired) = tokio::sync::mpsc::unbounded_channel();
        let inventory = beowulf_types::Inventory {
            cpus: 2,
            memory_mb: 1024,
            ..Default::default()
        };
        let node = v1::Register {
            node: "node1".into(),
            inventory: Some(v1::Inventory::from(&inventory)),
            runs: vec![],
            generation: 0,
            launch_endpoint: "127.0.0.1:7000".into(),
        };
        head.register(&node, agent).unwrap();
        let path = dir.path().join("headnoded.submit.sock");
        tokio::spawn(serve(UnixListener::bind(&path).unwrap(), head.clone()));

        let answer = ask(&path, request("command = [\"hostname\"]\n")).await;
        let Some(submit_answer::Result::Reply(reply)) = answer.result else {
            panic!("{answer:?}");
        };
        assert_eq!(reply.count, 1);
        let job = head.show_job(JobId(reply.job_id)).unwrap();
        assert_eq!(job.state, "PENDING");
        // The caller is the socket's peer: this test process.
        assert_eq!(
            job.user,
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .unwrap()
                .unwrap()
                .name
        );

        let answer = ask(&path, request("command = [\"a\"]\ncpus = \"two\"\n")).await;
        let Some(submit_answer::Result::Failure(failure)) = answer.result else {
            panic!("{answer:?}");
        };
        assert_eq!(failure.code, tonic::Code::InvalidArgument as i32);
        assert!(failure.message.contains("job.toml"), "{}", failure.message);
        assert!(failure.message.contains("cpus"), "{}", failure.message);
        assert_eq!(
            head.list_jobs(true).len(),
            1,
            "the refused job was not queued"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_is_not_a_frame_is_answered_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let head = head(dir.path());
        let path = dir.path().join("headnoded.submit.sock");
        tokio::spawn(serve(UnixListener::bind(&path).unwrap(), head.clone()));
        let answer = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::os::unix::net::UnixStream::connect(path).unwrap();
            // An announced length over the limit.
            stream.write_all(&u32::MAX.to_le_bytes()).unwrap();
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).unwrap();
            decode::<v1::SubmitAnswer>(&bytes[HEADER_BYTES..]).unwrap()
        })
        .await
        .unwrap();
        let Some(submit_answer::Result::Failure(failure)) = answer.result else {
            panic!("{answer:?}");
        };
        assert!(failure.message.contains("over the"), "{}", failure.message);
        assert!(head.list_jobs(true).is_empty());
    }
}
