#!/usr/bin/env python3
"""Prints the results of bench runs (the JSON files of `danmaku bench --json`) as one markdown table."""
import json
import sys


def row(label, r):
    lat = r.get("latency_ms") or {}
    srv = r.get("server") or {}
    d = r["deliveries"]
    c = r["connections"]
    cpu_m = srv.get("cpu_secs_per_million")
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
        f'{r["bench"]["cpu_pct"]:.0f}%',
    ]


HEAD = ["run", "viewers", "rate", "loss", "deliveries/s", "p50 ms", "p90", "p99", "p99.9", "max",
        "server cpu", "cpu s/M deliv", "server peak MiB", "bench cpu"]


def main():
    rows = []
    for arg in sys.argv[1:]:
        label, _, path = arg.partition("=")
        with open(path) as f:
            rows.append(row(label, json.load(f)))
    print("| " + " | ".join(HEAD) + " |")
    print("|" + "---|" * len(HEAD))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
