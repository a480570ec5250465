"""A named registry of factories: data sets, models (and whatever comes next) register by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry"]

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Maps names to factories; ``kind`` ("data set", "model") appears in error messages.

    Re-registering the same function under the same name (a module reload) is allowed; another
    function under a taken name raises ``ValueError``.

    Example:
        >>> reg = Registry("widget")
        >>> @reg.register("a")
        ... def make_a():
        ...     return "A"
        >>> reg.get("a")(), reg.names()
        ('A', ['a'])
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def deco(factory: F) -> F:
            old = self._items.get(name)
            same = old is not None and (old.__module__, old.__qualname__) == (factory.__module__, factory.__qualname__)
            if old is not None and not same:
                raise ValueError(f"a {self.kind} named {name!r} is already registered ({old.__module__}.{old.__qualname__})")
            self._items[name] = factory
            return factory

        return deco

    def get(self, name: str) -> F:
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
