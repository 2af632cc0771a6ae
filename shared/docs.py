"""The interactive API docs (`/docs`, Swagger UI; `/redoc`) served from this machine.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they are blank offline or behind
a strict firewall. The same pages here load the files that the `fastapi-offline` package ships
(Swagger UI 5, which renders OpenAPI 3.1, and ReDoc), served under `/docs/assets/`.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js",
                    "favicon.png"})
ASSETS_PATH = "/docs/assets"


def serve_local_docs(app: FastAPI) -> None:
    """Add `/docs`, `/redoc` and their assets to `app` (built with `docs_url=None` and
    `redoc_url=None`); none of them is in the OpenAPI document."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} · docs",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url, title=f"{app.title} · ReDoc",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png", with_google_fonts=False,
        )

    @app.get(f"{ASSETS_PATH}/{{name}}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404)
        return FileResponse(ASSETS_DIR / name,
                            headers={"Cache-Control": "public, max-age=86400"})
