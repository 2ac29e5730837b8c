"""How a transform runs independent pieces of work: through a `Mapper` its caller passes in.

transforms/ starts no thread or process. Work that may run in parallel is written as
`mapper(function, items)`: the default is the builtin `map` (in order, one at a time); flows/
passes a thread pool's `map` where the pieces let go of the GIL (numpy, polars).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]


def call(thunk: Callable[[], Any]) -> Any:
    """`thunk()`: maps a list of independent computations, `mapper(call, thunks)`."""
    return thunk()
