"""Planning answers shared by the jobs of one sweep: 10,000 jobs name the same model folder, LoRA
file and conditioning 10,000 times, and each is resolved and checked once. Only inside `shared()`
(a sweep's up-front check): files may change between two sweeps of one process, not during one check.
"""
from __future__ import annotations

import contextlib
import functools
import json
from typing import Any, Callable, Dict, Iterator, Optional, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
_answers: Optional[Dict[Any, Any]] = None


@contextlib.contextmanager
def shared() -> Iterator[None]:
    """Within this block, a memoized planning function answers each distinct question once."""
    global _answers
    outer = _answers
    _answers = {} if outer is None else outer
    try:
        yield
    finally:
        _answers = outer


def memoized(function: F) -> F:
    """`function` (plain-data arguments), answering from the shared memo inside `shared()`; a
    raised error is remembered and raised again like an answer."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _answers is None:
            return function(*args, **kwargs)
        key = (function.__module__, function.__qualname__,
               json.dumps([args, kwargs], sort_keys=True, default=repr))
        if key not in _answers:
            try:
                _answers[key] = (True, function(*args, **kwargs))
            except Exception as error:
                _answers[key] = (False, error)
        ok, answer = _answers[key]
        if not ok:
            raise answer
        return answer
    return wrapper  # type: ignore[return-value]
