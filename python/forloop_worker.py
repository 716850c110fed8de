"""Serve forloop items from one warm Python process.

    runner run items.txt --serve -- python3 my_worker.py

with my_worker.py:

    from forloop_worker import serve, Fatal

    model = load_model()            # once per process, not once per item

    def handle(item):
        if not item.startswith("http"):
            raise Fatal("not a URL")  # dead-lettered at once
        model.process(item)          # any other exception: retried later

    serve(handle)

Standard library only: copy this file next to your code, or put its folder
on PYTHONPATH. The runner writes one item per line on stdin and reads one
reply per line on stdout (`ok`, `error MESSAGE` or `fatal MESSAGE`). While
your function runs, `print()` goes to stderr, so it cannot break the replies.

With `--serve=json` each line also carries the item's id, attempt number
(1 on the first try) and attributes; pass `task=True` to get them:

    def handle(task):
        print(task.item, task.attempt, task.attributes)

    serve(handle, task=True)
"""

import json
import os
import sys
import traceback
from typing import Any, Callable, Dict, NamedTuple, Optional

__all__ = ["Fatal", "Task", "serve"]


class Fatal(Exception):
    """Raise it for an item no retry can fix: it is dead-lettered at once."""


class Task(NamedTuple):
    """One attempt at one item. Without --serve=json only `item` is known."""

    item: str
    id: Optional[str] = None
    attempt: Optional[int] = None
    attributes: Dict[str, str] = {}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _reply(exc: Optional[BaseException], item_id: Optional[str] = None) -> bytes:
    if exc is None:
        word, message = "ok", None
    else:
        word = "fatal" if isinstance(exc, Fatal) else "error"
        message = _one_line(str(exc)) or type(exc).__name__
        if not isinstance(exc, Fatal):
            message = f"{type(exc).__name__}: {message}"
    if item_id is not None:
        # JSON format: the reply names its item, so a stray reply cannot
        # be taken for the next item's.
        reply = {"status": word, "id": item_id}
        if message is not None:
            reply["message"] = message
        return (json.dumps(reply) + "\n").encode("utf-8")
    line = word if message is None else f"{word} {message}"
    return (line + "\n").encode("utf-8", "replace")


def _parse(line: bytes, fmt: str) -> Task:
    text = line.decode("utf-8", "surrogateescape").rstrip("\n")
    if fmt != "json":
        return Task(item=text)
    data = json.loads(text)
    return Task(
        item=data["item"],
        id=data.get("id"),
        attempt=data.get("attempt"),
        attributes=data.get("attributes") or {},
    )


def serve(fn: Callable[[Any], Any], task: bool = False) -> None:
    """Call fn on every item the runner sends, answering each; return at
    the end of input (when the runner stops this process).

    fn gets the item as text, or a Task with task=True. Returning normally
    acks the item; raising Fatal dead-letters it; any other exception is
    printed to stderr and the item is retried with backoff.
    """
    replies = sys.stdout.buffer
    # Anything fn prints goes to stderr: stdout carries replies only.
    sys.stdout = sys.stderr
    fmt = os.environ.get("FORLOOP_SERVE", "lines")
    items = sys.stdin.buffer
    while True:
        line = items.readline()
        if not line:
            return
        try:
            current = _parse(line, fmt)
        except (ValueError, KeyError) as exc:
            replies.write(_reply(Fatal(f"cannot read the item line: {exc}")))
            replies.flush()
            continue
        try:
            fn(current if task else current.item)
            outcome = None
        except Fatal as exc:
            outcome = exc
        except Exception as exc:  # noqa: BLE001 - every failure is a reply
            traceback.print_exc(file=sys.stderr)
            outcome = exc
        replies.write(_reply(outcome, current.id))
        replies.flush()
