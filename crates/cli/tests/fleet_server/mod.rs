//! A real `trustlaunch server` process on the simulated driver for the
//! CLI's, the SDK's and the portal's end-to-end tests: started, its admin
//! token read, the CLI run against it, the gallery image `tiny` published.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub struct Server {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The first admin token.
    pub token: String,
    /// The platform TLS CA the server made in its home.
    pub ca: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(dir: &Path) -> Server {
    start_with(dir, &[])
}

/// [`start`] with more arguments for `trustlaunch server`.
pub fn start_with(dir: &Path, extra: &[&str]) -> Server {
    let ca = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../attestation/tests/data/evidence/vtpm-ca.crt");
    let token_file = dir.join("admin.token");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .args([
            "server",
            "--no-runtime",
            "--driver",
            "sim",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--db")
        .arg(format!("sqlite://{}", dir.join("s.db").display()))
        .arg("--vtpm-ca")
        .arg(&ca)
        .arg("--admin-token-file")
        .arg(&token_file)
        .arg("--home")
        .arg(dir.join("home"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines.next().expect("server output").expect("line");
        if let Some(u) = line.strip_prefix("trustlaunch server: listening on ") {
            break u.trim().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(&token_file)
        .expect("admin token")
        .trim()
        .to_owned();
    assert!(url.starts_with("https://"), "{url}");
    let ca = dir.join("home/tls/ca.crt");
    assert!(ca.exists(), "the server made no platform TLS CA");
    Server {
        child,
        url,
        token,
        ca,
    }
}

pub fn tl(s: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .args(args)
        .env("TRUSTLAUNCH_SERVER", &s.url)
        .env("TRUSTLAUNCH_CACERT", &s.ca)
        .env("TRUSTLAUNCH_TOKEN", &s.token)
        .stdin(Stdio::null())
        .output()
        .expect("run trustlaunch")
}

pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn fails(o: Output) -> String {
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The gallery image `tiny` (Gen2, TrustedLaunchSupported) with versions
/// 1.0.0 and 2.0.0, made with the CLI.
pub fn publish(s: &Server, tmp: &Path) {
    ok(tl(
        s,
        &[
            "image",
            "definition",
            "create",
            "-g",
            "rg",
            "--gallery-name",
            "g1",
            "--gallery-image-definition",
            "tiny",
            "--os-type",
            "Linux",
            "--hyper-v-generation",
            "V2",
            "--features",
            "SecurityType=TrustedLaunchSupported",
        ],
    ));
    for v in ["1.0.0", "2.0.0"] {
        let dir = tmp.join(v);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("image.json"), "{}").unwrap();
        ok(tl(
            s,
            &[
                "image",
                "version",
                "create",
                "-g",
                "rg",
                "--gallery-name",
                "g1",
                "--gallery-image-definition",
                "tiny",
                "--gallery-image-version",
                v,
                "--source",
                dir.to_str().unwrap(),
            ],
        ));
    }
}

/// Creates the seed workflow's starting point: scale set `web` in group
/// `rg`, 3 Standard instances of Standard_D2s_v3 on image 1.0.0, Manual
/// upgrade policy. Returns what the CLI printed.
pub fn create_standard_set(s: &Server) -> String {
    ok(tl(
        s,
        &[
            "vmss",
            "create",
            "-g",
            "rg",
            "-n",
            "web",
            "--image",
            &img("1.0.0"),
            "--vm-sku",
            "Standard_D2s_v3",
            "--instance-count",
            "3",
            "--security-type",
            "Standard",
            "--upgrade-policy-mode",
            "Manual",
        ],
    ))
}

pub fn img(v: &str) -> String {
    format!("/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/tiny/versions/{v}")
}
