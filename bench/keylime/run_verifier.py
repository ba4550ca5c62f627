"""Start Keylime's verifier (keylime.cmd.verifier.main) with one runtime override.

Keylime hard-codes PCR 10 as the IMA PCR (keylime.config.IMA_PCR): whenever a quote
contains PCR 10 it must be explained by an IMA measurement list. Our quotes cover
PCRs 0-15 and PCR 10 is the guest's IMA, whose list is not part of our evidence, so
the stateless verification can never pass with the stock value. KEYLIME_IMA_PCR
(default 24, a PCR that is never quoted) moves that check away; PCR 10 is then
handled like any other non-measured-boot PCR (checked only if the request's
tpm_policy names it). KEYLIME_IMA_PCR=10 gives stock Keylime behaviour.
"""

import os

from keylime import config

config.IMA_PCR = int(os.environ.get("KEYLIME_IMA_PCR", "24"))

from keylime.cmd import verifier  # noqa: E402  (after the override, before fork)

if __name__ == "__main__":
    verifier.main()
