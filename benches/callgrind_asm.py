#!/usr/bin/env python3
"""Instructions per frame of one function, per machine instruction, from a callgrind run.

    valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file=/tmp/cg.out \\
        target/release/deps/l2_forward-HASH --frames 400000 --macs 10 --quiet
    benches/callgrind_asm.py /tmp/cg.out target/release/deps/l2_forward-HASH \\
        'Pipeline::run$' 400000 | awk '$1 >= 0.5'

Sums the self cost (Ir) of every instruction address of the functions whose name matches the
regex (in the given binary), then prints `objdump -d` of that address range with the count per
frame (divided by the frame count given) in front of each executed instruction. Shows what the
per-line view of callgrind_annotate hides: what LLVM made of a line (docs/design.md, "What the
instruction-level view showed").
"""
import collections
import re
import subprocess
import sys


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, binary, fnpat = sys.argv[1], sys.argv[2], sys.argv[3]
    frames = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    per = collections.Counter()
    fns, obs = {}, {}
    cur_fn, cur_ob, addr, skip = None, "", 0, False

    def name(s, table):
        m = re.match(r"\((\d+)\)(?: (.*))?", s)
        if not m:
            return s
        if m.group(2):
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), "")

    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("fn="):
            cur_fn = name(line[3:], fns)
        elif line.startswith("ob="):
            cur_ob = name(line[3:], obs)
        elif line.startswith("cfn="):
            name(line[4:], fns)
        elif line.startswith("cob="):
            name(line[4:], obs)
        elif line.startswith("calls="):
            skip = True  # the next cost line is the call's inclusive cost
        elif line and line[0] in "0123456789+-*":
            parts = line.split()
            a = parts[0]
            if a.startswith("0x"):
                addr = int(a, 16)
            elif a[0] in "+-":
                addr += int(a)
            if skip:
                skip = False
                continue
            if len(parts) >= 3 and cur_fn and re.search(fnpat, cur_fn) and binary in cur_ob:
                per[addr] += int(parts[2])
    if not per:
        sys.exit("no cost recorded for a function matching %r in %s" % (fnpat, binary))
    lo, hi = min(per), max(per)
    dis = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-C",
         "--start-address=%#x" % lo, "--stop-address=%#x" % (hi + 16), binary],
        capture_output=True, text=True, check=True).stdout
    print("total %d, per frame %.1f" % (sum(per.values()), sum(per.values()) / frames))
    for l in dis.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s*(.*)", l)
        if m:
            c = per.get(int(m.group(1), 16), 0)
            print("%8.2f  %s" % (c / frames, l) if c else "          %s" % l)


if __name__ == "__main__":
    main()
