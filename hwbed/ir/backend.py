"""Per-op backend tables: a backend registers one entry per op, keyed by the op's name.

An op a backend lacks either takes the backend's declared fallback or is an error naming the
backend and the op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from hwbed.ir.types import GraphError

if TYPE_CHECKING:
    from hwbed.ir.graph import Node

E = TypeVar("E")


class Backend(Generic[E]):
    """One backend's per-op entries, keyed by op name.

    ``fallback`` is what the backend does for an op it has no entry for (e.g. the fast path
    runs the reference semantics), ``fallback_is`` says what it is; without one, such an op
    is an error naming the backend. Keys are graph ops, or FINN op types for the cost model.
    """

    def __init__(self, name: str, fallback: E | None = None, fallback_is: str = ""):
        self.name = name
        self.entries: dict[str, E] = {}
        self.fallback = fallback
        self.fallback_is = fallback_is

    def register(self, *ops: str) -> Callable[[E], E]:
        """Decorator: ``entry`` handles ``ops``."""

        def add(entry: E) -> E:
            for op in ops:
                if op in self.entries:
                    raise ValueError(f"{self.name}: op {op!r} is registered twice")
                self.entries[op] = entry
            return entry

        return add

    def entry(self, node: Node) -> E:
        """The entry for ``node.op``, or the declared fallback; else a :class:`GraphError`."""
        return self.lookup(node.op, node.name)

    def lookup(self, op: str, where: str) -> E:
        """The entry for ``op`` (of node ``where``), or the declared fallback; else an error."""
        if op in self.entries:
            return self.entries[op]
        if self.fallback is not None:
            return self.fallback
        raise GraphError(f"node {where}: the {self.name} backend has no entry for {op!r}")

    def covers(self, op: str) -> bool:
        """Whether ``op`` has an entry of its own (not the fallback)."""
        return op in self.entries
