"""``python -m dask_polar demo``: the codes at work on random blocks with random stragglers."""

from __future__ import annotations

import time

import numpy as np

from .codes import ErasureCode, LocalProductCode, MDSCode, PolarCode, ReplicationCode, UncodedCode

__all__ = ["codes_demo"]


def _codes(k: int, n: int) -> list[ErasureCode]:
    return [
        UncodedCode(k),
        ReplicationCode(k, n // k),
        LocalProductCode(k, group_size=2),
        MDSCode(n, k),
        PolarCode(n, k, decoder="sc"),
        PolarCode(n, k),
    ]


def codes_demo(k: int = 64, n: int = 128, trials: int = 200, seed: int = 0) -> list[dict]:
    """Encode random blocks, let random workers straggle, decode, and compare the codes.

    For each trial the coded results arrive in a random order (the stragglers come last);
    each code decodes from its first decodable prefix. Prints, per code, the results needed
    (mean and worst over trials, as a multiple of k), the decode error and the decode time.

    Returns
    -------
    list of dict
        One row per code with the printed numbers.
    """
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((k, 32, 32))
    rows = []
    print(f"k={k} data blocks of {data[0].shape}, {trials} random arrival orders\n")
    header = f"{'code':<34}{'n':>6}{'needed/k':>10}{'worst/k':>9}{'max error':>11}{'decode ms':>11}"
    print(header)
    print("-" * len(header))
    for code in _codes(k, n):
        coded = code.encode(data)
        needed, errors, seconds = [], [], []
        for _ in range(trials):
            order = rng.permutation(code.n)
            decoder = code.decoder()
            for index in order:
                if decoder.add(int(index), coded[index]):
                    break
            start = time.perf_counter()
            decoded = decoder.result()
            seconds.append(time.perf_counter() - start)
            needed.append(decoder.received)
            errors.append(float(np.abs(decoded - data).max()))
        label = repr(code) + (" (SC)" if getattr(code, "decoder_kind", "") == "sc" else "")
        row = {
            "code": label,
            "n": code.n,
            "needed_over_k": float(np.mean(needed)) / k,
            "worst_over_k": float(np.max(needed)) / k,
            "max_error": float(np.max(errors)),
            "decode_ms": 1e3 * float(np.median(seconds)),
        }
        rows.append(row)
        print(
            f"{label:<34}{code.n:>6}{row['needed_over_k']:>10.3f}{row['worst_over_k']:>9.3f}"
            f"{row['max_error']:>11.1e}{row['decode_ms']:>11.2f}"
        )
    print(
        "\nneeded/k: results that had to arrive before decoding (stragglers beyond that are "
        "never waited for);\nMDS needs exactly k but solves a dense system; polar decodes by "
        "additions (SC) plus a small solve (inactivation)."
    )
    return rows
