"""Request bodies of the HTTP API, and reading them (parsed and validated in one place)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Optional, TypeVar, Union

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import ClientDisconnect

from offramp.serving.errors import ApiError

B = TypeVar("B", bound=BaseModel)


class ClassifyRequest(BaseModel):
    text: Optional[str] = Field(None, description="One message to classify.")
    texts: Optional[list[str]] = Field(None, description="A batch of messages (instead of text).")
    conversation_id: Optional[str] = Field(
        None,
        max_length=200,
        description=(
            "Groups messages of one conversation: the same personal data gets the same pseudonym across turns."
        ),
    )


class ChatMessage(BaseModel):
    role: str
    content: Union[str, list[dict[str, Any]], None] = None


class ChatRequest(BaseModel):
    model: Optional[str] = None
    messages: list[ChatMessage]
    user: Optional[str] = Field(None, max_length=200, description="Taken as the conversation id.")
    stream: bool = Field(False, description="Answer as server-sent events (OpenAI's chunk format, ending with [DONE]).")
    stream_options: Optional[dict[str, Any]] = Field(None, description="include_usage: true adds a usage chunk.")

    def last_user_text(self) -> str:
        """The text of the last user message (text parts joined); a 422 when there is none."""
        users = [m for m in self.messages if m.role == "user"]
        if not users:
            raise ApiError(422, "invalid_request", "messages has no 'user' message to classify")
        content = users[-1].content
        if isinstance(content, list):
            content = "\n".join(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        return content or ""


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its own body with :func:`read_body`."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:  # nested models in place of references the OpenAPI document would not hold
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


def require_json(request: Request) -> None:
    """A 415 unless the request says its body is JSON. Browsers send form and text/plain bodies
    (and bodiless posts) across sites without asking first; a JSON content type they do not, so
    this keeps another site's page from classifying, writing audit records or reloading the model."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the request with Content-Type: application/json (got {kind or 'none'})",
        )


def load_json_body(raw: bytes) -> object:
    """A request body read by the standard JSON parser (as FastAPI's: it accepts the lone
    surrogates JSON escapes allow); anything unreadable is a 422 that says why."""
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ApiError(422, "invalid_request", f"the body is not valid JSON ({e})") from None
    except RecursionError:
        raise ApiError(422, "invalid_request", "the body is nested too deeply to read") from None


async def read_body(request: Request, model: type[B]) -> B:
    """The request's JSON body as ``model``; anything else is a 422 that says what is wrong.

    Routes read their own bodies (rather than declaring them as FastAPI parameters) so that no
    dependency is solved per request on the hot path; :func:`body_schema` keeps /docs complete.
    """
    require_json(request)
    timeout = getattr(request.app.state, "read_timeout_s", None)
    try:
        raw = await asyncio.wait_for(request.body(), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, "request_timeout", f"the request body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:  # the client left before sending its body: nobody to answer, nothing went wrong here
        raise ApiError(
            499, "client_closed_request", "the client closed the connection before its body arrived"
        ) from None
    data = load_json_body(raw)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from None


class FeedbackRequest(BaseModel):
    model_config = {"extra": "forbid"}

    request_id: str = Field(..., min_length=1, max_length=200, description="The request_id an answer carried.")
    label: str = Field(
        ...,
        max_length=200,
        description="The right label for that message (a multi-label model: its labels joined by the model's "
        'separator, e.g. GRATITUDE|SUPPORT; "" for none of the labels; an empty part is refused).',
    )
