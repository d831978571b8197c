"""benchtables — the benchmarks' Markdown tables (scripts/bench-lib render_tables).

  python3 benchtables.py RESULTS_TSV

RESULTS_TSV has bench-lib's RESULT_COLUMNS, one row per measured run. Prints one
table per (kind, size, acks, codec, security), in the order the configurations first
appear, one row per tool: records/s and CPU s/GB as min / median / max over the
successful rounds (exit code 0 and a wall time > 0), MB/s median, peak RSS max,
the medians' ratios against the first kcat tool, and the correctness checks.
A security other than PLAINTEXT (BENCH_SECURITY=sasl_ssl, e.g. "SASL_SSL (PLAIN,
TLS 1.3)") ends the table's title with "over ..."; older .tsv files without the
security column count as PLAINTEXT.
"""
import csv
import statistics
import sys


def f(x):
    try:
        return float(x)
    except ValueError:
        return float("nan")


def stats(rs):
    """Per-round rates of the successful runs, or None if there is none."""
    ok = [r for r in rs if r["rc"] == "0" and f(r["wall"]) == f(r["wall"]) and f(r["wall"]) > 0]
    if not ok:
        return None
    rate = [f(r["records"]) / f(r["wall"]) for r in ok]
    mbs = [f(r["bytes"]) / 1e6 / f(r["wall"]) for r in ok]
    cpu = [(f(r["user"]) + f(r["sys"])) / (f(r["bytes"]) / 1e9) for r in ok]
    rss = [f(r["rss_kb"]) / 1024 for r in ok]
    return dict(rate=rate, mbs=mbs, cpu=cpu, rss=rss, n=ok[0]["records"])


def mmm(v, fmt):
    return " / ".join(fmt(x) for x in (min(v), statistics.median(v), max(v)))


def num(x):
    return "{:,.0f}".format(x)


def one(x):
    return "{:.1f}".format(x)


def ratio(a, b):  # CPU times have 10 ms resolution: tiny runs can measure 0
    return "{:.2f}x".format(a / b) if a > 0 and b > 0 else "n/a"


def size_name(size):
    return "1 KB" if size == "1k" else size + " B"


def security(r):
    return r.get("security") or "PLAINTEXT"


def config(r):
    return (r["kind"], r["size"], r["acks"], r["codec"], security(r))


def table(key, rs, tools):
    kind, size, acks, codec, sec = key
    if kind == "produce":
        title = "produce, ~%s lines, acks=%s, compression=%s" % (size_name(size), acks, codec)
    else:
        title = "consume, ~%s lines, topic compressed with %s" % (size_name(size), codec)
    if sec != "PLAINTEXT":
        title += ", over " + sec
    print("### " + title)
    print()
    print("| tool | records | records/s (min / median / max) | MB/s (median) | CPU s/GB (min / median / max)"
          " | peak RSS MiB (max) | records/s vs kcat | CPU/GB vs kcat | check |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|---|")
    per = {t: [r for r in rs if r["tool"] == t] for t in tools}
    st = {t: stats(v) for t, v in per.items()}
    ref = next((st[t] for t in st if t.startswith("kcat") and st[t]), None)
    for t in tools:
        s, trs = st[t], per[t]
        bad = [r for r in trs if not r["check"].startswith("ok")]
        failed = [r for r in trs if r["rc"] != "0"]
        check = "%s %d/%d" % ("ok" if not bad else "FAIL", len(trs) - len(bad), len(trs))
        if bad:
            check += ": " + bad[0]["check"]
        if failed:
            check += "; exit codes " + ",".join(r["rc"] for r in failed)
        if not s:
            print("| %s | %s | failed | | | | | | %s |" % (t, trs[0]["records"], check))
            continue
        vs_rate = vs_cpu = ""
        if ref:
            vs_rate = ratio(statistics.median(s["rate"]), statistics.median(ref["rate"]))
            vs_cpu = ratio(statistics.median(s["cpu"]), statistics.median(ref["cpu"]))
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (t, num(int(s["n"])), mmm(s["rate"], num),
              one(statistics.median(s["mbs"])), mmm(s["cpu"], one), one(max(s["rss"])), vs_rate, vs_cpu, check))
    print()


def main(path):
    with open(path) as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    configs, tools = [], {}
    for r in rows:
        key = config(r)
        if key not in configs:
            configs.append(key)
        tools.setdefault(key, [])
        if r["tool"] not in tools[key]:
            tools[key].append(r["tool"])
    for key in configs:
        table(key, [r for r in rows if config(r) == key], tools[key])


if __name__ == "__main__":
    main(sys.argv[1])
