//! The HTTP client for plain-HTTP endpoints: hyper's, as the SDK's own, except that every
//! socket acknowledges what it receives at once (`TCP_QUICKACK` after each read).
//!
//! Why: a server that leaves Nagle's algorithm on (s3s-based servers such as s3s-fs do) sends
//! a response's head and a small body as two segments and holds the second until the first is
//! acknowledged, while a client on a reused connection delays that acknowledgement by about
//! 40 ms. Every small object and listing then took 40 ms more than its round trip, several
//! times per command. (Garage's stalls of the same length come from its nodes' own
//! connections to each other: no client setting reaches them.) HTTPS endpoints, and settings this client does not handle (a read
//! timeout), keep the SDK's client unchanged.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector as Tcp};
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
        tcp.set_connect_timeout(connect_timeout);
        let client = hyper_util::client::legacy::Builder::new(TokioExecutor::new())
            // Without a timer the pool never closes idle connections.
            .pool_timer(TokioTimer::new())
            .build(QuickAckConnector(tcp));
        Plain { client }
    }
}

impl HttpConnector for Plain {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(r) => r,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
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

/// The SDK's retry class of a failed request, as the SDK's own client classifies hyper's
/// errors: connection failures and resets are I/O (retried), an answer cut off is transient.
fn classify(e: hyper_util::client::legacy::Error) -> ConnectorError {
    let chain = || {
        std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
    };
    let io = chain().any(|e| e.is::<std::io::Error>());
    let kind: fn(BoxError) -> ConnectorError =
        match chain().find_map(|e| e.downcast_ref::<hyper::Error>()) {
            Some(h) if h.is_timeout() => ConnectorError::timeout,
            Some(h) if h.is_user() => ConnectorError::user,
            Some(h) if h.is_closed() || h.is_canceled() || io => ConnectorError::io,
            Some(h) if h.is_incomplete_message() => {
                |e| ConnectorError::other(e, Some(ErrorKind::TransientError))
            }
            Some(_) => |e| ConnectorError::other(e, None),
            None if e.is_connect() || io => ConnectorError::io,
            None => |e| ConnectorError::other(e, None),
        };
    kind(e.into())
}

/// hyper's TCP connector, handing out [`QuickAck`] sockets.
#[derive(Clone, Debug)]
struct QuickAckConnector(Tcp);

impl tower_service::Service<Uri> for QuickAckConnector {
    type Response = QuickAck;
    type Error = <Tcp as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<QuickAck, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(QuickAck) })
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-connection server on loopback that answers with `parts`, written one by one.
    async fn serve(parts: Vec<&'static [u8]>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = vec![0u8; 4096];
            let _ = s.read(&mut head).await;
            for p in parts {
                s.write_all(p).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        format!("http://{at}/bucket/key")
    }

    async fn get(connector: &dyn HttpConnector, url: &str) -> Result<HttpResponse, ConnectorError> {
        connector.call(HttpRequest::get(url).unwrap()).await
    }

    #[tokio::test]
    async fn answers_in_pieces_are_read_whole() {
        let url = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            b"he",
            b"llo",
        ])
        .await;
        let r = get(&Plain::new(None), &url).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let body = aws_smithy_types::byte_stream::ByteStream::new(r.into_body());
        assert_eq!(&body.collect().await.unwrap().into_bytes()[..], b"hello");
    }

    #[tokio::test]
    async fn failures_keep_the_retry_class_the_sdk_gives_them() {
        // Nothing listens: a connection failure, retried as I/O.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = get(&Plain::new(None), &format!("http://{closed}/b/k"))
            .await
            .unwrap_err();
        assert!(e.is_io(), "{e:?}");
        // The connection closed before any answer: retried.
        let e = get(&Plain::new(None), &serve(vec![]).await)
            .await
            .unwrap_err();
        assert!(
            e.is_io() || e.as_other() == Some(ErrorKind::TransientError),
            "{e:?}"
        );
        // A head cut short: retried.
        let url = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Le"]).await;
        let e = get(&Plain::new(None), &url).await.unwrap_err();
        assert!(
            e.is_io() || e.as_other() == Some(ErrorKind::TransientError),
            "{e:?}"
        );
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
