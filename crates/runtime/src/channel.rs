//! The host's end of a VM's attestation channel: QEMU exposes the guest's
//! virtio-serial port `org.trustlaunch.attest.0` as a unix socket in the
//! VM's run directory; the runtime connects, challenges the agent with a
//! fresh nonce, and receives its evidence (protocol:
//! `trustlaunch-protocol`).
//!
//! [`Channel::attest`] is the runtime's own check of a boot: what ties the
//! evidence to *this* VM's vTPM and this challenge — the quote's
//! signature, nonce and PCR digest under the AK; the AK's name; the EK
//! being the one the platform created for the VM; the AK activated under
//! that EK (TPM2_MakeCredential / ActivateCredential).
//! [`Channel::collect`] carries the attestation service's own challenge:
//! its nonce, the credential it makes once the guest names its AK, and
//! the secret the guest's TPM gives back, for the service to judge.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use rand_core::CryptoRngCore;
use serde::Serialize;
use trustlaunch_protocol::{
    decode, encode, Bytes, Evidence, FrameReader, GuestMessage, HostMessage, NONCE_LEN,
};
use trustlaunch_tpm::credential::{make_credential, MadeCredential};
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm::quote::{verify_quote, VerifiedQuote};
use trustlaunch_tpm::signature::Signature;

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The socket broke or could not be reached.
    #[error("attestation channel {socket}: {source}")]
    Io {
        /// The socket.
        socket: String,
        /// The error.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("attestation channel: no {waiting_for} from the guest agent within {seconds} s")]
    Timeout {
        /// What was awaited.
        waiting_for: &'static str,
        /// The limit.
        seconds: u64,
    },
    /// The guest sent something malformed.
    #[error("attestation channel: {0}")]
    Frame(#[from] trustlaunch_protocol::FrameError),
    /// The agent reported an error.
    #[error("guest agent failed at {stage}: {message}")]
    Agent {
        /// Its stage.
        stage: String,
        /// Its message.
        message: String,
    },
    /// The evidence does not hold up.
    #[error("evidence rejected: {check}: {reason}")]
    Rejected {
        /// The failed check.
        check: &'static str,
        /// Why.
        reason: String,
    },
    /// The guest sent a message out of turn.
    #[error("attestation channel: expected {expected}, got {got}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: String,
    },
}

/// Evidence received and the checks the runtime made on it.
#[derive(Clone, Debug, Serialize)]
pub struct Received {
    /// Unix time the evidence arrived.
    pub received_at: u64,
    /// Milliseconds from connecting to the channel to the evidence.
    pub wait_ms: u64,
    /// The evidence as sent.
    pub evidence: Evidence,
    /// The verified quote.
    pub quote: VerifiedQuote,
    /// The checks that passed, by name.
    pub checks: Vec<&'static str>,
}

/// A connected channel.
pub struct Channel {
    stream: UnixStream,
    reader: FrameReader,
    pending: Vec<(u64, Vec<u8>)>,
    socket: String,
}

impl Channel {
    /// Connects to the VM's channel socket.
    pub fn connect(path: &Path) -> Result<Self, ChannelError> {
        let socket = path.display().to_string();
        let stream = UnixStream::connect(path).map_err(|source| ChannelError::Io {
            socket: socket.clone(),
            source,
        })?;
        Ok(Self {
            stream,
            reader: FrameReader::default(),
            pending: Vec::new(),
            socket,
        })
    }

    /// A channel over an already connected stream (tests, or a server
    /// that accepts the socket itself).
    pub fn from_stream(stream: UnixStream, name: &str) -> Self {
        Self {
            stream,
            reader: FrameReader::default(),
            pending: Vec::new(),
            socket: name.to_owned(),
        }
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> ChannelError + '_ {
        move |source| ChannelError::Io {
            socket: self.socket.clone(),
            source,
        }
    }

    fn send(&mut self, msg: &HostMessage) -> Result<(), ChannelError> {
        let bytes = encode(msg);
        self.stream
            .write_all(&bytes)
            .map_err(|source| ChannelError::Io {
                socket: self.socket.clone(),
                source,
            })
    }

    /// The next message, waiting until `deadline`.
    fn recv(
        &mut self,
        deadline: Instant,
        waiting_for: &'static str,
        total: Duration,
    ) -> Result<GuestMessage, ChannelError> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if !self.pending.is_empty() {
                let (n, line) = self.pending.remove(0);
                return Ok(decode(n, &line)?);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ChannelError::Timeout {
                    waiting_for,
                    seconds: total.as_secs(),
                });
            }
            self.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(500))))
                .map_err(self.io())?;
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(ChannelError::Io {
                        socket: self.socket.clone(),
                        source: std::io::ErrorKind::UnexpectedEof.into(),
                    })
                }
                Ok(n) => {
                    let frames = self.reader.push(buf.get(..n).unwrap_or_default())?;
                    self.pending.extend(frames);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io()(e)),
            }
        }
    }

    /// The next message that is not evidence answering a `stale` nonce (a
    /// frozen guest catching up on challenges it was sent before).
    fn recv_fresh(
        &mut self,
        deadline: Instant,
        waiting_for: &'static str,
        total: Duration,
        stale: &[Vec<u8>],
    ) -> Result<GuestMessage, ChannelError> {
        loop {
            match self.recv(deadline, waiting_for, total)? {
                GuestMessage::Evidence(e) if stale.contains(&e.nonce.0) => {}
                other => return Ok(other),
            }
        }
    }

    /// One challenge: nonce -> evidence -> checks -> credential activation.
    /// `expected_ek` is the EK's TPMT_PUBLIC recorded when the platform
    /// created the VM's vTPM; `limit` bounds the whole exchange (a guest
    /// that is still booting answers once its agent runs). Fails on the
    /// first check that does not hold.
    pub fn attest(
        &mut self,
        expected_ek: &[u8],
        limit: Duration,
        rng: &mut impl CryptoRngCore,
        now: u64,
    ) -> Result<Received, ChannelError> {
        let mut nonce = vec![0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let (collected, (quote, mut checks)) = self.collect_with(
            &nonce,
            limit,
            &[],
            |e| check_evidence(e, &nonce, expected_ek),
            |e| make_credential_under(expected_ek, &e.ak_name.0, &secret, rng),
        )?;
        if collected.activated_secret.as_deref() != Some(secret.as_slice()) {
            return Err(ChannelError::Rejected {
                check: "ak_activated_under_ek",
                reason: "the guest returned a different secret: the AK is not in this vTPM".into(),
            });
        }
        checks.push("ak_activated_under_ek");
        Ok(Received {
            received_at: now,
            wait_ms: collected.wait_ms,
            evidence: collected.evidence,
            quote,
            checks,
        })
    }

    /// One challenge for the attestation service, which appraises what
    /// comes back itself: `nonce` (the service's) -> evidence -> the
    /// credential `credential` makes for the AK the guest names (the
    /// service makes it under the EK it recorded for the VM, never the one
    /// the guest names) -> the secret the guest's TPM recovers, returned
    /// unjudged. Nothing is rejected here but transport and protocol
    /// errors: a wrong nonce, a foreign EK or an AK that is not in this
    /// vTPM come back for the appraisal to name. Evidence answering one of
    /// `stale` (nonces this host sent the VM before, e.g. while the guest
    /// was frozen) is skipped.
    pub fn collect(
        &mut self,
        nonce: &[u8],
        limit: Duration,
        stale: &[Vec<u8>],
        credential: impl FnOnce(&Evidence) -> Result<MadeCredential, String>,
    ) -> Result<Collected, ChannelError> {
        Ok(self
            .collect_with(
                nonce,
                limit,
                stale,
                |_| Ok(()),
                |e| {
                    credential(e).map_err(|reason| ChannelError::Rejected {
                        check: "make_credential",
                        reason,
                    })
                },
            )?
            .0)
    }

    fn collect_with<T>(
        &mut self,
        nonce: &[u8],
        limit: Duration,
        stale: &[Vec<u8>],
        check: impl FnOnce(&Evidence) -> Result<T, ChannelError>,
        credential: impl FnOnce(&Evidence) -> Result<MadeCredential, ChannelError>,
    ) -> Result<(Collected, T), ChannelError> {
        let t0 = Instant::now();
        let deadline = t0 + limit;
        self.send(&HostMessage::Challenge {
            nonce: Bytes(nonce.to_vec()),
        })?;
        let evidence = match self.recv_fresh(deadline, "evidence", limit, stale)? {
            GuestMessage::Evidence(e) => *e,
            GuestMessage::Error { stage, message } => {
                return Err(ChannelError::Agent { stage, message })
            }
            other => {
                return Err(ChannelError::Unexpected {
                    expected: "evidence",
                    got: format!("{other:?}"),
                })
            }
        };
        let wait_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        let checked = match check(&evidence).and_then(|c| Ok((c, credential(&evidence)?))) {
            Ok(v) => v,
            Err(e) => {
                let _ = self.send(&HostMessage::Error {
                    message: e.to_string(),
                });
                return Err(e);
            }
        };
        let (checked, made) = checked;
        // Only the TPM holding the EK the credential was made under can
        // recover the secret, and only for an object with the AK's name.
        self.send(&HostMessage::Activate {
            credential_blob: Bytes(made.credential_blob),
            secret: Bytes(made.secret),
        })?;
        let activated_secret = match self.recv_fresh(deadline, "activated", limit, stale)? {
            GuestMessage::Activated { secret: s } => Some(s.0),
            // The guest's TPM could not activate it (another TPM's EK, or
            // a name that is not of a loaded key): nothing comes back.
            GuestMessage::Error { stage, .. } if stage == "activate" => None,
            GuestMessage::Error { stage, message } => {
                return Err(ChannelError::Agent { stage, message })
            }
            other => {
                return Err(ChannelError::Unexpected {
                    expected: "activated",
                    got: format!("{other:?}"),
                })
            }
        };
        if activated_secret.is_some() {
            self.send(&HostMessage::Done {})?;
        } else {
            let _ = self.send(&HostMessage::Error {
                message: "credential not activated".into(),
            });
        }
        Ok((
            Collected {
                evidence,
                activated_secret,
                wait_ms,
            },
            checked,
        ))
    }
}

/// TPM2_MakeCredential of `secret` for the object named `ak_name` under
/// the EK `expected_ek` (TPMT_PUBLIC).
fn make_credential_under(
    expected_ek: &[u8],
    ak_name: &[u8],
    secret: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<MadeCredential, ChannelError> {
    let ek = Public::from_bytes(expected_ek).map_err(|e| ChannelError::Rejected {
        check: "ek_public",
        reason: e.to_string(),
    })?;
    make_credential(&ek, ak_name, secret, rng).map_err(|e| ChannelError::Rejected {
        check: "make_credential",
        reason: e.to_string(),
    })
}

/// What one challenge brought back, unjudged (see [`Channel::collect`]).
#[derive(Clone, Debug)]
pub struct Collected {
    /// The evidence as sent.
    pub evidence: Evidence,
    /// What the guest's TPM recovered from the credential (`None`: it
    /// could not activate it). Whoever made the credential judges it.
    pub activated_secret: Option<Vec<u8>>,
    /// Milliseconds from the challenge to the evidence.
    pub wait_ms: u64,
}

/// The quoted PCR values as the verifier's map (the appraisal's own).
pub use trustlaunch_attestation::pcr_values;

/// The runtime's checks: nonce, EK identity, AK name, quote.
pub fn check_evidence(
    evidence: &Evidence,
    nonce: &[u8],
    expected_ek: &[u8],
) -> Result<(VerifiedQuote, Vec<&'static str>), ChannelError> {
    let reject = |check: &'static str, reason: String| ChannelError::Rejected { check, reason };
    if evidence.nonce.0 != nonce {
        return Err(reject(
            "nonce",
            "the evidence answers another challenge".into(),
        ));
    }
    if evidence.ek_public.0 != expected_ek {
        return Err(reject(
            "ek_is_this_vms",
            "the EK is not the one the platform created for this VM".into(),
        ));
    }
    let ak = Public::from_bytes(&evidence.ak_public.0)
        .map_err(|e| reject("ak_public", e.to_string()))?;
    if ak.name().as_deref() != Some(evidence.ak_name.0.as_slice()) {
        return Err(reject(
            "ak_name",
            "the AK's name does not match its public area".into(),
        ));
    }
    let sig = Signature::from_bytes(&evidence.quote_signature.0)
        .map_err(|e| reject("quote_signature", e.to_string()))?;
    let quote = verify_quote(
        &ak,
        &evidence.quote_attest.0,
        &sig,
        nonce,
        &pcr_values(evidence),
    )
    .map_err(|e| reject("quote", e.to_string()))?;
    Ok((quote, vec!["nonce", "ek_is_this_vms", "ak_name", "quote"]))
}
