"""The console's reports page over HTTP, in-process: the admin signs in with the admin token
and sees speed to lead, SLA and fairness as SVG charts with their tables; a rep is refused;
a scorer that does not answer is said in words, the rest of the page still shown."""

from __future__ import annotations

import re

import httpx
import pytest

from services.router.app import create_app
from services.router.settings import RouterSettings
from shared.clock import ManualClock
from shared.events import encode_event
from tests.router.conftest import ADMIN, ADMIN_TOKEN, scored
from tests.router.test_api import produce
from tests.router.test_console import add_rep, csrf_of, settings  # noqa: F401 (fixture)
from tests.support import eventually, running_app

pytestmark = pytest.mark.broker


async def sign_in_with_token(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await client.get("/console/sign-in")
    return await client.post("/console/sign-in", data={"csrf": csrf_of(form), "token": token})


async def test_the_admin_sees_charts_and_tables_and_a_rep_does_not(
        settings: RouterSettings) -> None:  # noqa: F811
    settings = settings.model_copy(update={"scorer_url": "http://127.0.0.1:9"})
    clock = ManualClock()
    async with running_app(create_app(settings, clock=clock)) as admin_client, \
            httpx.AsyncClient(transport=admin_client._transport,
                              base_url="http://testserver") as rep_client:
        ann = await add_rep(admin_client, "Ann")
        await produce(settings, settings.topics.scores, "lead-1",
                      encode_event(scored("lead-1", clock=clock)))

        async def offered() -> list[dict[str, str]]:
            listed: list[dict[str, str]] = (
                await admin_client.get("/v1/assignments", headers=ADMIN)).json()
            return listed

        await eventually(offered)
        clock.advance(60)
        signed_in = await sign_in_with_token(admin_client, ADMIN_TOKEN)
        home = await admin_client.get("/console")
        report = await admin_client.get("/console/reports?days=7")
        await sign_in_with_token(rep_client, ann["token"])
        refused = await rep_client.get("/console/reports")
    assert signed_in.status_code == 303
    assert home.headers["location"] == "/console/reports"
    assert report.status_code == 200, report.text
    assert report.text.count('<svg class="chart"') >= 3
    assert "Sign out Admin" in report.text and 'href="/console/rules"' in report.text
    fairness = report.text[report.text.index('id="fairness"'):report.text.index('id="funnel"')]
    assert re.search(r"<th scope=\"row\">Ann</th><td>1</td><td>100%</td><td>100%</td>",
                     fairness), fairness
    assert "The funnel could not be read" in report.text
    assert refused.status_code == 403
