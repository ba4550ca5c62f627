//! swtpm's control channel (`swtpm socket --ctrl type=unixio,...`): the
//! out-of-band commands of swtpm's `tpm_ioctl.h` carried over a unix
//! stream — a 4-byte big-endian command code, its parameters, and a
//! fixed-size response.
//!
//! Only what the platform needs: [`SwtpmControl::capabilities`] (the
//! handshake that proves a freshly started swtpm is the one at the other
//! end and serving) and [`SwtpmControl::shutdown`] (swtpm saves its state
//! and exits). Responses are read with exact, fixed lengths under a
//! timeout.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use thiserror::Error;

/// `CMD_GET_CAPABILITY`.
const CMD_GET_CAPABILITY: u32 = 0x01;
/// `CMD_SHUTDOWN`.
const CMD_SHUTDOWN: u32 = 0x03;

/// A control-channel failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Reading or writing failed, or the peer closed the channel.
    #[error("swtpm control channel: {what}: {source}")]
    Io {
        /// The command in flight.
        what: &'static str,
        /// The error (`UnexpectedEof` when swtpm closed the channel).
        source: io::Error,
    },
    /// swtpm answered with a non-zero result code.
    #[error("swtpm control channel: {what} failed with result {result:#x}")]
    Failed {
        /// The command.
        what: &'static str,
        /// swtpm's `ptm_res`.
        result: u32,
    },
}

/// A client of one swtpm's control channel.
#[derive(Debug)]
pub struct SwtpmControl {
    stream: UnixStream,
}

impl SwtpmControl {
    /// A client over a connected stream (one end of the socket pair swtpm
    /// got as `--ctrl type=unixio,clientfd=N`, or a connection to its
    /// control socket), with every read and write bounded by `timeout`.
    pub fn new(stream: UnixStream, timeout: Duration) -> io::Result<Self> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self { stream })
    }

    fn exchange<const N: usize>(
        &mut self,
        what: &'static str,
        command: u32,
    ) -> Result<[u8; N], ControlError> {
        let io = |source| ControlError::Io { what, source };
        self.stream.write_all(&command.to_be_bytes()).map_err(io)?;
        let mut response = [0u8; N];
        self.stream.read_exact(&mut response).map_err(io)?;
        Ok(response)
    }

    /// `CMD_GET_CAPABILITY`: the bit set of control commands swtpm
    /// supports. A reply proves swtpm serves this channel.
    pub fn capabilities(&mut self) -> Result<u64, ControlError> {
        let r: [u8; 8] = self.exchange("CMD_GET_CAPABILITY", CMD_GET_CAPABILITY)?;
        Ok(u64::from_be_bytes(r))
    }

    /// `CMD_SHUTDOWN`: swtpm writes its state and exits.
    pub fn shutdown(&mut self) -> Result<(), ControlError> {
        let r: [u8; 4] = self.exchange("CMD_SHUTDOWN", CMD_SHUTDOWN)?;
        match u32::from_be_bytes(r) {
            0 => Ok(()),
            result => Err(ControlError::Failed {
                what: "CMD_SHUTDOWN",
                result,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_fixed_length_responses() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut ctrl = SwtpmControl::new(ours, Duration::from_secs(5)).unwrap();
        let peer = std::thread::spawn(move || {
            let mut cmd = [0u8; 4];
            theirs.read_exact(&mut cmd).unwrap();
            assert_eq!(cmd, [0, 0, 0, 1]);
            theirs.write_all(&[0, 0, 0, 0, 0, 0, 0xff, 0xff]).unwrap();
            theirs.read_exact(&mut cmd).unwrap();
            assert_eq!(cmd, [0, 0, 0, 3]);
            theirs.write_all(&[0, 0, 0, 9]).unwrap();
            theirs.read_exact(&mut cmd).unwrap();
            // Closed after half a response.
            theirs.write_all(&[0, 0]).unwrap();
        });
        assert_eq!(ctrl.capabilities().unwrap(), 0xffff);
        assert!(matches!(
            ctrl.shutdown(),
            Err(ControlError::Failed { result: 9, .. })
        ));
        let e = ctrl.shutdown().unwrap_err();
        peer.join().unwrap();
        assert!(matches!(e, ControlError::Io { .. }), "{e}");
    }
}
