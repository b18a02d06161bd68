#!/usr/bin/env python3
"""Time per test file from the last `cargo nextest run`, slowest first.

Reads the JUnit report nextest writes (.config/nextest.toml names it) and
prints, for each test binary: its tests, the sum of their times (what it
would cost alone, one test at a time), and its slowest test. Tests run in
one pool, so the sums add up to more than the run's wall time, printed last.

    scripts/test-times.py [target/nextest/default/junit.xml]
"""
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

path = sys.argv[1] if len(sys.argv) > 1 else "target/nextest/default/junit.xml"
root = ET.parse(path).getroot()
files = defaultdict(lambda: {"tests": 0, "seconds": 0.0, "slowest": ("", 0.0), "failed": 0})
for case in root.iter("testcase"):
    name = case.get("classname", "?")
    seconds = float(case.get("time", "0"))
    entry = files[name]
    entry["tests"] += 1
    entry["seconds"] += seconds
    if case.find("failure") is not None or case.find("error") is not None:
        entry["failed"] += 1
    if seconds > entry["slowest"][1]:
        entry["slowest"] = (case.get("name", "?"), seconds)

print("| test file (binary) | tests | failed | sum of test times | slowest test |")
print("|---|---:|---:|---:|---|")
for name, e in sorted(files.items(), key=lambda kv: -kv[1]["seconds"]):
    slow_name, slow_s = e["slowest"]
    print(f"| {name} | {e['tests']} | {e['failed']} | {e['seconds']:.1f} s | {slow_name} ({slow_s:.1f} s) |")
print(f"\nwall time of the run: {float(root.get('time', '0')):.1f} s")
