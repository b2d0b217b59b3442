//! Serves headnoded's submit socket (`headnoded.submit.sock`): one framed SubmitRequest per
//! connection, answered by the same `Head::submit_jobs` as the gRPC API's Submit, for the same
//! caller (the socket peer's uid and gid). Why it exists: `beowulf_proto::submit_socket`.

use crate::api::submit_as;
use crate::head::{Caller, Head};
use crate::server::connections::{Accepted, ClientSockets, Refusal};
use beowulf_proto::submit_socket::{HEADER_BYTES, announced_len, decode, frame};
use beowulf_proto::v1::{self, submit_answer};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::AbortHandle;
use tonic::Status;

/// Refused connections whose request had not all arrived when they were accepted wait for it on
/// a task, this many at once: each holds a descriptor beyond the caps for up to twice
/// [`REFUSAL_GRACE`]. When they are all taken the oldest is closed unanswered for the newest: a
/// real client's request arrives within microseconds, a flood's never.
const REFUSALS_WAITING: usize = 16;

/// A refused connection's request is read (and dropped) for this long before the answer goes out,
/// and the answer gets as long: closing while the client still writes would break its pipe
/// before it reads why.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// Accepts connections until the listener itself fails; each admitted one is answered on its own
/// task, within the limits and timeouts of `sockets` (`crate::server::connections`): a client
/// has the preface timeout to send its whole request, and a refused one is answered why. A
/// failure to accept one connection (out of file descriptors, the peer gone) is logged and the
/// loop goes on: it must not stop headnoded.
pub async fn serve(
    listener: UnixListener,
    head: Arc<Head>,
    sockets: ClientSockets,
) -> std::io::Result<()> {
    let mut waiting: VecDeque<AbortHandle> = VecDeque::with_capacity(REFUSALS_WAITING);
    loop {
        match sockets.accept(&listener, "submit socket").await? {
            Accepted::Admitted(stream, permit) => {
                let head = head.clone();
                let timeouts = sockets.timeouts;
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = answer(stream, head, timeouts.preface, timeouts.idle).await {
                        tracing::debug!(error = %e, "submit socket connection ended without an answer");
                    }
                });
            }
            Accepted::Refused(stream, refusal) => {
                // Usually the whole request is there already (clients write it as they connect):
                // the answer goes out at once. Otherwise a task waits for the rest a little.
                let mut request = SkipRequest::default();
                match request.read_ready(&stream) {
                    Ok(true) | Err(_) => {
                        let _ = stream.try_write(&refusal_frame(&refusal));
                    }
                    Ok(false) => {
                        waiting.retain(|task| !task.is_finished());
                        if waiting.len() >= REFUSALS_WAITING
                            && let Some(oldest) = waiting.pop_front()
                        {
                            oldest.abort();
                        }
                        let task = tokio::spawn(refuse(stream, refusal, request));
                        waiting.push_back(task.abort_handle());
                    }
                }
            }
        }
    }
}

/// Answers a refused connection with why, after reading the rest of its request.
async fn refuse(mut stream: UnixStream, refusal: Refusal, mut request: SkipRequest) {
    let _ = tokio::time::timeout(REFUSAL_GRACE, request.read_all(&stream)).await;
    let _ = tokio::time::timeout(REFUSAL_GRACE, async {
        stream.write_all(&refusal_frame(&refusal)).await?;
        stream.shutdown().await
    })
    .await;
}

fn refusal_frame(refusal: &Refusal) -> Vec<u8> {
    frame(&failure(Status::resource_exhausted(refusal.to_string())))
}

/// Reads a request's frame, across reads, without keeping it: closing a socket before its
/// client wrote the request would break the client's pipe before it reads the answer.
#[derive(Debug, Default)]
struct SkipRequest {
    header: [u8; HEADER_BYTES],
    have: usize,
    /// The body's bytes still to read, once the header is in.
    left: Option<usize>,
}

impl SkipRequest {
    /// Reads what has arrived, without waiting: `Ok(true)` once the whole frame is read.
    fn read_ready(&mut self, stream: &UnixStream) -> std::io::Result<bool> {
        let mut buf = [0; 8192];
        loop {
            let want = match self.left {
                Some(0) => return Ok(true),
                Some(left) => left.min(buf.len()),
                None => HEADER_BYTES - self.have,
            };
            let n = match stream.try_read(&mut buf[..want]) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            match &mut self.left {
                Some(left) => *left -= n,
                None => {
                    self.header[self.have..self.have + n].copy_from_slice(&buf[..n]);
                    self.have += n;
                    if self.have == HEADER_BYTES {
                        self.left = Some(announced_len(self.header)?);
                    }
                }
            }
        }
    }

    /// Reads until the whole frame is read.
    async fn read_all(&mut self, stream: &UnixStream) -> std::io::Result<()> {
        while !self.read_ready(stream)? {
            stream.readable().await?;
        }
        Ok(())
    }
}

fn failure(status: Status) -> v1::SubmitAnswer {
    v1::SubmitAnswer {
        result: Some(submit_answer::Result::Failure(v1::SubmitFailure {
            code: status.code() as i32,
            message: status.message().to_string(),
        })),
    }
}

/// Reads the request (within `request_timeout` of the connection's start), submits it for the
/// peer and writes the answer (within `answer_timeout`).
async fn answer(
    mut stream: UnixStream,
    head: Arc<Head>,
    request_timeout: Duration,
    answer_timeout: Duration,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let caller = Caller {
        uid: cred.uid(),
        gid: cred.gid(),
    };
    let request = tokio::time::timeout(request_timeout, read_request(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request in time"))?;
    let result = match request {
        Ok(request) => submit_as(head, caller, request).await,
        Err(e) => Err(Status::invalid_argument(format!(
            "unreadable submit request: {e}"
        ))),
    };
    let answer = match result {
        Ok(reply) => v1::SubmitAnswer {
            result: Some(submit_answer::Result::Reply(reply)),
        },
        Err(status) => failure(status),
    };
    tokio::time::timeout(answer_timeout, async {
        stream.write_all(&frame(&answer)).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not read in time"))?
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
    use crate::server::connections::test_support::{charged, eventually};
    use crate::server::connections::{ConnectionLimits, Timeouts};
    use beowulf_proto::submit_socket::exchange;
    use beowulf_types::JobId;
    use std::io::Read;

    fn head(dir: &std::path::Path) -> Arc<Head> {
        let config = HeadConfig::parse(
            &dir.join("headnoded.toml"),
            &format!("state_dir = {:?}\nsocket = {:?}\n", dir, dir.join("sock")),
        )
        .unwrap();
        Arc::new(Head::open(config).unwrap())
    }

    /// A node for jobs to fit on (the scheduler is not running: they stay pending); keep what it
    /// returns, the agent's end of the node's session.
    fn add_node(head: &Head) -> Box<dyn std::any::Any> {
        let (agent, desired) = tokio::sync::mpsc::unbounded_channel();
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
        Box::new(desired)
    }

    /// Serves the submit socket in `dir` with `sockets`; returns its path.
    fn start(
        dir: &std::path::Path,
        head: &Arc<Head>,
        sockets: ClientSockets,
    ) -> std::path::PathBuf {
        let path = dir.join("headnoded.submit.sock");
        tokio::spawn(serve(
            UnixListener::bind(&path).unwrap(),
            head.clone(),
            sockets,
        ));
        path
    }

    fn default_sockets() -> ClientSockets {
        ClientSockets::new(ConnectionLimits::new(64, 1024, 32))
    }

    /// Long enough that connections a test holds are not closed under it.
    const PATIENT: Timeouts = Timeouts {
        preface: Duration::from_secs(60),
        idle: Duration::from_secs(60),
    };

    fn failure_of(answer: v1::SubmitAnswer) -> v1::SubmitFailure {
        match answer.result {
            Some(submit_answer::Result::Failure(failure)) => failure,
            other => panic!("not a failure: {other:?}"),
        }
    }

    fn is_reply(answer: &v1::SubmitAnswer) -> bool {
        matches!(answer.result, Some(submit_answer::Result::Reply(_)))
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
        let _agent = add_node(&head);
        let path = start(dir.path(), &head, default_sockets());

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
        let path = start(dir.path(), &head, default_sockets());
        let answer = tokio::task::spawn_blocking(move || {
            use std::io::Write;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_from_one_uid_beyond_its_cap_is_answered_why_while_another_uid_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let head = head(dir.path());
        let _agent = add_node(&head);
        let limits = ConnectionLimits::new(3, 1024, 32);
        let mut uids = vec![1000; 3 + 40 + 2];
        uids.push(1001);
        let sockets = ClientSockets::new(limits.clone())
            .with_timeouts(PATIENT)
            .charging(charged(&uids));
        let path = start(dir.path(), &head, sockets);
        // uid 1000 holds three silent connections: its share.
        let held: Vec<_> = (0..3)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();
        eventually(|| limits.open() == 3).await;

        // More from it, silent, are closed (the oldest first when too many wait for a request).
        let flood: Vec<_> = (0..40)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();
        // Its next ones are answered why all the same, and closed.
        for _ in 0..2 {
            let failure = failure_of(ask(&path, request("command = [\"a\"]\n")).await);
            assert_eq!(failure.code, tonic::Code::ResourceExhausted as i32);
            assert_eq!(
                failure.message,
                "too many connections from uid 1000 (limit 3): close some"
            );
        }
        assert!(head.list_jobs(true).is_empty());
        assert_eq!(limits.open(), 3);

        // Another user is served meanwhile.
        let answer = ask(&path, request("command = [\"a\"]\n")).await;
        assert!(is_reply(&answer), "{answer:?}");
        assert_eq!(head.list_jobs(true).len(), 1);

        drop(held);
        drop(flood);
        eventually(|| limits.open() == 0).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_connection_is_closed_after_the_preface_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let head = head(dir.path());
        let limits = ConnectionLimits::new(64, 1024, 32);
        let preface = Duration::from_millis(300);
        let sockets = ClientSockets::new(limits.clone()).with_timeouts(Timeouts {
            preface,
            idle: Duration::from_secs(60),
        });
        let path = start(dir.path(), &head, sockets);
        let (read, waited) = tokio::task::spawn_blocking(move || {
            let mut stream = std::os::unix::net::UnixStream::connect(path).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let started = std::time::Instant::now();
            let mut bytes = Vec::new();
            let read = stream.read_to_end(&mut bytes).map(|_| bytes.len());
            (read, started.elapsed())
        })
        .await
        .unwrap();
        // Closed by the head, without an answer, once the timeout passed.
        assert_eq!(read.unwrap(), 0);
        assert!(waited >= preface - Duration::from_millis(50), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        eventually(|| limits.open() == 0).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn root_gets_in_when_users_hold_every_slot_but_the_reserved_ones() {
        let dir = tempfile::tempdir().unwrap();
        let head = head(dir.path());
        let _agent = add_node(&head);
        // Four slots, two of them root's.
        let limits = ConnectionLimits::new(64, 4, 2);
        let sockets = ClientSockets::new(limits.clone())
            .with_timeouts(PATIENT)
            .charging(charged(&[1000, 1001, 1002, 0, 0]));
        let path = start(dir.path(), &head, sockets);
        let held: Vec<_> = (0..2)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();
        eventually(|| limits.open() == 2).await;

        let failure = failure_of(ask(&path, request("command = [\"a\"]\n")).await);
        assert_eq!(failure.code, tonic::Code::ResourceExhausted as i32);
        assert!(
            failure.message.contains("kept for root"),
            "{}",
            failure.message
        );

        for _ in 0..2 {
            let answer = ask(&path, request("command = [\"a\"]\n")).await;
            assert!(is_reply(&answer), "root was refused: {answer:?}");
        }
        assert_eq!(head.list_jobs(true).len(), 2);
        drop(held);
        eventually(|| limits.open() == 0).await;
    }
}
