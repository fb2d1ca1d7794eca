"""Long-term memory benchmark: retrieval quality against full-text search, latency, indexes.

    python bench/memory.py                 # every section (quality, latency, indexes, context)
    python bench/memory.py --quick         # 10 personas, 10k memories only, no mpnet, no children
    python bench/memory.py --indexes       # the index comparison alone
    python bench/memory.py --fit           # fit the relevance coefficients on the dev split
    python bench/memory.py --json out.json # also write every figure

The data is generated (bench/memory_data, Apache-2.0): see bench/README.md, "Memory".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from _harness import load_text, log, machine_info, print_plain, write_report  # noqa: E402

SECTIONS = ("quality", "latency", "indexes", "context")
KINDS = ("keyword", "paraphrase", "temporal", "multi", "all", "macro")


def _quality(args: argparse.Namespace) -> dict[str, Any]:
    import _memory_quality
    from memory_data import build

    data = build("test", quick=args.quick)
    log(f"quality: test split, {len(data.personas())} personas, {len(data.turns)} turns, "
        f"{len(data.questions)} questions")
    rows = _memory_quality.run(data, mpnet=not args.quick and not args.no_mpnet)
    relevance = rows.pop("_relevance")
    counts = next(iter(rows.values()))
    header = ["hit@5 / hit@10 (%)"] + [f"{k} (n={int(counts[k]['n'])})" for k in KINDS]
    print_plain(header, [[name] + [f"{r[k]['hit@5']:.1f} / {r[k]['hit@10']:.1f}" for k in KINDS]
                         for name, r in rows.items()])
    base = rows["full-text BM25 (baseline)"]["all"]["hit@5"]
    for name, r in rows.items():
        if name.startswith("Keel"):
            print(f"\n{name}: {r['all']['hit@5'] - base:+.1f} points hit@5 over full-text "
                  f"(all questions); the top hit's relevance averages "
                  f"{relevance['top_relevant_mean']:.2f} when it is evidence and "
                  f"{relevance['top_irrelevant_mean']:.2f} when not")
    print("min_relevance: " + "; ".join(
        f"at {t}, {100 * relevance[f'answers_kept@{t}']:.0f}% of right best hits pass and "
        f"{100 * relevance[f'unanswerable_hit@{t}']:.0f}% of questions with nothing relevant "
        "still get a hit" for t in (0.5, 0.7)))
    return {"rows": rows, "relevance": relevance, "questions": len(data.questions)}


def _latency(args: argparse.Namespace) -> dict[str, Any]:
    import _memory_latency

    sizes = [10_000] if args.quick else [10_000, 100_000]
    res = _memory_latency.run(sizes)
    print(f"\nquery embedding (MiniLM, one query): p50 {res['query_embed_p50_ms']:.1f} ms, "
          f"p99 {res['query_embed_p99_ms']:.1f} ms")
    print_plain(["memories", "retrieval p50 ms", "p99 ms", "first search s",
                 "HNSW build s (background)", "add / s", "load (1/5/15 min)"],
                [[f"{r['n']:,}", f"{r['retrieval_p50_ms']:.1f}", f"{r['retrieval_p99_ms']:.1f}",
                  f"{r['first_search_s']:.1f}",
                  f"{r['graph_build_s']:.1f} ({r['graph_size']:,} rows)",
                  f"{r['add_per_s']:.0f}",
                  " / ".join(f"{x:.2f}" for x in r["load"])] for r in res["sizes"]])
    return res


def _indexes(args: argparse.Namespace) -> dict[str, Any]:
    import _memory_indexes
    from _memory_embed import embed
    from memory_data import build

    data = build("test", quick=True)
    queries = embed("minilm", list(dict.fromkeys(q.text for q in data.questions))[:200])
    sizes = [10_000] if args.quick else [10_000, 100_000]
    rows = _memory_indexes.measure(sizes, queries, children=not args.quick)
    print_plain(["index", "vectors", "recall@10", "p50 ms", "p99 ms", "build s", "notes"],
                [[r["index"], f"{r['n']:,}",
                  f"{r['recall@10']:.3f}" if "recall@10" in r else "-",
                  f"{r['p50_ms']:.2f}" if "p50_ms" in r else "-",
                  f"{r['p99_ms']:.2f}" if "p99_ms" in r else "-",
                  f"{r['build_s']:.1f}" if "build_s" in r else
                  (f"load {r['load_s']:.1f}" if "load_s" in r else "-"),
                  r.get("error") or r.get("params", "")] for r in rows])
    return {"rows": rows}


def _context(args: argparse.Namespace) -> dict[str, Any] | None:
    try:
        import _memory_context  # type: ignore[import-not-found]
    except ImportError:
        print("\ncontext tokens per call: bench/_memory_context.py is not there yet")
        return None
    rows = list(_memory_context.context_section())
    print("\ncontext tokens per call of a long agent run (bench/_memory_context.py)")
    print_plain(list(rows[0]), [[str(r[c]) for c in rows[0]] for r in rows])
    return {"rows": rows}


def _fit(args: argparse.Namespace) -> None:
    import _memory_fit

    _memory_fit.main(quick=args.quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast, smaller run")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"any of {','.join(SECTIONS)}")
    parser.add_argument("--indexes", action="store_true", help="the index section alone")
    parser.add_argument("--fit", action="store_true",
                        help="fit the relevance coefficients on the dev split, print them")
    parser.add_argument("--no-mpnet", action="store_true", help="skip all-mpnet-base-v2")
    args = parser.parse_args()
    if args.fit:
        _fit(args)
        return
    chosen = ["indexes"] if args.indexes else [s.strip() for s in args.sections.split(",")]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    report: dict[str, Any] = {"machine": machine_info(), "quick": args.quick}
    for name in chosen:
        log(f"{name} (load {load_text()})")
        t = time.perf_counter()
        report[name] = {"quality": _quality, "latency": _latency, "indexes": _indexes,
                        "context": _context}[name](args)
        log(f"{name} took {time.perf_counter() - t:.0f} s")
    report["load_average_end"] = os.getloadavg()
    print(f"\nmachine: {os.cpu_count()} cores, load average at the end {load_text()}")
    if args.json:
        write_report(args.json, json.loads(json.dumps(report, default=float)))


if __name__ == "__main__":
    main()
