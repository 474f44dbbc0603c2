#!/usr/bin/env bash
# Scan a guest console log for kernel reports; print each with its context.
#
#   vm/scan-console.sh LOG        exit 0 if LOG holds no kernel report, 1 if it
#                                 does (each printed with 3 lines before it and 30 after)
#   vm/scan-console.sh --pattern  print the pattern (an awk/grep ERE)
#
# A report is a kernel line (one carrying a "[ seconds.micros]" timestamp)
# that says WARNING/BUG/Oops/panic, a sanitizer (KASAN via "BUG:", UBSAN),
# lockdep ("possible circular locking", "inconsistent lock state", ...),
# RCU ("suspicious RCU usage", stalls), a hung or soft-locked task, list or
# refcount corruption, SLUB's "BUG <cache> (...)", a fault, or a user process
# killed by a fault. "** N printk messages dropped **" (no timestamp of its
# own) fails too: a report may have been among them. There is no allow-list:
# a new kind of message fails the run until someone reads it.
set -euo pipefail

pattern='WARNING:|BUG:|Oops|Kernel panic|kernel BUG|UBSAN:|general protection fault|double fault|invalid opcode|Call Trace:|possible (circular|recursive) locking|inconsistent lock state|suspicious RCU usage|detected (expedited )?stall|kthread starved|blocked for more than|soft lockup|hard LOCKUP|refcount_t:|BUG [A-Za-z0-9_:.-]+ [(]|list_(add|del) corruption|segfault at|trap (divide|int3|invalid)'

if [ "${1:-}" = "--pattern" ]; then
    echo "$pattern"
    exit 0
fi
[ $# -eq 1 ] || { sed -n '2,5p' "$0" >&2; exit 2; }
log=$1
[ -f "$log" ] || { echo "[scan-console] error: no console log at $log" >&2; exit 2; }

# Kernel lines only, but the timestamp may follow guest output on one line.
awk -v pat="$pattern" '
    (/\[ *[0-9]+\.[0-9]+\]/ && $0 ~ pat) || /\*\* [0-9]+ printk messages dropped \*\*/ {
        if (!found) print "[scan-console] kernel report(s) in the console:" > "/dev/stderr"
        found++
        if (until < NR) {
            print "----- console line " NR " -----" > "/dev/stderr"
            for (i = NR - 3; i < NR; i++)       # the lines that lead up to it
                if (i > until && i > 0) print prev[i % 3] > "/dev/stderr"
        }
        until = NR + 30
    }
    NR <= until { print > "/dev/stderr" }
    { prev[NR % 3] = $0 }
    END { exit found ? 1 : 0 }' "$log"
