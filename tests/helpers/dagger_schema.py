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
        self.answers: dict[str, Answer] = {"version": "v0.21.8", "defaultPlatform": "linux/amd64",
                                           **(answers or {})}
        self.objects: dict[str, dict[str, Any]] = {}  # list items by their fake ID
        self.origin: dict[str, graphql.DocumentNode] = {}  # the request that made each ID
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
            name = sel.name.value
            if sel.selection_set is not None and isinstance(self.answers.get(name), list):
                # A list of objects (e.g. envVariables): the SDK asks for their IDs, then
                # loads each by ID (node(id:) ... on Type) and asks its fields.
                out[key] = []
                for item in self.answers[name]:
                    self._ids += 1
                    self.objects[f"fake-id-{self._ids}"] = item
                    out[key].append({"id": f"fake-id-{self._ids}"})
            elif sel.selection_set is not None and name == "node" and self._item(sel) is not None:
                out[key] = self._fields(self._item(sel) or {}, sel.selection_set)
            elif sel.selection_set is not None:
                out[key] = await self._answer(doc, sel.selection_set)
            elif sel.name.value == "id":
                self._ids += 1
                out[key] = f"fake-id-{self._ids}"
                self.origin[out[key]] = doc
            else:
                out[key] = await self.answer(doc, sel.name.value)
        return out

    def _item(self, sel: graphql.FieldNode) -> dict[str, Any] | None:
        ids = [graphql.value_from_ast_untyped(a.value) for a in sel.arguments if a.name.value == "id"]
        return self.objects.get(ids[0]) if ids else None

    def _fields(self, item: dict[str, Any], selections: graphql.SelectionSetNode) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in selections.selections:
            if isinstance(f, graphql.InlineFragmentNode):
                out.update(self._fields(item, f.selection_set))
            elif isinstance(f, graphql.FieldNode):
                out[(f.alias or f.name).value] = item[f.name.value]
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


def jail_result_text(logs: bytes = b"", output: bytes | None = None, *,
                     logs_truncated: bool = False, output_truncated: bool = False,
                     **status: Any) -> str:
    """A jail supervisor's result document (``--result``; see ``write_result`` in
    executor/runtime/jail_core/supervisor.c): its status, the log and the output file, both base64."""
    base: dict[str, Any] = {"version": 1, "exit_code": 0, "signal": 0, "timed_out": False,
                            "cancelled": False, "oom_kill": 0, "peak_memory_bytes": 1 << 20,
                            "failcnt": 0, "cgroup_v2": False, "duration_seconds": 0.25,
                            "error": ""}
    base.update(status)
    return json.dumps({
        "status": base,
        "logs_b64": base64.b64encode(logs).decode(), "logs_truncated": logs_truncated,
        "output_b64": None if output is None else base64.b64encode(output).decode(),
        "output_truncated": output_truncated,
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
