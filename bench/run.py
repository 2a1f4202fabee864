"""nnkernels benchmark: nnkernels against numpy and torch, with the machine's own peaks.

    python bench/run.py                       # quick default suite (< ~2 minutes)
    python bench/run.py --family gemm --plot gemm.png
    python bench/run.py --full --threads 1 --json out.json

Columns are described in bench/README.md. numpy is measured twice: in this process, with
OpenBLAS as the machine sets it up (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE as found), and in
a subprocess whose environment lacks those two variables (OpenBLAS picks its best kernel
for the CPU). This process never changes those variables.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import cases as C  # noqa: E402
import common  # noqa: E402

LIBS = ("nnk", "numpy", "numpy_best", "torch")
OPENBLAS_TUNING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# ---------------------------------------------------------------------------------------
# numpy worker (subprocess): measures the numpy callable of each spec read from stdin
# ---------------------------------------------------------------------------------------


def numpy_worker(target):
    """Line protocol: writes OpenBLAS info as the first line, then for each spec line read
    from stdin one result line (a Timing dict, {"error": ...} or null); exits at EOF."""
    out = sys.stdout
    out.write(json.dumps(common.openblas_info()) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        case = C.build(json.loads(line))
        try:
            fn = case.numpy()
            res = None if fn is None else common.measure(fn, target).as_dict()
        except Exception as e:  # report, keep going
            res = {"error": f"{type(e).__name__}: {e}"}
        case.release()
        out.write(json.dumps(res) + "\n")
        out.flush()


class NumpyBest:
    """numpy in a persistent subprocess whose environment lacks the OpenBLAS tuning
    variables (so OpenBLAS picks its best kernel). Each case is measured there right after
    the in-process libraries, so all of a case's numbers come from the same moment."""

    def __init__(self, threads, target):
        env = dict(os.environ)
        for v in OPENBLAS_TUNING_VARS:
            env.pop(v, None)
        env["OPENBLAS_NUM_THREADS"] = str(threads)
        env["OMP_NUM_THREADS"] = str(threads)
        cmd = [sys.executable, os.path.abspath(__file__), "--numpy-worker", "--target", str(target)]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        self.info = json.loads(self._readline())

    def _readline(self):
        line = self.p.stdout.readline()
        if not line:
            err = self.p.stderr.read()[-2000:]
            raise RuntimeError(f"numpy worker exited ({self.p.wait()}): {err}")
        return line

    def measure(self, spec):
        self.p.stdin.write(json.dumps(spec) + "\n")
        self.p.stdin.flush()
        return json.loads(self._readline())

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(timeout=30)
        except Exception:
            self.p.kill()


def import_nnkernels():
    try:
        import nnkernels
    except ImportError:  # a source checkout built with tools/dev_build.sh, not installed
        sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
        import nnkernels
    return nnkernels


# ---------------------------------------------------------------------------------------
# Peak-memory worker (subprocess): one library, one call, in a fresh process
# ---------------------------------------------------------------------------------------


def mem_worker(job, threads):
    """job: {"of": spec, "warm": spec, "lib": "nnk" | "numpy" | "torch"}. Imports only what
    the library needs, runs the warm-up case once (code loaded, thread pool started), makes
    the data, resets the peak RSS, runs one call and prints one JSON line: rss_growth,
    result_bytes, extra = rss_growth - result_bytes, base_rss, how."""
    job = json.loads(job)
    lib = job["lib"]
    if lib == "nnk":
        nnk = import_nnkernels()
        if threads:
            nnk.set_num_threads(threads)
    elif lib == "torch":
        import torch
        if threads:
            torch.set_num_threads(threads)
    elif threads:
        common.set_numpy_threads(threads)
    warm = C.build(job["warm"])
    r = getattr(warm, lib)()()
    del r
    warm.release()
    case = C.build(job["of"])
    fn = getattr(case, lib)()
    if fn is None:
        print(json.dumps(None))
        return
    with common.PeakRss() as p:
        r = fn()
    nb = common.result_nbytes(r)
    print(json.dumps({"rss_growth": p.growth, "result_bytes": nb,
                      "extra": None if p.growth is None else p.growth - nb,
                      "base_rss": p.base, "how": p.how}))


def measure_memory(case, lib, threads):
    """Runs mem_worker for one library of a PeakMemory case; returns its dict or raises."""
    job = json.dumps({"of": case.of, "warm": case.warm, "lib": lib})
    cmd = [sys.executable, os.path.abspath(__file__), "--mem-worker", job, "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"memory worker exited {p.returncode}: {p.stderr.strip()[-500:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# Main suite
# ---------------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", action="append", choices=C.FAMILIES,
                    help="run only this family (repeatable); default: all")
    ap.add_argument("--full", action="store_true", help="larger shape sets")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for nnkernels, torch and numpy (default: nnkernels' default)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default=None,
                    help="run every case in this dtype (default: float32, plus float64 GEMM)")
    ap.add_argument("--json", metavar="PATH", help="write all results to this JSON file")
    ap.add_argument("--plot", metavar="PATH", help="PNG of GEMM GFLOP/s against size")
    ap.add_argument("--target", type=float, default=0.3,
                    help="seconds spent measuring each library on each case (default 0.3)")
    ap.add_argument("--pause", type=float, default=0.1,
                    help="idle seconds after each library's measurement, so that threads a "
                         "library leaves spinning (OpenBLAS spins ~0.07 s after a call) do not "
                         "slow the next one (default 0.1)")
    ap.add_argument("--no-numpy-best", action="store_true",
                    help="skip the subprocess measuring numpy with OpenBLAS's best kernel")
    ap.add_argument("--numpy-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mem-worker", metavar="JOB", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


TORCH_IDLE = 0.03  # seconds after each share of torch calls (its OpenMP workers spin)


def main(argv=None):
    args = parse_args(argv)
    if args.numpy_worker:
        numpy_worker(args.target)
        return 0
    if args.mem_worker:
        mem_worker(args.mem_worker, args.threads)
        return 0
    t_start = time.perf_counter()

    import torch

    nnkernels = import_nnkernels()

    families = args.family or list(C.FAMILIES)
    T = args.threads or nnkernels.get_num_threads()
    if T < 1:
        raise SystemExit("--threads must be >= 1")
    nnkernels.set_num_threads(T)
    torch.set_num_threads(T)
    ob = common.openblas_info()
    np_note = "OpenBLAS default"
    if ob["threads"] is not None and ob["threads"] != T:
        np_note = common.set_numpy_threads(T)
        ob = common.openblas_info()
    cfg = nnkernels.config()
    isa = cfg["isa"]

    suite = C.suite(families, full=args.full, dtype=args.dtype)
    meta = {
        "command": " ".join([os.path.basename(sys.executable), "bench/run.py"] +
                            (sys.argv[1:] if argv is None else list(argv))),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": common.machine_info(),
        "nnkernels": cfg["version"], "isa": isa, "isas": cfg["isas"], "threads": T,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "openblas_inprocess": ob, "numpy_threads_note": np_note,
        "env": {v: os.environ.get(v) for v in OPENBLAS_TUNING_VARS},
    }
    m = meta["machine"]
    print(f"nnkernels {cfg['version']}  isa={isa}  threads={T}  |  {m['cpu']}, "
          f"{m['cpus_usable']} usable cpus  |  numpy {np.__version__}  torch {torch.__version__}")
    print(f"numpy in-process: OpenBLAS core {ob['corename']}, {ob['threads']} threads "
          f"({np_note}); env " + ", ".join(f"{k}={v}" for k, v in meta["env"].items()))

    # Machine peaks (the references for the %peak column).
    dts = sorted({c.dtype for c in suite if c.metric == "flop"})
    meta["loadavg_start"] = os.getloadavg()
    probes = {dt: common.peak_reference(dt, isa, T) for dt in dts}
    peaks = {dt: p["reference"] for dt, p in probes.items()}
    bw_large = common.copy_bandwidth(128 << 20, T)
    meta["peak_flops"] = peaks
    meta["peak_probes"] = probes
    meta["copy_bandwidth_128MiB"] = bw_large
    for dt, p in probes.items():
        print(f"measured {isa} FMA peak {dt}: {p['reference'] / 1e9:.0f} GFLOP/s ({p['how']}; "
              f"probes: {T} threads {p['threads'] / 1e9:.0f}, 1 thread {p['one_thread'] / 1e9:.0f})")
    print(f"measured copy bandwidth: {bw_large / 1e9:.1f} GB/s (128 MiB, {T} threads, read+write)")

    # numpy with OpenBLAS's best kernel, in a subprocess, for the BLAS cases.
    worker = None
    if any(c.blas for c in suite) and not args.no_numpy_best:
        try:
            worker = NumpyBest(T, args.target)
            meta["openblas_subprocess"] = worker.info
            print(f"numpy* subprocess (OPENBLAS_CORETYPE/L2_SIZE unset): OpenBLAS core "
                  f"{worker.info['corename']}, {worker.info['threads']} threads")
        except Exception as e:
            print(f"numpy* subprocess failed: {e}")
            meta["openblas_subprocess_error"] = str(e)
            worker = None
    print()

    table = common.Table([
        ("family", 9, "<"), ("case", 22, "<"), ("shape", 25, "<"), ("dt", 3, "<"),
        ("nnk", 9, ">"), ("nnk med", 9, ">"), ("numpy", 9, ">"), ("numpy*", 9, ">"),
        ("torch", 9, ">"), ("np/nnk", 7, ">"), ("np*/nnk", 7, ">"), ("tch/nnk", 7, ">"),
        ("nnk rate", 13, ">"), ("%peak", 5, ">")])
    table.header()
    records = []
    for case in suite:
        rec = {"family": case.family, "case": case.name, "shape": case.shape,
               "dtype": case.dtype, "metric": case.metric, "amount": case.amount,
               "results": {}, "errors": {}}
        head = [case.family, case.name, case.shape, C._short(case.dtype)]
        try:
            fn = case.nnk()
        except C.Missing as e:
            rec["skipped"] = f"op missing: {e}"
            records.append(rec)
            table.row(head + [f"skipped: op missing ({e})"])
            continue
        if case.metric == "memory":
            table.row(head + memory_case(case, rec, T))
            records.append(rec)
            for lib, e in rec["errors"].items():
                print(f"    {lib}: {e}")
            continue
        # nnkernels, torch and numpy side by side, in interleaved rounds (common.measure_many).
        # After torch's and numpy's shares a pause while their workers stop spinning: right
        # after a torch call (OpenMP workers) an LSTM forward of ours took 11-16 ms instead of
        # 7.9, after 5 ms 9.7, after 20 ms 8.0-8.3; OpenBLAS's spin about 0.07 s.
        fns = {"nnk": fn}
        for lib, get in (("torch", case.torch), ("numpy", case.numpy)):
            try:
                f = get()
            except Exception as e:
                f, rec["errors"][lib] = None, f"{type(e).__name__}: {e}"
            if f is not None:
                fns[lib] = f
        timings, errs = common.measure_many(fns, args.target,
                                            idle_after={"torch": TORCH_IDLE, "numpy": args.pause})
        rec["errors"].update(errs)
        time.sleep(args.pause)
        res = None
        if worker is not None and case.blas:
            try:
                res = worker.measure(case.spec)
                time.sleep(args.pause)
            except Exception as e:
                res = {"error": str(e)}
                worker.close()
                worker = None
        if res and "min_s" in res:
            timings["numpy_best"] = res
        elif res and "error" in res:
            rec["errors"]["numpy_best"] = res["error"]
        case.release()

        tmin = {}
        for lib, t in timings.items():
            if t is None:
                continue
            d = t if isinstance(t, dict) else t.as_dict()
            rec["results"][lib] = d
            tmin[lib] = d["min_s"]
        tn = tmin.get("nnk")
        ratios = {lib: (tmin[lib] / tn if tn and lib in tmin else None) for lib in LIBS[1:]}
        rec["ratio_peer_over_nnk"] = ratios
        rate = frac = None
        unit = {"flop": "GFLOP/s", "bytes": "GB/s", "call": ""}[case.metric]
        if tn and case.metric == "flop":
            rate = case.amount / tn
            frac = rate / peaks[case.dtype]
        elif tn and case.metric == "bytes":
            rate = case.amount / tn
            bw = common.copy_bandwidth(case.amount / 2, T)
            rec["copy_bandwidth_same_size"] = bw
            frac = rate / bw
        rec["rates"] = {lib: case.amount / t for lib, t in tmin.items()} if case.metric != "call" else {}
        rec["nnk_rate"], rec["fraction_of_peak"] = rate, frac
        records.append(rec)
        nmed = rec["results"].get("nnk", {}).get("median_s")
        table.row(head + [common.fmt_time(tn), common.fmt_time(nmed),
                          common.fmt_time(tmin.get("numpy")), common.fmt_time(tmin.get("numpy_best")),
                          common.fmt_time(tmin.get("torch")), common.fmt_ratio(ratios["numpy"]),
                          common.fmt_ratio(ratios["numpy_best"]), common.fmt_ratio(ratios["torch"]),
                          common.fmt_rate(rate, unit) if unit else "-", common.fmt_frac(frac)])
        for lib, e in rec["errors"].items():
            print(f"    {lib}: {e}")

    if worker is not None:
        worker.close()
    # Probe the peak again: on a shared machine the best of both is the least disturbed.
    # Rows above used the first probe; the JSON keeps both.
    meta["loadavg_end"] = os.getloadavg()
    meta["peak_probes_end"] = {dt: common.peak_reference(dt, isa, T) for dt in dts}
    meta["peak_flops_end"] = {dt: p["reference"] for dt, p in meta["peak_probes_end"].items()}
    late = {dt: p for dt, p in meta["peak_flops_end"].items() if p > 1.05 * peaks[dt]}
    if late:
        print("note: the peak probed after the suite is higher (" + ", ".join(
            f"{dt} {p / 1e9:.0f} GFLOP/s" for dt, p in late.items()) +
            "): the machine was busier at the start; the %peak column is inflated by the ratio.")
    print(f"load average: start {meta['loadavg_start'][0]:.2f}, end {meta['loadavg_end'][0]:.2f} "
          f"(cpus usable: {m['cpus_usable']}); above ~0 the numbers are disturbed by other work")
    # causal / non-causal attention at the same shape (issue 5: at most 0.6)
    att = {(r["shape"], r["case"]): r for r in records if r.get("family") == "attention"}
    for (shape, name), r in att.items():
        twin = att.get((shape, name.replace(" causal", "")))
        if " causal" in name and twin and r.get("results", {}).get("nnk") and twin.get("results", {}).get("nnk"):
            ratio = r["results"]["nnk"]["min_s"] / twin["results"]["nnk"]["min_s"]
            print(f"attention {name} / {twin['case']} {shape}: {ratio:.3f} of the non-causal time")
    if any(getattr(c, "winograd", False) for c in suite):
        print("conv rates count the direct method's FLOPs; 3x3 stride-1 shapes run as Winograd "
              "F(2x2, 3x3) (2.25x fewer multiplications), so their %peak can pass 100%.")
    elapsed = time.perf_counter() - t_start
    print(f"\nratios are peer time / nnkernels time (> 1: nnkernels faster); times are the "
          f"best of the repeats. Total {elapsed:.0f} s.")
    meta["elapsed_s"] = elapsed
    if args.json:
        common.write_json(args.json, {"meta": meta, "cases": records})
        print(f"wrote {args.json}")
    if args.plot:
        best_peaks = {dt: max(p, meta["peak_flops_end"].get(dt, 0.0)) for dt, p in peaks.items()}
        plot(records, best_peaks, args.plot, args.dtype or "float32")
    return 0


def memory_case(case, rec, T):
    """Measures a PeakMemory case (one subprocess per library); fills rec; returns the
    table cells after the head: extra bytes in the time columns, peer / nnk ratios, the
    materialised matrix in the rate column and nnk's extra / it in %peak."""
    extra = {}
    for lib in case.libs:
        try:
            res = measure_memory(case, lib, T)
        except Exception as e:
            rec["errors"][lib] = f"{type(e).__name__}: {e}"
            continue
        if res is None:
            continue
        rec["results"][lib] = res
        if res.get("extra") is not None:
            extra[lib] = max(0, res["extra"])
    rec["reference_bytes"] = case.amount
    xn = extra.get("nnk")
    # Ratios only when nnkernels' extra is at least 1 MiB (below that they are noise).
    ok = xn is not None and xn >= (1 << 20)
    ratios = {lib: (extra[lib] / xn if ok and lib in extra else None) for lib in LIBS[1:]}
    rec["ratio_peer_over_nnk"] = ratios
    frac = None if xn is None else xn / case.amount
    rec["fraction_of_peak"] = frac
    fb = common.fmt_bytes
    return [fb(xn), "-", fb(extra.get("numpy")), "-", fb(extra.get("torch")),
            common.fmt_ratio(ratios["numpy"]), "-", common.fmt_ratio(ratios["torch"]),
            f"{case.ref_name} {fb(case.amount)}", common.fmt_frac(frac)]


def plot(records, peaks, path, dtype):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sq = [r for r in records if r["family"] == "gemm" and r["metric"] == "flop"
          and r["dtype"] == dtype and r["case"].startswith("n=") and r.get("rates")]
    if not sq:
        print("--plot: no square GEMM results to plot")
        return
    sq.sort(key=lambda r: int(r["case"][2:]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = {"nnk": "nnkernels", "numpy": "numpy (machine's OpenBLAS setting)",
             "numpy_best": "numpy (OpenBLAS best kernel)", "torch": "torch"}
    for lib in LIBS:
        pts = [(int(r["case"][2:]), r["rates"][lib] / 1e9) for r in sq if lib in r["rates"]]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=names[lib])
    if dtype in peaks:
        ax.axhline(peaks[dtype] / 1e9, color="k", ls="--", lw=1, label="measured FMA peak")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n (square GEMM n x n x n)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"{dtype} GEMM")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
