//! The gRPC client socket's connections: each admitted one holds its [`Permit`] while it lives,
//! and is closed when it sends no request within the preface timeout or stays without a request
//! in flight for the idle timeout (`super::connections`).
//!
//! hyper has no such timeouts on a server connection, and HTTP/2 keepalive pings only tell a
//! live peer from a dead one (an idle attacker answers them). So the stream handed to tonic
//! ([`ClientConn`]) carries a deadline its reads check, and the service ([`TrackRequests`])
//! counts the connection's requests from their headers to the end of their response body: a
//! `WatchJob` or `Init` stream is in flight for as long as it streams, however quiet.

use super::connections::{Accepted, ClientSockets, Permit, Timeouts};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::server::{Connected, UdsConnectInfo};

/// Accepts on the gRPC client socket until it fails (returned) or tonic stops taking connections
/// (`Ok`): admitted connections go to `to_tonic`, refused ones are closed at once.
pub async fn accept_loop(
    listener: UnixListener,
    sockets: ClientSockets,
    to_tonic: mpsc::Sender<io::Result<ClientConn>>,
) -> io::Result<()> {
    loop {
        match sockets.accept(&listener, "client socket").await? {
            Accepted::Admitted(stream, permit) => {
                let conn = ClientConn::new(stream, permit, sockets.timeouts);
                if to_tonic.send(Ok(conn)).await.is_err() {
                    return Ok(());
                }
            }
            Accepted::Refused(stream, _) => drop(stream),
        }
    }
}

/// A connection's requests, for its deadline.
#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
}

#[derive(Debug)]
struct ActivityState {
    /// Requests whose response has not ended.
    in_flight: usize,
    /// Requests ever started.
    started: u64,
    /// The connection's start, or the end of its last request.
    since: Instant,
    /// The connection's reader, to wake when the last request in flight ends (its deadline is
    /// then to be set again).
    reader: Option<Waker>,
}

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        let mut state = self.lock();
        state.in_flight += 1;
        state.started += 1;
        InFlight(self.clone())
    }
}

/// A request in flight on its connection, until dropped with its response body.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.since = Instant::now();
            if let Some(reader) = state.reader.take() {
                reader.wake();
            }
        }
    }
}

/// An admitted connection of the gRPC client socket (what tonic serves).
#[derive(Debug)]
pub struct ClientConn {
    stream: UnixStream,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    timer: Pin<Box<Sleep>>,
    _permit: Permit,
}

/// What a request on a [`ClientConn`] learns of it: the peer (as for a plain unix stream, which
/// [`TrackRequests`] passes on to the API) and its activity.
#[derive(Debug, Clone)]
pub struct ClientConnInfo {
    uds: UdsConnectInfo,
    activity: Arc<Activity>,
}

impl ClientConn {
    fn new(stream: UnixStream, permit: Permit, timeouts: Timeouts) -> Self {
        let now = Instant::now();
        ClientConn {
            stream,
            activity: Arc::new(Activity {
                state: Mutex::new(ActivityState {
                    in_flight: 0,
                    started: 0,
                    since: now,
                    reader: None,
                }),
            }),
            timeouts,
            timer: Box::pin(tokio::time::sleep_until(now + timeouts.preface)),
            _permit: permit,
        }
    }

    /// An error once the connection has been silent too long; otherwise arms the timer that
    /// wakes the reader when it would be.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            let deadline = {
                let mut state = self.activity.lock();
                if state.in_flight > 0 {
                    // No deadline while a request is in flight; its end wakes us.
                    if !state
                        .reader
                        .as_ref()
                        .is_some_and(|w| w.will_wake(cx.waker()))
                    {
                        state.reader = Some(cx.waker().clone());
                    }
                    return Ok(());
                }
                if state.started == 0 {
                    state.since + self.timeouts.preface
                } else {
                    state.since + self.timeouts.idle
                }
            };
            if Instant::now() >= deadline {
                let silence = if self.activity.lock().started == 0 {
                    "no request within the preface timeout"
                } else {
                    "no request within the idle timeout"
                };
                tracing::debug!("client socket: closing a connection: {silence}");
                return Err(io::Error::new(io::ErrorKind::TimedOut, silence));
            }
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
        }
    }
}

impl AsyncRead for ClientConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_deadline(cx)?;
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Connected for ClientConn {
    type ConnectInfo = ClientConnInfo;

    fn connect_info(&self) -> ClientConnInfo {
        ClientConnInfo {
            uds: self.stream.connect_info(),
            activity: self.activity.clone(),
        }
    }
}

/// Wraps the client API's service: counts each request in flight on its [`ClientConn`] until its
/// response body ends or is dropped, and gives the API the peer as [`UdsConnectInfo`].
#[derive(Debug, Clone)]
pub struct TrackRequests<S> {
    inner: S,
}

impl<S> TrackRequests<S> {
    pub fn new(inner: S) -> Self {
        TrackRequests { inner }
    }
}

impl<S: NamedService> NamedService for TrackRequests<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tonic::codegen::Service<http::Request<Body>> for TrackRequests<S>
where
    S: tonic::codegen::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let in_flight = match request.extensions().get::<ClientConnInfo>().cloned() {
            Some(info) => {
                request.extensions_mut().insert(info.uds);
                Some(Arc::new(info.activity.begin()))
            }
            None => None,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let Some(in_flight) = in_flight else {
                return Ok(response);
            };
            // The body goes out inside a response that carries the request's InFlight in its
            // extensions (http-body's Body for Response<B> is B's): it ends when the body is
            // done with, after the last message of a stream.
            let (parts, body) = response.into_parts();
            let mut carrier = http::Response::new(body);
            carrier.extensions_mut().insert(in_flight);
            Ok(http::Response::from_parts(parts, Body::new(carrier)))
        })
    }
}
