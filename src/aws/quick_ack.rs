//! The HTTP client for plain-HTTP endpoints: hyper's, as the SDK's own, except that every
//! socket acknowledges what it receives at once (`TCP_QUICKACK` after each read).
//!
//! Why: a server that leaves Nagle's algorithm on (s3s-based servers such as s3s-fs do) sends
//! a response's head and a small body as two segments and holds the second until the first is
//! acknowledged, while a client on a reused connection delays that acknowledgement by about
//! 40 ms. Every small object and listing then took 40 ms more than its round trip, several
//! times per command. (Garage's stalls of the same length come from its nodes' own
//! connections to each other: no client setting reaches them.)
//!
//! HTTPS endpoints, and settings this client does not handle (a read timeout), keep the
//! SDK's client unchanged.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::retry::ErrorKind;
use hyper::Uri;
use hyper_util::client::legacy::connect::{
    capture_connection, CaptureConnection, Connected, Connection, HttpConnector as Tcp, HttpInfo,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The SDK's client for HTTPS, this module's for plain HTTP.
#[derive(Debug)]
pub struct QuickAckClient {
    sdk: SharedHttpClient,
    /// One connection pool per connect timeout (the SDK asks for a connector per request).
    plain: Mutex<HashMap<Option<Duration>, SharedHttpConnector>>,
}

impl QuickAckClient {
    pub fn new(sdk: SharedHttpClient) -> QuickAckClient {
        QuickAckClient {
            sdk,
            plain: Mutex::new(HashMap::new()),
        }
    }
}

impl HttpClient for QuickAckClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let sdk = self.sdk.http_connector(settings, components);
        if settings.read_timeout().is_some() {
            return sdk;
        }
        let connect = settings.connect_timeout();
        let plain = self
            .plain
            .lock()
            .expect("lock")
            .entry(connect)
            .or_insert_with(|| SharedHttpConnector::new(Plain::new(connect)))
            .clone();
        SharedHttpConnector::new(ByScheme { sdk, plain })
    }

    fn validate_base_client_config(
        &self,
        components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.sdk.validate_base_client_config(components, cfg)
    }

    fn validate_final_config(
        &self,
        components: &RuntimeComponents,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.sdk.validate_final_config(components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.sdk.connector_metadata()
    }
}

/// Sends each request to the client for its scheme.
#[derive(Debug)]
struct ByScheme {
    sdk: SharedHttpConnector,
    plain: SharedHttpConnector,
}

impl HttpConnector for ByScheme {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let plain = request.uri().get(..7);
        match plain.is_some_and(|s| s.eq_ignore_ascii_case("http://")) {
            true => self.plain.call(request),
            false => self.sdk.call(request),
        }
    }
}

/// hyper's pooled client over sockets that acknowledge at once.
#[derive(Clone, Debug)]
struct Plain {
    client: hyper_util::client::legacy::Client<QuickAckConnector, SdkBody>,
}

impl Plain {
    fn new(connect_timeout: Option<Duration>) -> Plain {
        let mut tcp = Tcp::new();
        tcp.set_nodelay(true);
        let client = hyper_util::client::legacy::Builder::new(TokioExecutor::new())
            // Without a timer the pool never closes idle connections.
            .pool_timer(TokioTimer::new())
            .build(QuickAckConnector {
                tcp,
                timeout: connect_timeout,
            });
        Plain { client }
    }
}

impl HttpConnector for Plain {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let mut request = match request.try_into_http1x() {
            Ok(r) => r,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        // The SDK closes a connection after a transient failure (a 5xx, a timeout) rather
        // than send the retry down it again: it needs a handle on the connection.
        let captured = capture_connection(&mut request);
        if let Some(smithy) = request.extensions().get::<CaptureSmithyConnection>() {
            smithy.set_connection_retriever(move || connection_metadata(&captured));
        }
        let sent = self.client.request(request);
        HttpConnectorFuture::new(async move {
            match sent.await {
                Ok(response) => HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                    .map_err(|e| ConnectorError::other(e.into(), None)),
                Err(e) => Err(classify(e)),
            }
        })
    }
}

/// What the SDK knows of a request's connection: its addresses, and how to close it.
fn connection_metadata(captured: &CaptureConnection) -> Option<ConnectionMetadata> {
    let connected = captured.connection_metadata();
    let mut extras = http::Extensions::new();
    connected.as_ref()?.get_extras(&mut extras);
    let info = extras.get::<HttpInfo>();
    let poison = captured.clone();
    let mut metadata = ConnectionMetadata::builder()
        .proxied(false)
        .poison_fn(move || {
            if let Some(c) = poison.connection_metadata().as_ref() {
                c.poison()
            }
        });
    metadata
        .set_local_addr(info.map(|i| i.local_addr()))
        .set_remote_addr(info.map(|i| i.remote_addr()));
    Some(metadata.build())
}

/// No connection within the connect timeout (DNS included).
#[derive(Debug, thiserror::Error)]
#[error("HTTP connect timeout occurred after {0:?}")]
struct ConnectTimedOut(Duration);

/// The SDK's retry class of a failed request, as the SDK's own client classifies hyper's
/// errors: connection failures and resets are I/O (retried), an answer cut off is transient.
fn classify(e: hyper_util::client::legacy::Error) -> ConnectorError {
    let chain = || {
        std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
    };
    if chain().any(|e| e.is::<ConnectTimedOut>()) {
        return ConnectorError::timeout(e.into());
    }
    let io = chain().any(|e| e.is::<std::io::Error>());
    let kind: fn(BoxError) -> ConnectorError =
        match chain().find_map(|e| e.downcast_ref::<hyper::Error>()) {
            Some(h) if h.is_timeout() => ConnectorError::timeout,
            Some(h) if h.is_user() => ConnectorError::user,
            Some(h) if h.is_closed() || h.is_canceled() || io => ConnectorError::io,
            Some(h) if h.is_incomplete_message() => {
                |e| ConnectorError::other(e, Some(ErrorKind::TransientError))
            }
            Some(h) => {
                tracing::warn!("unrecognized HTTP client error ({h}): not retried");
                |e| ConnectorError::other(e, None)
            }
            None if e.is_connect() || io => ConnectorError::io,
            None => |e| ConnectorError::other(e, None),
        };
    kind(e.into())
}

/// hyper's TCP connector, handing out [`QuickAck`] sockets, with one deadline over name
/// lookup and connection (as the SDK's own).
#[derive(Clone, Debug)]
struct QuickAckConnector {
    tcp: Tcp,
    timeout: Option<Duration>,
}

impl tower_service::Service<Uri> for QuickAckConnector {
    type Response = QuickAck;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<QuickAck, BoxError>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.tcp.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            let connected = match timeout {
                Some(t) => tokio::time::timeout(t, connecting)
                    .await
                    .map_err(|_| ConnectTimedOut(t))?,
                None => connecting.await,
            };
            Ok(QuickAck(connected?))
        })
    }
}

/// A socket that acknowledges each read at once.
struct QuickAck(TokioIo<TcpStream>);

impl QuickAck {
    fn stream(&self) -> &TcpStream {
        self.0.inner()
    }
}

impl Connection for QuickAck {
    fn connected(&self) -> Connected {
        self.0.connected()
    }
}

impl hyper::rt::Read for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let read = Pin::new(&mut self.0).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            // Not kept by the kernel: set again after every read. A failure only loses the
            // early acknowledgement.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            let _ = socket2::SockRef::from(self.stream()).set_tcp_quickack(true);
        }
        read
    }
}

impl hyper::rt::Write for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The parts of one answer, written one by one.
    type Answer = Vec<&'static [u8]>;

    /// A server on loopback. Each connection it accepts reads a request (a head, no body) and
    /// writes the next answer, as many times as it has answers, then closes; an answer of no
    /// parts resets the connection instead. Counts the connections accepted.
    async fn serve(connections: Vec<Vec<Answer>>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            for answers in connections {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                for parts in answers {
                    if parts.is_empty() {
                        // No lingering: closing sends a reset at once.
                        socket2::SockRef::from(&s)
                            .set_linger(Some(Duration::ZERO))
                            .unwrap();
                        break;
                    }
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut b = [0u8; 1];
                        if s.read(&mut b).await.unwrap() == 0 {
                            return;
                        }
                        head.push(b[0]);
                    }
                    for p in parts {
                        s.write_all(p).await.unwrap();
                        s.flush().await.unwrap();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                // Whatever was sent is read before closing: a clean close, not a reset.
                let mut rest = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_millis(20), s.read(&mut rest)).await;
            }
        });
        (format!("http://{at}/bucket/key"), accepted)
    }

    async fn get(connector: &dyn HttpConnector, url: &str) -> Result<HttpResponse, ConnectorError> {
        connector.call(HttpRequest::get(url).unwrap()).await
    }

    const HELLO: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        b"he",
        b"llo",
    ];

    async fn body(r: HttpResponse) -> Vec<u8> {
        let body = aws_smithy_types::byte_stream::ByteStream::new(r.into_body());
        body.collect().await.unwrap().into_bytes().to_vec()
    }

    #[tokio::test]
    async fn answers_in_pieces_are_read_whole_and_connections_reused() {
        let (url, accepted) = serve(vec![vec![HELLO.to_vec(), HELLO.to_vec()]]).await;
        let plain = Plain::new(None);
        for _ in 0..2 {
            let r = get(&plain, &url).await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(body(r).await, b"hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn every_read_is_acknowledged_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        // Delayed acknowledgements, as on a connection that has carried requests.
        socket2::SockRef::from(&client)
            .set_tcp_quickack(false)
            .unwrap();
        assert!(!socket2::SockRef::from(&client).tcp_quickack().unwrap());
        server.write_all(b"head").await.unwrap();
        let mut socket = QuickAck(TokioIo::new(client));
        let mut buf = [0u8; 16];
        let mut read = hyper::rt::ReadBuf::new(&mut buf);
        std::future::poll_fn(|cx| {
            hyper::rt::Read::poll_read(Pin::new(&mut socket), cx, read.unfilled())
        })
        .await
        .unwrap();
        assert_eq!(read.filled(), b"head");
        assert!(socket2::SockRef::from(socket.stream())
            .tcp_quickack()
            .unwrap());
    }

    /// The SDK's own client for the same settings (what `aws::load` used to build).
    fn sdk(connect_timeout: Option<Duration>) -> SharedHttpConnector {
        use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
        let client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let components = RuntimeComponentsBuilder::for_tests()
            .with_sleep_impl(aws_smithy_async::rt::sleep::default_async_sleep())
            .with_time_source(Some(aws_smithy_async::time::SystemTimeSource::new()))
            .build()
            .unwrap();
        let mut settings = HttpConnectorSettings::builder();
        settings.set_connect_timeout(connect_timeout);
        let settings = settings.build();
        client.http_connector(&settings, &components)
    }

    /// A failure's retry class.
    fn class(e: &ConnectorError) -> (bool, bool, bool, Option<ErrorKind>) {
        (e.is_io(), e.is_timeout(), e.is_user(), e.as_other())
    }

    /// Fails `url` through both clients and checks they agree, and that the SDK retries it.
    async fn fails_alike(url: &str, connect_timeout: Option<Duration>) -> ConnectorError {
        let mine = get(&Plain::new(connect_timeout), url).await.unwrap_err();
        let theirs = get(&sdk(connect_timeout), url).await.unwrap_err();
        assert_eq!(class(&mine), class(&theirs), "{mine:?} / {theirs:?}");
        let retried = mine.is_io() || mine.is_timeout();
        assert!(retried || mine.as_other() == Some(ErrorKind::TransientError));
        mine
    }

    #[tokio::test]
    async fn failures_keep_the_retry_class_the_sdk_gives_them() {
        // Nothing listens.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = fails_alike(&format!("http://{closed}/b/k"), None).await;
        assert!(e.is_io(), "{e:?}");
        // Closed without an answer, reset, then closed after a head cut short (one connection
        // per client).
        let (url, _) = serve(vec![vec![], vec![]]).await;
        fails_alike(&url, None).await;
        let (url, _) = serve(vec![vec![vec![]], vec![vec![]]]).await;
        let e = fails_alike(&url, None).await;
        assert!(e.is_io(), "{e:?}");
        let cut: Answer = vec![b"HTTP/1.1 200 OK\r\nContent-Le"];
        let (url, _) = serve(vec![vec![cut.clone()], vec![cut]]).await;
        fails_alike(&url, None).await;
    }

    #[tokio::test]
    async fn a_connection_that_never_completes_is_a_timeout() {
        // A listener whose queue is full drops new connection attempts: they hang.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        socket.listen(0).unwrap();
        let at = socket.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        loop {
            let attempt = TcpStream::connect(at);
            match tokio::time::timeout(Duration::from_millis(200), attempt).await {
                Ok(c) => queued.push(c.unwrap()),
                Err(_) => break,
            }
            assert!(queued.len() < 64, "the listener's queue never filled");
        }
        let e = fails_alike(
            &format!("http://{at}/b/k"),
            Some(Duration::from_millis(300)),
        )
        .await;
        assert!(e.is_timeout(), "{e:?}");
    }

    /// Answers every request with one status.
    #[derive(Debug)]
    struct Fixed(u16);

    impl HttpConnector for Fixed {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            let status = self.0.try_into().unwrap();
            HttpConnectorFuture::ready(Ok(HttpResponse::new(status, SdkBody::empty())))
        }
    }

    #[tokio::test]
    async fn only_plain_http_leaves_the_sdks_client() {
        let by = ByScheme {
            sdk: SharedHttpConnector::new(Fixed(201)),
            plain: SharedHttpConnector::new(Fixed(202)),
        };
        let by = &by;
        let status =
            |url: &'static str| async move { get(by, url).await.unwrap().status().as_u16() };
        assert_eq!(status("https://s3.example/b/k").await, 201);
        assert_eq!(status("HTTPS://s3.example/b/k").await, 201);
        assert_eq!(status("http://127.0.0.1:9000/b/k").await, 202);
        assert_eq!(status("HTTP://127.0.0.1:9000/b/k").await, 202);
    }
}
