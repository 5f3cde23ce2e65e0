"""The analysts' web page at ``/``: static files from ``app/web`` that use only the public REST API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
ASSETS_PATH = "/web"
# The page loads nothing but its own files and talks only to this service.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    """The page itself; its script, styles and state are under ``/web`` and in the browser."""
    return FileResponse(
        WEB_DIR / "index.html",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


def assets() -> StaticFiles:
    """The page's script and styles, to mount at ``ASSETS_PATH``."""
    return StaticFiles(directory=WEB_DIR)
