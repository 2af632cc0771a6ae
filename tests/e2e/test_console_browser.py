"""The console in a real browser: Debian's Chromium driven by Playwright, against the real
ingest, scorer and router processes on the embedded broker (SQLite files).

Skipped when /usr/bin/chromium or Playwright is missing, unless LEADRELAY_REQUIRE_BROWSER=1
(CI) makes that a failure. Playwright never downloads a browser here: it launches Debian's.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from leadrelay.broker import EmbeddedBroker
from leadrelay.local_system import RunningSystem, WebhookReceiver, running_system, webhook_receiver

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]

CHROMIUM = Path(os.environ.get("LEADRELAY_CHROMIUM", "/usr/bin/chromium"))
SLA_SECONDS = 6.0
SCREENSHOTS = os.environ.get("LEADRELAY_SCREENSHOTS_DIR")
REP_ZONE = "Asia/Kolkata"
"""The reps' browsers' time zone: half an hour off UTC's, so a time shown in UTC is told apart."""
"""When set, each main page's screenshot is saved there (the README's come from this)."""

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - only without the test extra
    sync_playwright = None  # type: ignore[assignment]


def _unavailable() -> str | None:
    if sync_playwright is None:
        return "Playwright is not installed"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def chromium() -> Path:
    missing = _unavailable()
    if missing:
        if os.environ.get("LEADRELAY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{missing} and LEADRELAY_REQUIRE_BROWSER=1")
        pytest.skip(missing)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(system: RunningSystem) -> Iterator[Browser]:
    """Started after the system: Playwright's sync API runs an event loop in this thread,
    and the system's migrations run one of their own."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def system(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory,
           receiver: WebhookReceiver, chromium: Path) -> Iterator[RunningSystem]:
    # One re-offer, then the team's shared queue (inherited by the service processes).
    previous = os.environ.get("LEADRELAY_MAX_REOFFERS")
    os.environ["LEADRELAY_MAX_REOFFERS"] = "1"
    try:
        with running_system(
            bootstrap_servers=broker.bootstrap_servers,
            data_dir=tmp_path_factory.mktemp("console"),
            topic_prefix=f"console{uuid.uuid4().hex[:6]}", sla_seconds=SLA_SECONDS,
            allowed_webhook_urls=[receiver.base_url], instances={"router": 2},
        ) as running:
            yield running
    finally:
        if previous is None:
            os.environ.pop("LEADRELAY_MAX_REOFFERS", None)
        else:
            os.environ["LEADRELAY_MAX_REOFFERS"] = previous


class Team:
    """A team of its own for one test: its people and the rule sending its leads to it."""

    def __init__(self, system: RunningSystem, receiver: WebhookReceiver, name: str,
                 reps: list[str], managers: list[str]) -> None:
        self.system, self.name = system, f"{name} {uuid.uuid4().hex[:4]}"
        self.company = f"{self.name} Industries"
        self.admin = httpx.Client(base_url=system.url("router"), headers=system.admin_headers,
                                  timeout=10)
        self.people: dict[str, dict[str, Any]] = {}
        for person in managers:
            self.people[person] = self._join(person, "manager", receiver, in_team=False)
        answer = self.admin.post("/v1/teams", json={
            "name": self.name, "manager_email": self.people[managers[0]]["email"]})
        assert answer.status_code == 201, answer.text
        for person in managers:
            self.admin.patch(f"/v1/people/{self.people[person]['id']}",
                             json={"teams": [self.name]}).raise_for_status()
        for person in reps:
            self.people[person] = self._join(person, "sdr", receiver, in_team=True)
        rules = self.admin.get("/v1/rules").json()["rules"]
        rule = {"id": f"team-{uuid.uuid4().hex[:8]}", "when": {"company": self.company},
                "pool": self.name}
        self.admin.put("/v1/rules", json={"rules": [rule, *rules]}).raise_for_status()

    def _join(self, person: str, role: str, receiver: WebhookReceiver,
              in_team: bool) -> dict[str, Any]:
        answer = self.admin.post("/v1/people", json={
            "name": person, "role": role, "email": f"{person.lower()}.{uuid.uuid4().hex[:6]}"
            "@seller.example", "webhook_url": receiver.new_endpoint(),
            **({"teams": [self.name]} if in_team else {})})
        assert answer.status_code == 201, answer.text
        joined: dict[str, Any] = answer.json()
        return joined

    def sign_in_url(self, person: str) -> str:
        answer = self.admin.post(f"/v1/people/{self.people[person]['id']}/sign-in-links")
        assert answer.status_code == 201, answer.text
        url: str = answer.json()["url"]
        return url

    def send_lead(self, name: str) -> str:
        answer = httpx.post(
            f"{self.system.url('ingest')}/v1/leads", headers=self.system.admin_headers,
            json={"email": f"{uuid.uuid4().hex[:10]}@buyer.example", "name": name,
                  "company": self.company, "demo_requested": True}, timeout=10)
        assert answer.status_code == 202, answer.text
        lead_id: str = answer.json()["lead_id"]
        return lead_id

    def assignments(self, lead_id: str) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self.admin.get(
            "/v1/assignments", params={"lead_id": lead_id}).json()
        return listed


def signed_in_page(browser: Browser, team: Team, person: str, **options: Any) -> Page:
    page = browser.new_context(**options).new_page()
    page.goto(team.sign_in_url(person))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name=f"Sign out {person}")).to_be_visible()
    return page


def screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / f"console-{name}.png"), full_page=True)


def wait_for(probe: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_a_rep_sees_a_new_offer_live_watches_its_countdown_and_accepts(
    system: RunningSystem, receiver: WebhookReceiver, browser: Browser
) -> None:
    team = Team(system, receiver, "Inbox", reps=["Ann", "Ben"], managers=["Mia"])
    ann, ben = (signed_in_page(browser, team, name, timezone_id=REP_ZONE)
                for name in ("Ann", "Ben"))
    expect(ann.get_by_text("No open leads")).to_be_visible()
    lead_id = team.send_lead("Grace Hopper")
    holder_id = wait_for(lambda: team.assignments(lead_id))[0]["sdr_id"]
    holder, other = (ann, ben) if holder_id == team.people["Ann"]["id"] else (ben, ann)
    # No reload: the offer arrives over server-sent events.
    card = holder.locator("article.offer", has_text="Grace Hopper")
    expect(card).to_be_visible(timeout=15_000)
    countdown = card.locator(".countdown")
    expect(countdown).to_contain_text(" left")
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first, timeout=5_000)
    expect(card.get_by_text("Why you:")).to_be_visible()
    # The deadline's time of day is the rep's own, not the server's UTC.
    deadline = card.locator("p.clock time.clock-time")
    at = datetime.fromisoformat(str(deadline.get_attribute("datetime")))
    expect(deadline).to_have_text(f"{at.astimezone(ZoneInfo(REP_ZONE)):%H:%M:%S}")
    expect(deadline).to_have_attribute("title", f"{at:%H:%M:%S} UTC")
    screenshot(holder, "inbox")
    card.get_by_role("button", name="Accept Grace Hopper").click()
    expect(holder.get_by_role("status")).to_contain_text("Lead accepted")
    expect(holder.get_by_role("button", name="Mark contacted")).to_be_visible()
    assert [row["status"] for row in team.assignments(lead_id)] == ["accepted"]
    other.wait_for_timeout(1_500)  # a live update would have come by now
    expect(other.get_by_text("Grace Hopper")).to_have_count(0)
    other.reload()
    expect(other.get_by_text("Grace Hopper")).to_have_count(0)


def test_an_offer_made_by_another_router_instance_appears_live(
    system: RunningSystem, receiver: WebhookReceiver, browser: Browser
) -> None:
    team = Team(system, receiver, "Relay", reps=["Hal", "Ivy"], managers=["Nia"])
    first, second = system.instances["router"]
    pages = {person: signed_in_page(browser, team, person) for person in ("Hal", "Ivy")}
    for page in pages.values():  # the session cookie holds for the host, either port
        page.goto(f"{second.url}/console/inbox")
        expect(page.get_by_text("No open leads")).to_be_visible()
    lead_id = team.send_lead("Ken Thompson")
    offer = wait_for(lambda: team.assignments(lead_id))[0]
    holder = next(name for name in pages if team.people[name]["id"] == offer["sdr_id"])
    other = next(name for name in pages if name != holder)
    expect(pages[holder].locator("article.offer", has_text="Ken Thompson")).to_be_visible(
        timeout=15_000)
    # The holder turns it down through the first instance, which re-offers it at once: the
    # other rep's page, served by the second instance, learns of it from the database.
    rejected = httpx.post(
        f"{first.url}/v1/assignments/{offer['id']}/reject", json={"reason_code": "other"},
        headers={"Authorization": f"Bearer {team.people[holder]['token']}"}, timeout=10)
    assert rejected.status_code == 200, rejected.text
    expect(pages[other].locator("article.offer", has_text="Ken Thompson")).to_be_visible(
        timeout=15_000)
    expect(pages[holder].get_by_text("Ken Thompson")).to_have_count(0, timeout=15_000)


RECORD_STATES = """() => {
  window.__states = new Set();
  const record = () => document.querySelectorAll('li.offer').forEach((row) => {
    const state = row.classList.contains('breached') ? 'breached'
      : row.classList.contains('at-risk') ? 'at-risk' : 'ok';
    window.__states.add(row.id + ' ' + state + ' ' + row.querySelector('.rep').textContent);
  });
  new MutationObserver(record).observe(document.body,
    {subtree: true, childList: true, attributes: true, attributeFilter: ['class']});
  record();
}"""


def test_a_manager_sees_an_offer_turn_at_risk_then_breached_and_re_offered(
    system: RunningSystem, receiver: WebhookReceiver, browser: Browser
) -> None:
    team = Team(system, receiver, "Board", reps=["Cy", "Dee"], managers=["Max"])
    board = signed_in_page(browser, team, "Max")
    expect(board.get_by_role("heading", name="Open offers")).to_be_visible()
    board.evaluate(RECORD_STATES)
    lead_id = team.send_lead("Alan Turing")
    first = wait_for(lambda: team.assignments(lead_id))[0]
    row = board.locator(f"#board-offer-{first['id']}")
    expect(row).to_be_visible(timeout=15_000)
    expect(row).to_have_class("row offer at-risk", timeout=SLA_SECONDS * 1000)
    screenshot(board, "board")
    reoffer = wait_for(lambda: [item for item in team.assignments(lead_id)
                                if item["attempt"] == 2], timeout=SLA_SECONDS * 3)[0]
    again = board.locator(f"#board-offer-{reoffer['id']}")
    expect(again).to_be_visible(timeout=10_000)
    expect(again).to_contain_text("re-offer 1")
    expect(board.locator("#sla-escalated")).to_have_text("1", timeout=10_000)
    # The lapsed offer stays on the board for a while, marked breached by the server.
    expect(row).to_contain_text("Breached")
    expect(row).to_contain_text("lapsed at")
    seen = board.evaluate("() => [...window.__states]")
    states = {entry.split(" ")[1] for entry in seen
              if entry.startswith(f"board-offer-{first['id']}")}
    assert {"ok", "at-risk", "breached"} <= states, seen
    assert reoffer["sdr_id"] != first["sdr_id"]


def test_two_managers_claim_the_same_queued_lead_and_the_loser_sees_who_won(
    system: RunningSystem, receiver: WebhookReceiver, browser: Browser
) -> None:
    team = Team(system, receiver, "Queue", reps=["Eve"], managers=["Ola", "Pia"])
    ola = signed_in_page(browser, team, "Ola")
    # Pia's board gets no live update (a phone losing its connection): her Claim button is
    # still there when Ola's claim has already won.
    pia = browser.new_context().new_page()
    pia.route("**/console/events/**", lambda route: route.abort())
    pia.goto(team.sign_in_url("Pia"))
    pia.get_by_role("button", name="Sign in").click()
    lead_id = team.send_lead("Edsger Dijkstra")
    # Eve lets it lapse; nobody else in the team: it goes to the shared queue.
    claim = "Claim Edsger Dijkstra"
    expect(ola.get_by_role("button", name=claim)).to_be_visible(timeout=SLA_SECONDS * 4000)
    pia.reload()
    expect(pia.get_by_role("button", name=claim)).to_be_visible()
    screenshot(ola, "queue")
    ola.get_by_role("button", name=claim).click()
    expect(ola.get_by_role("status")).to_contain_text("The lead is yours")
    pia.get_by_role("button", name=claim).click()
    expect(pia.get_by_role("alert")).to_have_text("Already claimed by Ola.")
    holders = {row["sdr_id"] for row in team.assignments(lead_id) if row["status"] == "accepted"}
    assert holders == {team.people["Ola"]["id"]}


def test_the_accept_link_of_a_webhook_opens_on_a_phone_and_accepts(
    system: RunningSystem, receiver: WebhookReceiver, browser: Browser
) -> None:
    team = Team(system, receiver, "Phone", reps=["Flo"], managers=["Quin"])
    lead_id = team.send_lead("Barbara Liskov")
    (_, body), *_ = wait_for(lambda: receiver.for_lead(lead_id))
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                has_touch=True).new_page()
    phone.goto(body["accept_url"])
    expect(phone.get_by_text("Barbara Liskov")).to_be_visible()
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= 390
    screenshot(phone, "accept-link-phone")
    phone.get_by_role("button", name="Accept").tap()
    expect(phone.get_by_role("heading", name="Lead accepted")).to_be_visible()
    assert [row["status"] for row in team.assignments(lead_id)] == ["accepted"]


FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return '';
  const label = el.labels && el.labels[0] ? el.labels[0].textContent : '';
  const name = el.type === 'radio' ? el.value : label || el.textContent || el.name || '';
  return (el.tagName + ':' + name).trim().replace(/\\s+/g, ' ');
}"""


def tab_until(page: Page, target: str, reached: list[str], *, open_summaries: bool = True,
              limit: int = 40) -> None:
    """Press Tab until `target` has the focus, noting every stop; Enter opens each <details>."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        reached.append(page.evaluate(FOCUSED))
        if reached[-1].startswith("SUMMARY:") and open_summaries:
            page.keyboard.press("Enter")
        if reached[-1] == target:
            return
    raise AssertionError(f"{target} not reached by Tab; reached: {reached}")


def test_keyboard_alone_reaches_every_action(
    system: RunningSystem, receiver: WebhookReceiver, browser: Browser
) -> None:
    team = Team(system, receiver, "Keys", reps=["Gus"], managers=["Rey"])
    page = signed_in_page(browser, team, "Gus", viewport={"width": 390, "height": 844})
    team.send_lead("Donald Knuth")
    expect(page.get_by_role("button", name="Accept Donald Knuth")).to_be_visible(timeout=15_000)
    reached: list[str] = []
    page.keyboard.press("Tab")
    reached.append(page.evaluate(FOCUSED))
    # The offer's actions: Accept, then the reject form behind "Turn down".
    tab_until(page, "BUTTON:Reject", reached)
    for _ in range(4):
        page.keyboard.press("Shift+Tab")
    assert page.evaluate(FOCUSED) == "BUTTON:Accept Donald Knuth"
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Lead accepted")
    screenshot(page, "inbox-phone")
    # The accepted lead's actions, then my availability, from the top of the page again.
    page.keyboard.press("Tab")
    reached.append(page.evaluate(FOCUSED))
    tab_until(page, "BUTTON:Save out of office", reached, limit=60)
    expected = ["A:Skip to content", "A:Inbox", "BUTTON:Sign out Gus",
                "BUTTON:Accept Donald Knuth", "SUMMARY:Turn down", "SELECT:Reason",
                "INPUT:Note (optional)", "BUTTON:Reject", "BUTTON:Mark contacted",
                "SUMMARY:Qualify (BANT)", "INPUT:Budget", "TEXTAREA:Notes for the AE",
                "BUTTON:Qualify and hand over", "SUMMARY:Disqualify", "BUTTON:Disqualify",
                "INPUT:available", "BUTTON:Save presence", "INPUT:From", "INPUT:Until",
                "BUTTON:Save out of office"]
    missing = [name for name in expected if name not in reached]
    assert not missing, f"not reached by Tab: {missing}; reached: {reached}"
    page.get_by_role("button", name="Mark contacted").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("First contact recorded")
