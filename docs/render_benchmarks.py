"""Render ``benchmarks/results/*.json`` as reStructuredText tables for the benchmarks page.

Run by ``docs/conf.py`` at every build; writes ``docs/_generated/benchmarks_tables.rst``.
Tolerant by design: a missing results file gives a note saying how to produce it, and a
section whose keys are not where this script expects them (the benchmarks changed) is
replaced by a note rather than failing the docs build.
Standalone: ``python docs/render_benchmarks.py [results_dir] [out_file]``.
"""

from __future__ import annotations

import ast
import json
import math
import pathlib
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

#: benchmark name -> (title, renderer); the order of the page
BENCHMARKS: dict[str, tuple[str, Callable[[dict[str, Any]], list[str]]]] = {}


def benchmark(name: str, title: str):
    def register(fn):
        BENCHMARKS[name] = (title, fn)
        return fn

    return register


# -- formatting ---------------------------------------------------------------------------------


def num(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; ``n/a`` for None and NaN."""
    if value is None or isinstance(value, bool):
        return "n/a" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(value):
        return "n/a"
    return f"{value:.{digits}g}"


def ms(seconds: Any) -> str:
    return "n/a" if seconds is None else num(1e3 * float(seconds))


def ratio(value: Any) -> str:
    text = num(value)
    return text if text == "n/a" else f"{text}x"


def mark(ok: Any) -> str:
    if ok is None:
        return ""
    return "PASS" if ok else "MISS"


def escape(text: Any) -> str:
    """``text`` as plain reStructuredText: no markup, on one line."""
    text = " ".join(str(text).split())
    for char in "\\*|`_":
        text = text.replace(char, "\\" + char)
    return text


def cell(text: Any) -> str:
    # a list-table cell is one paragraph
    return "n/a" if text is None else escape(text) or " "


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> list[str]:
    rows = list(rows)
    if not rows:
        return []
    lines = [f".. list-table:: {escape(caption)}".rstrip(), "   :header-rows: 1", ""]
    for row in [list(header), *rows]:
        first, *rest = row
        lines.append(f"   * - {cell(first)}")
        lines.extend(f"     - {cell(value)}" for value in rest)
    return [*lines, ""]


def heading(text: str, char: str) -> list[str]:
    return [text, char * len(text), ""]


def note(text: str) -> list[str]:
    return [f".. note:: {text}", ""]


def literal(text: str) -> str:
    return "``" + str(text).replace("`", "'") + "``"


# -- per benchmark ------------------------------------------------------------------------------


@benchmark("matmul", "Coded A @ B on a LocalCluster (``bench_matmul``)")
def render_matmul(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    config = results.get("config", {})
    if config:
        out += [
            f"``A`` {config.get('m')} x {config.get('p')}, ``B`` {config.get('p')} x "
            f"{config.get('q')}, k = {config.get('k')} row blocks, n = {config.get('n')} coded "
            f"tasks, {config.get('trials')} trials per method and straggler model, "
            f"{config.get('workers')} workers x {config.get('threads_per_worker')} threads.",
            "",
        ]
    out += table(
        ["target", "value", "limit", ""],
        ([t.get("target"), num(t.get("value")), num(t.get("limit")), mark(t.get("ok"))]
         for t in results.get("targets", [])),
        "Targets",
    )
    for model, data in results.get("stragglers", {}).items():
        methods = data.get("methods", {})
        rows = [
            [name, num(m.get("median")), num(m.get("p99")), ratio(m.get("median_vs_uncoded")),
             ratio(m.get("p99_vs_uncoded")), ratio(m.get("median_vs_floor")),
             num(m.get("median_used")), num(m.get("median_cancelled"))]
            for name, m in methods.items()
        ]
        rows.append(["floor", num(data.get("floor_median")), num(data.get("floor_p99")),
                     "", "", "1x", "", ""])
        out += table(
            ["method", "median s", "p99 s", "median / uncoded", "p99 / uncoded",
             "median / floor", "results used", "cancelled"],
            rows,
            f"Stragglers: {data.get('model', model)} (floor: the k-th fastest worker)",
        )
    none = results.get("no_stragglers", {}).get("methods", {})
    out += table(
        ["method", "median s", "p99 s", "median / uncoded", "results used", "decode ms"],
        ([name, num(m.get("median")), num(m.get("p99")), ratio(m.get("median_vs_uncoded")),
          num(m.get("median_used")), ms(m.get("median_decode"))] for name, m in none.items()),
        "No stragglers (the overhead of coding)",
    )
    return out


@benchmark("regimes", "The matrix of regimes on threads (``bench_regimes``)")
def render_regimes(results: dict[str, Any]) -> list[str]:
    out: list[str] = [
        f"n = {results.get('n')}, stragglers spent in ``mode={results.get('mode')!r}`` with a "
        f"base of {ms(results.get('base'))} ms, {results.get('seeds')} seeds per cell; "
        "medians of the wall time in seconds (CPU seconds in parentheses). The floor is the "
        "k-th smallest injected delay (compute left out).",
        "",
    ]
    out += table(
        ["cell", "systematic polar", "value", "target", ""],
        ([t.get("cell"), t.get("ratio"), ratio(t.get("value")), f"<= {num(t.get('target'))}",
          mark(t.get("pass"))] for t in results.get("targets", [])),
        "Targets",
    )
    cells = results.get("cells", {})
    methods = results.get("methods") or [
        name for name in next(iter(cells.values()), {}) if name != "floor"
    ]
    out += table(
        ["product | rate | stragglers", *methods, "floor"],
        ([key, *(f"{num(stats[m].get('median_wall'))} ({num(stats[m].get('median_cpu'), 2)})"
                 for m in methods), num(stats.get("floor"))]
         for key, stats in cells.items()),
        "Median wall time [s] (CPU [s])",
    )
    return out


@benchmark("codes", "The codes alone (``bench_codes``)")
def render_codes(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    throughput = results.get("throughput", {})
    target = throughput.get("target_ratio")
    out += table(
        ["n", "k", "block KiB", "encode ratio", "decode ratio", "relative error", ""],
        ([r.get("n"), r.get("k"), r.get("block_bytes", 0) // 1024, num(r.get("encode_ratio")),
          num(r.get("decode_ratio")), num(r.get("relative_error"), 2),
          "" if target is None else mark(min(r.get("encode_ratio", 0), r.get("decode_ratio", 0)) >= target)]
         for r in throughput.get("rows", [])),
        "Polar encode/decode throughput (reference time / time; target >= "
        f"{num(target)})",
    )
    decodability = results.get("decodability", {})
    out += table(
        ["n", "k", "decoder", "decodable() ms", "one below ms", "add() mean ms", "results / k"],
        ([r.get("n"), r.get("k"), r.get("decoder"), ms(r.get("decodable_at_prefix_s")),
          ms(r.get("decodable_below_s")), ms(r.get("add_mean_s")), num(r.get("received_over_k"))]
         for r in decodability.get("rows", [])),
        f"Value-free decodability check (target <= {ms(decodability.get('target_s'))} ms)",
    )
    out += table(
        ["n", "k", "block KiB", "polar ms", "MDS ms", "MDS / polar", "target", ""],
        ([r.get("n"), r.get("k"), r.get("block_bytes", 0) // 1024, ms(r.get("polar_s")),
          ms(r.get("mds_s")), ratio(r.get("mds_over_polar")),
          "" if r.get("target") is None else f">= {num(r.get('target'))}", mark(r.get("pass"))]
         for r in results.get("polar_vs_mds", {}).get("rows", [])),
        "Decode time: polar vs MDS",
    )
    after = results.get("after_decodable", {})
    if after:
        out += [
            f"After the decodable moment (n = {after.get('n')}, k = {after.get('k')}): the "
            f"incremental decoder's ``result()`` takes {ms(after.get('incremental_s'))} ms, a "
            f"from-scratch ``decode`` {ms(after.get('from_scratch_s'))} ms.",
            "",
        ]
    out += table(
        ["rate", "code", "n", "k", "mean results / k", "p99", "max"],
        ([num(r.get("rate")), r.get("code"), r.get("n"), r.get("k"), num(r.get("mean")),
          num(r.get("p99")), num(r.get("max"))]
         for r in results.get("results_needed", {}).get("rows", [])),
        "Results needed before decoding, over random arrival orders",
    )
    accuracy = results.get("accuracy", {})
    out += table(
        ["n", "k", "code", "dtype", "relative error", ""],
        ([r.get("n"), r.get("k"), r.get("code"), r.get("dtype"), num(r.get("error"), 2),
          mark(not r.get("over_limit", False))]
         for r in accuracy.get("rows", [])),
        "Decode accuracy",
    )
    return out


@benchmark("distributed", "Coded A @ B across worker processes (``bench_distributed``)")
def render_distributed(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    shape = results.get("shape_A") or ["?", "?"]
    out += [
        f"``A`` {shape[0]} x {shape[1]} float64 in k = {results.get('k')} row blocks, ``B`` "
        f"with {results.get('q')} columns, n = {results.get('n')}, "
        f"{results.get('workers')} worker processes, {results.get('trials')} trials per "
        "method. Ratios are against plain Dask's median; cpu is the worker processes' CPU "
        "seconds (median).",
        "",
    ]
    out += table(
        ["target", ""],
        ([name, mark(ok)] for name, ok in results.get("targets", {}).items()),
        "Targets (polar)",
    )
    sections = [("no_stragglers", "No stragglers"),
                ("stragglers", f"Stragglers: {results.get('straggler_model')}")]
    for key, caption in sections:
        out += table(
            ["method", "median s", "x plain", "cpu s", "moved / |A|", "max received / |A|",
             "peak / |A|", "matches"],
            ([name, num(m.get("median_wall")), ratio(m.get("wall_vs_plain")),
              num(m.get("median_cpu")), num(m.get("moved_over_A")),
              num(m.get("max_received_over_A")), num(m.get("peak_over_A")),
              "yes" if m.get("ok") else "NO"]
             for name, m in results.get(key, {}).items()),
            caption,
        )
    limited = results.get("memory_limited", {})
    if limited:
        shape = limited.get("shape_A") or ["?", "?"]
        matches = "yes" if limited.get("ok") else "NO"
        out += [
            f"Memory-limited run: ``A`` {shape[0]} x {shape[1]}, each worker's "
            f"``memory_limit`` {num(limited.get('memory_limit', 0) / 2**20)} MiB (0.6 ``|A|``): "
            f"{num(limited.get('wall'))} s, matches plain Dask: {matches}, peak managed "
            f"memory {num(limited.get('peak_over_A'))} ``|A|``, moved "
            f"{num(limited.get('moved_over_A'))} ``|A|``.",
            "",
        ]
    return out


@benchmark("faults", "Real stragglers: blocked, failing, paused (``bench_faults``)")
def render_faults(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    cluster, threads = results.get("cluster", {}), results.get("threads", {})
    out += [
        f"Faults injected with ``mode={cluster.get('mode', 'block')!r}``: none of them looks at "
        f"the cancel flag. Cluster: 4 worker processes, ``A`` {num(cluster.get('A_MiB'))} MiB "
        f"in 32 row blocks, ``B`` with 64 columns, polar n = 64; blocked tasks sleep "
        f"{num(cluster.get('block_seconds'))} s, the paused worker stops for "
        f"{num(cluster.get('pause_seconds'))} s. Polar: median of {cluster.get('trials')} "
        "trials; plain Dask and uncoded: one trial per fault (each waits the whole fault).",
        "",
    ]
    rows = []
    for kind, cell in cluster.get("results", {}).items():
        row = [kind]
        for method in ("polar", "plain", "uncoded"):
            m = cell.get(method, {})
            row.append(num(m.get("median")) + (" (fails)" if m.get("errors") else ""))
        verdict = cluster.get("verdicts", {}).get(kind, {})
        row += [ratio(verdict.get("ratio")) if verdict else "", mark(verdict.get("pass")) if verdict else ""]
        rows.append(row)
    out += table(["fault", "polar s", "plain s", "uncoded s", "polar x fault-free", "target"],
                 rows, "dask.distributed (cluster layout)")
    rows = []
    for kind, cell in threads.get("results", {}).items():
        verdict = threads.get("verdicts", {}).get(kind, {})
        rows.append([kind, num(cell.get("median")), ratio(verdict.get("ratio")) if verdict else "",
                     mark(verdict.get("pass")) if verdict else ""])
    out += table(["fault", "polar s", "x fault-free", "target"], rows,
                 f"Threads (A {num(threads.get('A_MiB'))} MiB, B with 16 columns)")
    return out


@benchmark("simulate", "The simulator at 16,384 workers (``bench_simulate``)")
def render_simulate(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    speed = results.get("speed", {})
    if speed:
        projected = speed.get("projected_all_exact_seconds")
        out += [
            f"Speed: {speed.get('workers')} workers x {speed.get('trials')} trials, every method: "
            f"{num(speed.get('wall_seconds'))} s measured"
            + (f" ({num(projected)} s projected with the exact inactivation check on every "
               "trial)" if projected is not None else "")
            + "; target <= 10 s.",
            "",
        ]
    for model, data in results.get("side_by_side", {}).items():
        out += table(
            ["method", "n", "trials", "median s", "p99 s", "median / uncoded", "p99 / uncoded",
             "median / floor", "results / k"],
            ([r.get("method"), r.get("n"), r.get("trials"), num(r.get("median")), num(r.get("p99")),
              ratio(r.get("median_vs_uncoded")), ratio(r.get("p99_vs_uncoded")),
              ratio(r.get("median_vs_floor")), num(r.get("needed_over_k"))]
             for r in data.get("summary", [])),
            f"{model}: {data.get('model', '')}",
        )
    out += table(
        ["n", "decoder", "design", "mean results / k", "max results / k"],
        ([r.get("n"), r.get("decoder"), r.get("design"), num(r.get("mean_over_k")),
          num(r.get("max_over_k"))] for r in results.get("polar_design", {}).get("rows", [])),
        "Polar design at large n",
    )
    validation = results.get("validation", {})
    out += table(
        ["method", "median abs(simulated - real) s", "max abs(simulated - real) s"],
        ([name, num(m.get("median_diff")), num(m.get("max_abs_diff"))]
         for name, m in validation.get("methods", {}).items()),
        f"Simulator vs real jobs (n = {validation.get('n')}, k = {validation.get('k')}, "
        f"{validation.get('trials')} trials)",
    )
    return out


# -- the page -----------------------------------------------------------------------------------


def machine_line(record: dict[str, Any]) -> str:
    machine = record.get("machine", {})
    parts = [
        f"measured {machine.get('date', '(date unknown)')}",
        "quick mode" if record.get("quick") else "full mode",
        f"{machine.get('cpus_usable', '?')} CPUs",
        f"Python {machine.get('python', '?')}",
        f"numpy {machine.get('numpy', '?')}",
        f"{num(record.get('wall_seconds'))} s in all",
    ]
    command = machine.get("command")
    if command:
        # the interpreter's absolute path says nothing to a reader
        parts.append("command " + literal(" ".join(["python", *command.split()[1:]])))
    return "; ".join(parts) + "."


def render_generic(results: dict[str, Any]) -> list[str]:
    """A benchmark this page has no layout for: its targets, if it reports them."""
    targets = results.get("targets", []) if isinstance(results, dict) else []
    return table(
        ["target", "value", "limit", ""],
        ([t.get("target"), num(t.get("value")), num(t.get("limit")), mark(t.get("ok"))]
         for t in targets if isinstance(t, dict)),
        "Targets",
    )


def summary(module: pathlib.Path) -> str:
    """The first paragraph of a benchmark module's docstring, read without importing it."""
    try:
        doc = ast.get_docstring(ast.parse(module.read_text())) or ""
    except (OSError, SyntaxError, ValueError):
        return ""
    return " ".join(doc.split("\n\n")[0].split())


def render_plots(results_dir: pathlib.Path, out_dir: pathlib.Path) -> list[str]:
    """Copy the benchmarks' plots next to the tables and show them."""
    lines: list[str] = []
    for path in sorted(results_dir.glob("*.png")):
        target = out_dir / f"bench_{path.name}"
        data = path.read_bytes()
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
        lines += [
            f".. figure:: /_generated/{target.name}",
            f"   :alt: {path.stem}",
            "   :width: 100%",
            "",
            f"   ``benchmarks/results/{path.name}``",
            "",
        ]
    if lines:
        lines = heading("Plots", "~") + lines
    return lines


def render_text(results_dir: pathlib.Path, out_dir: pathlib.Path | None = None) -> str:
    lines: list[str] = []
    found = False
    known = dict(BENCHMARKS)
    if results_dir.is_dir():
        for path in sorted(results_dir.glob("*.json")):
            known.setdefault(path.stem, (f"``bench_{path.stem}``", render_generic))
    for name, (title, render) in known.items():
        lines += heading(title, "~")
        path = results_dir / f"{name}.json"
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            lines += note(f"No results yet: ``python -m benchmarks --quick {name}`` (or "
                          "``make bench``) writes them.")
            continue
        except (OSError, ValueError) as err:
            lines += note(f"``{path.name}`` could not be read ({type(err).__name__}).")
            continue
        if not isinstance(record, dict):
            lines += note(f"``{path.name}`` does not hold a benchmark record.")
            continue
        found = True
        if name not in BENCHMARKS:
            described = summary(results_dir.parent / f"bench_{name}.py")
            if described:
                lines += [escape(described), ""]
        lines += [machine_line(record), ""]
        try:
            body = render(record.get("results", {}))
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            body = note(f"``{path.name}`` has a layout this page does not know "
                        f"({escape(type(err).__name__)}: {escape(err)}); see the file itself.")
        lines += body or note(f"This page has no table for this benchmark yet; its numbers are in "
                              f"``benchmarks/results/{path.name}``.")
    if out_dir is not None and results_dir.is_dir():
        lines += render_plots(results_dir, out_dir)
    if not found:
        lines = note("No benchmark results were found in ``benchmarks/results/`` when these "
                     "docs were built. Run ``make bench`` and rebuild the docs.") + lines
    return "\n".join(lines) + "\n"


def render(results_dir: pathlib.Path, out_file: pathlib.Path) -> None:
    """Write the tables for every benchmark in `BENCHMARKS` to ``out_file``."""
    out_file = pathlib.Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    text = render_text(pathlib.Path(results_dir), out_file.parent)
    # rewrite only on change, so Sphinx does not re-read the page for nothing
    if not out_file.exists() or out_file.read_text() != text:
        out_file.write_text(text)


if __name__ == "__main__":
    here = pathlib.Path(__file__).resolve().parent
    results = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else here.parent / "benchmarks" / "results"
    target = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else here / "_generated" / "benchmarks_tables.rst"
    render(results, target)
    print(f"wrote {target}")
