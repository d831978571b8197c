"""benchgen — the benchmarks' input files (scripts/bench-lib gen_input).

  python3 benchgen.py LOGHUB_DIR OUT LINES TARGET

Writes LINES realistic log lines to OUT: each is an ISO timestamp (1 ms apart,
so every line is unique) followed by lines from LOGHUB_DIR/*.log interleaved at
random across the sources, joined with spaces until the line reaches a length
drawn from 80-120% of TARGET bytes, then cut there. Deterministic for a given
(LOGHUB_DIR contents, LINES, TARGET).
"""
import os
import random
import sys
import time

BASE_S = 1714560000  # 2024-05-01T10:40:00Z, the first line's timestamp


def read_sources(src):
    """The non-blank lines of every *.log under src (sorted by name), one list per file."""
    sources = []
    for name in sorted(os.listdir(src)):
        if name.endswith(".log"):
            with open(os.path.join(src, name), "rb") as f:
                lines = [line.rstrip(b"\r") for line in f.read().split(b"\n")]
            lines = [line.strip() for line in lines if line.strip()]
            if lines:
                sources.append(lines)
    return sources


def generate(sources, out, n, target):
    rng = random.Random(n * 7919 + target)
    cursor = [rng.randrange(len(s)) for s in sources]

    def next_line():
        i = rng.randrange(len(sources))
        s = sources[i]
        line = s[cursor[i]]
        cursor[i] = (cursor[i] + 1) % len(s)
        return line

    sec, prefix = None, b""
    lo, hi = int(target * 0.8), int(target * 1.2)
    with open(out, "wb", buffering=1 << 20) as f:
        for i in range(n):
            s, ms = divmod(i, 1000)
            if s != sec:
                sec = s
                prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(BASE_S + s)).encode()
            want = rng.randint(lo, hi)
            parts = [b"%s.%03dZ" % (prefix, ms)]
            size = len(parts[0])
            while size < want:
                line = next_line()
                parts.append(line)
                size += 1 + len(line)
            f.write(b" ".join(parts)[:want].rstrip() + b"\n")


def main(argv):
    src, out, n, target = argv[0], argv[1], int(argv[2]), int(argv[3])
    sources = read_sources(src)
    if not sources:
        sys.exit("no *.log lines under " + src)
    generate(sources, out, n, target)


if __name__ == "__main__":
    main(sys.argv[1:])
