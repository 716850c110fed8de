"""Serve forloop items from one warm Python process.

    runner run items.txt --serve -- python3 my_worker.py

with my_worker.py:

    from forloop_worker import serve, Fatal

    model = load_model()            # once per process, not once per item

    def handle(item):
        if not item.startswith("http"):
            raise Fatal("not a URL")  # dead-lettered at once
        return model.process(item)   # any other exception: retried later

    serve(handle)

What handle returns is the item's value: JSON-encoded, kept in its receipt
(up to 1 KiB of JSON; with --outputs a larger one goes to the store) and
shown by `runner results`. Returning None keeps none; a value json.dumps
cannot encode dead-letters the item, naming its type. An exception's
traceback reaches the item's record (`runner results --json`, `runner
dead`), not only its message.

Standard library only: copy this file next to your code, or put its folder
on PYTHONPATH. The runner writes one item per line on stdin and reads one
reply per line on stdout (`ok [VALUE]`, or a JSON object for failures and
with --serve=json). While your function runs, `print()` goes to stderr, so
it cannot break the replies.

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


# The most of a traceback a reply carries: its last characters (the
# receipt keeps the last 4 KiB).
TRACEBACK_MAX = 4000


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _encode(value: Any) -> str:
    # Compact and ASCII: one line whatever the value holds.
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _reply(
    exc: Optional[BaseException],
    item_id: Optional[str] = None,
    value: Any = None,
    trace: Optional[str] = None,
) -> bytes:
    if exc is None:
        if item_id is None and trace is None:
            line = "ok" if value is None else "ok " + _encode(value)
            return (line + "\n").encode("utf-8")
        reply = {"status": "ok"}
        if value is not None:
            reply["value"] = value
    else:
        word = "fatal" if isinstance(exc, Fatal) else "error"
        message = _one_line(str(exc)) or type(exc).__name__
        if not isinstance(exc, Fatal):
            message = f"{type(exc).__name__}: {message}"
        # A JSON reply in either format: it carries the traceback, lines
        # and all, where a plain `error MESSAGE` line could not.
        reply = {"status": word, "message": message}
        if trace:
            reply["traceback"] = trace[-TRACEBACK_MAX:]
    if item_id is not None:
        # The reply names its item, so a stray reply cannot be taken for
        # the next item's.
        reply["id"] = item_id
    return (_encode(reply) + "\n").encode("utf-8")


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
    acks the item, and what it returns (unless None) is the item's value;
    raising Fatal dead-letters it; any other exception is printed to stderr
    and the item is retried with backoff. Either way the traceback goes
    with the reply into the item's record.
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
            value = fn(current if task else current.item)
        except Exception as exc:  # noqa: BLE001 - every failure is a reply
            trace = traceback.format_exc()
            if not isinstance(exc, Fatal):
                sys.stderr.write(trace)
            reply = _reply(exc, current.id, trace=trace)
        else:
            try:
                reply = _reply(None, current.id, value)
            except (TypeError, ValueError) as exc:
                # The same fn returns the same kind of value: no retry helps.
                why = Fatal(f"the value fn returned cannot be JSON-encoded: {exc}")
                reply = _reply(why, current.id)
        replies.write(reply)
        replies.flush()
