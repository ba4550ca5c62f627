//! Newline-delimited JSON frames, bounded before allocation.

use serde::{de::DeserializeOwned, Serialize};

use crate::MAX_FRAME;

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame grew past the limit without a newline.
    #[error("frame {frame}: longer than {limit} bytes without a newline")]
    TooLong {
        /// Frame number (0-based) on this channel.
        frame: u64,
        /// The limit.
        limit: usize,
    },
    /// A frame is not a valid message.
    #[error("frame {frame}: {reason}")]
    Invalid {
        /// Frame number (0-based) on this channel.
        frame: u64,
        /// What serde said (line and column within the frame).
        reason: String,
    },
}

/// Encodes a message as one frame (JSON + `\n`).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these types cannot fail: no maps with non-string keys,
    // no custom serializers that error.
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Decodes one frame's bytes (without the newline).
pub fn decode<T: DeserializeOwned>(frame: u64, line: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(line).map_err(|e| FrameError::Invalid {
        frame,
        reason: e.to_string(),
    })
}

/// Splits a byte stream into frames (sans-IO: feed it what was read).
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    limit: usize,
    frames: u64,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new(MAX_FRAME)
    }
}

impl FrameReader {
    /// A reader refusing frames longer than `limit` bytes (newline
    /// included).
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            frames: 0,
        }
    }

    /// Frames completed so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes buffered towards the next frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Appends `data` and returns the complete frames (without newlines),
    /// numbered from the first frame of the stream. Empty lines are
    /// skipped (a guest may send a newline to flush a port).
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, FrameError> {
        let mut out = Vec::new();
        let mut rest = data;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(pos);
            self.check(line.len().saturating_add(1))?;
            let mut frame = std::mem::take(&mut self.buf);
            frame.extend_from_slice(line);
            rest = tail.get(1..).unwrap_or_default();
            if frame.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            out.push((self.frames, frame));
            self.frames = self.frames.saturating_add(1);
        }
        self.check(rest.len())?;
        self.buf.extend_from_slice(rest);
        Ok(out)
    }

    fn check(&self, more: usize) -> Result<(), FrameError> {
        if self.buf.len().saturating_add(more) > self.limit {
            return Err(FrameError::TooLong {
                frame: self.frames,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use crate::{Bytes, GuestMessage, HostMessage};

    #[test]
    fn splits_across_pushes_and_bounds() {
        let mut r = FrameReader::new(16);
        assert!(r.push(b"abc").unwrap().is_empty());
        let f = r.push(b"de\n\nxy\nz").unwrap();
        assert_eq!(f, vec![(0, b"abcde".to_vec()), (1, b"xy".to_vec())]);
        assert_eq!(r.pending(), 1);
        let err = r.push(&[b'a'; 16]).unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLong {
                frame: 2,
                limit: 16
            }
        ));
    }

    #[test]
    fn messages_round_trip() {
        let m = HostMessage::Challenge {
            nonce: Bytes(vec![1; 32]),
        };
        let e = encode(&m);
        assert_eq!(*e.last().unwrap(), b'\n');
        let line = &e[..e.len() - 1];
        assert_eq!(decode::<HostMessage>(0, line).unwrap(), m);
        let g = GuestMessage::Activated {
            secret: Bytes(vec![1, 2]),
        };
        let e = encode(&g);
        assert_eq!(decode::<GuestMessage>(0, &e[..e.len() - 1]).unwrap(), g);
        let ev = GuestMessage::Evidence(Box::new(crate::Evidence {
            version: 1,
            agent: "trustlaunch-agent 0.1.0".into(),
            boot_id: String::new(),
            nonce: Bytes(vec![2; 32]),
            ek_certificate: None,
            ek_public: Bytes(vec![3]),
            ak_public: Bytes(vec![4]),
            ak_name: Bytes(vec![5]),
            quote_attest: Bytes(vec![6]),
            quote_signature: Bytes(vec![7]),
            pcr_selection: Bytes(vec![8]),
            pcrs: vec![crate::PcrBank {
                alg: 0x000b,
                values: vec![(7, Bytes(vec![9; 32]))],
            }],
            event_log: Bytes(vec![10; 100]),
            secure_boot: Some(1),
            kernel_release: "6.1.0".into(),
            untrusted_modules: vec!["hello".into()],
        }));
        let e = encode(&ev);
        assert!(e.starts_with(br#"{"type":"evidence","version":1,"#));
        assert_eq!(decode::<GuestMessage>(0, &e[..e.len() - 1]).unwrap(), ev);
        // An agent that predates `untrusted_modules` omits it: empty.
        let line = String::from_utf8(e[..e.len() - 1].to_vec()).unwrap();
        let field = r#","untrusted_modules":["hello"]"#;
        assert!(line.contains(field), "{line}");
        let old = line.replace(field, "");
        let old = decode::<GuestMessage>(0, old.as_bytes()).unwrap();
        assert!(
            matches!(&old, GuestMessage::Evidence(e) if e.untrusted_modules.is_empty()),
            "{old:?}"
        );
        let d = encode(&HostMessage::Done {});
        assert_eq!(d, b"{\"type\":\"done\"}\n");
    }

    #[test]
    fn refuses_unknown_and_malformed() {
        for bad in [
            &br#"{"type":"nope"}"#[..],
            br#"{"type":"activated"}"#,
            br#"{"type":"activated","secret":"0g"}"#,
            br#"{"type":"activated","secret":"00","x":1}"#,
            b"\xff\xfe",
        ] {
            let e = decode::<GuestMessage>(7, bad).unwrap_err();
            assert!(e.to_string().starts_with("frame 7: "), "{e}");
        }
    }
}
