//! A VM's vTPM with a real swtpm: created with our vTPM CA's EK
//! certificate in NV, state private (0700/0600) and encrypted at rest under
//! a sealed key, the same EK and certificate after a restart, refused with
//! another key, gone after destroy; and, while a real VM's vTPM is being
//! created, unreachable by any other user: no TCP port, no socket another
//! user can connect to.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use trustlaunch_runtime::accel::{Accel, AccelDecision};
use trustlaunch_runtime::image_build::{build_image, BuildRequest, Recipe};
use trustlaunch_runtime::platform::{Home, MasterKey, SealedFile};
use trustlaunch_runtime::process::Marker;
use trustlaunch_runtime::spec::{Generation, KeyTemplate, Network, SecurityProfile, VmSpec};
use trustlaunch_runtime::vm::Runtime;
use trustlaunch_runtime::vtpm::{create, destroy, VtpmError, VtpmPaths};
use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, VtpmCa};
use trustlaunch_tpm::ek::cert_matches_ek;
use trustlaunch_tpm::ekcert::{EkCertificate, EkTrustStore, UnixTime};
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm_client::KeyAlg;

fn now() -> UnixTime {
    UnixTime::from_secs(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
}

fn ca() -> VtpmCa {
    let mut rng = rand_core::OsRng;
    let key = CaSigningKey::generate(CaKeyAlgorithm::P384, &mut rng);
    let config = CaConfig {
        common_name: "trustlaunch runtime test vTPM CA".into(),
        organization: None,
        not_before: UnixTime::from_secs(now().as_secs() - 60),
        not_after: None,
        path_len_constraint: Some(0),
    };
    VtpmCa::create(key, &config, &mut rng).unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn vtpm_is_private_encrypted_persistent_and_certified() {
    let dir = tempfile::tempdir().unwrap();
    let paths = VtpmPaths {
        state: dir.path().join("vm1/tpm"),
        key: SealedFile::new(dir.path().join("keys/vm1.key"), "vtpm/vm1"),
    };
    let marker = Marker {
        dir: dir.path().join("vm1").display().to_string(),
        uid: None,
    };
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    let master = MasterKey::generate(&mut OsRng);
    let ca = ca();
    let id = create(&paths, &master, &marker, None, &ca, now(), &mut OsRng).expect("create vTPM");

    // Private, and the key sealed: the file holds no raw key.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&paths.state), 0o700);
    assert_eq!(mode(&paths.key.path), 0o600);
    let sealed = std::fs::read_to_string(&paths.key.path).unwrap();
    assert!(trustlaunch_seal::is_sealed(&sealed), "{sealed}");
    let key = paths.load_key(&master).unwrap();
    assert_eq!(key.len(), 32);
    assert!(!contains(sealed.as_bytes(), &key));
    let state_file = paths.state.join("tpm2-00.permall");
    assert_eq!(mode(&state_file), 0o600);
    // Encrypted at rest: the EK certificate written to NV is not in the
    // state file in the clear (it would be, unencrypted).
    let state = std::fs::read(&state_file).unwrap();
    assert!(!contains(&state, &id.ek_certificate[..64]));

    // The certificate chains to our CA and certifies this EK.
    let parsed = EkCertificate::parse(&id.ek_certificate).unwrap();
    EkTrustStore::new(vec![ca.certificate().clone()])
        .verify(&parsed, now())
        .expect("chains to the vTPM CA");
    let ek_pub = Public::from_bytes(&id.ek_public).unwrap();
    assert!(cert_matches_ek(&parsed, &ek_pub));

    // Persistent: a new swtpm on the same state gives the same EK and NV.
    {
        let swtpm = paths
            .serve_private(&master, &marker, None)
            .expect("restart");
        let mut tpm = swtpm.client().unwrap();
        tpm.startup_clear().unwrap();
        assert_eq!(
            tpm.read_ek_certificate(KeyAlg::Rsa2048).unwrap().as_deref(),
            Some(&id.ek_certificate[..])
        );
        let ek = tpm.create_ek(KeyAlg::Rsa2048).unwrap();
        assert_eq!(ek.public, id.ek_public, "same EK after restart");
        swtpm.shutdown().unwrap();
    }

    // Another key cannot open the state.
    let wrong = VtpmPaths {
        state: paths.state.clone(),
        key: SealedFile::new(dir.path().join("keys/wrong.key"), "vtpm/vm1"),
    };
    wrong.key.write(&master, &[7u8; 32], &mut OsRng).unwrap();
    let opened = wrong.serve_private(&master, &marker, None).and_then(|s| {
        let mut tpm = s.client()?;
        tpm.startup_clear()?;
        Ok(tpm.read_ek_certificate(KeyAlg::Rsa2048)?)
    });
    // swtpm refuses the state (its HMAC check fails), which also shows
    // the state is encrypted and integrity-protected under the VM's key.
    match &opened {
        Err(VtpmError::Swtpm(m)) => assert!(m.contains("exited"), "{m}"),
        other => panic!("the state opened with the wrong key: {other:?}"),
    }
    // The right key under another master key does not open at all.
    let e = paths
        .load_key(&MasterKey::generate(&mut OsRng))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("vm1.key") && e.contains("does not open with this master key"),
        "{e}"
    );

    // A second create on the same state is refused; destroy removes all.
    assert!(create(&paths, &master, &marker, None, &ca, now(), &mut OsRng).is_err());
    destroy(&paths).unwrap();
    assert!(!paths.state.exists() && !paths.key.path.exists());
}

/// The socket inodes a process holds (`/proc/<pid>/fd` → `socket:[N]`).
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut out = HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(link) = std::fs::read_link(e.path()) {
            let l = link.to_string_lossy();
            if let Some(n) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                out.insert(n.parse().unwrap());
            }
        }
    }
    out
}

/// TCP ports in LISTEN whose socket is one of `inodes` (`/proc/net/tcp`,
/// `tcp6`).
fn tcp_listeners(inodes: &HashSet<u64>) -> Vec<u16> {
    let mut ours = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let port = u16::from_str_radix(f[1].rsplit(':').next().unwrap(), 16).unwrap();
            if inodes.contains(&f[9].parse().unwrap()) {
                ours.push(port);
            }
        }
    }
    ours
}

/// Paths of unix sockets bound by one of `inodes` (`/proc/net/unix`).
fn unix_paths(inodes: &HashSet<u64>) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let inode: u64 = f.get(6)?.parse().ok()?;
            (inodes.contains(&inode) && f.len() > 7).then(|| PathBuf::from(f[7]))
        })
        .collect()
}

/// swtpm processes that are children of this test process, with the
/// marker of `vm_dir` in their environment.
fn creation_swtpm(vm_dir: &Path) -> Option<u32> {
    let me = std::process::id();
    let marker = format!("TRUSTLAUNCH_VM={}", vm_dir.display());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (comm, rest) = stat.split_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        let environ = std::fs::read(e.path().join("environ")).ok()?;
        (comm.ends_with("(swtpm")
            && ppid == me
            && environ.split(|b| *b == 0).any(|x| x == marker.as_bytes()))
        .then_some(pid)
    })
}

/// The probe, run as another user by
/// `nobody_else_can_reach_a_vtpm_while_it_is_created` (this test binary
/// again, as uid 65534): tries each target of `TL_PROBE_TARGETS`
/// (`tcp:PORT` or `unix:PATH`, separated by newlines) with a TPM command
/// (TPM2_GetRandom) and a control command (CMD_GET_CAPABILITY) and prints
/// `REACHED <target>` for every one that answered. Without the variable
/// it does nothing.
#[test]
#[ignore = "helper of nobody_else_can_reach_a_vtpm_while_it_is_created, run as another user"]
fn probe_targets_as_another_user() {
    let Ok(targets) = std::env::var("TL_PROBE_TARGETS") else {
        return;
    };
    const GET_RANDOM: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8];
    const GET_CAPABILITY: [u8; 4] = [0, 0, 0, 1];
    for target in targets.lines().filter(|t| !t.is_empty()) {
        for command in [&GET_RANDOM[..], &GET_CAPABILITY[..]] {
            let answered = (|| -> std::io::Result<bool> {
                let t = Duration::from_secs(2);
                let mut buf = [0u8; 64];
                let n = if let Some(port) = target.strip_prefix("tcp:") {
                    let addr = ([127, 0, 0, 1], port.parse().unwrap_or(0)).into();
                    let mut s = std::net::TcpStream::connect_timeout(&addr, t)?;
                    s.set_read_timeout(Some(t))?;
                    s.write_all(command)?;
                    s.read(&mut buf)?
                } else {
                    let path = target.strip_prefix("unix:").unwrap_or(target);
                    let mut s = std::os::unix::net::UnixStream::connect(path)?;
                    s.set_read_timeout(Some(t))?;
                    s.write_all(command)?;
                    s.read(&mut buf)?
                };
                Ok(n >= 4)
            })();
            match answered {
                Ok(true) => println!("REACHED {target}"),
                Ok(false) => println!("closed {target}"),
                Err(e) => println!("refused {target}: {e}"),
            }
        }
    }
}

fn runtime(dir: &Path) -> Runtime {
    Runtime::open_with_accel(
        Home::open(dir.join("home")).unwrap(),
        AccelDecision {
            accel: Accel::Tcg,
            reason: "test".into(),
        },
    )
    .unwrap()
}

/// The attack: a local user connects to the swtpm that creation starts
/// (before this platform's fix it listened on loopback TCP without
/// authentication) and saves its decrypted state (`CMD_GET_STATEBLOB`) to
/// load into a clone with the same EK. Here, during real creations, a
/// process running as uid 65534 tries every TCP port swtpm listens on,
/// every unix socket swtpm has bound, and every socket in the VM's run
/// directory, with a TPM and a control command: nothing answers, and
/// swtpm holds no TCP listener at all.
#[test]
fn nobody_else_can_reach_a_vtpm_while_it_is_created() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: acting as another user (uid 65534) needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let img = tmp.path().join("img");
    build_image(
        &BuildRequest {
            name: "shim-only".into(),
            recipe: Recipe::Chain {
                efi: "/usr/lib/shim/shimx64.efi.signed".into(),
                files: Vec::new(),
            },
            db_key: None,
            out_dir: img.clone(),
            created_at: 1_700_000_000,
        },
        &mut |_| {},
    )
    .unwrap();
    let exe = std::env::current_exe().unwrap();
    let probe = |targets: &[String]| {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "probe_targets_as_another_user",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TL_PROBE_TARGETS", targets.join("\n"))
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    // The probe works: an unauthenticated TPM-like listener on loopback,
    // as swtpm's TCP ports were, is reached.
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = open.local_addr().unwrap().port();
    let answering = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut c, _) = open.accept().unwrap();
            let mut buf = [0u8; 12];
            let _ = c.read(&mut buf);
            c.write_all(&[0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0]).unwrap();
        }
    });
    assert!(probe(&[format!("tcp:{port}")]).contains(&format!("REACHED tcp:{port}")));
    answering.join().unwrap();
    let mut probed = 0;
    for round in 0..3 {
        let name = format!("vm-c{round}");
        let vm_dir = rt.home().vms().join(&name);
        let spec = VmSpec {
            name: name.clone(),
            hyper_v_generation: Generation::V2,
            security_profile: SecurityProfile::trusted_launch(),
            key_template: KeyTemplate::Microsoft,
            vcpus: 1,
            memory_mib: 512,
            image: img.clone(),
            data_disks: Vec::new(),
            network: Network::None,
            os_profile: None,
        };
        std::thread::scope(|s| {
            let creation = s.spawn(|| rt.create(&spec, &mut |_| {}));
            while !creation.is_finished() {
                let Some(pid) = creation_swtpm(&vm_dir) else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let inodes = socket_inodes(pid);
                let swtpm_tcp = tcp_listeners(&inodes);
                let mut targets: Vec<String> =
                    swtpm_tcp.iter().map(|p| format!("tcp:{p}")).collect();
                targets.extend(
                    unix_paths(&inodes)
                        .iter()
                        .map(|p| format!("unix:{}", p.display())),
                );
                for e in std::fs::read_dir(vm_dir.join("run"))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    targets.push(format!("unix:{}", e.path().display()));
                }
                let text = probe(&targets);
                assert!(
                    !text.contains("REACHED"),
                    "another user reached the vTPM:\n{text}"
                );
                assert!(
                    swtpm_tcp.is_empty(),
                    "swtpm listens on TCP during creation: {swtpm_tcp:?}"
                );
                // The probe ran while swtpm was still the creation's.
                if creation_swtpm(&vm_dir) == Some(pid) {
                    probed += 1;
                }
            }
            creation.join().unwrap().unwrap();
        });
    }
    assert!(
        probed > 0,
        "no probe ran while a creation's swtpm was alive"
    );
}
