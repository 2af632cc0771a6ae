"""`/docs` and `/redoc` of every service load Swagger UI and ReDoc from the service itself:
no page refers to another host, and every file a page names is served."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.in_process import FACTORIES
from tests.support import ADMIN_TOKEN


@pytest.mark.parametrize("name", sorted(FACTORIES))
async def test_the_docs_pages_and_their_assets_come_from_the_service(name: str) -> None:
    cls, factory = FACTORIES[name]
    app = factory(cls(database_url="sqlite+aiosqlite://", admin_token=ADMIN_TOKEN,
                      public_base_url="http://127.0.0.1:8703"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://service") as client:
        for page in ("/docs", "/redoc"):
            answer = await client.get(page)
            assert answer.status_code == 200, (page, answer.text[:200])
            assert not re.search(r"""(src|href)=["']?(https?:)?//""", answer.text), page
            assets = re.findall(r"""(?:src|href)=["']?(/docs/assets/[\w.-]+)""", answer.text)
            assert assets, page
            for asset in assets:
                served = await client.get(asset)
                assert served.status_code == 200 and len(served.content) > 1000, asset
        assert (await client.get("/docs/assets/..%2Fpyproject.toml")).status_code == 404
