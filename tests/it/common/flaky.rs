//! A fault-injecting HTTP proxy on loopback, in front of a real S3 server: it answers some
//! requests with `503 SlowDown` without forwarding them, forwards some and then drops the
//! connection before answering (the request may have taken effect), and cuts some response
//! bodies short. Which request misbehaves comes from a seeded generator, so a failing run can
//! be repeated. One request per connection (it answers with `Connection: close`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// What the proxy did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    SlowDown,
    DropAfterForwarding,
    CutBody,
}

pub struct FlakyProxy {
    pub endpoint: String,
    /// Requests answered with a fault so far.
    pub faults: Arc<AtomicUsize>,
    /// Percentage of requests that misbehave (changeable while running).
    rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl FlakyProxy {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:PORT`) where `rate` percent of the
    /// requests misbehave, chosen by a generator seeded with `seed`.
    pub fn start(upstream: &str, rate: u64, seed: u64) -> FlakyProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let faults = Arc::new(AtomicUsize::new(0));
        let rate = Arc::new(AtomicU64::new(rate));
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(AtomicU64::new(seed.max(1)));
        let (f, r, s) = (faults.clone(), rate.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let fault = pick(&state, r.load(Ordering::Relaxed));
                if fault != Fault::None {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                let upstream = upstream.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, &upstream, fault);
                });
            }
        });
        FlakyProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            faults,
            rate,
            stop,
            port,
        }
    }

    pub fn set_rate(&self, percent: u64) {
        self.rate.store(percent, Ordering::Relaxed);
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// xorshift64: the next fault for a request.
fn pick(state: &AtomicU64, rate: u64) -> Fault {
    let mut x = state.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.store(x, Ordering::Relaxed);
    if x % 100 >= rate {
        return Fault::None;
    }
    match (x >> 32) % 3 {
        0 => Fault::SlowDown,
        1 => Fault::DropAfterForwarding,
        _ => Fault::CutBody,
    }
}

/// Reads one request (head and body, by Content-Length or chunked) from `r`.
fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<(Vec<String>, Vec<u8>)> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("client closed"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let header = |name: &str| {
        head.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let mut body = Vec::new();
    if let Some(n) = header("content-length") {
        let n: usize = n.parse().map_err(std::io::Error::other)?;
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        // Kept encoded: forwarded as it came, with its header.
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            body.extend_from_slice(size.as_bytes());
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(std::io::Error::other)?;
            if n == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut t = String::new();
                    r.read_line(&mut t)?;
                    body.extend_from_slice(t.as_bytes());
                    if t == "\r\n" || t.is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
        }
    }
    Ok((head, body))
}

fn serve(client: TcpStream, upstream: &str, fault: Fault) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let (head, body) = read_request(&mut reader)?;
    let mut client = client;
    if fault == Fault::SlowDown {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
                   <Message>Please reduce your request rate.</Message></Error>";
        write!(
            client,
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{xml}",
            xml.len()
        )?;
        return client.shutdown(Shutdown::Both);
    }
    // Forward with `Connection: close`, so the upstream's answer ends at end of stream.
    let mut up = TcpStream::connect(upstream)?;
    let mut out = Vec::new();
    for h in &head {
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("connection:") {
            continue;
        }
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    up.write_all(&out)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    if fault == Fault::DropAfterForwarding {
        return client.shutdown(Shutdown::Both);
    }
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |p| p + 4);
    let (resp_head, resp_body) = answer.split_at(split);
    let mut fixed = Vec::new();
    for line in String::from_utf8_lossy(resp_head).split("\r\n") {
        if line.is_empty() || line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        fixed.extend_from_slice(line.as_bytes());
        fixed.extend_from_slice(b"\r\n");
    }
    fixed.extend_from_slice(b"Connection: close\r\n\r\n");
    client.write_all(&fixed)?;
    if fault == Fault::CutBody && resp_body.len() > 1 {
        client.write_all(&resp_body[..resp_body.len() / 2])?;
    } else {
        client.write_all(resp_body)?;
    }
    client.flush()?;
    client.shutdown(Shutdown::Both)
}
