"""benchmeminput — the input file of scripts/bench-memory.

  python3 benchmeminput.py OUT N [LOGHUB_DIR]

Writes N lines of exactly 100 bytes (plus newline) to OUT: "<i> <source line>",
cut or space-padded to 100 bytes, cycling through the lines of LOGHUB_DIR/*.log
(sorted by name) or, without LOGHUB_DIR or when it holds no *.log, through 1000
generated lines "2026-11-27 10:00:SS INFO worker-W handled request I".
"""
import glob
import os
import sys


def source_lines(loghub):
    src = []
    if loghub:
        for name in sorted(glob.glob(os.path.join(loghub, "*.log"))):
            with open(name, errors="replace") as f:
                src += [line.rstrip("\r\n") for line in f]
    if not src:
        src = [f"2026-11-27 10:00:{i % 60:02d} INFO worker-{i % 16} handled request {i}" for i in range(1000)]
    return src


def main(argv):
    out, n = argv[0], int(argv[1])
    src = source_lines(argv[2] if len(argv) > 2 else None)
    with open(out, "w") as f:
        for i in range(n):
            line = f"{i} {src[i % len(src)]}"
            f.write((line + " " * 100)[:100] + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
