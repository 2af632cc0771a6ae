"""The rules studio over HTTP, in-process: the admin only; a draft with an unknown condition
is refused inline; a valid draft is replayed over the offers made (its table matches the
leads each rep got) and published as the next version; a scorer that does not answer is said
in words in the scoring-model part."""

from __future__ import annotations

import html
import re
from pathlib import Path

import httpx
import pytest

from services.router.app import create_app
from services.router.console import studio
from services.router.settings import RouterSettings
from shared.clock import ManualClock
from shared.events import encode_event
from tests.router.conftest import ADMIN, ADMIN_TOKEN, scored
from tests.router.test_api import produce
from tests.router.test_console import add_rep, csrf_of, settings  # noqa: F401 (fixture)
from tests.router.test_console_reports import sign_in_with_token
from tests.support import eventually, running_app

pytestmark = pytest.mark.broker


async def test_a_draft_is_checked_replayed_and_published_by_the_admin_only(
        settings: RouterSettings) -> None:  # noqa: F811
    settings = settings.model_copy(update={"scorer_url": "http://127.0.0.1:9"})
    clock = ManualClock()
    async with running_app(create_app(settings, clock=clock)) as admin_client, \
            httpx.AsyncClient(transport=admin_client._transport,
                              base_url="http://testserver") as rep_client:
        ann = await add_rep(admin_client, "Ann")
        ben = await add_rep(admin_client, "Ben")
        (await admin_client.post("/v1/teams", headers=ADMIN, json={"name": "Ben only"})
         ).raise_for_status()
        (await admin_client.patch(f"/v1/people/{ben['id']}", headers=ADMIN,
                                  json={"teams": ["Ben only"]})).raise_for_status()
        for number in range(4):
            await produce(settings, settings.topics.scores, f"lead-{number}",
                          encode_event(scored(f"lead-{number}", clock=clock)))

        async def offered() -> list[dict[str, str]]:
            listed: list[dict[str, str]] = (
                await admin_client.get("/v1/assignments", headers=ADMIN)).json()
            return listed

        offers = await eventually(offered, until=lambda listed: len(listed) == 4)
        await sign_in_with_token(rep_client, ann["token"])
        refused = await rep_client.get("/console/rules")
        await sign_in_with_token(admin_client, ADMIN_TOKEN)
        studio = await admin_client.get("/console/rules")
        reference = await admin_client.get("/console/rules/reference")
        csrf = csrf_of(studio)
        typo = await admin_client.post("/console/rules/replay", data={
            "csrf": csrf, "days": "7", "draft": "rules:\n  - id: x\n    when: {colour: blue}\n"})
        draft = "rules:\n  - id: ben\n    pool: Ben only\n"
        replayed = await admin_client.post("/console/rules/replay", data={
            "csrf": csrf, "days": "7", "draft": draft})
        unknown_team = await admin_client.post("/console/rules/publish", data={
            "csrf": csrf, "draft": "rules:\n  - id: x\n    pool: Nobody's team\n"})
        forged = await admin_client.post("/console/rules/publish", data={
            "csrf": "forged", "draft": draft})
        published = await admin_client.post("/console/rules/publish", data={
            "csrf": csrf, "draft": draft})
        in_force = (await admin_client.get("/v1/rules", headers=ADMIN)).json()
    assert refused.status_code == 403
    assert studio.status_code == 200 and "<textarea" in studio.text
    assert "The scoring model could not be read" in studio.text
    assert reference.status_code == 200 and "follow_the_sun" in reference.text
    assert typo.status_code == 422 and "colour" in typo.text and 'role="alert"' in typo.text
    assert replayed.status_code == 200, replayed.text
    got = {name: sum(1 for offer in offers if offer["sdr_id"] == person["id"])
           for name, person in (("Ann", ann), ("Ben", ben))}
    rows = {name: (int(actual), int(draft_count)) for name, actual, draft_count in re.findall(
        r'<th scope="row">(Ann|Ben)</th><td>(\d+)</td><td>\d+</td><td>(\d+)</td>',
        replayed.text)}
    assert rows == {"Ann": (got["Ann"], 0), "Ben": (got["Ben"], 4)}, replayed.text
    assert re.search(rf'id="changed-rep">{got["Ann"]}<', replayed.text)
    assert unknown_team.status_code == 422 and "Nobody&#39;s team" in unknown_team.text
    assert forged.status_code == 403
    assert published.status_code == 303
    assert [rule["id"] for rule in in_force["rules"]] == ["ben"]
    assert published.headers["location"] == f"/console/rules?done={in_force['version']}"


def test_the_rules_reference_shows_the_readme_example_word_for_word() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Routing rules"):]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    reference = (Path(studio.__file__).parent / "templates" / "rules_reference.html").read_text()
    assert html.escape(example, quote=False) in reference
