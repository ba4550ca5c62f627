//! The tpm2-tools PCR file (`tpm2_quote -o`) parser: never panics, and a
//! parsed file digests for its own selection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_tpm::alg::HashAlg;
use trustlaunch_tpm::pcr::{parse_tpm2_tools_pcrs, pcr_digest};

fuzz_target!(|data: &[u8]| {
    if let Ok((selection, values)) = parse_tpm2_tools_pcrs(data) {
        let _ = pcr_digest(&selection, &values, HashAlg::Sha256);
    }
});
