"""Render Dagger pipelines' GraphQL with the real SDK and validate it against the engine schema.

No Dagger engine can run on these machines (its image is in a registry they cannot reach), so
``FakeDaggerSchemaSession`` stands in for the engine's session: it serves the engine's real
schema (the SDL in ``../shared/dagger``), validates every request the SDK sends against it and
answers leaf fields with canned values. This checks a pipeline's *shape* (fields, argument
names and types, what goes where), not its behaviour.

Used by ``tests/executor/test_dagger_graphql.py`` (the executor's runtime) and
``tests/deploy/test_dagger_module.py`` (the ``dagger/`` module).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import dagger
import gql
import graphql
from dagger.client._core import Context  # the SDK's query context (how dagger.Client is built)

from executor.runtime import limits_wrapper
from tests.helpers.requirements import require

SCHEMA_ENV = "AIRLOCK_DAGGER_SCHEMA"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_SCHEMA = REPO.parent / "shared" / "dagger" / "schema-v0.21.8.graphqls"

Answer = Any | Callable[[], Awaitable[Any]]


def load_schema() -> graphql.GraphQLSchema:
    """The engine's schema, or a skip (a failure under CI) naming where it was looked for."""
    path = Path(os.environ.get(SCHEMA_ENV, str(DEFAULT_SCHEMA)))
    if not path.is_file():
        require("the Dagger schema file",
                f"not found at {path} (set {SCHEMA_ENV} to the engine's SDL file)")
    return graphql.build_schema(path.read_text(encoding="utf-8"))


class FakeDaggerSchemaSession:
    """Stands in for a Dagger engine session, which cannot run here (its image is in an
    unreachable registry). ``get_schema()`` serves the engine's real schema; ``execute()``
    validates each request against it (an invalid one fails the test), records it and answers
    leaf fields from ``answers`` (a value, or an async callable: used to make a request hang).
    Subclasses may override ``answer`` to pick a value from the whole request.
    """

    def __init__(self, schema: graphql.GraphQLSchema, answers: dict[str, Answer] | None = None):
        self.schema = schema
        self.requests: list[graphql.DocumentNode] = []
        self.answers: dict[str, Answer] = {"version": "v0.21.8", **(answers or {})}
        self._ids = 0

    async def get_schema(self) -> graphql.GraphQLSchema:
        return self.schema

    async def execute(self, request: gql.GraphQLRequest) -> dict[str, Any]:
        errors = graphql.validate(self.schema, request.document)
        assert not errors, f"invalid query {errors}:\n{graphql.print_ast(request.document)}"
        self.requests.append(request.document)
        op = request.document.definitions[0]
        assert isinstance(op, graphql.OperationDefinitionNode)
        return await self._answer(request.document, op.selection_set)

    async def _answer(
        self, doc: graphql.DocumentNode, selections: graphql.SelectionSetNode
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for sel in selections.selections:
            if isinstance(sel, graphql.InlineFragmentNode):
                out.update(await self._answer(doc, sel.selection_set))
                continue
            assert isinstance(sel, graphql.FieldNode)
            key = (sel.alias or sel.name).value
            if sel.selection_set is not None:
                out[key] = await self._answer(doc, sel.selection_set)
            elif sel.name.value == "id":
                self._ids += 1
                out[key] = f"fake-id-{self._ids}"
            else:
                out[key] = await self.answer(doc, sel.name.value)
        return out

    async def answer(self, doc: graphql.DocumentNode, field: str) -> Any:
        """The value of leaf ``field`` in request ``doc``."""
        answer = self.answers[field]
        return await answer() if callable(answer) else answer

    def printed(self) -> list[str]:
        return [graphql.print_ast(d) for d in self.requests]


class FakeDaggerSchemaConnection:
    """Stands in for the SDK's engine connection: only holds the fake session."""

    def __init__(self, session: FakeDaggerSchemaSession) -> None:
        self.session = session


def fake_client(session: FakeDaggerSchemaSession) -> dagger.Client:
    return dagger.Client(Context(conn=FakeDaggerSchemaConnection(session)))  # type: ignore[arg-type]


def fake_connect(session: FakeDaggerSchemaSession) -> Callable[[], Any]:
    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[dagger.Client]:
        yield fake_client(session)

    return connect


def bundle_text(logs: bytes = b"", output: bytes | None = None, **status: Any) -> str:
    """A limits-wrapper result file (see limits_wrapper.main)."""
    base = dict.fromkeys(limits_wrapper.STATUS_FIELDS)
    base.update(version=1, timed_out=False, terminated=False, oom_suspected=False,
                oom_reason="", logs_truncated=False, output_truncated=False,
                duration_seconds=0.25, limits={"timeout_seconds": 5.0})
    base.update(status)
    return json.dumps({
        "status": base,
        "logs_b64": base64.b64encode(logs).decode(),
        "output_b64": None if output is None else base64.b64encode(output).decode(),
    })


def field_args(doc: graphql.DocumentNode, field: str) -> list[dict[str, Any]]:
    """Arguments of every ``field`` in the document, as Python values."""
    found: list[dict[str, Any]] = []

    class Visitor(graphql.Visitor):
        def enter_field(self, node: graphql.FieldNode, *_: Any) -> None:
            if node.name.value == field:
                found.append({a.name.value: graphql.value_from_ast_untyped(a.value)
                              for a in node.arguments})

    graphql.visit(doc, Visitor())
    return found


def assert_valid(schema: graphql.GraphQLSchema, doc: graphql.DocumentNode) -> str:
    """Print ``doc``, re-parse it and validate it against ``schema``; return the text."""
    text = graphql.print_ast(doc)
    errors = graphql.validate(schema, graphql.parse(text))
    assert errors == [], f"{errors}\n{text}"
    return text
