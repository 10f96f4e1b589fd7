"""``create_app()``: the Litestar application of one worker.

Run it as users do::

    gunicorn -c service/gunicorn.conf.py 'service.app:create_app()'

Settings are read once here (or passed in by a test) and injected into the handlers with
``Provide``; the predictor and the reloader start with the worker and load the production
model in the background, so ``/health/live`` answers at once and ``/health/ready`` says 503
until a model is loaded.
"""

import gc
import logging
import os

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from service.api.admin import AdminController
from service.api.body_budget import BodyBudget
from service.api.feedback import feedback
from service.api.info import InfoController
from service.api.middleware import ObservabilityMiddleware
from service.api.predict import PREDICT_PATH, document_predict, predict
from service.api.shedding import ShedWhenOverloaded
from service.api.v2.openapi import document_v2
from service.api.v2.routes import v2_router
from service.api.web import OfflineSwagger, web_router
from service.errors import exception_to_response
from service.inference.predictor import Predictor
from service.inference.reloader import Reloader
from service.settings import Settings
from service.workers.core_share import BusyMiddleware

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app; ``settings`` defaults to the environment (read once, here)."""
    settings = settings or Settings()
    if "DECODE_INLINE_BYTES" in os.environ:
        log.warning("DECODE_INLINE_BYTES is ignored: requests are split by pixels now, "
                    "set DECODE_INLINE_PIXELS instead (default %d)", settings.decode_inline_pixels)
    predictor = Predictor(settings)
    reloader = Reloader(predictor)

    async def start() -> None:
        await predictor.start()
        reloader.start()
        await reloader.wait_first_round(settings.startup_load_wait_s)
        # Everything alive now (torch, the framework, the model) lives as long as the worker:
        # out of the collector's reach, full collections stop walking it (a loaded worker's
        # p99 under load falls several-fold; docs/performance.md).
        gc.collect()
        gc.freeze()

    async def stop() -> None:
        await reloader.stop()
        await predictor.stop()

    app = Litestar(
        route_handlers=[predict, InfoController, AdminController, feedback, v2_router, web_router],
        dependencies={
            "settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False),
            "predictor": Provide(lambda: predictor, use_cache=True, sync_to_thread=False),
            "reloader": Provide(lambda: reloader, use_cache=True, sync_to_thread=False),
        },
        exception_handlers={Exception: exception_to_response},
        on_startup=[start],
        on_shutdown=[stop],
        request_max_body_size=settings.max_body_bytes,
        # CORS_ORIGINS: browsers on these origins (or any, with *) may call the API, and read
        # the request id, Retry-After and v2's binary answers; unset, no CORS headers at all.
        cors_config=CORSConfig(
            allow_origins=[origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()],
            expose_headers=["X-Request-ID", "Retry-After", "Inference-Header-Content-Length"],
        ) if settings.cors_origins.strip() else None,
        openapi_config=OpenAPIConfig(
            title="Image classification service",
            version="1.0.0",
            description="Batched image classification of the models published to the registry.",
            path="/schema",
            render_plugins=[OfflineSwagger()],  # no CDN: service/api/web.py
            components=Components(security_schemes={
                "BearerToken": SecurityScheme(type="http", scheme="bearer",
                                              description="ADMIN_TOKEN"),
                "FeedbackToken": SecurityScheme(type="http", scheme="bearer",
                                                description="FEEDBACK_TOKEN (POST /feedback)"),
            }),
        ),
        # The request bodies this worker holds at once (MAX_INFLIGHT_BYTES), and each one's
        # limit (MAX_BODY_BYTES): shared by every /predict of the worker.
        state=State({"settings": settings, "predictor": predictor,
                     "body_budget": BodyBudget(settings.max_inflight_bytes,
                                               max_body=settings.max_body_bytes)}),
        logging_config=None,  # gunicorn's logconfig_dict (service/gunicorn.conf.py) owns logging
        debug=False,
    )
    document_predict(app.openapi_schema)  # a raw ASGI route: Litestar cannot describe it
    document_v2(app.openapi_schema)  # the same for the raw routes under /v2/models/
    # Outside Litestar's exception handling: an overloaded worker refuses before routing
    # (service.api.shedding), and request ids and request metrics cover every response, 404s,
    # errors and those refusals included.
    app.asgi_handler = ShedWhenOverloaded(app.asgi_handler, path=PREDICT_PATH,
                                          refusal=predictor.refusal)
    app.asgi_handler = ObservabilityMiddleware(app.asgi_handler)
    # Outermost: a worker answering a request counts as busy, so that its siblings' forwards
    # keep to their own cores meanwhile (service.workers.core_share; docs/performance.md).
    app.asgi_handler = BusyMiddleware(app.asgi_handler, cores=predictor.cores)
    return app
