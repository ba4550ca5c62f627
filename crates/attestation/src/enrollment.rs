//! What enrollment established once per VM and later appraisals reuse: the
//! EK certificate (its chain to the vTPM CA verified), the AK (proven by
//! credential activation under the EK), and the AK prepared for quote
//! verification. An appraisal with an [`Enrollment`] skips re-verifying the
//! certificate chain and re-parsing the AK when the evidence presents the
//! same bytes — the two costliest steps (see docs/benchmarks.md) — and
//! checks everything else as before. Different bytes are appraised in full.

use trustlaunch_tpm::public::Public;
use trustlaunch_tpm::quote::QuoteVerifier;

/// A VM's enrollment.
pub struct Enrollment {
    ek_certificate: Vec<u8>,
    ak_public: Vec<u8>,
    verifier: QuoteVerifier,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("ek_certificate_len", &self.ek_certificate.len())
            .field("ak_public_len", &self.ak_public.len())
            .finish_non_exhaustive()
    }
}

/// Why an enrollment cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollmentError {
    /// The AK's public area is unusable.
    #[error("AK: {0}")]
    Ak(String),
}

impl Enrollment {
    /// Records an enrollment from evidence whose appraisal passed
    /// `ek.certificate`, `ak.attributes`, `ak.name` and `ak.activated`
    /// (the caller's responsibility: enroll only after such an appraisal).
    pub fn new(ek_certificate: &[u8], ak_public: &[u8]) -> Result<Self, EnrollmentError> {
        let ak = Public::from_bytes(ak_public).map_err(|e| EnrollmentError::Ak(e.to_string()))?;
        let verifier = QuoteVerifier::new(&ak).map_err(|e| EnrollmentError::Ak(e.to_string()))?;
        Ok(Self {
            ek_certificate: ek_certificate.to_vec(),
            ak_public: ak_public.to_vec(),
            verifier,
        })
    }

    /// The enrolled EK certificate (DER).
    pub fn ek_certificate(&self) -> &[u8] {
        &self.ek_certificate
    }

    /// The enrolled AK (TPMT_PUBLIC).
    pub fn ak_public(&self) -> &[u8] {
        &self.ak_public
    }

    /// The prepared verifier, if `ak_public` is the enrolled AK.
    pub(crate) fn verifier_for(&self, ak_public: &[u8]) -> Option<&QuoteVerifier> {
        (self.ak_public == ak_public).then_some(&self.verifier)
    }

    /// Whether `der` is the enrolled (already verified) certificate.
    pub(crate) fn is_enrolled_certificate(&self, der: &[u8]) -> bool {
        self.ek_certificate == der
    }
}
