""""Verify the whole draw" in headless Chromium: a campaign drawn by the service passes, and so do
the spec's worked examples (a real drand quicknet round, both algorithms, both list spellings); a
tampered registrant list, and bundles re-signed with one thing changed, are rejected at the step
that stimulus-verify names. Every verdict is compared with stimulus-verify's on the same files.
Screenshots, in English and Chinese, are kept as artifacts."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lottery import bundle as bundle_module
from lottery import verify
from lottery.rehearsal import deterministic_key
from tests.web.bundle_server import Published, serving
from tests.web.conftest import DrawnCampaign

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
WHOLE_TIMEOUT_MS = 60_000
STEPS = ["fetch", "envelope", "shape", "campaign", "commitment", "beacon", "ceremony", "seed", "list", "draw"]


def _verify_whole(page: Any, url: str, spelling: str = "csv") -> str:
    page.goto(url)
    page.wait_for_selector("body[data-loaded]", timeout=WHOLE_TIMEOUT_MS)
    assert page.get_attribute("body", "data-loaded") == "true", page.text_content("#campaign-name")
    assert page.is_visible("#whole-button")
    page.select_option("#whole-format", spelling)
    page.click("#whole-button")
    page.wait_for_selector("body[data-whole]", timeout=WHOLE_TIMEOUT_MS)
    return str(page.get_attribute("body", "data-whole"))


def _whole_steps(page: Any) -> dict[str, str]:
    return {item.get_attribute("data-step"): item.get_attribute("data-status")
            for item in page.locator("#whole-steps > li").all()}


def _stimulus_verify(bundle_bytes: bytes, list_bytes: bytes, tmp: Path) -> tuple[int, list[str]]:
    """stimulus-verify's verdict on the same files, with the service key pinned as the page pins it."""
    (tmp / "bundle.json").write_bytes(bundle_bytes)
    (tmp / "list").write_bytes(list_bytes)
    said: list[str] = []
    key = json.loads(bundle_bytes)["public_key_hex"]
    code = verify.run([str(tmp / "bundle.json"), "--registrants", str(tmp / "list"), "--service-key", key,
                       "--workers", "1"], say=said.append)
    return code, said


def test_a_drawn_campaign_is_verified_whole_in_the_browser(
        drawn_campaign: DrawnCampaign, page: Any, api_url: str, artifacts: Path) -> None:
    assert _verify_whole(page, f"{api_url}/campaigns/{drawn_campaign.campaign_id}") == "pass", \
        page.inner_text("#whole")
    steps = _whole_steps(page)
    assert list(steps) == STEPS
    assert steps == {**dict.fromkeys(STEPS, "ok"), "beacon": "warn"}  # the tests' campaigns use the sandbox beacon
    assert page.text_content("#whole-verdict").startswith("PASS: the whole draw was re-derived")
    list_step = page.inner_text("#whole-steps li[data-step=list]")
    assert f"{len(drawn_campaign.receipts)} registrants (csv" in list_step
    assert re.search(r"\d+ ms|\d+\.\d\d s", list_step)  # each step shows its time
    assert f"{len(drawn_campaign.winners)} winners in 6 districts" in page.inner_text("#whole-steps li[data-step=draw]")
    assert page.get_attribute("#whole-progress", "value") == "1"
    page.screenshot(path=str(artifacts / "public-page-whole.png"), full_page=True)

    page.click("#language")
    assert page.text_content("#whole h2") == "核验整个摇号"
    assert page.text_content("#whole-verdict").startswith("通过")
    assert "重新哈希得到承诺的根" in page.inner_text("#whole-steps li[data-step=list]")
    page.screenshot(path=str(artifacts / "public-page-whole-zh.png"), full_page=True)


def test_a_tampered_registrant_list_is_rejected_in_the_browser(
        drawn_campaign: DrawnCampaign, page: Any, api_url: str, artifacts: Path) -> None:
    def intercept(route: Any) -> None:
        response = route.fetch()
        lines = response.body().split(b"\n")
        # One pseudonym changes by one character: the leaf, and so the root, differ.
        ticket, name, stratum = lines[3].split(b",")
        lines[3] = b",".join([ticket, name[:-1] + (b"0" if name[-1:] != b"0" else b"1"), stratum])
        route.fulfill(response=response, body=b"\n".join(lines))

    page.context.route(re.compile(r".*/registrants\?format=csv$"), intercept)
    assert _verify_whole(page, f"{api_url}/campaigns/{drawn_campaign.campaign_id}") == "fail"
    steps = _whole_steps(page)
    assert steps == {**dict.fromkeys(STEPS[:STEPS.index("list")], "ok"), "beacon": "warn", "list": "bad"}, steps
    assert "R12.4.7: registrant list root" in page.inner_text("#whole-steps li[data-step=list]")
    verdict = page.text_content("#whole-verdict")
    assert verdict.startswith("FAIL at “The registrant list re-hashes to the committed Merkle root”"), verdict
    page.screenshot(path=str(artifacts / "public-page-whole-tampered-list.png"), full_page=True)
    page.click("#language")
    assert page.text_content("#whole-verdict").startswith("失败于“登记名单重新哈希得到承诺的默克尔树根”")
    page.screenshot(path=str(artifacts / "public-page-whole-tampered-list-zh.png"), full_page=True)


def _examples(bundle_name: str) -> Published:
    return Published((EXAMPLES / bundle_name).read_bytes(),
                     {"csv": (EXAMPLES / "registrants.csv").read_bytes(),
                      "ndjson": (EXAMPLES / "registrants.ndjson").read_bytes()})


@pytest.mark.parametrize(("bundle_name", "spelling", "beacon"), [
    ("bundle.json", "csv", "ok"), ("bundle.json", "ndjson", "ok"),
    ("bundle-rfc3797.json", "csv", "ok"), ("bundle-sandbox.json", "ndjson", "warn")])
def test_the_worked_examples_pass_in_the_browser(
        bundle_name: str, spelling: str, beacon: str, page: Any, tmp_path: Path, artifacts: Path) -> None:
    published = _examples(bundle_name)
    with serving(published) as url:
        assert _verify_whole(page, f"{url}/campaigns/{published.campaign_id}", spelling) == "pass", \
            page.inner_text("#whole")
    assert _whole_steps(page) == {**dict.fromkeys(STEPS, "ok"), "beacon": beacon}
    draw = page.inner_text("#whole-steps li[data-step=draw]")
    envelope = published.envelope["bundle"]
    assert envelope["draw"]["winners_root_hex"] in draw and envelope["draw"]["algorithm"] in draw
    if beacon == "ok":
        assert "round 657413: BLS signature verified" in page.inner_text("#whole-steps li[data-step=beacon]")
    assert _stimulus_verify(published.bundle_bytes, published.lists[spelling], tmp_path)[0] == 0
    page.screenshot(path=str(artifacts / f"public-page-whole-{bundle_name.removesuffix('.json')}.png"), full_page=True)


def _resigned(change: Callable[[dict[str, Any]], None], bundle_name: str = "bundle.json") -> bytes:
    """The example bundle with one change, signed again with the example service key."""
    envelope = json.loads((EXAMPLES / bundle_name).read_bytes())
    bundle = envelope["bundle"]
    change(bundle)
    key = deterministic_key(f"service/{bundle['campaign']['id']}")
    return bundle_module.envelope(bundle, key.sign, bytes.fromhex(envelope["public_key_hex"]))


def _swap_lines(data: bytes, a: int, b: int) -> bytes:
    lines = data.split(b"\n")
    lines[a], lines[b] = lines[b], lines[a]
    return b"\n".join(lines)


def _other_round(bundle: dict[str, Any]) -> None:
    bundle["beacon"]["round"] = bundle["campaign"]["beacon"]["round"] = 657414  # same signature, another round
    bundle["beacon"]["round_time"] = "2023-09-15T11:00:06.000000Z"


def _flip(data: bytes, at: int) -> bytes:
    raw = bytearray(data)
    raw[at] ^= 0x01
    return bytes(raw)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(bundle: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = bundle
        for name in parents:
            target = target[int(name)] if isinstance(target, list) else target[name]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return change


CSV = (EXAMPLES / "registrants.csv").read_bytes()
BUNDLE = (EXAMPLES / "bundle.json").read_bytes()
# name -> (bundle bytes, CSV list bytes, the step that must fail, words its detail must hold: the rule first)
TAMPERED: dict[str, tuple[bytes, bytes, str, str]] = {
    "list-order": (BUNDLE, _swap_lines(CSV, 4, 5), "list", "R12.4.4: ticket 4 out of order"),
    "list-short": (BUNDLE, CSV.rstrip(b"\n").rsplit(b"\n", 1)[0] + b"\n", "list", "R12.4.6: registrant list has 11"),
    "list-stratum": (BUNDLE, CSV.replace(b",430103\n", b",430104\n"), "list", "R12.4.5: ticket 5 is in an unknown stratum"),
    "list-leading-zero": (BUNDLE, CSV.replace(b"\n7,", b"\n07,"), "list", "R12.4.2: ticket"),
    "list-no-final-newline": (BUNDLE, CSV.rstrip(b"\n"), "list", "R12.4.1: the last line"),
    "bundle-byte": (_flip(BUNDLE, BUNDLE.index(b'"seed_hex":"') + 12), CSV, "envelope", "R12.1.4: bundle signature"),
    "bundle-not-canonical": (BUNDLE + b"\n", CSV, "envelope", "R2.5.1"),
    "shape": (_resigned(_set("draw.winners.0.3", "10000")), CSV, "shape", "R12.2.2: bundle.draw.winners[0][3]"),
    "quota": (_resigned(_set("campaign.strata.1.quota", 1)), CSV, "campaign", "R9.2.1: the quotas add up to 3"),
    "winner": (_resigned(_set("draw.winners.2.0", 12)), CSV, "draw", "R12.2.8: draw.winners[2][0]: bundle says 12, recomputed 8"),
    "tier": (_resigned(_set("draw.winners.0.2", "first")), CSV, "draw", "R12.2.8: draw.winners[0][2]"),
    "cutoff": (_resigned(_set("draw.spillover.cutoff_ticket", 12)), CSV, "draw", "R12.2.8: draw.spillover.cutoff_ticket"),
    "seed": (_resigned(_set("draw.seed_hex", "00" * 32)), CSV, "seed", "R8.1: seed: bundle says 0000"),
    "drand-round": (_resigned(_other_round), CSV, "beacon", "R7.1.5: drand round 657414: BLS signature does not verify"),
    "drand-randomness": (_resigned(_set("beacon.randomness_hex", "11" * 32)), CSV, "beacon", "R7.2.2"),
    "reveal": (_resigned(_set("ceremony.1.secret_hex", "00" * 32)), CSV, "ceremony", "R6.5: participant p2"),
    "rfc3797-winner": (_resigned(_set("draw.winners.0.0", 2), "bundle-rfc3797.json"), CSV, "draw",
                       "R12.2.8: draw.winners[0][0]: bundle says 2, recomputed 1"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampering_is_rejected_at_the_step_stimulus_verify_names(
        case: str, page: Any, tmp_path: Path, artifacts: Path) -> None:
    bundle_bytes, list_bytes, failing, words = TAMPERED[case]
    published = Published(bundle_bytes, {"csv": list_bytes})
    with serving(published) as url:
        assert _verify_whole(page, f"{url}/campaigns/{published.campaign_id}") == "fail", page.inner_text("#whole")
    steps = _whole_steps(page)
    assert list(steps) == STEPS[:STEPS.index(failing) + 1], steps
    assert steps[failing] == "bad" and all(s in ("ok", "warn") for s in list(steps.values())[:-1]), steps
    detail = page.inner_text(f"#whole-steps li[data-step={failing}]")
    assert words in detail, detail
    code, said = _stimulus_verify(bundle_bytes, list_bytes, tmp_path)
    assert code == 1, said
    if case in ("winner", "seed", "list-order"):
        page.screenshot(path=str(artifacts / f"public-page-whole-tampered-{case}.png"), full_page=True)
