"""Two small threading helpers, so doctor's fast path does not import concurrent.futures (and with it
logging): about 10 ms of a run that must stay well under a second."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Pending(Generic[T]):
    """A result (or an exception) that one thread sets and others wait for."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    def set_result(self, value: T) -> None:
        self._value = value
        self._done.set()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    def result(self, timeout: float | None = None) -> T:
        """The value; the function's exception raised again; TimeoutError after `timeout` seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"no result within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def parallel_map(func: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """func over items on up to `workers` threads, taken in order; results in the items' order.
    The first exception raised by func is raised again here, after every thread has stopped."""
    results: list[R | None] = [None] * len(items)
    errors: list[BaseException] = []
    queue = iter(enumerate(items))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                taken = next(queue, None)
            if taken is None:
                return
            index, item = taken
            try:
                results[index] = func(item)
            except BaseException as exc:  # handed to the caller below
                errors.append(exc)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, min(workers, len(items))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]


def in_background(func: Callable[[], R]) -> Pending[R]:
    """Start func on its own thread now; .result() waits for it and raises what func raised."""
    pending: Pending[R] = Pending()

    def run() -> None:
        try:
            pending.set_result(func())
        except BaseException as exc:  # whoever waits gets it: a raising func must not leave them waiting
            pending.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return pending
