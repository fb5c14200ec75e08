"""Citizens, as the city's app drives the API: register, check the result, verify, claim.

Each simulated user stands for a stream of citizens: one iteration is one citizen's visit, with
the pauses a person takes between screens (compressed: a real visit spends longer reading, which
more users would stand for). Request names are templates, so statistics are per endpoint.
"""

from __future__ import annotations

import json
import random
from typing import Any

import gevent
from locust import FastHttpUser, between, task
from plan_feed import (
    acknowledge,
    bearer,
    citizens,
    finish_when_done,
    inclusion_ok,
    pause,
    remember,
    section,
    visit,
    wallet_for,
)

CAMPAIGN = "/v1/campaigns/{id}"
REGISTER = "/v1/campaigns/{id}/registrations"
OWN_REGISTRATION = "/v1/campaigns/{id}/registrations/me"
RESULT = "/v1/campaigns/{id}/result"
PROOF = "/v1/campaigns/{id}/tickets/{ticket}/proof"
COMMITMENT = "/v1/campaigns/{id}/commitment"
CLAIM = "/v1/campaigns/{id}/claim"
CLAIM_STATUS = "/v1/campaigns/{id}/claim"
CLAIMED_STATES = ("issuing", "issued")
OUT_OF_CITIZENS_PAUSE_S = 1.0


def _body(response: Any) -> dict[str, Any]:
    try:
        decoded = json.loads(response.content or b"{}")
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


class Registrant(FastHttpUser):
    """Registration opens: a citizen reads the campaign, registers, sometimes re-reads the receipt."""

    weight = 1
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.campaign_id = section("registration")["campaign_id"]
        self.feed = citizens(self.environment, "registration")

    @task
    def visit(self) -> None:
        citizen = self.feed.next()
        if citizen is None:
            gevent.sleep(OUT_OF_CITIZENS_PAUSE_S)
            return
        cid = self.campaign_id
        self.client.get(f"/v1/campaigns/{cid}", name=CAMPAIGN)
        pause(self, 0.5, 2.0)
        # Half the citizens name the wallet for the packet already at registration.
        payload = {"wallet": wallet_for(citizen["number"], ["ICBC", "CCB", "BOC"])} \
            if citizen["number"] % 2 == 0 else {}
        with self.client.post(f"/v1/campaigns/{cid}/registrations", data=json.dumps(payload),
                              headers={**bearer(citizen["token"], idempotent=True),
                                       "Content-Type": "application/json"},
                              name=REGISTER, catch_response=True) as response:
            if response.status_code == 201 and "ticket" in (body := _body(response)):
                acknowledge("registrations_created", int(body["ticket"]))
            elif response.status_code == 200:
                acknowledge("registrations_repeated")
            else:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:120]}")
                return
        if random.random() < 0.3:
            pause(self, 1.0, 3.0)
            self.client.get(f"/v1/campaigns/{cid}/registrations/me", headers=bearer(citizen["token"]),
                            name=OWN_REGISTRATION)


class _Drawn(FastHttpUser):
    """A citizen of a campaign whose draw is published."""

    abstract = True
    feed_section = "results"
    feed_cycles = True

    def on_start(self) -> None:
        spec = section(self.feed_section)
        self.campaign_id = spec["campaign_id"]
        self.root = bytes.fromhex(spec["root_hex"])
        self.tree_size = int(spec["tree_size"])
        self.feed = citizens(self.environment, self.feed_section, cycle=self.feed_cycles)

    def check_result(self, token: str) -> dict[str, Any] | None:
        with self.client.get(f"/v1/campaigns/{self.campaign_id}/result", headers=bearer(token),
                             name=RESULT, catch_response=True) as response:
            body = _body(response)
            if response.status_code != 200 or "won" not in body or "ticket" not in body:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:120]}")
                return None
            remember("results_won" if body["won"] else "results_lost", int(body["ticket"]))
            return body

    def verify_inclusion(self, ticket: int) -> None:
        """The app's own check: the ticket's audit path leads to the published, signed root."""
        with self.client.get(f"/v1/campaigns/{self.campaign_id}/tickets/{ticket}/proof",
                             name=PROOF, catch_response=True) as response:
            proof = _body(response)
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            elif proof.get("ticket") != ticket or not inclusion_ok(
                    bytes.fromhex(proof["leaf_hex"]), int(proof["leaf_index"]), int(proof["tree_size"]),
                    [bytes.fromhex(h) for h in proof["audit_path"]], self.root) \
                    or int(proof["tree_size"]) != self.tree_size:
                response.failure("inclusion proof does not verify against the committed root")


class ResultChecker(_Drawn):
    """Results are out: everyone asks "did I win?"; some check their inclusion; some ask again."""

    weight = 1
    wait_time = between(1.0, 3.0)

    @task
    def visit(self) -> None:
        citizen = self.feed.next()
        if citizen is None:
            gevent.sleep(OUT_OF_CITIZENS_PAUSE_S)
            return
        result = self.check_result(citizen["token"])
        if result is None:
            return
        if random.random() < 0.3:
            pause(self, 1.0, 4.0)
            self.verify_inclusion(int(result["ticket"]))
        if random.random() < 0.15:
            pause(self, 2.0, 6.0)
            self.check_result(citizen["token"])


CLAIM_ATTEMPTS = 5


class Claimant(_Drawn):
    """Winners claim: see the win, pick the bank, bind the wallet, claim once."""

    weight = 1
    wait_time = between(0.5, 1.5)
    feed_section = "claims"
    feed_cycles = False
    # In the claim rush the run is over when every winner has claimed; in a mix it is not.
    end_run_when_all_claimed = False

    def on_start(self) -> None:
        super().on_start()
        self.banks = list(section("claims")["banks"])

    @task
    def claim_visit(self) -> None:
        citizen = self.feed.next()
        if citizen is None:
            if self.end_run_when_all_claimed:
                finish_when_done(self.environment, "claim")
            gevent.sleep(OUT_OF_CITIZENS_PAUSE_S)
            return
        with visit("claim"):
            self.claim(citizen)

    def claim(self, citizen: dict[str, Any]) -> None:
        result = self.check_result(citizen["token"])
        if result is None or not result["won"]:
            return
        pause(self, 1.0, 3.0)
        body = json.dumps({"wallet": wallet_for(citizen["number"], self.banks)})
        # One key for the claim and the app's own retries: a 503 may have come after the claim
        # committed, and sending it again is how the citizen learns it holds.
        headers = {**bearer(citizen["token"], idempotent=True), "Content-Type": "application/json"}
        for attempt in range(CLAIM_ATTEMPTS):
            with self.client.post(f"/v1/campaigns/{self.campaign_id}/claim", data=body, headers=headers,
                                  name=CLAIM, catch_response=True) as response:
                if response.status_code == 202:
                    acknowledge("claims_accepted")
                    break
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:120]}")
                if response.status_code != 503 or attempt == CLAIM_ATTEMPTS - 1:
                    return
            gevent.sleep(1.0)
        if random.random() < 0.3:
            # The app shows the packet: "issuing" until the bank has credited the wallet.
            pause(self, 2.0, 5.0)
            with self.client.get(f"/v1/campaigns/{self.campaign_id}/claim", headers=bearer(citizen["token"]),
                                 name=CLAIM_STATUS, catch_response=True) as response:
                if response.status_code != 200 or _body(response).get("state") not in CLAIMED_STATES:
                    response.failure(f"HTTP {response.status_code}: {(response.text or '')[:120]}")
