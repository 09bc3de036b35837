"""Program calls off the server's event loop.

``Predict.aforward`` renders the prompt and parses the answer synchronously, between its
awaits. On the server's event loop a slow render (a large template, many demos, a custom
adapter) would stall every other request, ``/health`` and the 429/503 answers included.
:class:`ProgramLoop` runs program calls on a second event loop in one worker thread
instead: their LM I/O stays asynchronous there, and the server's loop only awaits the
result.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["ProgramLoop"]

T = TypeVar("T")


class ProgramLoop:
    """An event loop in a daemon thread, started on first use, for running program calls.

    One loop for all calls: the LM backends keep their connection pools per event loop,
    so every call reuses the same pools.
    """

    def __init__(self, name: str = "lmforge-program") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` on the worker loop; cancelling the caller cancels it there.

        The call sees the caller's context variables (settings, trackers).
        """
        caller = asyncio.get_running_loop()
        worker = self._started(caller)
        call = _Call(coroutine, contextvars.copy_context(), caller, caller.create_future())
        # Two thread hops per call (there and back), nothing more: this is on the hot path.
        worker.call_soon_threadsafe(call.start, worker)
        try:
            return await call.result
        except asyncio.CancelledError:
            worker.call_soon_threadsafe(call.cancel)
            raise

    def close(self) -> None:
        """Stop the loop and its thread (a no-op when it never started)."""
        with self._lock:
            finalizer, self._finalizer, self._loop = self._finalizer, None, None
        if finalizer is not None:
            finalizer()

    def _started(self, caller: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                loop = _loop_like(caller)
                thread = threading.Thread(
                    target=_run_forever, args=(loop,), name=self._name, daemon=True
                )
                thread.start()
                # Stops the thread when the server is garbage-collected without a shutdown.
                self._finalizer = weakref.finalize(self, _stop, loop, thread)
                self._loop = loop
            return self._loop


class _Call:
    """One program call handed to the worker loop; its methods run on that loop."""

    __slots__ = ("caller", "context", "coroutine", "result", "task")

    def __init__(
        self,
        coroutine: Coroutine[Any, Any, Any],
        context: contextvars.Context,
        caller: asyncio.AbstractEventLoop,
        result: asyncio.Future[Any],
    ) -> None:
        self.coroutine: Coroutine[Any, Any, Any] | None = coroutine
        self.context = context
        self.caller = caller
        self.result = result
        self.task: asyncio.Task[Any] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        coroutine, self.coroutine = self.coroutine, None
        if coroutine is None:  # cancelled before it started
            return
        self.task = loop.create_task(coroutine, context=self.context)
        self.task.add_done_callback(self._done)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
        elif self.coroutine is not None:
            self.coroutine.close()
            self.coroutine = None

    def _done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved here: the caller may be gone (timed out)
        self.caller.call_soon_threadsafe(_settle, self.result, task)


def _settle(result: asyncio.Future[Any], task: asyncio.Task[Any]) -> None:
    if result.done():  # the caller was cancelled meanwhile
        return
    if task.cancelled():
        result.cancel()
    elif (error := task.exception()) is not None:
        result.set_exception(error)
    else:
        result.set_result(task.result())


def _loop_like(caller: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    """A new event loop of the caller's kind: uvloop under uvicorn, which runs the program's
    tasks and timers at a fraction of the pure-Python loop's cost."""
    try:
        loop = type(caller)()
    except TypeError:  # a loop class that needs arguments
        return asyncio.new_event_loop()
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else asyncio.new_event_loop()


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)
    if thread is not threading.current_thread():
        thread.join(timeout=5)
