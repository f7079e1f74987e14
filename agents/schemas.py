"""JSON Schemas as data: checked at registration, validated without the network, in linear time.

A capability's schemas come from an agent author and are applied by the control plane (to
inputs, at submit) and by the executor (to outputs). Two properties of stock ``jsonschema``
make a schema a weapon there, and this module removes both:

- ``$ref`` to a URL is fetched (remote resolution). Here only references inside the same
  document (``#...``) are accepted at registration, and validators use a ``referencing``
  registry that retrieves nothing, so an unresolvable reference is an error, never a request.
- ``pattern`` and ``patternProperties`` run on Python's backtracking ``re`` (``^(a+)+$``
  against ``"a" * 30 + "!"`` takes minutes). Here they run on RE2, whose matching time is
  linear in the input, and patterns RE2 cannot compile (back-references, look-arounds) are
  refused at registration with the schema path that holds them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import jsonschema
import re2
import referencing
import referencing.exceptions
from jsonschema import ValidationError

# The meta-schema every schema here is validated with; ``$schema`` may name it, nothing else.
METASCHEMA = "https://json-schema.org/draft/2020-12/schema"
_KNOWN_METASCHEMAS = {METASCHEMA, METASCHEMA + "#"}
# Keywords whose values are instance data, not schemas: nothing inside them is a reference
# or a pattern (``{"const": {"$ref": "http://x"}}`` is a document, not a link).
_DATA_KEYWORDS = {"const", "enum", "default", "examples"}
_REF_KEYWORDS = ("$ref", "$dynamicRef")
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
MAX_PATTERN_CHARS = 1000
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 8 << 20  # bounds the compiled program; larger patterns are refused
_RE2_OPTIONS.log_errors = False  # refusals are reported to the caller, not to stderr


class SchemaRefused(ValueError):
    """A schema this system will not apply; ``path`` is the JSON pointer of the offending part."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{problem} (at {path or '/'})")
        self.path = path
        self.problem = problem


class UnsupportedPattern(ValueError):
    """A pattern RE2 cannot run (refused at registration; met at submit only in a schema
    stored before that rule)."""


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    """The RE2 program for a JSON Schema pattern; raises ``ValueError`` if RE2 cannot run it."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise UnsupportedPattern(f"pattern is longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as e:
        why = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise UnsupportedPattern(f"pattern {pattern[:100]!r} is not supported by RE2 (linear-time "
                         f"matching; no back-references or look-arounds): {why}") from None


def _pointer(parts: list[str]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _walk(schema: Any) -> Iterator[tuple[list[str], dict[str, Any]]]:
    """Every object in ``schema`` outside data keywords, with its path (iterative)."""
    todo: list[tuple[list[str], Any, bool]] = [([], schema, True)]
    while todo:
        path, node, is_schema = todo.pop()
        if isinstance(node, dict):
            yield path, node
            for k, v in node.items():
                if is_schema and k in _DATA_KEYWORDS:
                    continue
                # The members of a name -> schema map are schemas even if named "const".
                todo.append(([*path, str(k)], v, not is_schema or k not in _SCHEMA_MAPS))
        elif isinstance(node, list):
            todo.extend(([*path, str(i)], v, True) for i, v in enumerate(node))


def check_schema_safe(schema: Any) -> None:
    """Raise ``SchemaRefused`` unless every reference is local and every pattern runs on RE2."""
    for path, node in _walk(schema):
        for key in _REF_KEYWORDS:
            ref = node.get(key)
            if isinstance(ref, str) and not ref.startswith("#"):
                raise SchemaRefused(_pointer([*path, key]), f"{key} {ref[:200]!r} points outside the "
                                    "schema; only references within it ('#...') are allowed")
        meta = node.get("$schema")
        if isinstance(meta, str) and meta not in _KNOWN_METASCHEMAS:
            raise SchemaRefused(_pointer([*path, "$schema"]), f"$schema {meta[:200]!r} is not "
                                f"supported; schemas are draft 2020-12 ({METASCHEMA})")
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            try:
                compile_pattern(pattern)
            except ValueError as e:
                raise SchemaRefused(_pointer([*path, "pattern"]), str(e)) from None
        props = node.get("patternProperties")
        if isinstance(props, dict):
            for p in props:
                try:
                    compile_pattern(p)
                except ValueError as e:
                    raise SchemaRefused(_pointer([*path, "patternProperties", p]), str(e)) from None


# --- keywords on RE2 ------------------------------------------------------------------------


def _search(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


def _pattern(validator: Any, patrn: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    # A pattern RE2 cannot run raises UnsupportedPattern: the schema is at fault, not the
    # instance (agents.inputs reports it as such).
    if not _search(patrn, instance):
        yield ValidationError(f"{instance[:100]!r} does not match {patrn[:100]!r}")


def _matches_any(patterns: Any, key: str) -> bool:
    return any(_search(p, key) for p in patterns)


def _pattern_properties(validator: Any, pp: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pp.items():
        for k, v in instance.items():
            if _search(pattern, k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _additional_properties(validator: Any, ap: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = [k for k in instance if k not in properties and not _matches_any(patterns, k)]
    if validator.is_type(ap, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], ap, path=extra)
    elif not ap and extras:
        shown = ", ".join(repr(e[:100]) for e in sorted(extras)[:10])
        if patterns:
            yield ValidationError(f"{shown} {'does' if len(extras) == 1 else 'do'} not match any "
                                  f"of the regexes: {', '.join(repr(p) for p in sorted(patterns))}")
        else:
            yield ValidationError(f"Additional properties are not allowed ({shown} "
                                  f"{'was' if len(extras) == 1 else 'were'} unexpected)")


def _evaluated_keys(validator: Any, instance: dict[str, Any], schema: Any) -> list[str]:
    """jsonschema's ``find_evaluated_property_keys_by_schema`` with patterns on RE2."""
    if validator.is_type(schema, "boolean"):
        return []
    keys: list[str] = []
    for ref_keyword in _REF_KEYWORDS:
        ref = schema.get(ref_keyword)
        if ref is not None:
            resolved = validator._resolver.lookup(ref)
            keys += _evaluated_keys(validator.evolve(schema=resolved.contents, _resolver=resolved.resolver),
                                    instance, resolved.contents)
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys += properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        if (sub := schema.get(keyword)) is not None:
            keys += (k for k, v in instance.items() if next(validator.descend(v, sub), None) is None)
    if "patternProperties" in schema:
        keys += (k for k in instance if _matches_any(schema["patternProperties"], k))
    for prop, sub in schema.get("dependentSchemas", {}).items():
        if prop in instance:
            keys += _evaluated_keys(validator, instance, sub)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for sub in schema.get(keyword, []):
            if next(validator.descend(instance, sub), None) is None:
                keys += _evaluated_keys(validator, instance, sub)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys += _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys += _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys += _evaluated_keys(validator, instance, schema["else"])
    return keys


def _unevaluated_properties(validator: Any, up: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = set(_evaluated_keys(validator, instance, schema))
    bad = [k for k in instance if k not in evaluated
           and next(validator.descend(instance[k], up, path=k, schema_path=k), None) is not None]
    if bad:
        shown = ", ".join(repr(k[:100]) for k in sorted(bad)[:10])
        verb = "was" if len(bad) == 1 else "were"
        if up is False:
            yield ValidationError(f"Unevaluated properties are not allowed ({shown} {verb} unexpected)")
        else:
            yield ValidationError(f"Unevaluated properties are not valid under the given schema "
                                  f"({shown} {verb} unevaluated and invalid)")


def _canonical(value: Any) -> Any:
    """A hashable form under which JSON-equal values are equal (1 == 1.0, true != 1)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("n", int(value) if isinstance(value, float) and value.is_integer() else value)
    if isinstance(value, list):
        return ("a", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("o", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("?", repr(value))


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    # jsonschema compares unhashable items pairwise (quadratic: 30,000 small objects take
    # minutes); hashing a canonical form is linear in the size of the array.
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"array has non-unique elements (first repeated: {str(item)[:100]})")
            return
        seen.add(key)


def _regex_format(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    try:
        compile_pattern(instance)
    except ValueError:
        return False
    return True


_STOCK = jsonschema.Draft202012Validator
FORMAT_CHECKER = jsonschema.FormatChecker()
FORMAT_CHECKER.checkers = dict(_STOCK.FORMAT_CHECKER.checkers)
FORMAT_CHECKER.checks("regex", raises=())(_regex_format)

Validator: Any = jsonschema.validators.extend(_STOCK, {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "unevaluatedProperties": _unevaluated_properties,
    "uniqueItems": _unique_items,
})
# No retrieval: a reference outside the schema (or to an unknown meta-schema) is Unresolvable.
_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry()


def validator_for(schema: dict[str, Any]) -> Any:
    """A validator for ``schema`` that checks formats, matches on RE2 and fetches nothing."""
    return Validator(schema, registry=_NO_RETRIEVAL, format_checker=FORMAT_CHECKER)


def first_error(schema: dict[str, Any], instance: Any) -> ValidationError | None:
    """The most relevant error of ``instance`` against ``schema``, or None if it is valid.

    An unresolvable reference is reported as an error at the instance's root, not raised.
    """
    try:
        return jsonschema.exceptions.best_match(validator_for(schema).iter_errors(instance))
    except referencing.exceptions.Unresolvable as e:
        return ValidationError(f"the schema has a reference that cannot be resolved ({e}); "
                               "only references within the schema are followed")
