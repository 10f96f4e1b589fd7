"""Admin endpoints: reload, promote, rollback, behind ``Authorization: Bearer $ADMIN_TOKEN``.

Without a token configured (``ADMIN_TOKEN`` or ``ADMIN_TOKEN_FILE``) they answer 403: an
unprotected promote endpoint is worse than none. The token is compared in constant time.
Each call acts on the worker that receives it; the other workers follow within
``RELOAD_INTERVAL_S`` because they poll the same production pointer.
"""

from litestar import Controller, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers import BaseRouteHandler
from litestar.params import JSONBody, Parameter

from service.api.bearer import bearer_matches
from service.api.responses import error_responses
from service.errors import AdminDisabledError, UnauthorizedError
from service.inference.reloader import Reloader
from service.schemas import AdminResponse, PromoteRequest
from service.settings import Settings

_ERRORS = error_responses({
    401: "missing or wrong bearer token",
    403: "admin endpoints are disabled (no ADMIN_TOKEN)",
    404: "unknown model or version",
    409: "nothing to roll back to, or the registry is read-only",
    422: "the version failed validation and was not promoted",
})


async def require_admin(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Litestar guard: a configured token and a matching bearer header, or an error."""
    settings: Settings = connection.app.state["settings"]
    if settings.admin_token is None:
        raise AdminDisabledError(
            "admin endpoints are disabled: set ADMIN_TOKEN (or ADMIN_TOKEN_FILE) to enable them"
        )
    if not bearer_matches(connection, settings.admin_token):
        raise UnauthorizedError("missing or wrong 'Authorization: Bearer <ADMIN_TOKEN>' header")


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]
    guards = [require_admin]
    security = [{"BearerToken": []}]

    @post("/reload", status_code=200, responses=_ERRORS, summary="Load the production version now")
    async def reload(
        self,
        reloader: NamedDependency[Reloader],
        model: str | None = Parameter(default=None, description="model name (default model)"),
    ) -> AdminResponse:
        return await reloader.reload(model)

    @post("/promote", status_code=200, responses=_ERRORS,
          summary="Make a published version production")
    async def promote(
        self, data: JSONBody[PromoteRequest], reloader: NamedDependency[Reloader]
    ) -> AdminResponse:
        """Validates the version (hash, architecture, labels, test forward) before promoting."""
        return await reloader.promote(data.model, data.version)

    @post("/rollback", status_code=200, responses=_ERRORS, summary="Promote the previous version")
    async def rollback(
        self,
        reloader: NamedDependency[Reloader],
        model: str | None = Parameter(default=None, description="model name (default model)"),
    ) -> AdminResponse:
        return await reloader.rollback(model)
