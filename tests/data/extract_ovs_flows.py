#!/usr/bin/env python3
"""Extract the flows of Open vSwitch's tests/system-traffic.at into a corpus file.

Usage: extract_ovs_flows.py SYSTEM_TRAFFIC_AT COMMIT > ovs-system-traffic-flows.txt

Takes every `ovs-ofctl [OPTS] add-flow BRIDGE FLOW` argument and every line of an
`AT_DATA([flows*.txt], ...)` block, keeps the distinct ones `ovs-ofctl parse-flow` accepts (with the
`-O` option the test used, if any), and writes each after a `# system-traffic.at:LINE` comment.
"""
import re
import subprocess
import sys


def m4(s):
    return s.replace("@<:@", "[").replace("@:>@", "]").replace("@S|@", "$")


def flows(lines):
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.search(r"ovs-ofctl((?:\s+-\S+)*)\s+add-flow\s+\S+\s+(\"[^\"]*\"|'[^']*'|[^\s\]]+)", line)
        if m:
            opts = m.group(1).split()
            arg = m.group(2).strip("\"'")
            yield i + 1, opts, m4(arg)
        m = re.match(r"AT_DATA\(\[(flows[^\]]*\.txt)\], \[(?:dnl)?\s*$", line)
        if m:
            i += 1
            while i < len(lines) and not lines[i].startswith("])"):
                f = m4(lines[i].strip())
                if f.endswith("dnl"):
                    f = f[:-3].strip()
                if f and not f.startswith("#"):
                    yield i + 1, [], f
                i += 1
        i += 1


def accepted(opts, flow):
    proto = [o for o in opts if o.startswith("-O")]
    r = subprocess.run(["ovs-ofctl", *proto, "parse-flow", flow], capture_output=True)
    return r.returncode == 0, proto


def main():
    path, commit = sys.argv[1], sys.argv[2]
    lines = open(path).read().split("\n")
    out = [
        "# Flows from Open vSwitch tests/system-traffic.at, commit " + commit + ",",
        "# https://github.com/openvswitch/ovs/blob/" + commit + "/tests/system-traffic.at",
        "# (Apache-2.0). Each distinct flow follows a comment naming its first line there; only",
        "# the flows `ovs-ofctl parse-flow` (3.1) accepts are kept. `-OOpenFlow13` marks flows the",
        "# test added with that option. Regenerate with tests/data/extract_ovs_flows.py.",
    ]
    seen = set()
    for n, opts, f in flows(lines):
        if f in seen:
            continue
        seen.add(f)
        ok, proto = accepted(opts, f)
        if not ok:
            continue
        tag = " " + " ".join(proto) if proto else ""
        out.append("# system-traffic.at:%d%s" % (n, tag))
        out.append(f)
    print("\n".join(out))


main()
