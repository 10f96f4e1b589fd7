"""The OpenAPI entries of a route's error answers: every error is an ``ErrorResponse``."""

from litestar.openapi.datastructures import ResponseSpec

from service.schemas import ErrorResponse


def error_responses(descriptions: dict[int, str]) -> dict[int, ResponseSpec]:
    """``{status: what it means}`` -> Litestar's ``responses=`` for a route handler."""
    return {status: ResponseSpec(data_container=ErrorResponse, description=text)
            for status, text in descriptions.items()}
