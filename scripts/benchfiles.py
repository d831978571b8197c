"""benchfiles — `shipper tail` over many files: the table of scripts/bench-files.

  python3 benchfiles.py SHIPPER BROKER COUNTS IDLE_S PROBES

For each count in COUNTS (comma-separated, e.g. 1,100,1000,10000): COUNT files of 10 lines in a directory
tree (100 files per directory) followed by one `shipper tail 'DIR/**/*.log' TOPIC` (fresh 3-partition
topic, created by scripts/kafka-topic). Once every line is in Kafka (and, past 1,024 files, a minute more,
after which quiet files may be closed): CPU of tail over IDLE_S seconds of nothing happening (utime+stime from /proc/PID/stat), its RssAnon and open descriptors; then PROBES times a
line carrying its write time is appended to a random file and timed when `shipper consume` (following
the topic) prints it. Prints a Markdown table; memory per file = (RssAnon - RssAnon with 1 file) / files.
"""
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_anon_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def end_offsets(shipper, broker, topic):
    out = subprocess.run([shipper, "-b", broker, "-q", "consume", topic, "-o", "-1", "-e", "-f", "%o\n"],
                         capture_output=True, text=True).stdout
    return sum(int(x) + 1 for x in out.split())


def one(shipper, broker, count, idle_s, probes):
    d = tempfile.mkdtemp(prefix=f"bench-files-{count}-")
    paths = []
    for i in range(count):
        sub = os.path.join(d, f"d{i // 100:03d}")
        os.makedirs(sub, exist_ok=True)
        p = os.path.join(sub, f"f{i:05d}.log")
        with open(p, "w") as f:
            f.write("".join(f"file {i} line {k} {'x' * 60}\n" for k in range(10)))
        paths.append(p)
    topic = f"bench-files-{count}-{os.getpid()}-{random.randrange(1 << 30)}"
    subprocess.run([os.path.join(HERE, "kafka-topic"), "create", topic, "--partitions", "3", "--brokers", broker],
                   check=True, capture_output=True)
    tail = subprocess.Popen([shipper, "-b", broker, "tail", os.path.join(d, "**", "*.log"), topic,
                             "--checkpoint", os.path.join(d, "checkpoint")]
                            + os.environ.get("BENCH_TAIL_FLAGS", "").split(),
                            stderr=open(os.path.join(d, "tail.err"), "w"))
    started = time.time()
    want = count * 10
    while end_offsets(shipper, broker, topic) < want:
        if time.time() - started > 300:
            tail.kill()
            raise SystemExit(f"{count} files: not all {want} lines in Kafka after 300 s")
        time.sleep(0.2)
    shipped_in = time.time() - started
    # Let the first scans and checkpoint writes settle; past 1,024 files, wait until quiet files may be
    # closed (a minute without a change), so that the idle window shows the steady state.
    time.sleep(65 if count > 1024 else 2)
    c0 = cpu_s(tail.pid)
    time.sleep(idle_s)
    idle_pct = (cpu_s(tail.pid) - c0) / idle_s * 100
    rss = rss_anon_kib(tail.pid)
    fds = len(os.listdir(f"/proc/{tail.pid}/fd"))
    # Latency: a consumer follows the topic from its end; each probe line carries its write time.
    cons = subprocess.Popen([shipper, "-b", broker, "-q", "consume", topic, "-o", "end", "-f", "%s\n"],
                            stdout=subprocess.PIPE)
    lat = []
    seen = threading.Event()

    def follow():
        for line in cons.stdout:
            parts = line.split()
            if len(parts) == 2 and parts[0] == b"probe":
                lat.append((time.time_ns() - int(parts[1])) / 1e6)
                seen.set()

    threading.Thread(target=follow, daemon=True).start()
    time.sleep(1.5)  # the consumer is at the end
    for _ in range(probes):
        seen.clear()
        with open(random.choice(paths), "a") as f:
            f.write(f"probe {time.time_ns()}\n")
        seen.wait(10)
        time.sleep(random.uniform(0.05, 0.15))
    # New files: one line each in a file that did not exist, created in a random directory of the tree
    # (a new log file: found by its directory's event).
    new_lat = []
    for i in range(max(probes // 5, 10)):
        seen.clear()
        n0 = len(lat)
        p = os.path.join(os.path.dirname(random.choice(paths)), f"new-{i:04d}.log")
        with open(p, "w") as f:
            f.write(f"probe {time.time_ns()}\n")
        seen.wait(10)
        if len(lat) > n0:
            new_lat.append(lat.pop())
        time.sleep(random.uniform(0.05, 0.15))
    cons.kill()
    tail.send_signal(2)
    tail.wait(30)
    subprocess.run(["rm", "-rf", d])
    lat.sort()
    new_lat.sort()
    q = lambda v, p: v[min(len(v) - 1, int(len(v) * p))] if v else float("nan")
    return dict(count=count, shipped_in=shipped_in, idle_pct=idle_pct, rss=rss, fds=fds,
                p50=q(lat, 0.5), p99=q(lat, 0.99), got=len(lat), probes=probes,
                new_p50=q(new_lat, 0.5), new_max=q(new_lat, 1.0), new_got=len(new_lat),
                new_probes=max(probes // 5, 10))


def main(argv):
    shipper, broker, counts, idle_s, probes = argv[0], argv[1], argv[2], float(argv[3]), int(argv[4])
    rows = [one(shipper, broker, int(c), idle_s, probes) for c in counts.split(",")]
    base = rows[0]["rss"]
    print(f"| files | all lines in Kafka after | idle CPU (% of a core, {idle_s:.0f} s) | RssAnon MiB | "
          f"KiB per file | open fds | new line -> consumer p50 / p99 ms ({probes} probes) | "
          f"new file -> consumer p50 / max ms |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        per = (r["rss"] - base) / r["count"] if r["count"] > rows[0]["count"] else float("nan")
        print(f"| {r['count']:,} | {r['shipped_in']:.1f} s | {r['idle_pct']:.2f} | {r['rss'] / 1024:.1f} | "
              f"{per:.2f} | {r['fds']} | {r['p50']:.1f} / {r['p99']:.1f} ({r['got']}/{r['probes']} seen) | "
              f"{r['new_p50']:.1f} / {r['new_max']:.1f} ({r['new_got']}/{r['new_probes']} seen) |")


if __name__ == "__main__":
    main(sys.argv[1:])
