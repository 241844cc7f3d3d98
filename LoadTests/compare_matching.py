#!/usr/bin/env python3
"""Runs matching-bench and the SciPy reference on the same instances, in the same run, and prints a
Markdown table of costs, times and ratios. Exit status 1 when an exactness check fails.

Called by compare-matching.sh, which installs the reference's dependencies and builds the bench."""
import argparse
import json
import os
import statistics
import subprocess
import sys

SHAPES = [(1000, 1000), (2000, 2000), (500, 5000), (1000, 2000)]
LAYOUTS = ["uniform", "clustered"]


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bench", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="fewer shapes and seeds, for a smoke run")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    ref = [sys.executable, a.reference]
    bench = [a.bench]
    rep = ["--repeat", str(a.repeat)]
    shapes = SHAPES[:1] if a.quick else SHAPES
    failures = []
    lines = []

    def emit(line=""):
        print(line, flush=True)
        lines.append(line)

    def instance(n, m, layout, seed):
        path = os.path.join(a.work, f"{layout}-{n}x{m}-s{seed}.hsmi")
        if not os.path.exists(path):
            run(ref + ["gen", "--orders", str(n), "--drivers", str(m), "--seed", str(seed), "--layout", layout,
                       "--out", path])
        return path

    emit(f"Seed {a.seed}, median of {a.repeat} runs each; ratio = Hailstorm time / reference time "
         "(below 1 is faster).")
    emit()
    emit("**Exact assignment** — `matching-bench solve --mode exact` vs `matching_reference.py solve` "
         "(SciPy `linear_sum_assignment`; both times include building costs)")
    emit()
    emit("| instance | reference km | Hailstorm km | rel. diff | reference ms | Hailstorm ms | ratio | rounds | edges |")
    emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for layout in LAYOUTS:
        for n, m in shapes:
            f = instance(n, m, layout, a.seed)
            r = run(ref + ["solve", f] + rep)
            h = run(bench + ["solve", f, "--mode", "exact"] + rep)
            diff = abs(h["total_cost_km"] - r["total_cost_km"]) / r["total_cost_km"]
            if diff > 1e-9 or h["matched"] != n:
                failures.append(f"exact {layout} {n}x{m}: {h['total_cost_km']} vs {r['total_cost_km']}")
            emit(f"| {layout} {n}×{m} | {r['total_cost_km']:.6f} | {h['total_cost_km']:.6f} | {diff:.1e} | "
                 f"{r['median_ms']:.1f} | {h['median_ms']:.1f} | {h['median_ms'] / r['median_ms']:.3f} | "
                 f"{h['solve_rounds']} | {h['candidate_edges']} |")

    emit()
    emit("**Fast mode, drivers ≥ 2 × orders** — `solve --mode fast` vs `matching_reference.py sparse --k 10` "
         "(LAPJVsp on 10 nearest; both include the k-nearest search)")
    emit()
    emit("| instance | optimum km | reference gap | Hailstorm gap | deferred | reference ms | Hailstorm ms | ratio |")
    emit("|---|---:|---:|---:|---:|---:|---:|---:|")
    for layout in LAYOUTS:
        for n, m in [s for s in shapes if s[1] >= 2 * s[0]] or [(500, 5000)]:
            f = instance(n, m, layout, a.seed)
            r = run(ref + ["sparse", f, "--k", "10"] + rep)
            h = run(bench + ["solve", f, "--mode", "fast"] + rep)
            opt = r["optimum_km"]
            gap = 100 * (h["total_cost_km"] - opt) / opt
            rgap = "infeasible" if r["total_cost_km"] is None else f"{r['gap_percent']:.4f}%"
            emit(f"| {layout} {n}×{m} | {opt:.6f} | {rgap} | {gap:.4f}% | {h['deferred']} | "
                 f"{r['median_ms']:.1f} | {h['median_ms']:.2f} | {h['median_ms'] / r['median_ms']:.3f} |")

    emit()
    emit("**Fast mode, balanced 1000 × 1000** — `solve --mode fast` against the exact optimum and SciPy's exact "
         "time, over seeds. Gap and time with the pickup radius lifted (`--max-pickup-km 1000`, so every order is "
         "matched and the totals compare); deferred orders with the default 5 km radius. Greedy nearest-pair-first "
         "for comparison.")
    emit()
    emit("| layout | seed | optimum km | fast gap | fast ms | ratio | deferred at 5 km | greedy gap | SciPy exact ms |")
    emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    seeds = [a.seed] if a.quick else [a.seed + i for i in range(5)]
    for layout in LAYOUTS:
        gaps, ratios, deferred = [], [], []
        for seed in seeds:
            f = instance(1000, 1000, layout, seed)
            r = run(ref + ["solve", f] + rep)
            h = run(bench + ["solve", f, "--mode", "fast", "--max-pickup-km", "1000"] + rep)
            d = run(bench + ["solve", f, "--mode", "fast", "--repeat", "1"])
            g = run(bench + ["solve", f, "--mode", "greedy", "--repeat", "1"])
            opt = r["total_cost_km"]
            gap = 100 * (h["total_cost_km"] - opt) / opt
            ratio = h["median_ms"] / r["median_ms"]
            gaps.append(gap)
            ratios.append(ratio)
            deferred.append(d["deferred"])
            emit(f"| {layout} | {seed} | {opt:.4f} | {gap:.3f}% | {h['median_ms']:.1f} | {ratio:.3f} | "
                 f"{d['deferred']} | {100 * (g['total_cost_km'] - opt) / opt:.2f}% | {r['median_ms']:.1f} |")
        emit(f"| {layout} | median | | {statistics.median(gaps):.3f}% | | {statistics.median(ratios):.3f} | "
             f"{statistics.median(deferred)} | | |")

    emit()
    emit("**k nearest** — `matching-bench knn --k 10` vs `matching_reference.py knn --k 10` (cKDTree, one worker), "
         "20,000 queries over 100,000 drivers")
    emit()
    emit("| layout | reference sum km | Hailstorm sum km | rel. diff | reference queries/s | Hailstorm queries/s | ratio |")
    emit("|---|---:|---:|---:|---:|---:|---:|")
    for layout in LAYOUTS:
        f = instance(20000, 100000, layout, a.seed)
        r = run(ref + ["knn", f, "--k", "10"] + rep)
        h = run(bench + ["knn", f, "--k", "10"] + rep)
        diff = abs(h["sum_of_distances_km"] - r["sum_of_distances_km"]) / r["sum_of_distances_km"]
        if diff > 1e-9:
            failures.append(f"knn {layout}: {h['sum_of_distances_km']} vs {r['sum_of_distances_km']}")
        emit(f"| {layout} | {r['sum_of_distances_km']:.6f} | {h['sum_of_distances_km']:.6f} | {diff:.1e} | "
             f"{r['queries_per_s']:,.0f} | {h['queries_per_s']:,.0f} | {h['queries_per_s'] / r['queries_per_s']:.2f} |")

    emit()
    u = run(bench + ["updates", "--drivers", "100000", "--updates", "5000000"])
    emit("**Location updates** — `matching-bench updates --drivers 100000 --updates 5000000`: "
         f"index {u['updates_per_s']:,.0f}/s, plain `[DriverID: PlanePoint]` {u['dictionary_updates_per_s']:,.0f}/s, "
         f"ratio {u['ratio']:.2f}")
    emit()
    c = run(bench + ["cycle", "--orders", "2000", "--drivers", "10000", "--update-rate", "250000",
                     "--windows", "20" if a.quick else "100"])
    emit("**Dispatch cycle** — `matching-bench cycle --orders 2000 --drivers 10000 --update-rate 250000`: "
         f"p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms, max {c['max_ms']:.1f} ms over {c['windows']} windows "
         f"(exact mode; {c['updates_applied_per_s']:,.0f} updates/s applied meanwhile)")

    with open(os.path.join(a.work, "compare.md"), "w") as out:
        out.write("\n".join(lines) + "\n")
    if failures:
        print("\nEXACTNESS FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
