"""A --serve worker in Python: one warm process per task slot.

    runner run examples/items.txt --serve -- python3 examples/serve/worker.py

Set-up that is slow (a model, a database connection) goes at the top and
runs once per process; handle() runs once per item.
"""

import hashlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from forloop_worker import Fatal, serve  # noqa: E402


def handle(item: str) -> None:
    if not item.strip():
        raise Fatal("an empty item")
    digest = hashlib.sha256(item.encode()).hexdigest()[:12]
    print(f"{item} -> {digest}")  # print() goes to stderr while serving


serve(handle)
