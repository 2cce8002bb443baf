"""Does a numpy sparse kernel beat dense BLAS for ``y = x @ W.T`` on the cpu backend? (issue 8)

For W [N, K] with K, N in {256, 1024, 4096}, unstructured magnitude sparsity {0.5, 0.7, 0.9,
0.95, 0.99} and batch M in {1, 8, 64}: dense ``x @ W.T`` (W.T contiguous, as the cpu backend
binds a constant Gemm/MatMul weight) against the kernels of :mod:`edgeinfer.kernels.sparse`
(CSR gather-multiply-reduceat, column-blocked CSR, drop-zero-rows/columns + BLAS, and for M = 1 a
weighted ``np.bincount``). One BLAS thread (threadpoolctl), every kernel checked against dense
(rtol 1e-5), interleaved rounds in a random order per round, the median per kernel; the spread
(interquartile range / median) is recorded so the noise of the shared machine is visible.
"speedup" is dense time over the best true sparse kernel (CSR, column-blocked CSR, bincount),
and the compact form only where it dropped a row or column (otherwise it *is* dense BLAS).

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed from the environment (the script re-executes
itself without them); the BLAS library and its kernel (threadpoolctl) are in the manifest.

    python benchmarks/sparse_kernels.py [--rounds 11] [--quick]
    python benchmarks/sparse_kernels.py --markdown      # table from the saved JSON, no run

Writes benchmarks/results/sparse_kernels.json and .png.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from _env import HERE, UNSET as _UNSET  # noqa: E402  (re-executes without OPENBLAS_*; paths)

import numpy as np  # noqa: E402

from edgeinfer.kernels import sparse as sk  # noqa: E402

RESULT = HERE / "results" / "sparse_kernels.json"
DIMS = (256, 1024, 4096)
BATCHES = (1, 8, 64)
SPARSITIES = (0.5, 0.7, 0.9, 0.95, 0.99)
MIN_SAMPLE_S = 3e-3  # each sample repeats the call until it lasts this long
SLOW = 5.0  # a kernel whose first call takes SLOW x dense's gets only 3 rounds: it is not close
TRUE_SPARSE = ("csr", "csr_colblock256", "coo_bincount")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def magnitude_pruned(rng, n: int, k: int, sparsity: float) -> np.ndarray:
    """A Gaussian [N, K] float32 weight with its smallest ``sparsity`` fraction set to zero, as
    prune_magnitude(scope="layer") leaves it: unstructured, every row keeps a few."""
    w = rng.standard_normal((n, k)).astype(np.float32)
    cut = int(np.floor(sparsity * w.size))
    if cut:
        thr = np.partition(np.abs(w).ravel(), cut - 1)[cut - 1]
        w[np.abs(w) <= thr] = 0.0
    return w


def candidates(w: np.ndarray, m: int) -> dict:
    """name -> zero-argument-but-x callable for every kernel that applies at batch m."""
    wt = np.ascontiguousarray(w.T)
    csr = sk.CsrWeight.from_dense(w)
    colb = sk.ColumnBlockedCsr.from_dense(w, 256)
    comp = sk.CompactWeight.from_dense(w)
    fns = {
        "dense": lambda x: x @ wt,
        "csr": lambda x: sk.csr_matmul(x, csr),
        "csr_colblock256": lambda x: sk.colblock_matmul(x, colb),
        "compact_dense": lambda x: sk.compact_matmul(x, comp),
    }
    if m == 1:
        rid = sk.csr_row_ids(csr)
        fns["coo_bincount"] = lambda x: sk.coo_bincount_matvec(x, csr, rid)
    return fns


def measure(fns: dict, x: np.ndarray, rounds: int, rng) -> dict:
    ref = fns["dense"](x)
    reps, first = {}, {}
    for name, f in fns.items():
        y = f(x)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max() or 1.0), err_msg=name)
        t0 = time.perf_counter()
        f(x)
        first[name] = max(time.perf_counter() - t0, 1e-7)
        reps[name] = max(1, int(MIN_SAMPLE_S / first[name]))
    samples = {name: [] for name in fns}
    names = list(fns)
    for i in range(rounds):
        rng.shuffle(names)
        for name in names:
            if i >= 3 and first[name] > SLOW * max(first["dense"], MIN_SAMPLE_S):
                continue  # far slower than dense: three samples say so, more would only cost time
            f, r = fns[name], reps[name]
            t0 = time.perf_counter()
            for _ in range(r):
                f(x)
            samples[name].append((time.perf_counter() - t0) / r)
    out = {}
    for name, s in samples.items():
        q1, med, q3 = np.percentile(s, [25, 50, 75])
        out[name] = {"median_us": med * 1e6, "iqr_rel": (q3 - q1) / med, "reps": reps[name], "samples": len(s)}
    return out


def manifest() -> dict:
    from threadpoolctl import threadpool_info

    return {
        "python": sys.version.split()[0], "numpy": np.__version__, "machine": platform.machine(),
        "processor": platform.processor(), "cpus": os.cpu_count(),
        "blas": [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
                 for d in threadpool_info()],
        "env_unset": list(_UNSET), "load_avg": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def run(rounds: int, quick: bool) -> dict:
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    dims = (256, 1024) if quick else DIMS
    rows = []
    with threadpool_limits(1):
        man = manifest()
        log(f"BLAS: {man['blas']}")
        for k in dims:
            for n in dims:
                for s in SPARSITIES:
                    w = magnitude_pruned(rng, n, k, s)
                    for m in BATCHES:
                        x = rng.standard_normal((m, k)).astype(np.float32)
                        res = measure(candidates(w, m), x, rounds, rng)
                        dense = res["dense"]["median_us"]
                        comp = sk.CompactWeight.from_dense(w)
                        dropped = comp.rows is not None or comp.cols is not None
                        best = min((v["median_us"], name) for name, v in res.items()
                                   if name in TRUE_SPARSE or (name == "compact_dense" and dropped))
                        rows.append({"N": n, "K": k, "M": m, "sparsity": s,
                                     "measured_sparsity": float(np.mean(w == 0)), "kernels": res,
                                     "best_sparse": best[1], "speedup": dense / best[0],
                                     "compact_kept": [comp.w_t.shape[1] / n, comp.w_t.shape[0] / k],
                                     "rule": sk.use_sparse((n, k), s, m)})
                        log(f"N={n:5d} K={k:5d} M={m:3d} s={s:.2f} dense {dense:9.1f} us  best {best[1]:16s} "
                            f"{best[0]:9.1f} us  x{dense / best[0]:.2f}")
    man["load_avg_end"] = os.getloadavg()
    spreads = [v["iqr_rel"] for r in rows for v in r["kernels"].values()]
    man["iqr_rel_median"], man["iqr_rel_p90"] = float(np.median(spreads)), float(np.percentile(spreads, 90))
    return {"manifest": man, "rounds": rounds, "results": rows}


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BATCHES), figsize=(15, 4.8), sharey=True)
    rows = data["results"]
    for ax, m in zip(axes, BATCHES):
        shapes = sorted({(r["N"], r["K"]) for r in rows if r["M"] == m})
        for n, k in shapes:
            pts = sorted((r["sparsity"], r["speedup"]) for r in rows if r["M"] == m and (r["N"], r["K"]) == (n, k))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"N={n} K={k}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"batch M={m}: best sparse kernel vs dense BLAS")
        ax.set_xlabel("sparsity")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("speedup (dense time / best sparse time)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(data: dict) -> str:
    rows = data["results"]
    lines = ["Best numpy sparse kernel vs dense BLAS (1 thread), speedup = dense / sparse; "
             "`*` = use_sparse says sparse", "",
             "| N x K | M | " + " | ".join(f"s={s}" for s in SPARSITIES) + " | dense us (s=0.5) |",
             "|---|---|" + "---|" * len(SPARSITIES) + "---|"]
    by = {}
    for r in rows:
        by.setdefault((r["N"], r["K"], r["M"]), {})[r["sparsity"]] = r
    for (n, k, m), cells in sorted(by.items(), key=lambda t: (t[0][2], t[0][0] * t[0][1], t[0][0])):
        txt = []
        for s in SPARSITIES:
            r = cells.get(s)
            if r is None:
                txt.append("")
                continue
            star = "*" if sk.use_sparse((n, k), s, m) else ""
            txt.append(f"{r['speedup']:.2f} {r['best_sparse']}{star}")
        d = cells.get(SPARSITIES[0])
        txt.append(f"{d['kernels']['dense']['median_us']:.0f}" if d else "")
        lines.append(f"| {n}x{k} | {m} | " + " | ".join(txt) + " |")
    man = data["manifest"]
    lines += ["", f"noise: interquartile range / median, median {man['iqr_rel_median']:.1%}, "
              f"90th pct {man['iqr_rel_p90']:.1%}; load avg {man['load_avg']} -> {man['load_avg_end']}; "
              f"{data['rounds']} interleaved rounds"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="K, N in {256, 1024} only")
    ap.add_argument("--markdown", action="store_true", help="print the table from the saved JSON, run nothing")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(RESULT.read_text())))
        return
    data = run(args.rounds, args.quick)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(data, indent=1))
    plot(data, RESULT.with_suffix(".png"))
    log(f"wrote {RESULT} and {RESULT.with_suffix('.png')}")
    print(markdown(data))


if __name__ == "__main__":
    main()
