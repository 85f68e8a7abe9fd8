"""Benchmark of the erasure codes in `dask_polar.codes`: speed, results needed, accuracy.

Measures, side by side in one run (medians over repeats, the contenders of a row timed in
interleaved rounds so that the noise of a shared 2-core machine hits all of them alike):

1. ``PolarCode`` encode and decode throughput for ``n`` in {64, 256, 1024}, ``k = n/2``,
   with 128 KiB and 1 MiB float64 blocks, as ``t_reference / t_op``. The reference is the
   same number of block additions as the butterfly, ``(n/2) log2 n``, done as ``log2(n)/2``
   in-place ``a += b`` on ``(n, block)`` arrays: a plain numpy add over the same bytes.
   Decoding starts from the first decodable prefix of a random arrival order. A "touch"
   column times one fresh ``(n, block)`` allocation: on the project's VM the first touch of
   new memory is slow and varies, and encode and decode allocate where the reference does not.
2. The value-free check ``code.decodable(mask)`` at ``n = 1024, k = 512`` (full mode: also
   4096) for the SC and the inactivation decoders, at the first decodable prefix and one
   result below it, and the mean cost of one incremental ``decoder.add``.
3. Polar vs MDS decode time at ``n`` in {256, 1024, 4096}, ``k = n/2``, 128 KiB blocks (quick
   mode: 16 KiB at 4096), from the first decodable prefix of the same arrival order.
4. Time left after the decodable moment: the incremental decoder's ``result()`` vs a
   from-scratch ``code.decode(results)`` of the same set; and whether the decoder's buffer is
   freed as soon as it is dropped.
5. Mean results needed / ``k`` (``code.min_results`` over random arrival orders) for polar
   SC, polar inactivation, MDS, local product and replication at rates 1/2 and 3/4.
6. float32 vs float64 decode error of polar and MDS codes vs ``n``.
7. The systematic parity encode: every parity block of a systematic polar code formed as
   the parity tasks form it (each block's rows scaled to one magnitude, row panel by row
   panel, `dask_polar.array._systematic`), in GB/s of data blocks read, against numpy's
   ``acc += block`` over the same blocks (the blocks' one-off scaling, which the first
   parity task to read a block pays, is reported apart). Target: at least 0.5 x numpy's add.
8. Certified decoding (`dask_polar.codes.certify`): for systematic polar, butterfly polar,
   MDS and local product codes, on ordinary data (``randn``) and on mixed magnitudes
   (``randn * 10**randint(-4, 5)``, A and B), with a quarter of the data blocks' own results
   missing: the decode alone, the check where the decode runs (its weights and the
   magnitudes it combined: the suspect entries) and where the data blocks are (the
   suspects computed again), against the decoded blocks' own products ``A_i @ B`` (what
   computing them directly instead would cost); the entries computed again, and each
   entry's worst error against its GEMM bound ``p eps (|A_i| @ |B|)`` without and with the
   check, for a thin ``B`` (8 columns: the suspects' rows are computed again) and a wider
   one (64: their floor first). Target: every entry within 16 x its bound with the check
   (the costs are reported).

Every section prints a table with its targets marked PASS or MISS (a miss is reported, not
raised); `run` returns the numbers as a dict.

Run it with ``make bench`` (every benchmark, quick mode) or ``python -m benchmarks --quick
codes`` (about a minute); ``python -m benchmarks codes`` is the full run (a few minutes, up to
about 8 GiB of memory). Results go to ``benchmarks/results/codes.json``.
"""

from __future__ import annotations

import gc
import math
import time
import weakref
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from dask_polar.codes import (
    ErasureCode,
    IncrementalDecoder,
    LocalProductCode,
    MDSCode,
    PolarCode,
    ReplicationCode,
)

__all__ = ["run"]

SEED = 20_260_801
KIB = 1024
FLOAT64 = 8  # bytes

# targets from the project issue
TARGET_THROUGHPUT = 0.5  # t_reference / t_op, at least
TARGET_DECODABLE_S = 1e-3  # one value-free decodability check, at most
TARGET_MDS_OVER_POLAR = {1024: 1.0, 4096: 2.0}  # polar faster, 2x faster at 4096
TARGET_OVERHEAD = (256, 128, 1.08)  # polar inactivation: mean results / k at (n, k), at most
ERROR_LIMIT = {"float32": 1e-4, "float64": 1e-8}
TARGET_GEMM_FACTOR = 16.0  # certified decoding: an entry's error over its GEMM bound, at most

#: (setup, timed): setup builds the untimed state that ``timed`` consumes
Timer = tuple[Callable[[], Any], Callable[[Any], Any]]


# -- helpers ------------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def interleaved(
    timers: dict[str, Timer], repeats: int, warmup: int = 1, keep: Collection[str] = ()
) -> tuple[dict[str, float], dict[str, Any], dict[str, list[float]]]:
    """Median seconds of each timer, run in rounds of one call each.

    The warm-up rounds are dropped: on this VM the first touch of fresh memory costs several
    times a later one. As in `timeit`, garbage is collected before and the collector is off
    during each timed call, so one call's cyclic garbage (the polar decoder's buffers, see
    `buffers_freed`) is neither timed in the next call nor left to grow the heap.
    Returns the medians, the last output of the timers in ``keep`` and all timed samples.
    """
    times: dict[str, list[float]] = {name: [] for name in timers}
    last: dict[str, Any] = {}
    for round_ in range(warmup + repeats):
        for name, (setup, timed) in timers.items():
            gc.collect()  # before setup, so that it can reuse the memory just freed
            state = setup()
            gc.disable()
            try:
                start = time.perf_counter()
                out = timed(state)
                elapsed = time.perf_counter() - start
            finally:
                gc.enable()
            del state  # free a big buffer before the next setup allocates its own
            if name in keep:
                last[name] = out
            del out
            if round_ >= warmup:
                times[name].append(elapsed)
    return {name: float(np.median(t)) for name, t in times.items()}, last, times


def median_call(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def no_setup() -> None:
    return None


def reference_adds(n: int, width: int) -> Timer:
    """``(n/2) log2 n`` block additions as ``log2(n)/2`` in-place adds of ``(n, width)`` arrays."""
    a = np.ones((n, width))
    b = np.ones((n, width))
    full, odd = divmod(n.bit_length() - 1, 2)

    def timed(_: None) -> None:
        for _ in range(full):
            np.add(a, b, out=a)
        if odd:  # the remaining n/2 block additions
            np.add(a[: n // 2], b[: n // 2], out=a[: n // 2])

    return no_setup, timed


def fresh_touch(n: int, width: int) -> Timer:
    """Allocate and fill a fresh ``(n, width)`` array: the first-touch cost of a new buffer."""

    def timed(_: None) -> None:
        np.empty((n, width)).fill(1.0)

    return no_setup, timed


def first_decodable(code: ErasureCode, order: Sequence[int]) -> int:
    """Arrivals, in ``order``, until an incremental decoder reports decodable (value-free)."""
    decoder = code.decoder()
    token = np.zeros(1)  # decodability does not look at values: keep the buffer tiny
    for count, index in enumerate(order, 1):
        if decoder.add(int(index), token):
            return count
    raise RuntimeError(f"{code!r} not decodable from the whole order")


def filled_decoder(
    code: ErasureCode, coded: np.ndarray, indices: Sequence[int]
) -> IncrementalDecoder:
    """A fresh decoder holding ``coded[indices]`` (``result()`` decodes in place: one per call)."""
    decoder = code.decoder()
    decoder.update({int(j): coded[j] for j in indices})
    if not decoder.decodable:
        raise RuntimeError(f"{code!r}: decoder not decodable at a prefix min_results accepted")
    return decoder


def buffers_freed(code: ErasureCode, coded: np.ndarray, indices: Sequence[int]) -> bool:
    """Whether a decoder's buffer is released as soon as ``result()`` and the decoder are dropped.

    If not, something in the decode keeps it in a reference cycle, and a buffer of
    ``n x block`` bytes per decode waits for the cyclic garbage collector.
    """
    decoder = filled_decoder(code, coded, indices)
    gc.collect()
    gc.disable()
    try:
        buffer = weakref.ref(decoder._buffer)  # private: the buffer is not otherwise exposed
        decoder.result()
        del decoder
        return buffer() is None
    finally:
        gc.enable()
        gc.collect()


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """Max abs error relative to max abs data, computed in float64."""
    scale = float(np.abs(want).max())
    worst = 0.0
    for g, w in zip(got, want):  # row by row: no full-size float64 temporaries
        worst = max(worst, float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max()))
    return worst / scale


def size_label(width: int, itemsize: int = FLOAT64) -> str:
    size = width * itemsize
    return f"{size // (KIB * KIB)} MiB" if size >= KIB * KIB else f"{size // KIB} KiB"


# -- 1. encode / decode throughput --------------------------------------------------------------


def throughput(quick: bool) -> dict[str, Any]:
    rng = np.random.default_rng(SEED + 1)
    repeats = 5 if quick else 11
    widths = (128 * KIB // FLOAT64, KIB * KIB // FLOAT64)
    configs = [
        (n, width)
        for width in widths
        for n in (64, 256, 1024)
        if not (quick and n == 1024 and width == widths[1])  # 1 GiB buffers: full mode only
    ]
    print(
        "\n[1] PolarCode (inactivation) encode/decode throughput, k = n/2, float64\n"
        f"    ratio = t_ref / t_op; t_ref = (n/2)log2(n) block adds as log2(n)/2 in-place a += b"
        f" on (n, block); target ratio >= {TARGET_THROUGHPUT}; medians of {repeats}\n"
        "    decode: result() of a fresh decoder holding the first decodable prefix;"
        " touch: allocate and fill one fresh (n, block) array (page faults, no arithmetic)"
    )
    print(
        f"    {'n':>5} {'block':>8} {'recv/k':>7} {'ref ms':>8} {'enc ms':>8} {'enc ratio':>14}"
        f" {'dec ms':>8} {'dec ratio':>14} {'touch ms':>8} {'rel err':>8}"
    )
    rows = []
    for n, width in configs:
        k = n // 2
        code = PolarCode(n, k)
        data = rng.standard_normal((k, width))
        coded = code.encode(data)
        order = rng.permutation(n)
        received = first_decodable(code, order)
        prefix = order[:received]
        timers = {
            "reference": reference_adds(n, width),
            "touch": fresh_touch(n, width),
            "encode": (no_setup, lambda _: code.encode(data)),
            "decode": (lambda: filled_decoder(code, coded, prefix), lambda d: d.result()),
        }
        t, last, samples = interleaved(timers, repeats, keep=("decode",))
        error = relative_error(last.pop("decode"), data)
        row = {
            "n": n,
            "k": k,
            "block_bytes": width * FLOAT64,
            "received": received,
            "min_results": code.min_results(order),
            "reference_s": t["reference"],
            "encode_s": t["encode"],
            "decode_s": t["decode"],
            "touch_s": t["touch"],
            "encode_ratio": t["reference"] / t["encode"],
            "decode_ratio": t["reference"] / t["decode"],
            "relative_error": error,
            "samples_s": samples,
        }
        rows.append(row)
        print(
            f"    {n:>5} {size_label(width):>8} {received / k:>7.3f} {1e3 * t['reference']:>8.2f}"
            f" {1e3 * t['encode']:>8.2f} {row['encode_ratio']:>9.2f}"
            f" {mark(row['encode_ratio'] >= TARGET_THROUGHPUT)}"
            f" {1e3 * t['decode']:>8.2f} {row['decode_ratio']:>9.2f}"
            f" {mark(row['decode_ratio'] >= TARGET_THROUGHPUT)}"
            f" {1e3 * t['touch']:>8.2f} {error:>8.1e}",
            flush=True,
        )
        if row["min_results"] != received:
            print(f"    !! decoder stream says {received}, min_results says {row['min_results']}")
        del data, coded, timers, last
    return {"repeats": repeats, "target_ratio": TARGET_THROUGHPUT, "rows": rows}


# -- 2. value-free decodability check and incremental add ---------------------------------------


def decodability(quick: bool) -> dict[str, Any]:
    rng = np.random.default_rng(SEED + 2)
    calls = 5
    # (n, masks, streams); full mode adds n = 4096, where one stream alone takes ~40 s
    configs = [(1024, 20, 3)] if quick else [(1024, 100, 10), (4096, 10, 1)]
    print(
        f"\n[2] value-free decodable(mask), k = n/2: median over random orders of the time at the"
        f" first decodable prefix and one result below it (each mask: median of {calls} calls);"
        f" target <= {TARGET_DECODABLE_S * 1e3:g} ms\n"
        "    add(): one incremental decoder.add (8-byte values: bookkeeping only), from the"
        " first arrival to the decodable one"
    )
    print(
        f"    {'n':>5} {'decoder':<13} {'orders':>6} {'at prefix ms':>16} {'below ms':>16}"
        f" {'max ms':>8} {'streams':>7} {'add mean us':>12} {'add max ms':>11} {'recv/k':>7}"
    )
    rows = []
    for n, masks, streams in configs:
        k = n // 2
        orders = [rng.permutation(n) for _ in range(max(masks, streams))]
        for kind in ("sc", "inactivation"):
            code = PolarCode(n, k, decoder=kind)
            at, below = [], []
            for order in orders[:masks]:
                needed = code.min_results(order)
                mask = np.zeros(n, dtype=bool)
                mask[order[:needed]] = True
                at.append(median_call(lambda: code.decodable(mask), calls))
                mask[order[needed - 1]] = False
                below.append(median_call(lambda: code.decodable(mask), calls))
            adds, received = [], []
            token = np.zeros(1)
            for order in orders[:streams]:
                decoder = code.decoder()
                for index in order:
                    start = time.perf_counter()
                    done = decoder.add(int(index), token)
                    adds.append(time.perf_counter() - start)
                    if done:
                        break
                received.append(decoder.received)
            row = {
                "n": n,
                "k": k,
                "decoder": kind,
                "orders": masks,
                "streams": streams,
                "decodable_at_prefix_s": float(np.median(at)),
                "decodable_below_s": float(np.median(below)),
                "decodable_max_s": float(max(at + below)),
                "add_mean_s": float(np.mean(adds)),
                "add_max_s": float(np.max(adds)),
                "stream_total_s": float(np.sum(adds)) / streams,
                "received_over_k": float(np.mean(received)) / k,
            }
            rows.append(row)
            at_ok = row["decodable_at_prefix_s"] <= TARGET_DECODABLE_S
            below_ok = row["decodable_below_s"] <= TARGET_DECODABLE_S
            print(
                f"    {n:>5} {kind:<13} {masks:>6}"
                f" {1e3 * row['decodable_at_prefix_s']:>11.3f} {mark(at_ok)}"
                f" {1e3 * row['decodable_below_s']:>11.3f} {mark(below_ok)}"
                f" {1e3 * row['decodable_max_s']:>8.3f} {streams:>7}"
                f" {1e6 * row['add_mean_s']:>12.1f}"
                f" {1e3 * row['add_max_s']:>11.3f} {row['received_over_k']:>7.3f}",
                flush=True,
            )
    return {"target_s": TARGET_DECODABLE_S, "calls": calls, "rows": rows}


# -- 3. polar vs MDS decode ---------------------------------------------------------------------


def polar_vs_mds(quick: bool) -> dict[str, Any]:
    rng = np.random.default_rng(SEED + 3)
    repeats = 5 if quick else 9
    block = 128 * KIB // FLOAT64
    # quick mode keeps n = 4096 with 16 KiB blocks: at 128 KiB the MDS decode alone is ~70
    # GFLOP, seconds per call
    sizes = [(256, block), (1024, block), (4096, 16 * KIB // FLOAT64 if quick else block)]
    print(
        f"\n[3] polar (inactivation) vs MDS decode, k = n/2, float64, medians of {repeats};"
        " both from the first decodable prefix of the same arrival order\n"
        "    ratio = t_MDS / t_polar; target: > 1 at n = 1024, >= 2 at n = 4096"
        + (
            "\n    quick mode: n = 4096 uses 16 KiB blocks (full mode: 128 KiB)"
            if quick
            else ""
        )
    )
    print(
        f"    {'n':>5} {'block':>8} {'polar recv/k':>12} {'polar ms':>9} {'MDS ms':>9}"
        f" {'ratio':>12} {'polar err':>9} {'MDS err':>9}"
    )
    rows = []
    for n, width in sizes:
        k = n // 2
        data = rng.standard_normal((k, width))
        order = rng.permutation(n)
        timers, coded, prefixes = {}, {}, {}
        for name, code in (("polar", PolarCode(n, k)), ("mds", MDSCode(n, k))):
            coded[name] = code.encode(data)
            prefixes[name] = order[: code.min_results(order)]
            timers[name] = (
                lambda code=code, name=name: filled_decoder(code, coded[name], prefixes[name]),
                lambda d: d.result(),
            )
        t, last, samples = interleaved(timers, repeats, keep=("polar", "mds"))
        ratio = t["mds"] / t["polar"]
        target = TARGET_MDS_OVER_POLAR.get(n)
        ok = None if target is None else (ratio >= target if target > 1 else ratio > target)
        row = {
            "n": n,
            "k": k,
            "block_bytes": width * FLOAT64,
            "polar_received": len(prefixes["polar"]),
            "mds_received": len(prefixes["mds"]),
            "polar_s": t["polar"],
            "mds_s": t["mds"],
            "mds_over_polar": ratio,
            "target": target,
            "pass": ok,
            "polar_error": relative_error(last["polar"], data),
            "mds_error": relative_error(last["mds"], data),
            "samples_s": samples,
        }
        rows.append(row)
        print(
            f"    {n:>5} {size_label(width):>8} {row['polar_received'] / k:>12.3f}"
            f" {1e3 * t['polar']:>9.1f} {1e3 * t['mds']:>9.1f}"
            f" {ratio:>7.2f} {'' if ok is None else mark(ok):>4}"
            f" {row['polar_error']:>9.1e} {row['mds_error']:>9.1e}",
            flush=True,
        )
        del data, coded, timers, last
    return {"repeats": repeats, "rows": rows}


# -- 4. time left after the decodable moment ----------------------------------------------------


def after_decodable(quick: bool) -> dict[str, Any]:
    rng = np.random.default_rng(SEED + 4)
    repeats = 3 if quick else 11
    n, k, width = 1024, 512, 128 * KIB // FLOAT64
    code = PolarCode(n, k)
    data = rng.standard_normal((k, width))
    coded = code.encode(data)
    order = rng.permutation(n)
    prefix = order[: first_decodable(code, order)]
    timers = {
        "incremental": (lambda: filled_decoder(code, coded, prefix), lambda d: d.result()),
        "from_scratch": (lambda: {int(j): coded[j] for j in prefix}, code.decode),
    }
    t, _, samples = interleaved(timers, repeats)
    ratio = t["from_scratch"] / t["incremental"]
    freed = buffers_freed(code, coded, prefix)
    print(
        f"\n[4] time left after the decodable moment, polar n={n}, k={k}, {size_label(width)}"
        f" blocks, {len(prefix)} results, medians of {repeats}\n"
        f"    incremental result(): {1e3 * t['incremental']:.1f} ms   from-scratch"
        f" code.decode(dict): {1e3 * t['from_scratch']:.1f} ms   ratio {ratio:.2f}\n"
        f"    decoder buffer freed when result() and the decoder are dropped: {freed}"
        + ("" if freed else " (kept alive by a reference cycle until gc.collect(): a leak of"
           f" {n * width * FLOAT64 // (KIB * KIB)} MiB per decode until the collector runs)")
    )
    return {
        "n": n,
        "k": k,
        "block_bytes": width * FLOAT64,
        "received": len(prefix),
        "incremental_s": t["incremental"],
        "from_scratch_s": t["from_scratch"],
        "from_scratch_over_incremental": ratio,
        "buffer_freed_after_result": freed,
        "samples_s": samples,
    }


# -- 5. results needed --------------------------------------------------------------------------


def local_product_for(k: int, rate: float) -> LocalProductCode:
    """The local product code on ``k`` blocks whose rate is closest to ``rate``.

    Groups run from 2 to ``ceil(sqrt(k))`` (the default): a group of 1 is replication plus two
    global sums, and groups above ``sqrt(k)`` only transpose the grid. So rate 1/2 is out of
    reach: ``n/k`` is at most about 1.5 (groups of 2).
    """
    groups = range(2, max(2, math.isqrt(k - 1) + 1) + 1)
    best = min(groups, key=lambda g: abs(k / (k + -(-k // g) + g + 1) - rate))
    return LocalProductCode(k, group_size=best)


def results_needed(quick: bool) -> dict[str, Any]:
    sizes = (64, 256, 1024)
    trials = {64: 200, 256: 200, 1024: 50} if quick else {64: 2000, 256: 1000, 1024: 300}
    print(
        "\n[5] mean results needed / k over random arrival orders (code.min_results);"
        f" orders per n: {', '.join(f'{n}: {t}' for n, t in trials.items())}\n"
        f"    target: polar inactivation <= {TARGET_OVERHEAD[2]} at n={TARGET_OVERHEAD[0]},"
        f" k={TARGET_OVERHEAD[1]}; local product and replication have their own n (n/k shown)"
    )
    rows = []
    for rate, label in ((0.5, "1/2"), (0.75, "3/4")):
        header = "".join(f"{f'n={n}, k={int(rate * n)}':>24}" for n in sizes)
        print(f"    {'rate ' + label:<22}{header}")
        table: dict[str, list[str]] = {}
        for n in sizes:
            k = int(rate * n)
            codes: list[tuple[str, ErasureCode | None]] = [
                ("polar sc", PolarCode(n, k, decoder="sc")),
                ("polar inactivation", PolarCode(n, k)),
                ("mds", MDSCode(n, k)),
                ("local product", local_product_for(k, rate)),
                ("replication r=2", ReplicationCode(k, 2) if rate == 0.5 else None),
            ]
            for name, code in codes:
                if code is None:  # integer replication has no rate 3/4
                    table.setdefault(name, []).append(f"{'n/a':>24}")
                    continue
                rng = np.random.default_rng([SEED + 5, n, int(100 * rate)])  # same orders per n
                needed = np.array(
                    [code.min_results(rng.permutation(code.n)) for _ in range(trials[n])]
                ) / code.k
                row = {
                    "rate": rate,
                    "code": name,
                    "n": code.n,
                    "k": code.k,
                    "n_over_k": code.n / code.k,
                    "orders": trials[n],
                    "mean": float(needed.mean()),
                    "p99": float(np.quantile(needed, 0.99)),
                    "max": float(needed.max()),
                }
                if isinstance(code, LocalProductCode):
                    row["group_size"] = code.group_size
                rows.append(row)
                cell = f"{row['mean']:.3f}"
                if name == "polar inactivation" and (n, k) == TARGET_OVERHEAD[:2]:
                    row["pass"] = row["mean"] <= TARGET_OVERHEAD[2]
                    cell += f" {mark(row['pass'])}"
                elif name in ("local product", "replication r=2"):
                    extra = f"g={code.group_size}, " if isinstance(code, LocalProductCode) else ""
                    cell += f" ({extra}n/k {code.n / code.k:.2f})"
                table.setdefault(name, []).append(f"{cell:>24}")
        for name, cells in table.items():
            print(f"      {name:<20}" + "".join(cells), flush=True)
    return {"trials": {str(n): t for n, t in trials.items()}, "rows": rows}


# -- 6. decode accuracy -------------------------------------------------------------------------


def accuracy(quick: bool) -> dict[str, Any]:
    sizes = (64, 256, 1024) if quick else (64, 256, 1024, 4096)
    trials = 3 if quick else 10
    width = 256
    print(
        f"\n[6] decode error max|decoded - data| / max|data|, k = n/2, {width}-value blocks,"
        f" worst of {trials} arrival orders, each code at its first decodable prefix\n"
        f"    limits: float32 {ERROR_LIMIT['float32']:g}, float64 {ERROR_LIMIT['float64']:g}"
        " (* = over the limit)"
    )
    columns = [(name, dtype) for dtype in ("float64", "float32") for name in ("polar", "mds")]
    print(f"    {'n':>5}" + "".join(f"{f'{name} {dtype}':>16}" for name, dtype in columns))
    rows, over = [], []
    for n in sizes:
        k = n // 2
        rng = np.random.default_rng([SEED + 6, n])
        codes = {"polar": PolarCode(n, k), "mds": MDSCode(n, k)}
        worst = {column: 0.0 for column in columns}
        for _ in range(trials):
            data64 = rng.standard_normal((k, width))
            order = rng.permutation(n)
            for name, dtype in columns:
                code = codes[name]
                data = data64.astype(dtype)
                coded = code.encode(data)
                decoded = filled_decoder(code, coded, order[: code.min_results(order)]).result()
                if decoded.dtype != data.dtype:
                    over.append(f"{name} n={n}: {dtype} data decoded as {decoded.dtype}")
                worst[name, dtype] = max(worst[name, dtype], relative_error(decoded, data))
        cells = []
        for name, dtype in columns:
            error = worst[name, dtype]
            bad = error > ERROR_LIMIT[dtype]
            rows.append(
                {"n": n, "k": k, "code": name, "dtype": dtype, "error": error, "over_limit": bad}
            )
            if bad:
                over.append(f"{name} {dtype} n={n}: {error:.1e} > {ERROR_LIMIT[dtype]:g}")
            cells.append(f"{error:>15.1e}{'*' if bad else ' '}")
        print(f"    {n:>5}" + "".join(cells), flush=True)
    print("    over the limit: " + ("; ".join(over) if over else "none"))
    return {
        "width": width, "trials": trials, "limits": ERROR_LIMIT, "rows": rows, "over_limit": over
    }


# -- entry point --------------------------------------------------------------------------------


def parity_encode(quick: bool) -> dict[str, Any]:
    """Section 7: the systematic parity encode against numpy's add over the same bytes."""
    from dask_polar.array._systematic import RowFactors, SystematicLayout, _PanelSum
    from dask_polar.array._tasks import MIN_PANEL_ROWS

    repeats = 3 if quick else 7
    rows_out = []
    print(f"\n7. Systematic parity encode (GB/s of data blocks read; numpy: acc += block over "
          f"the same blocks; target ratio >= {TARGET_THROUGHPUT}; medians of {repeats})")
    print(f"    {'n':>5} {'block':>8} {'terms':>6} {'GB/s':>7} {'numpy GB/s':>11} {'ratio':>7}")
    for n, block_rows in [(64, 512), (256, 128)]:
        code = PolarCode(n, n // 2, systematic=True)
        layout = SystematicLayout.of(code)
        rng = np.random.default_rng(0)
        blocks = [rng.standard_normal((block_rows, 256)) for _ in range(code.k)]
        b = rng.standard_normal((256, 8))
        factors = RowFactors(n, 256)
        # the blocks are scaled once per job, as the first parity task that reads them
        # does: timed apart ("scale"), over the same bytes as one numpy add per block
        scale_start = time.perf_counter()
        scaled = [factors.scaled(i, block, b) for i, block in enumerate(blocks)]
        scale_seconds = time.perf_counter() - scale_start
        sums = [
            _PanelSum([(scaled[i], float(c)) for c, i in zip(coefficients, sources)], blocks[0])
            for coefficients, sources in layout.parity.values()
        ]
        count = sum(len(sources) for _, sources in layout.parity.values())
        acc = np.zeros_like(blocks[0])

        def encode(_: None) -> None:
            for parity in sums:
                for lo in range(0, block_rows, MIN_PANEL_ROWS):
                    parity[lo : lo + MIN_PANEL_ROWS]

        def reference(_: None) -> None:
            for _, sources in layout.parity.values():
                for i in sources:
                    np.add(acc, blocks[i], out=acc)

        t, _, _ = interleaved(
            {"encode": (no_setup, encode), "numpy": (no_setup, reference)}, repeats
        )
        nbytes = count * blocks[0].nbytes
        row = {
            "n": n, "k": code.k, "block_bytes": blocks[0].nbytes, "terms": count,
            "encode_gbps": nbytes / t["encode"] / 1e9, "numpy_gbps": nbytes / t["numpy"] / 1e9,
            "ratio": t["numpy"] / t["encode"], "scale_once_s": scale_seconds,
        }
        rows_out.append(row)
        print(f"    {n:>5} {size_label(block_rows * 256):>8} {count:>6} {row['encode_gbps']:>7.2f}"
              f" {row['numpy_gbps']:>11.2f} {row['ratio']:>7.2f} {mark(row['ratio'] >= TARGET_THROUGHPUT)}")
    return {"target_ratio": TARGET_THROUGHPUT, "rows": rows_out}


def gemm_ratio(got: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """The worst error of an entry of ``got`` (``a @ b`` decoded) over its GEMM bound
    ``p eps (|a| @ |b|)``, both in long double."""
    exact = a.astype(np.longdouble) @ b.astype(np.longdouble)
    bound = a.shape[1] * np.finfo(got.dtype).eps * (
        np.abs(a).astype(np.longdouble) @ np.abs(b).astype(np.longdouble)
    )
    error = np.abs(got.astype(np.longdouble) - exact)
    return float(np.max(error / np.maximum(bound, np.finfo(np.longdouble).tiny)))


def certified(quick: bool) -> dict[str, Any]:
    """Section 8: what certified decoding costs, on ordinary and mixed-magnitude data.

    With one BLAS thread, as the thread backend's tasks run: two BLAS threads on the two
    shared cores made the small products' times vary tenfold.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _certified(quick)


def _certified(quick: bool) -> dict[str, Any]:
    from dask_polar.codes.certify import Suspects, certify, decode_weights, required

    repeats = 3 if quick else 7
    k, rows, p = (16, 256, 256) if quick else (32, 1024, 512)
    widths = (8, 64)  # B thin (suspects computed again) and wider (their floor first)
    codes = {
        "polar": PolarCode(2 * k, k, systematic=True), "butterfly": PolarCode(2 * k, k),
        "mds": MDSCode(2 * k, k), "local-product": LocalProductCode(k),
    }
    print(f"\n8. Certified decoding: k = {k} blocks of {rows} x {p} times B {p} x q, float64,"
          f" a quarter of the blocks' own results missing; ms, medians of {repeats}, one BLAS"
          " thread")
    print("    check: the suspects, where the decode runs; settle: computing them again, where"
          " the data blocks are; A_i@B: the decoded blocks' products; again: entries it replaced"
          " (computed again: whole rows where many are); ratio: worst error over the GEMM bound,"
          " without and with the check")
    print(f"    {'code':>14} {'data':>9} {'q':>4} {'blocks':>6} {'decode':>8} {'check':>7}"
          f" {'settle':>7} {'A_i@B':>7} {'again':>7} {'ratio before':>13} {'after':>7}")
    out = []
    for data_kind, q in [(kind, q) for kind in ("ordinary", "mixed") for q in widths]:
        rng = np.random.default_rng([SEED + 8, data_kind == "mixed", q])

        def draw(shape: tuple[int, ...]) -> np.ndarray:
            values = rng.standard_normal(shape)
            return values * 10.0 ** rng.integers(-4, 5, shape) if data_kind == "mixed" else values

        data, b = draw((k, rows, p)), draw((p, q))
        for name, code in codes.items():
            products = code.encode(data) @ b
            # a data block's own position: its unit row of the generator (none: butterfly)
            unit = (code.generator[:, :, None] == np.eye(k)[None]).all(axis=1)
            own = {i: int(np.flatnonzero(unit[:, i])[0]) for i in range(k) if unit[:, i].any()}
            if name == "butterfly":  # every block is decoded: any results missing
                lost = set(rng.choice(code.n, size=k // 4, replace=False).tolist())
                first: list[int] = []
            else:  # the blocks' own results first, but those of a quarter of them
                lost = {own[i] for i in rng.choice(k, size=k // 4, replace=False)}
                first = [j for j in rng.permutation(list(own.values())) if j not in lost]
            rest = [j for j in rng.permutation(code.n) if j not in lost and j not in first]
            order = first + rest + sorted(lost)
            used = order[: code.min_results(order)]
            results = {int(j): products[j] for j in used}
            # the blocks a job decodes: the missing ones (systematic), or all (butterfly)
            blocks = [i for i in range(k) if own.get(i, -1) not in results]
            state: dict[str, Any] = {}

            def decode(_: None) -> None:
                state["decoded"] = code.decode(results)

            def check(_: None) -> None:
                weights = decode_weights(code, list(results))[blocks]
                need = required(weights, list(results.values()), p, code.n)
                state["suspects"] = [
                    Suspects.of(nd, state["decoded"][i]) for nd, i in zip(need, blocks)
                ]

            def settle(_: None) -> None:
                state["settled"] = [
                    certify(state["decoded"][i], found, data[i], b)
                    for i, found in zip(blocks, state["suspects"])
                ]

            def direct(_: None) -> None:
                for i in blocks:
                    data[i] @ b

            t, _, _ = interleaved(
                {"decode": (no_setup, decode), "check": (no_setup, check),
                 "settle": (no_setup, settle), "direct": (no_setup, direct)}, repeats,
            )
            again = sum(
                int((settled != state["decoded"][i]).sum())
                for i, settled in zip(blocks, state["settled"])
            ) / (len(blocks) * rows * q)
            before = max(gemm_ratio(state["decoded"][i], data[i], b) for i in blocks)
            after = max(gemm_ratio(v, data[i], b) for i, v in zip(blocks, state["settled"]))
            row = {
                "code": name, "data": data_kind, "q": q, "decoded_blocks": len(blocks),
                "decode_s": t["decode"], "check_s": t["check"], "settle_s": t["settle"],
                "block_product_s": t["direct"], "computed_again": again,
                "gemm_ratio_before": before, "gemm_ratio_after": after,
            }
            ok = after <= TARGET_GEMM_FACTOR
            row["ok"] = ok
            out.append(row)
            ms = {key: 1e3 * t[key] for key in t}
            print(f"    {name:>14} {data_kind:>9} {q:>4} {len(blocks):>6} {ms['decode']:>8.2f}"
                  f" {ms['check']:>7.2f}"
                  f" {ms['settle']:>7.2f} {ms['direct']:>7.2f} {again:>7.1%} {before:>13.3g}"
                  f" {after:>7.3g} {mark(ok)}", flush=True)
    return {
        "k": k, "rows": rows, "p": p, "widths": widths, "target_gemm_factor": TARGET_GEMM_FACTOR,
        "rows_out": out,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Run every section, print its table, return all numbers (see the module docstring)."""
    results: dict[str, Any] = {"quick": quick, "seconds": {}}
    sections: list[tuple[str, Callable[[bool], dict[str, Any]]]] = [
        ("throughput", throughput),
        ("decodability", decodability),
        ("polar_vs_mds", polar_vs_mds),
        ("after_decodable", after_decodable),
        ("results_needed", results_needed),
        ("accuracy", accuracy),
        ("parity_encode", parity_encode),
        ("certified", certified),
    ]
    for name, section in sections:
        start = time.perf_counter()
        results[name] = section(quick)
        results["seconds"][name] = round(time.perf_counter() - start, 2)
    spent = ", ".join(f"{name} {s}" for name, s in results["seconds"].items())
    print(f"\nsection wall times (s): {spent}")
    return results
