"""The page for people (``GET /``), its files (``/static/...``), what the page asks the server
(``GET /web/config``), and the API docs page (``/schema``) rendered offline.

Everything is served from ``service/web/static`` in the repository: plain ES modules and CSS, no
build step, no CDN (Swagger UI is vendored under ``static/vendor/swagger-ui``). The page, its
files and the docs page carry a strict Content-Security-Policy: scripts, styles and connections
from this origin only, no inline script, no eval (docs/web.md). No torch here: the page calls
the same HTTP API as any client.
"""

import html
from pathlib import Path
from typing import Any

from litestar import MediaType, Request, Router, get
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

from service.api.feedback import require_feedback_token
from service.errors import FeedbackDisabledError, FeedbackUnauthorizedError

STATIC_DIR = Path(__file__).resolve().parents[1] / "web" / "static"
STATIC_PATH = "/static"
SWAGGER_DIR = f"{STATIC_PATH}/vendor/swagger-ui"

# One policy for the page, its files and the docs page. Thumbnails are blob: URLs of the files a
# person picked; data: images are the icons inside Swagger UI's stylesheet.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:",
    "connect-src 'self'", "font-src 'self'", "object-src 'none'", "base-uri 'none'",
    "form-action 'self'", "frame-ancestors 'none'",
))
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The sections of the docs page, in this order (others follow, by name): what a client calls
# first comes first.
DOCS_TAG_ORDER = ("predict", "feedback", "models", "health", "metrics", "admin", "v2")
# A changed file is seen on the next load: browsers revalidate every time (the files are small,
# the Swagger bundle aside, and the server is usually near).
_CACHE = CacheControlHeader(no_cache=True)
_INDEX = (STATIC_DIR / "index.html").read_bytes()  # read once: a worker serves the file it started with


@get("/", media_type=MediaType.HTML, include_in_schema=False, cache_control=_CACHE)
async def index() -> bytes:
    """The page: classify images, look at the model, correct a label."""
    return _INDEX


@get("/web/config", include_in_schema=False, cache_control=CacheControlHeader(no_store=True))
async def web_config(request: Request) -> dict[str, Any]:
    """What the page needs to know that no API answer tells it: ``feedback`` (bool), whether to
    offer "Correct this", and ``feedback_detail``, why not. It asks the very guard of
    ``POST /feedback`` (a request without a token is refused as disabled or as unauthorized), so
    the two never disagree. Not in the OpenAPI schema: the page's, not the API's."""
    try:
        await require_feedback_token(request, request.route_handler)
    except FeedbackDisabledError as exc:
        return {"feedback": False, "feedback_detail": exc.detail}
    except FeedbackUnauthorizedError:
        pass
    return {"feedback": True, "feedback_detail": None}


def _add_security_headers(response: Any) -> Any:
    """``after_request`` of the static files: their responses bypass layered headers."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


_headers = [ResponseHeader(name=name, value=value) for name, value in SECURITY_HEADERS.items()]
web_router = Router("/", route_handlers=[
    index, web_config,
    create_static_files_router(STATIC_PATH, directories=[STATIC_DIR], name="web-static",
                               cache_control=_CACHE, after_request=_add_security_headers),
], response_headers=_headers)


class OfflineSwagger(SwaggerRenderPlugin):
    """Swagger UI at ``/schema`` from the vendored files, under the page's policy: the schema is
    fetched from ``/schema/openapi.json`` and Swagger UI started by ``static/swagger-init.js``
    instead of an inline script; no CDN, no favicon from elsewhere, no OAuth2 redirect page (no
    operation uses OAuth2)."""

    def __init__(self) -> None:
        super().__init__(js_url=f"{SWAGGER_DIR}/swagger-ui-bundle.js",
                         css_url=f"{SWAGGER_DIR}/swagger-ui.css", path="/swagger",
                         favicon=f'<link rel="icon" href="{STATIC_PATH}/favicon.svg" type="image/svg+xml">')

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        title = html.escape(openapi_schema["info"]["title"])
        spec_url = html.escape(self.get_openapi_json_route(request))
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}: API</title>
{self.favicon}
<link rel="stylesheet" href="{self.css_url}">
<link rel="stylesheet" href="{STATIC_PATH}/swagger.css">
<script src="{self.js_url}" defer></script>
<script src="{STATIC_PATH}/swagger-init.js" defer></script>
</head>
<body>
<nav class="docs-nav" aria-label="Site"><a href="/">← Back to the page: classify images, look at the model</a></nav>
<main id="swagger-ui" data-spec-url="{spec_url}" data-tag-order="{' '.join(DOCS_TAG_ORDER)}"></main>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        """The docs page and the schema it fetches carry the page's headers."""
        router.response_headers = [*(router.response_headers or ()), *_headers]
