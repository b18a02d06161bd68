#!/usr/bin/env python3
"""Calls a URL from a few threads, each request on a new connection and a
short pause between requests (a workshop's curl loop, and few enough
connections that TIME_WAIT does not use up this host's ephemeral ports),
until stopped (SIGTERM or SIGINT); then prints one JSON line:
{"ok": N, "failed": N, "errors": {reason: count}}. bench/redeploy.sh runs it
against $ManagerIP during a deploy: any failed request is a dropped user."""
import http.client
import json
import signal
import sys
import threading
import urllib.parse

url = urllib.parse.urlsplit(sys.argv[1])
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
pause = (float(sys.argv[3]) if len(sys.argv) > 3 else 5.0) / 1000
stop = threading.Event()
lock = threading.Lock()
counts = {"ok": 0, "failed": 0, "errors": {}}


def hammer():
    while not stop.is_set():
        try:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
            conn.request("GET", url.path or "/")
            response = conn.getresponse()
            response.read()
            conn.close()
            reason = None if response.status == 200 else f"HTTP {response.status}"
        except Exception as err:  # every failure counts, whatever its kind
            reason = type(err).__name__
        with lock:
            if reason is None:
                counts["ok"] += 1
            else:
                counts["failed"] += 1
                counts["errors"][reason] = counts["errors"].get(reason, 0) + 1
        stop.wait(pause)


for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: stop.set())
workers = [threading.Thread(target=hammer, daemon=True) for _ in range(threads)]
for w in workers:
    w.start()
while not stop.wait(0.2):
    pass
for w in workers:
    w.join(6)
print(json.dumps(counts))
