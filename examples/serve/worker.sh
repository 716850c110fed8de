#!/usr/bin/env bash
# runner run examples/items.txt --serve -- bash examples/serve/worker.sh
while IFS= read -r item; do                      # one item per line on stdin
  if [ -n "$item" ]; then echo "working on $item" >&2; echo ok   # logs to stderr, one reply on stdout
  else echo "fatal an empty item"; fi            # or: error MESSAGE (retried later)
done
