//! The [`Tpm`] handle and command framing (TPM 2.0 Part 1 §18: command and
//! response structure with and without sessions).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::error::Error;
use crate::marshal::{MarshalError, Reader, Writer};
use crate::rc::ResponseCode;
use crate::session::{marshal_auth_area, skip_auth_responses, Authorization};
use crate::transport::{DeviceTransport, TcpTransport, Transport, UnixTransport, HEADER_SIZE};
use crate::types::{CommandCode, Hierarchy};

/// `TPM_ST_NO_SESSIONS`.
const ST_NO_SESSIONS: u16 = 0x8001;
/// `TPM_ST_SESSIONS`.
const ST_SESSIONS: u16 = 0x8002;

/// A connection to one TPM.
///
/// Commands are methods; each sends one or a few TPM commands and returns
/// typed results or an [`Error`] carrying the decoded response code.
/// Transient objects and sessions the caller receives must be flushed with
/// [`Tpm::flush_context`] (on `/dev/tpmrm0` the kernel also flushes them
/// when the device is closed; on swtpm nothing does).
pub struct Tpm {
    transport: Box<dyn Transport>,
    owner_auth: Vec<u8>,
    endorsement_auth: Vec<u8>,
    platform_auth: Vec<u8>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").finish_non_exhaustive()
    }
}

/// A command after its handles: authorizations and parameters.
pub(crate) struct Command<'a> {
    pub(crate) code: CommandCode,
    pub(crate) handles: &'a [u32],
    pub(crate) auths: &'a [Authorization],
    pub(crate) params: Vec<u8>,
    /// Number of handles the response carries before its parameters.
    pub(crate) response_handles: usize,
}

/// A successful response, split.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) handles: Vec<u32>,
    pub(crate) params: Vec<u8>,
}

impl Tpm {
    /// A client over any transport.
    pub fn new(transport: impl Transport + 'static) -> Self {
        Self {
            transport: Box::new(transport),
            owner_auth: Vec::new(),
            endorsement_auth: Vec::new(),
            platform_auth: Vec::new(),
        }
    }

    /// Opens a TPM character device, normally [`DeviceTransport::DEFAULT_PATH`].
    pub fn open_device(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        DeviceTransport::open(path)
            .map(Self::new)
            .map_err(|source| Error::Open {
                target: path.display().to_string(),
                source,
            })
    }

    /// A client over a connected unix stream to swtpm's command channel
    /// (see [`UnixTransport`]), every exchange bounded by `timeout`.
    pub fn over_unix(
        stream: std::os::unix::net::UnixStream,
        timeout: Duration,
    ) -> Result<Self, Error> {
        UnixTransport::new(stream, timeout)
            .map(Self::new)
            .map_err(|source| Error::Open {
                target: "swtpm unix stream".into(),
                source,
            })
    }

    /// Connects to swtpm's TCP command port (tests: every local user can
    /// reach a loopback port).
    pub fn connect_swtpm(addr: SocketAddr, timeout: Duration) -> Result<Self, Error> {
        TcpTransport::connect(addr, timeout)
            .map(Self::new)
            .map_err(|source| Error::Open {
                target: addr.to_string(),
                source,
            })
    }

    /// Sets the authValue this client presents for `hierarchy` (all are
    /// empty until set, as on a fresh TPM).
    pub fn set_hierarchy_auth(&mut self, hierarchy: Hierarchy, auth: &[u8]) {
        let slot = match hierarchy {
            Hierarchy::Owner => &mut self.owner_auth,
            Hierarchy::Endorsement => &mut self.endorsement_auth,
            Hierarchy::Platform => &mut self.platform_auth,
        };
        *slot = auth.to_vec();
    }

    /// The password authorization for `hierarchy`.
    pub(crate) fn hierarchy_auth(&self, hierarchy: Hierarchy) -> Authorization {
        Authorization::Password(
            match hierarchy {
                Hierarchy::Owner => &self.owner_auth,
                Hierarchy::Endorsement => &self.endorsement_auth,
                Hierarchy::Platform => &self.platform_auth,
            }
            .clone(),
        )
    }

    /// Sends one command and splits the response; a non-success response
    /// code becomes [`Error::Tpm`]. A TPM that answers `TPM_RC_RETRY`,
    /// `TPM_RC_YIELDED` or `TPM_RC_TESTING` (warnings that ask for the same
    /// command again, e.g. swtpm on the first use of an algorithm after it
    /// deferred its self-test) gets the command again, a bounded number of
    /// times; a failed command changes no session, so resending is safe.
    pub(crate) fn execute(&mut self, cmd: Command<'_>) -> Result<Response, Error> {
        let code = cmd.code;
        let bytes = encode_command(&cmd).map_err(|source| Error::InvalidArgument {
            command: code,
            source,
        })?;
        let mut attempt: u32 = 0;
        loop {
            let response = self
                .transport
                .transmit(&bytes)
                .map_err(|source| Error::Transport {
                    command: code,
                    source,
                })?;
            match decode_response(&cmd, &response) {
                Err(Error::Tpm { rc, .. }) if is_retry(rc) && attempt < MAX_RETRIES => {
                    attempt = attempt.saturating_add(1);
                    std::thread::sleep(RETRY_DELAY.saturating_mul(attempt));
                }
                result => return result,
            }
        }
    }
}

/// How often a command is resent after a retry warning.
const MAX_RETRIES: u32 = 10;
/// Base delay before resending (grows linearly).
const RETRY_DELAY: Duration = Duration::from_millis(10);

fn is_retry(rc: ResponseCode) -> bool {
    const YIELDED: ResponseCode = ResponseCode(0x908);
    const TESTING: ResponseCode = ResponseCode(0x90A);
    rc == ResponseCode::RETRY || rc == YIELDED || rc == TESTING
}

fn encode_command(cmd: &Command<'_>) -> Result<Vec<u8>, MarshalError> {
    let mut body = Writer::new();
    for h in cmd.handles {
        body.u32(*h);
    }
    if !cmd.auths.is_empty() {
        marshal_auth_area(cmd.auths, &mut body)?;
    }
    body.bytes(&cmd.params);
    let body = body.into_bytes();
    let total = body.len().saturating_add(HEADER_SIZE);
    let size = u32::try_from(total).map_err(|_| MarshalError::TooLong {
        what: "command",
        len: total,
        max: usize::try_from(u32::MAX).unwrap_or(usize::MAX),
    })?;
    let tag = if cmd.auths.is_empty() {
        ST_NO_SESSIONS
    } else {
        ST_SESSIONS
    };
    let mut w = Writer::new();
    w.u16(tag).u32(size).u32(cmd.code.0).bytes(&body);
    Ok(w.into_bytes())
}

fn decode_response(cmd: &Command<'_>, response: &[u8]) -> Result<Response, Error> {
    let code = cmd.code;
    let malformed = |source| Error::Malformed {
        command: code,
        source,
    };
    let mut r = Reader::new(response);
    let tag = r.u16().map_err(malformed)?;
    // The transport has checked the size field against the length.
    let _size = r.u32().map_err(malformed)?;
    let rc = ResponseCode(r.u32().map_err(malformed)?);
    if rc != ResponseCode::SUCCESS {
        return Err(Error::Tpm { command: code, rc });
    }
    let expected_tag = if cmd.auths.is_empty() {
        ST_NO_SESSIONS
    } else {
        ST_SESSIONS
    };
    if tag != expected_tag {
        return Err(malformed(MarshalError::Invalid {
            what: "response tag",
            value: u32::from(tag),
        }));
    }
    let mut handles = Vec::with_capacity(cmd.response_handles);
    for _ in 0..cmd.response_handles {
        handles.push(r.u32().map_err(malformed)?);
    }
    let params = if cmd.auths.is_empty() {
        let rest = r.take(r.remaining()).map_err(malformed)?;
        rest.to_vec()
    } else {
        let size = r.u32().map_err(malformed)?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let params = r.take(size).map_err(malformed)?.to_vec();
        skip_auth_responses(&mut r, cmd.auths.len()).map_err(malformed)?;
        params
    };
    r.finish().map_err(malformed)?;
    Ok(Response { handles, params })
}

/// Runs `parse` over a response's parameters, requiring it to consume them all.
pub(crate) fn parse_params<T>(
    code: CommandCode,
    params: &[u8],
    parse: impl FnOnce(&mut Reader<'_>) -> Result<T, MarshalError>,
) -> Result<T, Error> {
    let mut r = Reader::new(params);
    let value = parse(&mut r).map_err(|source| Error::Malformed {
        command: code,
        source,
    })?;
    r.finish().map_err(|source| Error::Malformed {
        command: code,
        source,
    })?;
    Ok(value)
}

/// Maps a parameter-encoding failure to [`Error::InvalidArgument`].
pub(crate) fn invalid(code: CommandCode) -> impl Fn(MarshalError) -> Error {
    move |source| Error::InvalidArgument {
        command: code,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SessionHandle;

    fn cmd<'a>(
        auths: &'a [Authorization],
        handles: &'a [u32],
        response_handles: usize,
    ) -> Command<'a> {
        Command {
            code: CommandCode::LOAD,
            handles,
            auths,
            params: vec![0xAB],
            response_handles,
        }
    }

    #[test]
    fn encodes_header_handles_auth_and_params() {
        let auths = [Authorization::Policy(SessionHandle(0x0300_0001))];
        let bytes = encode_command(&cmd(&auths, &[0x8000_0000], 1)).unwrap();
        assert_eq!(
            bytes,
            [
                0x80, 0x02, 0, 0, 0, 28, 0, 0, 0x01, 0x57, // header
                0x80, 0, 0, 0, // handle
                0, 0, 0, 9, 3, 0, 0, 1, 0, 0, 0, 0, 0,    // auth area
                0xAB, // params
            ]
        );
    }

    #[test]
    fn decodes_session_responses_strictly() {
        let auths = [Authorization::empty_password()];
        let c = cmd(&auths, &[1], 1);
        let good = [
            0x80, 0x02, 0, 0, 0, 25, 0, 0, 0, 0, // header
            0x80, 0, 0, 1, // handle
            0, 0, 0, 2, 0xCA, 0xFE, // parameterSize, params
            0, 0, 1, 0, 0, // auth response
        ];
        let resp = decode_response(&c, &good).unwrap();
        assert_eq!(resp.handles, [0x8000_0001]);
        assert_eq!(resp.params, [0xCA, 0xFE]);

        // A trailing byte after the auth area is rejected.
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert!(matches!(
            decode_response(&c, &trailing),
            Err(Error::Malformed { .. })
        ));
        // A parameterSize beyond the buffer is rejected.
        let mut long = good.to_vec();
        long[17] = 0xff;
        assert!(matches!(
            decode_response(&c, &long),
            Err(Error::Malformed { .. })
        ));
        // A wrong tag is rejected.
        let mut tag = good.to_vec();
        tag[1] = 0x01;
        assert!(matches!(
            decode_response(&c, &tag),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn error_codes_are_typed() {
        let c = cmd(&[], &[], 0);
        let resp = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x09, 0x9D];
        match decode_response(&c, &resp) {
            Err(Error::Tpm { command, rc }) => {
                assert_eq!(command, CommandCode::LOAD);
                assert_eq!(rc.base(), ResponseCode::POLICY_FAIL);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
