"""The reports and the rules studio in a real browser (the same Chromium, system and fixtures
as `test_console_browser`): the admin signs in with the admin token, reads the reports on a
phone's width, replays a draft rule set over the seeded leads (its table checked against the
router's database), replays the scoring model through the scorer, and publishes the draft;
the keyboard alone reaches every new action."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from playwright.sync_api import Browser, Page, expect

from leadrelay.local_system import RunningSystem, WebhookReceiver
from tests.e2e.test_console_browser import (  # noqa: F401 (fixtures)
    FOCUSED,
    Team,
    browser,
    chromium,
    receiver,
    screenshot,
    system,
    tab_until,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]

WIDER_THAN_THE_SCREEN = """() => [...document.querySelectorAll('main *')]
  .filter((el) => el.getBoundingClientRect().right > 390).slice(0, 5)
  .map((el) => el.tagName + '.' + el.className + ' ' + el.getBoundingClientRect().right)"""
REPLAY_DAYS = 7
LEADS = 3


def admin_page(browser: Browser, system: RunningSystem) -> Page:  # noqa: F811
    page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    page.goto(f"{system.url('router')}/console/sign-in")
    page.get_by_label("API token").fill(system.admin_token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out Admin")).to_be_visible()
    return page


def first_offers_by_rep(system: RunningSystem,  # noqa: F811
                        rep_ids: list[str]) -> dict[str, int]:
    """First offers to each of these SDRs, read from the router's database with a synchronous
    driver (the reps joined in this test: every offer of theirs is in the replayed days)."""
    url = system.database_urls["router"].replace("+aiosqlite", "").replace("+asyncpg", "")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text(
                "SELECT sdr_id, COUNT(*) FROM router_assignment WHERE attempt = 1 "
                "AND role = 'sdr' GROUP BY sdr_id")).all()
    finally:
        engine.dispose()
    counted = {sdr_id: count for sdr_id, count in rows}
    return {rep_id: counted.get(rep_id, 0) for rep_id in rep_ids}


def scorer_model(system: RunningSystem) -> dict[str, Any]:  # noqa: F811
    """The scoring model in force, as the scorer's API says."""
    answer = httpx.get(f"{system.url('scorer')}/v1/scoring-model", headers=system.admin_headers,
                       timeout=10)
    answer.raise_for_status()
    found: dict[str, Any] = answer.json()
    return found


def replay_table(page: Page) -> dict[str, tuple[int, int, int]]:
    """Rep name -> (actual, current, draft) as the studio shows them."""
    found: dict[str, tuple[int, int, int]] = {}
    for row in page.locator("#per-rep tbody tr").all():
        name = row.locator("th").inner_text()
        actual, current, draft = (int(cell) for cell in row.locator("td").all_inner_texts())
        found[name] = (actual, current, draft)
    return found


def test_a_draft_rule_set_is_replayed_over_the_seeded_leads_then_published(
    system: RunningSystem, receiver: WebhookReceiver, browser: Browser  # noqa: F811
) -> None:
    seeded = Team(system, receiver, "Studio", reps=["Uma", "Vic"], managers=["Zed"])
    other = Team(system, receiver, "Studio B", reps=["Wes"], managers=["Yan"])
    leads = [seeded.send_lead(f"Seeded lead {number}") for number in range(LEADS)]
    for lead_id in leads:
        wait_for(lambda lead_id=lead_id: seeded.assignments(lead_id))
    ids = {name: person["id"] for name, person in
           [*seeded.people.items(), *other.people.items()] if name in ("Uma", "Vic", "Wes")}
    page = admin_page(browser, system)
    expect(page.get_by_role("heading", name="Reports")).to_be_visible()
    expect(page.locator("svg.chart").first).to_be_visible()
    expect(page.get_by_role("heading", name="Funnel by source and channel")).to_be_visible()
    expect(page.get_by_text("The funnel could not be read")).to_have_count(0)
    funnel = httpx.get(f"{system.url('scorer')}/v1/reports/funnel",
                       params={"since": (datetime.now(UTC) - timedelta(days=7)).isoformat()},
                       headers=system.admin_headers, timeout=10).json()
    shown_counts = page.get_by_role("region", name="All leads").locator("tbody td")
    assert [int(cell) for cell in shown_counts.all_inner_texts()[:6]] == [
        funnel["overall"]["counts"][stage]
        for stage in ("lead", "mql", "sal", "sql", "opportunity", "customer")]
    assert funnel["overall"]["counts"]["lead"] >= LEADS
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, page.evaluate(
        WIDER_THAN_THE_SCREEN)
    screenshot(page, "reports-phone")

    page.get_by_role("link", name="Rules studio").click()
    current = seeded.admin.get("/v1/rules").json()
    team_rule = next(rule for rule in current["rules"]
                     if rule.get("pool") == seeded.name)
    draft_rules = [{**rule, "pool": other.name} if rule is team_rule else rule
                   for rule in current["rules"]]
    page.get_by_label("Draft rule set").fill(json.dumps({"rules": [
        {**draft_rules[0], "when": {"colour": "blue"}}, *draft_rules[1:]]}))
    page.get_by_label("Replay the leads of the last (days)").first.fill(str(REPLAY_DAYS))
    page.get_by_role("button", name="Replay the draft", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("colour")
    page.get_by_label("Draft rule set").fill(json.dumps({"rules": draft_rules}))
    page.get_by_role("button", name="Replay the draft", exact=True).click()
    expect(page.locator("#per-rep")).to_be_visible()
    shown = replay_table(page)
    direct = first_offers_by_rep(system, list(ids.values()))
    assert sum(direct[ids[name]] for name in ("Uma", "Vic")) == LEADS
    for name in ("Uma", "Vic"):
        assert shown[name][0] == direct[ids[name]] and shown[name][2] == 0, shown
    assert shown["Wes"] == (0, 0, LEADS), shown
    screenshot(page, "rules-studio")

    page.get_by_role("button", name="Replay the draft model").click()
    expect(page.locator("#model-replay")).to_be_visible()
    expect(page.locator("#model-replay")).to_contain_text("Draft")


    page.get_by_role("button", name="Publish the draft", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("is in force")
    published = seeded.admin.get("/v1/rules").json()
    assert published["version"] != current["version"]
    assert [rule.get("pool") for rule in published["rules"]] == [
        rule.get("pool") for rule in draft_rules]

    # The model in force, published again unchanged: its version is taken.
    page.get_by_role("button", name="Publish the draft model").click()
    expect(page.locator("#model-problems")).to_contain_text("was published before")
    in_force = scorer_model(system)
    drafted = yaml.safe_load(page.get_by_label("Scoring model (YAML or JSON)").input_value())
    drafted["version"] = f"{in_force['version']}-studio"
    page.get_by_label("Scoring model (YAML or JSON)").fill(yaml.safe_dump(drafted))
    page.get_by_role("button", name="Publish the draft model").click()
    expect(page.get_by_role("status")).to_contain_text(
        f"scoring model {drafted['version']} is in force")
    assert scorer_model(system)["version"] == drafted["version"]


def test_the_keyboard_alone_reaches_the_reports_and_the_studio_actions(
    system: RunningSystem, browser: Browser  # noqa: F811
) -> None:
    page = admin_page(browser, system)
    reached: list[str] = []
    tab_until(page, "A:Last 30 days", reached)
    assert "A:Rules studio" in reached, reached
    page.goto(f"{system.url('router')}/console/rules")
    tab_until(page, "BUTTON:Publish the draft model", reached, limit=60)
    expected = ["A:The rules reference", "TEXTAREA:Draft rule set", "BUTTON:Replay the draft",
                "BUTTON:Publish the draft", "BUTTON:Replay the draft model",
                "BUTTON:Publish the draft model"]
    missing = [name for name in expected if name not in reached]
    assert not missing, f"not reached by Tab: {missing}; reached: {reached}"
    page.get_by_role("link", name="The rules reference").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Routing rules: reference")).to_be_visible()
    screenshot(page, "rules-reference")
