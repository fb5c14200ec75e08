"""The one rule for a wallet a citizen names, at registration and at claim: a bank code of an
operator bank taking part (`STIMULUS_BANKS`) and a wallet id in the banks' protocol syntax.

Registration and claim used to check wallets differently, so a registration could keep a wallet
(bank `HSBC`, wallet id `x' OR 1=1 10`) that the claim and the banks refuse; bulk issuance then had
packets it could not send. Both now refuse such a wallet before anything is written, and bulk
issuance applies the same rule (in SQL, with the same patterns and codes) to wallets kept from
before.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from kernel.errors import InvalidInput

BANK_CODE_PATTERN = re.compile(r"^[A-Z0-9]{2,16}$")
# Also used as a PostgreSQL regular expression: keep it to the syntax both understand.
WALLET_ID_PATTERN = re.compile(r"^[A-Za-z0-9-]{1,64}$")
UNKNOWN_BANK, INVALID_WALLET = "unknown_bank", "invalid_wallet"  # as check_wallet refuses them


def check_wallet(bank_codes: Collection[str], bank_code: str, wallet_id: str) -> None:
    """Refuse a wallet no configured bank could hold, before anything is written."""
    if not BANK_CODE_PATTERN.match(bank_code):
        raise InvalidInput("wallet.bank_code: 2-16 upper-case letters or digits", code="invalid_wallet")
    if not WALLET_ID_PATTERN.match(wallet_id):
        raise InvalidInput("wallet.wallet_id: 1-64 letters, digits or '-'", code="invalid_wallet")
    if bank_code not in bank_codes:
        raise InvalidInput(f"no operator bank {bank_code!r} takes part in this campaign",
                           code="unknown_bank", bank_codes=sorted(bank_codes))
