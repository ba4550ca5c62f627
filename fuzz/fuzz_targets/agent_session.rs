//! The guest agent's session on frames from the host (`Session::feed`)
//! with a fake attester (no TPM): never panics, and every frame it sends
//! back is one line that decodes as a `GuestMessage`. The input is fed in
//! two pieces (split point from the first byte) so frames cross feeds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_agent::{AgentError, Attester, Session};
use trustlaunch_protocol::{decode, Bytes, Evidence, GuestMessage, PcrBank};

/// Fixed small evidence for a 1..=64-byte nonce, an error otherwise;
/// activation echoes the blob unless it starts with 0xff.
struct Fake;

impl Attester for Fake {
    fn evidence(&mut self, nonce: &[u8]) -> Result<Evidence, AgentError> {
        if nonce.is_empty() || nonce.len() > 64 {
            return Err(AgentError::Nonce {
                len: nonce.len(),
                max: 64,
            });
        }
        Ok(Evidence {
            version: 1,
            agent: "fuzz-fake".into(),
            boot_id: "00000000-0000-0000-0000-000000000000".into(),
            nonce: Bytes(nonce.to_vec()),
            ek_certificate: None,
            ek_public: Bytes(vec![1; 4]),
            ak_public: Bytes(vec![2; 4]),
            ak_name: Bytes(vec![3; 4]),
            quote_attest: Bytes(vec![4; 4]),
            quote_signature: Bytes(vec![5; 4]),
            pcr_selection: Bytes(vec![6; 4]),
            pcrs: vec![PcrBank {
                alg: 0x000b,
                values: vec![(7, Bytes(vec![9; 32]))],
            }],
            event_log: Bytes(vec![7; 16]),
            secure_boot: Some(1),
            kernel_release: "6.1.0-fuzz".into(),
            untrusted_modules: vec!["hello".into()],
        })
    }

    fn activate(&mut self, credential_blob: &[u8], _secret: &[u8]) -> Result<Vec<u8>, AgentError> {
        if credential_blob.first() == Some(&0xff) {
            return Err(AgentError::PcrsChanging { attempts: 3 });
        }
        Ok(credential_blob.to_vec())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(first) % (rest.len() + 1);
    let (a, b) = rest.split_at(at);
    let mut session = Session::new();
    let mut attester = Fake;
    for piece in [a, b] {
        let out = session.feed(piece, &mut attester);
        for frame in &out.frames {
            let body = frame
                .strip_suffix(b"\n")
                .expect("an output frame ends in a newline");
            assert!(!body.contains(&b'\n'), "output frame is one line");
            if let Err(e) = decode::<GuestMessage>(0, body) {
                panic!(
                    "output frame does not decode as GuestMessage: {e}: {:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
});
