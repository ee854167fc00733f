//! Real services on loopback for integration tests, started by the tests themselves from
//! binaries that scripts/test.sh installs (moto's server for the AWS KMS API).
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto server on a free loopback port, stopped on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

/// A loopback port free right now and never handed out before in this process: tests run in
/// parallel, and two servers told to use the same port would see one of them fail to bind.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Whether a service binary is installed. Without it a test is skipped with a message,
/// except under CI, where a missing service fails the run.
pub fn available(bin: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{bin} is not installed: scripts/test.sh installs it"
        );
        eprintln!("skipping: {bin} not installed (scripts/test.sh installs it)");
    }
    found
}

impl Moto {
    /// `auth`: enforce IAM signatures and policies from the first request on.
    pub fn start(auth: bool) -> Moto {
        // A port another process took between our check and moto's bind makes moto exit:
        // try again on another one.
        for _ in 0..5 {
            if let Some(m) = Moto::try_start(auth) {
                return m;
            }
        }
        panic!("moto_server did not start on any of 5 ports");
    }

    fn try_start(auth: bool) -> Option<Moto> {
        let port = free_port();
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let mut child = cmd.spawn().expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        // Ready means answering moto's own API, not merely listening: a port that another
        // process holds accepts connections too. No fixed pause decides anything here, so a
        // loaded machine only makes start-up slower, never wrong.
        let deadline = Instant::now() + STARTUP;
        loop {
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
            if http_ok(port, "/moto-api/data.json") {
                break;
            }
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Answering, but is it ours? A moto that lost the race for the port has exited.
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        Some(Moto { child, endpoint })
    }

    /// Environment for an AWS client pointed at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    pub async fn kms(&self) -> aws_sdk_kms::Client {
        let conf = aws_sdk_kms::config::Builder::new()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A SoftHSM2 token directory of its own, with two tokens: `writer` (PIN 1111: meta key and the
/// data key's public half) and `reader` (PIN 2222: the data key's private half).
pub struct SoftHsm {
    pub dir: tempfile::TempDir,
    pub conf: std::path::PathBuf,
}

pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

impl SoftHsm {
    pub fn new() -> SoftHsm {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tokens")).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let hsm = SoftHsm { dir, conf };
        for (label, pin) in [("writer", "1111"), ("reader", "2222")] {
            let ok = Command::new("softhsm2-util")
                .args([
                    "--init-token",
                    "--free",
                    "--label",
                    label,
                    "--pin",
                    pin,
                    "--so-pin",
                    "0000",
                ])
                .env("SOFTHSM2_CONF", &hsm.conf)
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok, "softhsm2-util --init-token failed");
        }
        hsm
    }

    pub fn writer_url(&self) -> String {
        format!("pkcs11:token=writer;object=custody?module-path={SOFTHSM_MODULE}&pin-value=1111")
    }

    /// The key holders' URL: writer token for the meta key, reader token for the private half.
    pub fn reader_url(&self) -> String {
        let pin = self.dir.path().join("reader.pin");
        std::fs::write(&pin, "2222\n").unwrap();
        format!(
            "{}&data-token=reader&data-pin-source={}",
            self.writer_url(),
            pin.display()
        )
    }
}

/// An s3s-fs server (a file-system-backed S3 implementation) on a free loopback port.
pub struct S3sFs {
    child: Child,
    pub dir: tempfile::TempDir,
    pub endpoint: String,
}

pub const S3_ACCESS_KEY: &str = "custodytestaccess";
pub const S3_SECRET_KEY: &str = "custodytestsecretkey";

impl S3sFs {
    pub fn start() -> S3sFs {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let mut child = Command::new("s3s-fs")
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start s3s-fs");
            wait_port(port, "s3s-fs");
            // Listening, but is it ours? One that lost the race for the port has exited.
            std::thread::sleep(Duration::from_millis(200));
            if child.try_wait().ok().flatten().is_some() {
                continue;
            }
            return S3sFs {
                child,
                dir,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
        }
        panic!("s3s-fs did not start on any of 5 ports");
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        s3_env(&self.endpoint, S3_ACCESS_KEY, S3_SECRET_KEY)
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a service may take to start: generous, because a test run shares two cores with
/// builds and other tests, and Python services import slowly on a loaded machine.
pub const STARTUP: Duration = Duration::from_secs(180);

/// True when `GET path` on the loopback port answers 200.
pub fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

pub fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + STARTUP;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn s3_env(endpoint: &str, key: &str, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", key.to_string()),
        ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// An SDK configuration for an S3 server on loopback (in-process conformance tests).
pub fn sdk_config(endpoint: &str, key: &str, secret: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
            aws_sdk_s3::config::Credentials::new(key, secret, None, None, "test"),
        ))
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .build()
}

/// A three-node Garage cluster on loopback (replication factor 3, so writes need two nodes),
/// with one bucket and one access key; nodes can be stopped and started again.
pub struct Garage {
    dir: tempfile::TempDir,
    nodes: Vec<Option<Child>>,
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
}

impl Garage {
    fn conf(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("node{i}.toml"))
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("garage")
            .arg("-c")
            .arg(self.conf(0))
            .args(args)
            .output()
            .expect("run garage");
        assert!(
            out.status.success(),
            "garage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn spawn_node(&self, i: usize) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("node{i}.log"))).unwrap();
        Command::new("garage")
            .arg("-c")
            .arg(self.conf(i))
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start garage")
    }

    pub fn start() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + 11) as u8))
            .collect();
        let mut s3_ports = Vec::new();
        for i in 0..3 {
            let (rpc, s3) = (free_port(), free_port());
            s3_ports.push(s3);
            let d = dir.path().join(format!("n{i}"));
            std::fs::write(
                dir.path().join(format!("node{i}.toml")),
                format!(
                    "metadata_dir = \"{m}\"\ndata_dir = \"{d}\"\ndb_engine = \"sqlite\"\n\
                     replication_factor = 3\nconsistency_mode = \"consistent\"\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"us-east-1\"\n\
                     api_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n",
                    m = d.join("meta").display(),
                    d = d.join("data").display(),
                ),
            )
            .unwrap();
        }
        let mut g = Garage {
            dir,
            nodes: Vec::new(),
            endpoint: format!("http://127.0.0.1:{}", s3_ports[0]),
            key_id: String::new(),
            secret: String::new(),
            bucket: "custody".into(),
        };
        g.nodes = (0..3).map(|i| Some(g.spawn_node(i))).collect();
        for p in &s3_ports {
            wait_port(*p, "garage");
        }
        let ids: Vec<String> = (0..3)
            .map(|i| {
                let out = Command::new("garage")
                    .arg("-c")
                    .arg(g.conf(i))
                    .args(["node", "id", "-q"])
                    .output()
                    .expect("garage node id");
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            })
            .collect();
        for id in &ids[1..] {
            g.cli(&["node", "connect", id]);
        }
        for id in &ids {
            let short = &id[..16];
            g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", short]);
        }
        g.cli(&["layout", "apply", "--version", "1"]);
        let out = g.cli(&["key", "create", "custody-test"]);
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim_start_matches(':').trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in `garage key create` output: {out}"))
        };
        g.key_id = field("Key ID");
        g.secret = field("Secret key");
        g.cli(&["bucket", "create", "custody"]);
        g.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "custody",
            "--key",
            "custody-test",
        ]);
        g
    }

    /// Kills node `i` (SIGKILL, as a crash would).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self, i: usize) {
        self.stop(i);
        self.nodes[i] = Some(self.spawn_node(i));
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        s3_env(&self.endpoint, &self.key_id, &self.secret)
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
    }
}
