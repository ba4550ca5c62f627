//! The session loop: frames in, answers out, over any byte stream (the
//! virtio-serial port in a guest, a socket pair in tests).
//!
//! [`Session`] is the sans-IO part: bytes in, messages to send out.
//! [`run_session`] drives it over a stream. A virtio-serial read returns 0
//! (EOF) while the host side is not connected; that is not the end: the
//! loop sleeps and reads again, and drops a half-received frame (the next
//! host connection starts afresh). Nothing a host sends ends the loop
//! except `done` with [`SessionOptions::once`].

use std::io::{ErrorKind, Read, Write};
use std::thread::sleep;
use std::time::{Duration, Instant};

use trustlaunch_protocol::{
    decode, encode, Bytes, FrameError, FrameReader, GuestMessage, HostMessage, MAX_FRAME,
};

use crate::attester::{short_hex, Attester};
use crate::error::AgentError;
use crate::log;

/// How the loop runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Return after the first `done` (`--once`).
    pub once: bool,
    /// Sleep after a read returned EOF (host not connected) or failed.
    pub eof_delay: Duration,
    /// Return after this long without data (`None`: never; tests use it
    /// to end a session whose host went away).
    pub max_idle: Option<Duration>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            once: false,
            eof_delay: Duration::from_millis(200),
            max_idle: None,
        }
    }
}

/// Why [`run_session`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The host sent `done` and [`SessionOptions::once`] was set.
    Done,
    /// No data for [`SessionOptions::max_idle`].
    Idle,
}

/// What the session does with one batch of input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Frames to send, each encoded with its newline.
    pub frames: Vec<Vec<u8>>,
    /// The host sent `done`.
    pub done: bool,
}

/// The protocol state: frame splitting and dispatch (sans-IO).
#[derive(Debug, Default)]
pub struct Session {
    reader: FrameReader,
    /// Frames counted by readers replaced after a refused frame, so frame
    /// numbers in errors keep counting from the start of the stream.
    base: u64,
    /// Dropping bytes up to the next newline after a frame that was too
    /// long.
    skipping: bool,
}

fn error_frame(stage: &str, message: impl Into<String>) -> Vec<u8> {
    encode(&GuestMessage::Error {
        stage: stage.into(),
        message: message.into(),
    })
}

impl Session {
    /// A fresh session.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets a half-received frame (the host disconnected).
    pub fn reset(&mut self) {
        self.replace_reader(0);
        self.skipping = false;
    }

    fn replace_reader(&mut self, refused: u64) {
        let seen = self.reader.frames().saturating_add(refused);
        self.base = self.base.saturating_add(seen);
        self.reader = FrameReader::default();
    }

    /// Feeds bytes read from the host; returns what to send back. Input is
    /// split at newlines before it reaches the [`FrameReader`], so a frame
    /// that is too long costs only itself, not the frames around it.
    pub fn feed(&mut self, data: &[u8], attester: &mut dyn Attester) -> Output {
        let mut out = Output::default();
        for piece in data.split_inclusive(|b| *b == b'\n') {
            let ends_line = piece.last() == Some(&b'\n');
            if self.skipping {
                self.skipping = !ends_line;
                continue;
            }
            match self.reader.push(piece) {
                Ok(frames) => {
                    for (n, line) in frames {
                        let n = self.base.saturating_add(n);
                        self.dispatch(n, &line, attester, &mut out);
                    }
                }
                Err(e) => {
                    let e = match e {
                        FrameError::TooLong { frame, limit } => FrameError::TooLong {
                            frame: self.base.saturating_add(frame),
                            limit,
                        },
                        other => other,
                    };
                    log(format_args!("refused a frame: {e}"));
                    out.frames.push(error_frame("frame", e.to_string()));
                    self.replace_reader(1);
                    self.skipping = !ends_line;
                }
            }
        }
        out
    }

    fn dispatch(&mut self, n: u64, line: &[u8], attester: &mut dyn Attester, out: &mut Output) {
        let msg = match decode::<HostMessage>(n, line) {
            Ok(m) => m,
            Err(e) => {
                log(format_args!("refused a frame: {e}"));
                out.frames.push(error_frame("frame", e.to_string()));
                return;
            }
        };
        match msg {
            HostMessage::Challenge { nonce } => {
                log(format_args!("challenge (nonce {})", short_hex(&nonce.0)));
                out.frames.push(evidence_frame(&nonce, attester));
            }
            HostMessage::Activate {
                credential_blob,
                secret,
            } => match attester.activate(&credential_blob.0, &secret.0) {
                Ok(secret) => {
                    log(format_args!(
                        "credential activated ({} bytes of secret)",
                        secret.len()
                    ));
                    out.frames.push(encode(&GuestMessage::Activated {
                        secret: Bytes(secret),
                    }));
                }
                Err(e) => out.frames.push(step_error(&e)),
            },
            HostMessage::Done {} => {
                log("host: done");
                out.done = true;
            }
            HostMessage::Error { message } => {
                log(format_args!("host error: {message}"));
            }
            // A message type added to the protocol later: say so.
            _ => {
                log("unsupported message");
                out.frames.push(error_frame(
                    "frame",
                    format!("frame {n}: unsupported message"),
                ));
            }
        }
    }
}

fn step_error(e: &AgentError) -> Vec<u8> {
    log(format_args!("{} failed: {e}", e.stage()));
    error_frame(e.stage(), e.to_string())
}

fn evidence_frame(nonce: &Bytes, attester: &mut dyn Attester) -> Vec<u8> {
    let evidence = match attester.evidence(&nonce.0) {
        Ok(e) => e,
        Err(e) => return step_error(&e),
    };
    let event_log = evidence.event_log.0.len();
    let frame = encode(&GuestMessage::Evidence(Box::new(evidence)));
    if frame.len() > MAX_FRAME {
        return step_error(&AgentError::FrameTooLarge {
            len: frame.len(),
            limit: MAX_FRAME,
            event_log,
        });
    }
    log(format_args!(
        "evidence sent (nonce {}, {event_log} bytes of event log)",
        short_hex(&nonce.0)
    ));
    frame
}

/// Runs the session over `stream` until [`SessionEnd`]: reads (up to 64
/// KiB at a time), answers every frame, retries after EOF and after read
/// or write errors. Never returns on anything the host sends, except
/// `done` with [`SessionOptions::once`].
pub fn run_session<S: Read + Write>(
    stream: &mut S,
    attester: &mut dyn Attester,
    options: &SessionOptions,
) -> SessionEnd {
    let mut session = Session::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut last_data = Instant::now();
    let mut connected = true;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                log(format_args!("read failed: {e}"));
                0
            }
        };
        let Some(data) = buf.get(..n).filter(|d| !d.is_empty()) else {
            if connected {
                log("host not connected; waiting");
                connected = false;
                session.reset();
            }
            if options
                .max_idle
                .is_some_and(|max| last_data.elapsed() >= max)
            {
                return SessionEnd::Idle;
            }
            sleep(options.eof_delay);
            continue;
        };
        if !connected {
            log("host connected");
            connected = true;
        }
        last_data = Instant::now();
        let out = session.feed(data, attester);
        for frame in &out.frames {
            if let Err(e) = stream.write_all(frame).and_then(|()| stream.flush()) {
                log(format_args!("write failed: {e}"));
            }
        }
        if out.done && options.once {
            return SessionEnd::Done;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::VecDeque;
    use std::io;

    use trustlaunch_protocol::Evidence;

    use super::*;

    /// Answers challenges with a fixed evidence and activations by echo.
    #[derive(Default)]
    struct Fake {
        challenges: usize,
    }

    impl Attester for Fake {
        fn evidence(&mut self, nonce: &[u8]) -> Result<Evidence, AgentError> {
            self.challenges += 1;
            if nonce.is_empty() {
                return Err(AgentError::Nonce { len: 0, max: 64 });
            }
            Ok(Evidence {
                version: 1,
                agent: "fake".into(),
                boot_id: String::new(),
                nonce: Bytes(nonce.to_vec()),
                ek_certificate: None,
                ek_public: Bytes(vec![1]),
                ak_public: Bytes(vec![2]),
                ak_name: Bytes(vec![3]),
                quote_attest: Bytes(vec![4]),
                quote_signature: Bytes(vec![5]),
                pcr_selection: Bytes(vec![6]),
                pcrs: Vec::new(),
                event_log: Bytes(vec![7; 10]),
                secure_boot: None,
                kernel_release: String::new(),
                untrusted_modules: Vec::new(),
            })
        }

        fn activate(&mut self, blob: &[u8], _secret: &[u8]) -> Result<Vec<u8>, AgentError> {
            Ok(blob.to_vec())
        }
    }

    /// An in-memory channel: each read returns the next scripted chunk
    /// (empty = EOF, as a virtio port with no host), then EOF forever.
    struct Script {
        reads: VecDeque<Vec<u8>>,
        eofs: usize,
        written: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.reads.pop_front() {
                Some(chunk) => {
                    if chunk.is_empty() {
                        self.eofs += 1;
                    }
                    buf[..chunk.len()].copy_from_slice(&chunk);
                    Ok(chunk.len())
                }
                None => {
                    self.eofs += 1;
                    Ok(0)
                }
            }
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn replies(written: &[u8]) -> Vec<GuestMessage> {
        written
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
            .map(|(i, l)| decode(i as u64, l).unwrap())
            .collect()
    }

    fn options(once: bool) -> SessionOptions {
        SessionOptions {
            once,
            eof_delay: Duration::from_millis(1),
            max_idle: None,
        }
    }

    #[test]
    fn eof_is_not_the_end() {
        let challenge = encode(&HostMessage::Challenge {
            nonce: Bytes(vec![9; 32]),
        });
        let first = &challenge[..10];
        let mut s = Script {
            reads: VecDeque::from(vec![
                vec![],
                vec![],
                // A frame cut by a disconnect is dropped...
                first.to_vec(),
                vec![],
                // ...and the next connection starts afresh.
                challenge.clone(),
                vec![],
                vec![],
                vec![],
                encode(&HostMessage::Done {}),
            ]),
            eofs: 0,
            written: Vec::new(),
        };
        let mut fake = Fake::default();
        let end = run_session(&mut s, &mut fake, &options(true));
        assert_eq!(end, SessionEnd::Done);
        assert_eq!(s.eofs, 6);
        assert_eq!(fake.challenges, 1);
        let r = replies(&s.written);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(matches!(&r[0], GuestMessage::Evidence(e) if e.nonce.0 == vec![9; 32]));
    }

    #[test]
    fn idle_limit_ends_a_session_without_host() {
        let mut s = Script {
            reads: VecDeque::new(),
            eofs: 0,
            written: Vec::new(),
        };
        let opts = SessionOptions {
            max_idle: Some(Duration::from_millis(20)),
            ..options(false)
        };
        assert_eq!(
            run_session(&mut s, &mut Fake::default(), &opts),
            SessionEnd::Idle
        );
        assert!(s.eofs >= 2);
        assert!(s.written.is_empty());
    }

    #[test]
    fn bad_frames_get_errors_and_the_session_goes_on() {
        let mut session = Session::new();
        let mut fake = Fake::default();
        let mut input = b"not json\n{\"type\":\"nope\"}\n".to_vec();
        input.extend(encode(&HostMessage::Challenge {
            nonce: Bytes(vec![]),
        }));
        input.extend(encode(&HostMessage::Activate {
            credential_blob: Bytes(vec![1, 2]),
            secret: Bytes(vec![3]),
        }));
        input.extend(encode(&HostMessage::Error {
            message: "go away".into(),
        }));
        input.extend(encode(&HostMessage::Done {}));
        let out = session.feed(&input, &mut fake);
        assert!(out.done);
        let r = replies(&out.frames.concat());
        assert_eq!(r.len(), 4, "{r:?}");
        match &r[0] {
            GuestMessage::Error { stage, message } => {
                assert_eq!(stage, "frame");
                assert!(message.starts_with("frame 0: "), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&r[1], GuestMessage::Error { stage, message } if stage == "frame" && message.starts_with("frame 1: "))
        );
        assert!(matches!(&r[2], GuestMessage::Error { stage, .. } if stage == "challenge"));
        assert_eq!(
            r[3],
            GuestMessage::Activated {
                secret: Bytes(vec![1, 2])
            }
        );
    }

    #[test]
    fn an_overlong_frame_costs_only_itself() {
        let mut session = Session::new();
        let mut fake = Fake::default();
        let challenge = encode(&HostMessage::Challenge {
            nonce: Bytes(vec![1; 8]),
        });
        // A valid frame, then a too-long one split over two reads, then a
        // valid frame right after its newline.
        let mut first = challenge.clone();
        first.extend(vec![b'x'; MAX_FRAME + 1]);
        let out = session.feed(&first, &mut fake);
        assert_eq!(out.frames.len(), 2, "evidence, then the refusal");
        let r = replies(&out.frames.concat());
        assert!(matches!(&r[0], GuestMessage::Evidence(_)));
        assert!(
            matches!(&r[1], GuestMessage::Error { stage, message } if stage == "frame" && message.contains("frame 1: longer than"))
        );
        let mut second = vec![b'y'; 100];
        second.push(b'\n');
        second.extend(&challenge);
        let out = session.feed(&second, &mut fake);
        let r = replies(&out.frames.concat());
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(matches!(&r[0], GuestMessage::Evidence(_)));
        assert_eq!(fake.challenges, 2);
        // Numbering goes on after the refused frame.
        let out = session.feed(b"junk\n", &mut fake);
        let r = replies(&out.frames.concat());
        assert!(
            matches!(&r[0], GuestMessage::Error { message, .. } if message.starts_with("frame 3: ")),
            "{r:?}"
        );
    }
}
