"""The PolyAI Chat API's shape: the one place that knows it.

Paths, methods, headers, body fields and the region → base URL table live here, and are
imported by the Locust users, the preflight check (`loadtest check`) and the mock server, so
that client and mock can never disagree about the API.

    POST /{version}/{account_id}/{project_id}/chat/create   {variant_id?, integration_attributes?}
    POST /{version}/{account_id}/{project_id}/chat/respond  {conversation_id, message?}
    PUT  /{version}/{account_id}/{project_id}/chat/close    {conversation_id}
"""

from __future__ import annotations

from typing import Any, NamedTuple

from analysis import records

ENDPOINTS = records.ENDPOINTS
METHODS = {"create": "POST", "respond": "POST", "close": "PUT"}

PATH_TEMPLATE = "/{version}/{account}/{project}/chat/{operation}"

API_KEY_HEADER = "X-API-KEY"
TOKEN_HEADER = "X-TOKEN"
CONTENT_TYPE = "application/json"

# Environment variables holding the credentials. Never written anywhere.
API_KEY_ENV = "POLYAI_API_KEY"
TOKEN_ENV = "POLYAI_TOKEN"
# The documented dummy pair: what the mock accepts and the users send when the env is unset.
DUMMY_API_KEY = "mock-api-key"
DUMMY_TOKEN = "mock-token"

DEFAULT_VERSION = "v1"
DEFAULT_ACCOUNT = "loadtest"
DEFAULT_PROJECT = "mock-project"

# Real PolyAI API hosts, one per region. A new region is named in `analysis.records.REGIONS`
# (the run folder's contract) and given its host here.
REGIONS: dict[str, str] = {
    "us": "https://api.us-1.platform.polyai.app",
    "uk": "https://api.uk-1.platform.polyai.app",
    "eu": "https://api.euw-1.platform.polyai.app",
    "self-serve": "https://api.studio.poly.ai",
}
assert tuple(REGIONS) == records.REGIONS, "every region of the run folder has a host, in the same order"

# Where `loadtest mock` listens by default: region i of REGIONS on MOCK_DEFAULT_PORT + i.
MOCK_DEFAULT_PORT = 8700


def mock_base_urls(port: int = MOCK_DEFAULT_PORT, host: str = "127.0.0.1") -> dict[str, str]:
    return {region: f"http://{host}:{port + i}" for i, region in enumerate(REGIONS)}


def path(operation: str, version: str = DEFAULT_VERSION, account: str = DEFAULT_ACCOUNT, project: str = DEFAULT_PROJECT) -> str:
    """The documented path of one operation."""
    return PATH_TEMPLATE.format(version=version, account=account, project=project, operation=operation)


def headers(api_key: str, token: str) -> dict[str, str]:
    return {API_KEY_HEADER: api_key, TOKEN_HEADER: token, "Content-Type": CONTENT_TYPE}


def create_body(variant_id: str | None = None, integration_attributes: dict | None = None) -> dict:
    body: dict[str, Any] = {}
    if variant_id:
        body["variant_id"] = variant_id
    if integration_attributes:
        body["integration_attributes"] = integration_attributes
    return body


def respond_body(conversation_id: str, message: str | None = None) -> dict:
    body: dict[str, Any] = {"conversation_id": conversation_id}
    if message is not None:
        body["message"] = message
    return body


def close_body(conversation_id: str) -> dict:
    return {"conversation_id": conversation_id}


class SchemaError(ValueError):
    """A 200 response whose body breaks the documented shape."""


class Handoff(NamedTuple):
    destination: str
    reason: str


class Reply(NamedTuple):
    """A validated 200 body of create or respond (close has no reply). Immutable; a NamedTuple
    rather than a frozen dataclass: one is made per request on the generator's hot path, and a
    frozen dataclass's __init__ costs several times more."""

    conversation_id: str
    response: str
    end_conversation: bool = False
    handoff: Handoff | None = None


def _require(body: Any, field: str, kind: type, endpoint: str) -> Any:
    if not isinstance(body, dict):
        raise SchemaError(f"{endpoint}: body is {type(body).__name__}, expected a JSON object")
    if field not in body:
        raise SchemaError(f"{endpoint}: missing field '{field}'")
    value = body[field]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SchemaError(f"{endpoint}: field '{field}' is {type(value).__name__}, expected {kind.__name__}")
    return value


def parse_reply(endpoint: str, body: Any) -> Reply | None:
    """Validate a 200 body against the documented shape; raise SchemaError naming the field."""
    if endpoint == "close":
        if _require(body, "success", bool, endpoint) is not True:
            raise SchemaError("close: 'success' is false")
        return None
    conversation_id = _require(body, "conversation_id", str, endpoint)
    if not conversation_id:
        raise SchemaError(f"{endpoint}: 'conversation_id' is empty")
    response = _require(body, "response", str, endpoint)
    if endpoint == "create":
        return Reply(conversation_id, response)
    end = _require(body, "end_conversation", bool, endpoint)
    handoff = None
    if body.get("handoff") is not None:
        raw = body["handoff"]
        if not isinstance(raw, dict):
            raise SchemaError("respond: 'handoff' is not an object")
        handoff = Handoff(_require(raw, "destination", str, "respond.handoff"), _require(raw, "reason", str, "respond.handoff"))
    return Reply(conversation_id, response, end, handoff)
