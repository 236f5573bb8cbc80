#!/usr/bin/env python3
"""Run the mutants gremlins reported NOT COVERED, and record what happened.

gremlins decides coverage from `go test -coverprofile` blocks, and Go's cover
blocks leave out the case expressions of a switch: every mutant in
`case a == b:` is reported NOT COVERED even when tests run that case. So
scripts/mutate.sh hands each NOT COVERED mutant to this script, which applies
the same mutation (the operator at the mutant's line:column, as gremlins
would change it) in the staged copy of the module, runs the package's tests
as gremlins does (go test -failfast, same timeout), restores the file, and
rewrites the mutant's status in the gremlins JSON: KILLED, TIMED OUT, LIVED
or NOT VIABLE, with "rechecked": true. A mutant in code no test runs stays
surviving (LIVED).

usage: mutate-recheck.py RESULTS.json GREMLINS.log STAGE_DIR PKG_DIR TIMEOUT_COEFFICIENT
(the timeout is the coefficient times the coverage run's time, from the log)
"""
import json
import os
import re
import subprocess
import sys

# What gremlins turns each operator into, per mutant type.
MUTATIONS = {
    "CONDITIONALS_NEGATION": {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"},
    "CONDITIONALS_BOUNDARY": {"<": "<=", "<=": "<", ">": ">=", ">=": ">"},
    "INVERT_LOGICAL": {"&&": "||", "||": "&&"},
    "INVERT_LOOPCTRL": {"continue": "break", "break": "continue"},
    "ARITHMETIC_BASE": {"+": "-", "-": "+", "*": "/", "/": "*", "%": "*"},
    "INVERT_NEGATIVES": {"-": "+"},
    "INCREMENT_DECREMENT": {"++": "--", "--": "++"},
    "INVERT_ASSIGNMENTS": {"+=": "-=", "-=": "+=", "*=": "/=", "/=": "*=", "%=": "*="},
}


def mutate_line(line, col, typ):
    """Returns line with the operator at byte column col (1-based) replaced."""
    table = MUTATIONS.get(typ)
    if table is None:
        return None
    raw = line.encode()
    at = raw[col - 1:]
    # Longest operator first: "<=" before "<", "&&" before "&".
    for op in sorted(table, key=len, reverse=True):
        if at.startswith(op.encode()):
            return (raw[:col - 1] + table[op].encode() + at[len(op):]).decode()
    return None


def go_duration(text):
    """Seconds in a Go duration string such as 1m2.5s or 850ms."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"([\d.]+)(ms|us|µs|ns|h|m|s)", text)
    return sum(float(n) * units[u] for n, u in parts)


def main():
    results, log, stage, pkgdir, coef = sys.argv[1:6]
    with open(log) as f:
        m = re.search(r"Gathering coverage\.\.\. done in (\S+)", f.read())
    if not m:
        sys.exit("no coverage time in " + log)
    timeout = go_duration(m.group(1)) * float(coef)
    with open(results) as f:
        data = json.load(f)
    pkg = "./" + pkgdir if pkgdir not in (".", "") else "."
    changed = False
    for fentry in data["files"]:
        path = os.path.join(stage, pkgdir, fentry["file_name"])
        for m in fentry["mutations"]:
            if m["status"] != "NOT COVERED":
                continue
            with open(path) as f:
                orig = f.read()
            lines = orig.split("\n")
            new = mutate_line(lines[m["line"] - 1], m["column"], m["type"])
            where = "%s/%s:%d:%d" % (pkgdir, fentry["file_name"], m["line"], m["column"])
            if new is None:
                print("  cannot apply %s at %s: left NOT COVERED" % (m["type"], where), flush=True)
                continue
            lines[m["line"] - 1] = new
            try:
                with open(path, "w") as f:
                    f.write("\n".join(lines))
                status = run_mutant(stage, pkg, timeout)
            finally:
                with open(path, "w") as f:
                    f.write(orig)
            m["status"], m["rechecked"] = status, True
            changed = True
            print("  %11s %s at %s (rechecked)" % (status, m["type"], where), flush=True)
    if changed:
        with open(results, "w") as f:
            json.dump(data, f)


def run_mutant(stage, pkg, timeout):
    """KILLED, LIVED, TIMED OUT or NOT VIABLE: the package's tests against
    the mutant in place. go test exits 1 both when a test fails and when
    the package does not compile (a string's + turned into -), so the
    tests are compiled first: a mutant that does not build is NOT VIABLE,
    not a kill."""
    build = subprocess.run(["nice", "-n", "19", "go", "test", "-c", "-o", os.devnull, pkg], cwd=stage,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if build.returncode != 0:
        return "NOT VIABLE"
    cmd = ["nice", "-n", "19", "go", "test", "-timeout", "%ds" % (timeout + 2), "-failfast", pkg]
    proc = subprocess.Popen(cmd, cwd=stage, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        rc = proc.wait(timeout=timeout)
        return {0: "LIVED", 1: "KILLED", 2: "NOT VIABLE"}.get(rc, "LIVED")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # go test and the test binary it started
        proc.wait()
        return "TIMED OUT"


if __name__ == "__main__":
    main()
