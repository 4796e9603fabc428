"""inputs_first: visits what a value depends on before the value, with an explicit stack, so that
graphs (and folded weight expressions) thousands of ops deep never hit Python's recursion limit."""
from __future__ import annotations

from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


def inputs_first(root: T, done: Callable[[T], bool], inputs_of: Callable[[T], list]) -> Iterator[T]:
    """Yields root and every item it depends on through inputs_of (transitively) for which done()
    is still False, each one after its inputs. The caller settles each yielded item (so that
    done(item) becomes True) before asking for the next."""
    stack = [root]
    while stack:
        top = stack[-1]
        if done(top):
            stack.pop()
            continue
        pending = [a for a in inputs_of(top) if not done(a)]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        yield top
