"""Limits on what one GraphQL operation may ask for, checked before any work starts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import ExecutionResult, GraphQLError, ValidationRule
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    ListValueNode,
    Node,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)
from strawberry.extensions import SchemaExtension

CHAT_FIELDS = {"chat": None, "chatStream": None, "chatBatched": "inputs"}  # field -> argument listing chats


def operation_depth(node: Node, fragments: Mapping[str, FragmentDefinitionNode],
                    seen: frozenset[str] = frozenset()) -> int:
    """Nesting depth of selections, every field counted (introspection fields too)."""
    if isinstance(node, FieldNode):
        if node.selection_set is None:
            return 0
        return 1 + _deepest(node.selection_set, fragments, seen)
    if isinstance(node, FragmentSpreadNode):
        name = node.name.value
        fragment = fragments.get(name)
        return 0 if fragment is None or name in seen else operation_depth(fragment, fragments, seen | {name})
    selection_set = getattr(node, "selection_set", None)
    return 0 if selection_set is None else _deepest(selection_set, fragments, seen)


def _deepest(selection_set: SelectionSetNode, fragments: Mapping[str, FragmentDefinitionNode],
             seen: frozenset[str]) -> int:
    return max((operation_depth(s, fragments, seen) for s in selection_set.selections), default=0)


def introspection_depth_rule(max_depth: int) -> type[ValidationRule]:
    """Strawberry's QueryDepthLimiter skips ``__schema``/``__type``; this bounds whole operations,
    with a limit that GraphiQL's own introspection query (depth 12-14) fits."""

    class IntrospectionDepthLimit(ValidationRule):
        def enter_document(self, node: DocumentNode, *_args: object) -> None:
            fragments = {d.name.value: d for d in node.definitions if isinstance(d, FragmentDefinitionNode)}
            for op in node.definitions:
                if isinstance(op, OperationDefinitionNode):
                    depth = operation_depth(op, fragments)
                    if depth > max_depth:
                        name = op.name.value if op.name else "anonymous"
                        self.report_error(GraphQLError(
                            f"'{name}' has depth {depth}, counting introspection fields; the limit is {max_depth} "
                            "(MAX_INTROSPECTION_DEPTH)", op, extensions={"code": "QUERY_TOO_DEEP", "limit": max_depth}))

    return IntrospectionDepthLimit


def count_chats(document: DocumentNode, operation_name: str | None, variables: Mapping[str, Any],
                per_field: int) -> int:
    """Chats an operation will run: 1 per ``chat``/``chatStream`` field, the length of the list per
    ``chatBatched`` (at most ``per_field``: a longer one is that field's own error,
    BATCH_TOO_LARGE), over every alias and fragment of the selected operation's root fields."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)
           and (operation_name is None or (d.name is not None and d.name.value == operation_name))]
    if len(ops) != 1:
        return 0  # execution reports that
    total = 0
    for field in _root_fields(ops[0].selection_set, fragments, frozenset()):
        name = field.name.value
        if name not in CHAT_FIELDS:
            continue
        argument = CHAT_FIELDS[name]
        value = next((a.value for a in field.arguments or () if a.name.value == argument), None) if argument else None
        total += min(_list_length(value, variables), per_field) if value is not None else 1
    return total


def _root_fields(selection_set: SelectionSetNode, fragments: Mapping[str, FragmentDefinitionNode],
                 seen: frozenset[str]) -> Iterator[FieldNode]:
    for s in selection_set.selections:
        if isinstance(s, FieldNode):
            yield s
        elif isinstance(s, FragmentSpreadNode):
            fragment = fragments.get(s.name.value)
            if fragment is not None and s.name.value not in seen:
                yield from _root_fields(fragment.selection_set, fragments, seen | {s.name.value})
        elif isinstance(s, InlineFragmentNode):
            yield from _root_fields(s.selection_set, fragments, seen)


def _list_length(value: Node, variables: Mapping[str, Any]) -> int:
    if isinstance(value, ListValueNode):
        return len(value.values)
    if isinstance(value, VariableNode):
        given = variables.get(value.name.value)
        return len(given) if isinstance(given, list) else 1
    return 1  # one input object, coerced to a list of one


class ChatsPerOperation(SchemaExtension):
    """Refuses an operation whose chats, summed over every field and alias, exceed ``limit``:
    ten aliased ``chatBatched`` of 64 would otherwise run 640 generations in one request."""

    def __init__(self, *, limit: int, per_field: int) -> None:
        self.limit = limit
        self.per_field = per_field

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.graphql_document is not None:
            n = count_chats(ctx.graphql_document, ctx.operation_name, ctx.variables or {}, self.per_field)
            if n > self.limit:
                ctx.result = ExecutionResult(data=None, errors=[GraphQLError(
                    f"this operation asks for {n} chats; at most {self.limit} are allowed per operation "
                    "(MAX_CHATS_PER_OPERATION)", extensions={"code": "TOO_MANY_CHATS", "limit": self.limit, "size": n})])
        yield
