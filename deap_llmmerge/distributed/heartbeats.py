"""Telling a dead SCOOP worker from a slow one: workers say, every second, which share they are scoring.

SCOOP 0.7's broker cannot say whether a task it handed out is still running (it compares pickled ids with
unpickled ones, so it answers "not here" for every task a worker holds), and its root re-sends every task
it has waited 2 s for: a slow live worker's share is computed twice. Here the root listens on a UDP port;
a worker scoring a share sends the share's token there every :data:`BEAT_SECONDS`. When the root waits for
results, it re-sends a share only when its beats have stopped for :data:`SILENT_SECONDS` (its worker died),
or when no worker has started it after :data:`START_SECONDS` and the broker does not hold it either (its
worker died before it began). Until the root has heard one beat from another process (a firewall may drop
them), and for tasks that are not shares, it waits :data:`LOST_FUTURE_SECONDS` instead, as before.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time

__all__ = ["HeartbeatListener", "beating", "patient_scoop_resend", "root_listener", "BEAT_SECONDS",
           "SILENT_SECONDS", "START_SECONDS", "LOST_FUTURE_SECONDS"]

log = logging.getLogger(__name__)

BEAT_SECONDS = 1.0
SILENT_SECONDS = 10.0
START_SECONDS = 10.0
CHECK_SECONDS = 2.0
LOST_FUTURE_SECONDS = 300.0
_TOKENS = itertools.count()


class HeartbeatListener:
    """The root's UDP socket and the last time each share token was heard of."""

    def __init__(self, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        self.socket.bind(("", 0))
        self.address = (host, self.socket.getsockname()[1])
        self.seen: dict[str, float] = {}
        self.others = False  # a beat came from another process: the channel works
        threading.Thread(target=self._listen, daemon=True, name="deap-llmmerge-heartbeats").start()

    def _listen(self) -> None:
        while True:
            try:
                data = self.socket.recv(512).decode()
            except OSError:
                return
            token, _, pid = data.partition(" ")
            self.seen[token] = time.time()
            self.others = self.others or pid != str(os.getpid())

    def new_token(self) -> str:
        return f"{os.getpid()}-{next(_TOKENS)}"

    def forget(self, token: str) -> None:
        self.seen.pop(token, None)


_LISTENER: list[HeartbeatListener] = []


def root_listener() -> HeartbeatListener:
    """This SCOOP root's listener, started on first use, on the interface its workers reach it by."""
    if not _LISTENER:
        import scoop

        host = scoop.worker.decode().rsplit(":", 1)[0] if isinstance(scoop.worker, bytes) else "127.0.0.1"
        _LISTENER.append(HeartbeatListener(host))
    return _LISTENER[0]


class beating:
    """``with beating(address, token):`` sends ``token`` to ``address`` at once and every
    :data:`BEAT_SECONDS` until the block ends (nothing when ``address`` is None)."""

    def __init__(self, address: tuple[str, int] | None, token: str | None) -> None:
        self.address, self.token = address, token
        self.stop = threading.Event()

    def _beat(self) -> None:
        message = f"{self.token} {os.getpid()}".encode()
        try:
            family = socket.getaddrinfo(*self.address, type=socket.SOCK_DGRAM)[0]
            with socket.socket(family[0], socket.SOCK_DGRAM) as sender:
                while True:
                    sender.sendto(message, family[4])
                    if self.stop.wait(BEAT_SECONDS):
                        return
        except OSError as exc:  # no beats: the root falls back to waiting long
            log.debug("heartbeats to %s stopped: %s", self.address, exc)

    def __enter__(self) -> beating:
        if self.address is not None:
            threading.Thread(target=self._beat, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()


def _share_token(future) -> str | None:
    """The heartbeat token of a scoring share's future (its task is ``(evaluator, plans, options)``, the
    options' ``heartbeat`` an ``(address, token)`` pair)."""
    args = getattr(future, "args", ())
    task = args[0] if args else None
    beat = getattr(task[2], "heartbeat", None) if isinstance(task, tuple) and len(task) == 3 else None
    return beat[1] if isinstance(beat, tuple) and len(beat) == 2 else None


_FIRST_SEEN: dict[object, float] = {}


def _check_futures(queue) -> None:
    """SCOOP's ``FutureQueue.askForPreviousFutures``, as the module docstring says it should be."""
    import scoop

    now = time.time()
    if now < queue.lastStatus + CHECK_SECONDS:
        return
    queue.lastStatus = now
    listener = _LISTENER[0] if _LISTENER else None
    futures = scoop._control.futureDict
    for known in [fid for fid in _FIRST_SEEN if fid not in futures]:
        del _FIRST_SEEN[known]
    if listener is not None:
        for token in [token for token, beat in listener.seen.items() if now - beat > LOST_FUTURE_SECONDS]:
            listener.forget(token)
    local = set(queue.inprogress) | set(queue.movable) | set(queue.ready)
    for future in list(futures.values()):
        if (scoop.IS_ORIGIN and future.id == (scoop.worker, 0)) or future in local or future._ended():
            continue
        waited = now - _FIRST_SEEN.setdefault(future.id, now)
        token = _share_token(future)
        beat = None if token is None or listener is None else listener.seen.get(token)
        if token is None or listener is None or not listener.others:
            if waited > LOST_FUTURE_SECONDS:  # SCOOP's own question, asked patiently
                _FIRST_SEEN[future.id] = now
                queue.socket.sendStatusRequest(future)
        elif beat is None and waited > START_SECONDS:  # queued (the broker says so) or lost before it began
            _FIRST_SEEN[future.id] = now
            queue.socket.sendStatusRequest(future)
        elif beat is not None and now - beat > SILENT_SECONDS:  # its worker stopped beating: it died
            log.warning("the worker scoring share %s went silent %.0f s ago; sending the share again", token,
                        now - beat)
            listener.forget(token)
            _FIRST_SEEN[future.id] = now
            queue.socket.sendFuture(future)


def patient_scoop_resend() -> None:
    """Install :func:`_check_futures` as SCOOP's ``askForPreviousFutures`` (idempotent; a no-op without SCOOP)."""
    try:
        from scoop._types import FutureQueue
    except ImportError:
        return
    FutureQueue.askForPreviousFutures = _check_futures
