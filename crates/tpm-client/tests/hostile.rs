//! Hostile and broken TPMs: scripted transports and misbehaving TCP peers.
//! Nothing may panic, loop forever or allocate without bound; every
//! failure is a typed error.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use trustlaunch_tpm_client::{
    Error, HashAlg, KeyAlg, NvAuth, NvIndex, ObjectHandle, PcrSelection, Tpm, Transport,
    TransportError, MAX_RESPONSE_SIZE,
};

/// Answers each command with the next scripted response (or an empty
/// success) and records the commands.
#[derive(Clone, Default)]
struct Scripted {
    responses: Arc<Mutex<VecDeque<Vec<u8>>>>,
    commands: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Transport for Scripted {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.commands.lock().unwrap().push(command.to_vec());
        Ok(self
            .responses
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| frame(0x8001, 0, &[])))
    }
}

fn frame(tag: u16, rc: u32, body: &[u8]) -> Vec<u8> {
    let mut out = tag.to_be_bytes().to_vec();
    out.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&rc.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Runs every command once against `tpm`, ignoring results.
fn exercise(tpm: &mut Tpm) {
    let sel = PcrSelection::new(HashAlg::Sha256, 0..24).with(HashAlg::Sha1, 0..8);
    let _ = tpm.startup_clear();
    let _ = tpm.get_random(16);
    let _ = tpm.nv_chunk_size();
    let _ = tpm.create_ek(KeyAlg::Rsa2048);
    let _ = tpm.create_ak(ObjectHandle(0x8000_0000), KeyAlg::EccP256);
    let _ = tpm.read_public(ObjectHandle(0x8000_0000));
    let _ = tpm.start_policy_session();
    let _ = tpm.nv_read_public(NvIndex(0x0150_0000));
    let _ = tpm.nv_read(NvIndex(0x0150_0000), &NvAuth::Owner);
    let _ = tpm.read_ek_certificate(KeyAlg::Rsa2048);
    let _ = tpm.pcr_read(&sel);
    let _ = tpm.quote(ObjectHandle(0x8000_0001), b"nonce", &sel);
    let _ = tpm.activate_credential(
        ObjectHandle(0x8000_0001),
        ObjectHandle(0x8000_0000),
        &[1, 2, 3],
        &[4, 5, 6],
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bodies behind valid success headers never panic.
    #[test]
    fn random_responses_never_panic(
        bodies in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)),
            0..64,
        )
    ) {
        let t = Scripted::default();
        t.responses.lock().unwrap().extend(
            bodies.iter().map(|(sessions, body)| frame(if *sessions { 0x8002 } else { 0x8001 }, 0, body)),
        );
        let mut tpm = Tpm::new(t);
        exercise(&mut tpm);
    }

    /// Arbitrary bytes (including broken headers) never panic either.
    #[test]
    fn arbitrary_bytes_never_panic(
        raw in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..32)
    ) {
        let t = Scripted::default();
        t.responses.lock().unwrap().extend(raw);
        let mut tpm = Tpm::new(t);
        exercise(&mut tpm);
    }
}

#[test]
fn trailing_bytes_in_a_response_are_rejected() {
    let t = Scripted::default();
    // TPM2_GetRandom: TPM2B of 2 bytes, then one extra byte.
    t.responses
        .lock()
        .unwrap()
        .push_back(frame(0x8001, 0, &[0, 2, 0xaa, 0xbb, 0xcc]));
    let mut tpm = Tpm::new(t);
    assert!(matches!(tpm.get_random(2), Err(Error::Malformed { .. })));
}

#[test]
fn a_tpm_without_the_bank_gives_pcr_unavailable() {
    let t = Scripted::default();
    // pcrUpdateCounter 5, empty selection, no digests.
    t.responses
        .lock()
        .unwrap()
        .push_back(frame(0x8001, 0, &[0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0]));
    let mut tpm = Tpm::new(t);
    let sel = PcrSelection::new(HashAlg::Sha384, [0, 1]);
    match tpm.pcr_read(&sel) {
        Err(Error::PcrUnavailable { remaining }) => assert_eq!(remaining, sel),
        other => panic!("expected PcrUnavailable, got {other:?}"),
    }
}

#[test]
fn pcr_values_for_unrequested_pcrs_are_rejected() {
    let t = Scripted::default();
    let mut body = vec![0, 0, 0, 1]; // counter
    body.extend_from_slice(&[0, 0, 0, 1, 0, 0x0b, 3, 0x02, 0, 0]); // sha256 PCR 1
    body.extend_from_slice(&[0, 0, 0, 1, 0, 32]);
    body.extend_from_slice(&[0u8; 32]);
    t.responses
        .lock()
        .unwrap()
        .push_back(frame(0x8001, 0, &body));
    let mut tpm = Tpm::new(t);
    assert!(matches!(
        tpm.pcr_read(&PcrSelection::new(HashAlg::Sha256, [0])),
        Err(Error::Unexpected { .. })
    ));
}

#[test]
fn retry_warnings_resend_the_same_command() {
    let t = Scripted::default();
    {
        let mut r = t.responses.lock().unwrap();
        r.push_back(frame(0x8001, 0x922, &[])); // TPM_RC_RETRY
        r.push_back(frame(0x8001, 0x90A, &[])); // TPM_RC_TESTING
        r.push_back(frame(0x8001, 0, &[0, 1, 0x42]));
    }
    let commands = t.commands.clone();
    let mut tpm = Tpm::new(t);
    assert_eq!(tpm.get_random(1).unwrap(), [0x42]);
    let sent = commands.lock().unwrap();
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|c| c == &sent[0]));
}

/// A one-shot TCP peer that reads one `TPM2_GetRandom` command (12 bytes)
/// and then runs `answer`.
fn peer(answer: impl FnOnce(&mut std::net::TcpStream) + Send + 'static) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        // The first connection is TcpTransport::connect's probe.
        let _ = listener.accept();
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 12];
            let _ = s.read_exact(&mut buf);
            answer(&mut s);
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    });
    addr
}

#[test]
fn a_silent_simulator_times_out() {
    let addr = peer(|_| thread::sleep(Duration::from_secs(3)));
    let mut tpm = Tpm::connect_swtpm(addr, Duration::from_millis(200)).unwrap();
    let start = Instant::now();
    match tpm.get_random(8) {
        Err(Error::Transport {
            source: TransportError::Timeout(t),
            ..
        }) => assert_eq!(t, Duration::from_millis(200)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn an_oversized_response_header_is_refused() {
    let addr = peer(|s| {
        let _ = s.write_all(&[0x80, 0x01, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    });
    let mut tpm = Tpm::connect_swtpm(addr, Duration::from_secs(5)).unwrap();
    match tpm.get_random(8) {
        Err(Error::Transport {
            source: TransportError::BadSize { size },
            ..
        }) => assert!(size as usize > MAX_RESPONSE_SIZE),
        other => panic!("expected BadSize, got {other:?}"),
    }
}

#[test]
fn a_truncated_response_is_refused() {
    let addr = peer(|s| {
        let _ = s.write_all(&[0x80, 0x01, 0, 0, 0, 20, 0, 0, 0, 0, 0, 8]);
    });
    let mut tpm = Tpm::connect_swtpm(addr, Duration::from_secs(5)).unwrap();
    match tpm.get_random(8) {
        Err(Error::Transport {
            source: TransportError::Closed { received, expected },
            ..
        }) => assert_eq!((received, expected), (12, 20)),
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[test]
fn nothing_listening_is_an_open_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The listener is dropped: nothing listens there now.
    assert!(matches!(
        Tpm::connect_swtpm(port, Duration::from_secs(1)),
        Err(Error::Open { .. })
    ));
    assert!(matches!(
        Tpm::open_device("/nonexistent/tpmrm0"),
        Err(Error::Open { .. })
    ));
}
