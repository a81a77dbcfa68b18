#!/usr/bin/env python3
"""Prints the results of bench runs (the JSON files of `danmaku bench --json`) as one markdown table.

Arguments are LABEL=FILE. Labels ending in " (run N)" are runs of one configuration: after the runs, each such
configuration gets a median row, and when one of them is "raw" a second table sets every median against raw's
(the ratios the targets in docs/benchmarks.md are stated in). The server columns are summed over the server's
processes; runs of a server of several processes (`--server-pid 1,2,3`) also get a "per process" table, one row
per process. The last column is the host's CPU steal over the measured window (time the hypervisor gave to
other guests): rows with high steal measured the neighbours as much as the server. Reports from before the bench
recorded it show "-".
"""
import json
import re
import statistics
import sys


def frames_per_viewer_s(r):
    d = r["deliveries"]
    opened = r["connections"]["opened"] - (r.get("slow_viewers") or {}).get("opened", 0)
    secs = r["setup"]["duration_s"]
    if not d.get("frames") or opened <= 0 or secs <= 0:
        return None
    return d["frames"] / opened / secs


def steal_pct(r):
    """% of all cores' time the hypervisor took over the measured window; None in reports older than the field."""
    return (r.get("host") or {}).get("steal_pct")


def row(label, r):
    lat = r.get("latency_ms") or {}
    srv = r.get("server") or {}
    d = r["deliveries"]
    c = r["connections"]
    cpu_m = srv.get("cpu_secs_per_million")
    fps = frames_per_viewer_s(r)
    steal = steal_pct(r)
    return [
        label,
        f'{c["opened"]:,}',
        f'{r["setup"]["rate"]:g}/s',
        f'{d["lost"]:,} ({d["loss_pct"]:.4f}%)',
        f'{d["per_s"]:,.0f}',
        *(f'{lat[k]:.0f}' if k in lat else "-" for k in ("p50", "p90", "p99", "p999", "max")),
        f'{srv.get("cpu_pct", 0):.0f}%',
        f"{cpu_m:.3f}" if cpu_m is not None else "-",
        f'{srv.get("peak_rss_mb", 0):.0f}',
        f"{fps:.1f}" if fps is not None else "-",
        f'{r["bench"]["cpu_pct"]:.0f}%',
        f"{steal:.1f}" if steal is not None else "-",
    ]


HEAD = ["run", "viewers", "rate", "loss", "deliveries/s", "p50 ms", "p90", "p99", "p99.9", "max",
        "server cpu", "cpu s/M deliv", "server peak MiB", "frames/viewer/s", "bench cpu", "steal %"]


def median_row(name, runs):
    """The median of each figure over `runs` (for two runs, their mean)."""
    def med(get):
        vals = [v for v in (get(r) for r in runs) if v is not None]
        return statistics.median(vals) if vals else None

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    lat = lambda k: med(lambda r: (r.get("latency_ms") or {}).get(k))
    srv = lambda k: med(lambda r: (r.get("server") or {}).get(k))
    lost = med(lambda r: r["deliveries"]["lost"])
    return [
        f"**{name} (median of {len(runs)})**",
        fmt(med(lambda r: r["connections"]["opened"]), ",.0f"),
        f'{runs[0]["setup"]["rate"]:g}/s',
        fmt(lost, ",.0f"),
        fmt(med(lambda r: r["deliveries"]["per_s"]), ",.0f"),
        *(fmt(lat(k), ".0f") for k in ("p50", "p90", "p99", "p999", "max")),
        fmt(srv("cpu_pct"), ".0f") + "%",
        fmt(srv("cpu_secs_per_million"), ".3f"),
        fmt(srv("peak_rss_mb"), ".0f"),
        fmt(med(frames_per_viewer_s), ".1f"),
        fmt(med(lambda r: r["bench"]["cpu_pct"]), ".0f") + "%",
        fmt(med(steal_pct), ".1f"),
    ]


def process_rows(label, r):
    """One row per server process, for a report of several (its `servers`); none otherwise."""
    servers = r.get("servers") or []
    if len(servers) < 2:
        return []
    return [[label, str(s.get("pid", "-")), f'{s.get("cpu_pct", 0):.0f}%', f'{s.get("peak_rss_mb", 0):.0f}']
            for s in servers]


def table(head, rows):
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def main():
    rows = []
    per_process = []
    groups = {}
    for arg in sys.argv[1:]:
        label, _, path = arg.partition("=")
        with open(path) as f:
            report = json.load(f)
        rows.append(row(label, report))
        per_process.extend(process_rows(label, report))
        m = re.fullmatch(r"(.*) \(run \d+\)", label)
        if m:
            groups.setdefault(m.group(1), []).append(report)
    for name, runs in groups.items():
        if len(runs) > 1:
            rows.append(median_row(name, runs))
    table(HEAD, rows)
    if per_process:
        print()
        print("per process")
        print()
        table(["run", "pid", "cpu %", "peak RSS MiB"], per_process)
    if "raw" in groups and len(groups) > 1:
        med = lambda runs, get: statistics.median(get(r) for r in runs)
        p99 = lambda r: r["latency_ms"]["p99"]
        cpu = lambda r: r["server"]["cpu_secs_per_million"]
        raw_p99, raw_cpu = med(groups["raw"], p99), med(groups["raw"], cpu)
        print()
        table(["against raw (medians)", "p99 ms", "p99 / raw", "cpu s/M deliv", "cpu / raw"], [
            [name, f"{med(runs, p99):.0f}", f"{med(runs, p99) / raw_p99:.2f}x",
             f"{med(runs, cpu):.3f}", f"{med(runs, cpu) / raw_cpu:.2f}x"]
            for name, runs in groups.items()
        ])


if __name__ == "__main__":
    main()
