//! The attestation channel's framing and messages: `FrameReader::push`
//! never panics and splits a stream the same way whether it arrives in one
//! push or two (split point from the first byte); every complete frame
//! goes through `decode::<GuestMessage>` and `decode::<HostMessage>`, and a
//! message that decodes re-encodes to a frame that decodes to the same
//! value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_protocol::{decode, encode, FrameReader, GuestMessage, HostMessage};

fn check_frame(n: u64, line: &[u8]) {
    if let Ok(m) = decode::<GuestMessage>(n, line) {
        let e = encode(&m);
        assert_eq!(e.last(), Some(&b'\n'), "frame ends in a newline");
        let body = &e[..e.len() - 1];
        assert!(!body.contains(&b'\n'), "encoded frame is one line");
        let again = decode::<GuestMessage>(n, body).expect("re-encoded GuestMessage decodes");
        assert_eq!(again, m, "GuestMessage round trip");
    }
    if let Ok(m) = decode::<HostMessage>(n, line) {
        let e = encode(&m);
        assert_eq!(e.last(), Some(&b'\n'), "frame ends in a newline");
        let body = &e[..e.len() - 1];
        assert!(!body.contains(&b'\n'), "encoded frame is one line");
        let again = decode::<HostMessage>(n, body).expect("re-encoded HostMessage decodes");
        assert_eq!(again, m, "HostMessage round trip");
    }
}

fuzz_target!(|data: &[u8]| {
    // The whole input in one push.
    if let Ok(frames) = FrameReader::default().push(data) {
        for (n, line) in &frames {
            assert!(!line.contains(&b'\n'));
            check_frame(*n, line);
        }
    }

    // The rest of the input in one push and in two (split at an offset
    // taken from the first byte): the same frames either way.
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(first) % (rest.len() + 1);
    let (a, b) = rest.split_at(at);
    let whole = FrameReader::default().push(rest);
    let mut r = FrameReader::default();
    let split = r.push(a).and_then(|mut f| {
        r.push(b).map(|g| {
            f.extend(g);
            f
        })
    });
    if let (Ok(whole), Ok(split)) = (&whole, &split) {
        assert_eq!(whole, split, "frames depend on how the stream was split");
        for (n, line) in split {
            check_frame(*n, line);
        }
    }
    assert_eq!(
        whole.is_ok(),
        split.is_ok(),
        "one push vs two disagree on errors"
    );
});
