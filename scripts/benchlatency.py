"""benchlatency — the writer and the clock of scripts/bench-latency.

  python3 benchlatency.py DIR RATE SECONDS

Appends RATE lines/s for SECONDS to DIR/app.log (which `shipper tail` ships),
each line "<time.time_ns() at write> <80 x>", and follows DIR/fifo.out (where
`shipper consume` writes the values it reads), timing every line on arrival.
Prints the append -> consumer latency p50 / p90 / p99 / max in ms; exits 1 if
not every line arrived within 30 s after the last write.
"""
import os
import sys
import threading
import time


def follow(path, total, lat):
    """Append to lat the latency in ms of each line as it appears in path, until total lines."""
    with open(path, "rb") as f:
        buf = b""
        while len(lat) < total:
            chunk = f.read(65536)
            now = time.time_ns()
            if not chunk:
                time.sleep(0.0002)
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                try:
                    lat.append((now - int(line.split(b" ", 1)[0])) / 1e6)
                except ValueError:
                    pass


def write(path, rate, total):
    """Append total timestamped lines to path at rate lines/s, in 0.5 ms steps."""
    pad = b"x" * 80
    with open(path, "ab", buffering=0) as f:
        start = time.perf_counter()
        per_ms = rate / 1000.0
        sent = 0
        while sent < total:
            due = int((time.perf_counter() - start) * 1000 * per_ms) + 1
            n = min(due - sent, total - sent)
            if n > 0:
                now = time.time_ns()
                f.write(b"".join(b"%d %s\n" % (now, pad) for _ in range(n)))
                sent += n
            time.sleep(0.0005)


def main(argv):
    d, rate, secs = argv[0], int(argv[1]), float(argv[2])
    total = int(rate * secs)
    lat = []
    t = threading.Thread(target=follow, args=(os.path.join(d, "fifo.out"), total, lat), daemon=True)
    t.start()
    time.sleep(0.5)
    write(os.path.join(d, "app.log"), rate, total)
    t.join(timeout=30)
    lat.sort()
    if len(lat) < total:
        print(f"only {len(lat)} of {total} lines arrived", file=sys.stderr)
        return 1
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731
    print(f"shipper tail latency, append -> consumer, {rate} lines/s for {secs:.0f}s ({total} lines):")
    print(f"  p50 {q(0.50):.2f} ms   p90 {q(0.90):.2f} ms   p99 {q(0.99):.2f} ms   max {lat[-1]:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
