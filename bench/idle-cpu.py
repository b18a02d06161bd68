#!/usr/bin/env python3
"""CPU an idle lab costs this host, as a share of one core.

    bench/idle-cpu.py SECONDS CONTAINER...   (the lab's node containers)

Counts the CPU time of every process under each node container's init,
including the children they reaped during the window (health checks,
`runc` calls), between two snapshots of /proc. `docker stats` on the nodes
would miss most of it: under cgroup v1 the engine inside a node puts its
containers' cgroups beside the node's, not under it. Prints the total, then
the largest contributors by program, to stdout.
"""

import collections
import os
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def snapshot():
    """pid -> (ppid, name, own ticks, reaped children's ticks)"""
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone between listdir and open
        close = stat.rfind(")")
        name = stat[stat.find("(") + 1 : close]
        fields = stat[close + 2 :].split()
        utime, stime, cutime, cstime = map(int, fields[11:15])
        procs[int(entry)] = (int(fields[1]), name, utime + stime, cutime + cstime)
    return procs


def descendants(procs, roots):
    children = collections.defaultdict(list)
    for pid, (ppid, *_) in procs.items():
        children[ppid].append(pid)
    seen, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in procs:
            continue
        seen.add(pid)
        todo.extend(children[pid])
    return seen


def ticks(procs, pids):
    # A process that exits during the window leaves its own and its
    # children's time in its parent's reaped count, so the difference of
    # these sums is exactly what the tree used in between.
    return sum(procs[p][2] + procs[p][3] for p in pids)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    window = float(sys.argv[1])
    pids = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", *sys.argv[2:]],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    roots = [int(p) for p in pids]
    before = snapshot()
    tree_before = descendants(before, roots)
    started = time.monotonic()
    time.sleep(window)
    after = snapshot()
    tree_after = descendants(after, roots)
    elapsed = time.monotonic() - started
    used = (ticks(after, tree_after) - ticks(before, tree_before)) / HZ
    print(f"{used / elapsed * 100:.2f}% of one core over {elapsed:.0f} s")
    by_program = collections.Counter()
    for pid in tree_after:
        same = pid in tree_before and before[pid][1] == after[pid][1]
        own, reaped = (before[pid][2], before[pid][3]) if same else (0, 0)
        by_program[after[pid][1]] += after[pid][2] - own
        by_program[f"{after[pid][1]} (reaped children)"] += after[pid][3] - reaped
    for program, spent in by_program.most_common(6):
        if spent:
            print(f"  {spent / HZ / elapsed * 100:6.2f}%  {program}")


if __name__ == "__main__":
    main()
