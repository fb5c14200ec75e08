"""Merchants' tills: customers pay with their red packets, the till sends signed notices.

Each simulated till is one merchant (its key from the plan) serving a queue of customers; one
iteration is one customer, who spends part of a packet in one to three payments. A till now and
then asks for a notice's status, and refunds part of a payment. Every request is signed as
`merchants.signing` specifies: Ed25519 over the scheme, method, path, timestamp, nonce and the
body's SHA-256. This file imports `cryptography` for the signature besides the standard library
and locust, so worker machines need it too (`pip install cryptography`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import gevent
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from locust import FastHttpUser, between, task
from plan_feed import acks, pause, records, rows, visit

SCHEME = "stimulus-merchant-v1"
REDEEM = "/v1/merchants/{mid}/redemptions"
STATUS = "/v1/merchants/{mid}/redemptions/{txn}"
REVERSE = "/v1/merchants/{mid}/redemptions/{txn}/reversals"
PRICES_FEN = (1_500, 2_800, 4_990, 6_600)
OUT_OF_PACKETS_PAUSE_S = 1.0


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class MerchantTill(FastHttpUser):
    """A till: customers arrive, pay, and the till notifies each payment at once."""

    weight = 1
    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        merchant = records(self.environment, "redemptions", "merchants", cycle=True).next()
        assert merchant is not None, "the plan has no merchants"
        self.merchant_id = str(merchant["merchant_id"])
        self.key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(str(merchant["seed_hex"])))
        self.packets = rows(self.environment, "redemptions", "packets_file", ("reference", "amount"))
        self.base = f"/v1/merchants/{self.merchant_id}"

    def signed(self, method: str, path: str, body: bytes) -> dict[str, str]:
        stamp, nonce = str(int(time.time())), secrets.token_urlsafe(18)
        message = "\n".join((SCHEME, method, path, stamp, nonce, hashlib.sha256(body).hexdigest())).encode()
        headers = {"X-Merchant-Id": self.merchant_id, "X-Timestamp": stamp, "X-Nonce": nonce,
                   "X-Signature": _b64url(self.key.sign(message)), "Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        return headers

    def post(self, path: str, payload: dict[str, Any], name: str, kind: str, amount: int) -> bool:
        body = json.dumps(payload).encode()
        with self.client.post(path, data=body, headers=self.signed("POST", path, body), name=name,
                              catch_response=True) as response:
            if response.status_code == 202:
                acks[f"{kind}_accepted"] += 1
                acks[f"{kind}_accepted_fen"] += amount
                return True
            response.failure(f"HTTP {response.status_code}: {(response.text or '')[:160]}")
            return False

    @task
    def customer(self) -> None:
        packet = self.packets.next()
        if packet is None:
            gevent.sleep(OUT_OF_PACKETS_PAUSE_S)
            return
        with visit("redemption"):
            self.serve(str(packet["reference"]), int(packet["amount"]))

    def serve(self, reference: str, balance: int) -> None:
        for _ in range(random.choice((1, 1, 2, 3))):
            amount = min(balance, random.choice(PRICES_FEN))
            if amount <= 0:
                return
            txn = f"t-{uuid.uuid4().hex[:20]}"
            payload = {"merchant_txn_id": txn, "payment_reference": reference, "amount_fen": amount,
                       "occurred_at": datetime.now(UTC).isoformat(),
                       "basket_fen": amount * random.choice((1, 2, 3)) + random.choice((0, 350, 1_280))}
            if not self.post(f"{self.base}/redemptions", payload, REDEEM, "redemptions", amount):
                return
            balance -= amount
            if random.random() < 0.1:
                self.check(txn)
            if random.random() < 0.03:
                refund = max(1, amount // 3)
                self.post(f"{self.base}/redemptions/{txn}/reversals",
                          {"merchant_txn_id": f"{txn}-r", "amount_fen": refund,
                           "occurred_at": datetime.now(UTC).isoformat()}, REVERSE, "reversals", refund)
            pause(self, 0.5, 2.0)

    def check(self, txn: str) -> None:
        path = f"{self.base}/redemptions/{txn}"
        with self.client.get(path, headers=self.signed("GET", path, b""), name=STATUS,
                             catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:160]}")
