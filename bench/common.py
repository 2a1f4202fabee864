"""Shared pieces of the nnkernels benchmark: timer, peak probes, OpenBLAS info, table, JSON.

Nothing here imports torch or nnkernels at module level, so the numpy-only worker
subprocess (run.py --numpy-worker) can use it without loading them.
"""

import ctypes
import gc
import json
import math
import os
import platform
import statistics
import threading
import time

import numpy as np

# ---------------------------------------------------------------------------------------
# Timer
# ---------------------------------------------------------------------------------------


class Timing:
    """Per-call seconds of one measured callable: ``min`` and ``median`` over ``repeat``
    runs of ``number`` back-to-back calls each."""

    __slots__ = ("min", "median", "repeat", "number")

    def __init__(self, times, number):
        self.min = min(times)
        self.median = statistics.median(times)
        self.repeat = len(times)
        self.number = number

    def as_dict(self):
        return {"min_s": self.min, "median_s": self.median, "repeat": self.repeat,
                "number": self.number}


def _plan(fn, target, min_repeat, max_repeat):
    """One warm-up call (first-touch page faults, thread wake-up, lazy initialisation), an
    estimate of the call time (a small batch for short calls), and the (repeat, number) that
    spend about ``target`` seconds."""
    clock = time.perf_counter
    fn()
    t0 = clock()
    fn()
    est = clock() - t0
    if est < 1e-3:
        k = max(2, int(2e-3 / max(est, 1e-7)))
        t0 = clock()
        for _ in range(k):
            fn()
        est = (clock() - t0) / k
    est = max(est, 1e-8)
    repeat = int(min(max_repeat, max(min_repeat, target / est)))
    return repeat, max(1, int(target / (repeat * est)))


def measure(fn, target=0.3, min_repeat=3, max_repeat=15):
    """Time ``fn()`` (no arguments): one warm-up call, an estimate, then ``repeat`` runs of
    ``number`` calls, both chosen so the whole measurement takes about ``target`` seconds
    (at least ``min_repeat`` single calls for slow cases). The garbage collector is off
    while timing. Returns a :class:`Timing`."""
    clock = time.perf_counter
    was = gc.isenabled()
    gc.disable()
    try:
        repeat, number = _plan(fn, target, min_repeat, max_repeat)
        times = []
        for _ in range(repeat):
            t0 = clock()
            for _ in range(number):
                fn()
            times.append((clock() - t0) / number)
        return Timing(times, number)
    finally:
        if was:
            gc.enable()


def measure_many(fns, target=0.3, rounds=5, min_repeat=3, max_repeat=15, idle_after=None):
    """Time several callables side by side: each is warmed up and its call time estimated as
    in :func:`measure`, then ``rounds`` rounds each run every callable's share of its repeats
    in turn, so that a change of the machine's state during the case (its memory bandwidth
    moves by up to 2x from one second to the next on a shared host) falls on all of them
    alike, and the ratios compare like with like. Each callable gets about ``target`` seconds.
    ``fns``: {name: callable}, run in this order within a round; ``idle_after``: {name:
    seconds} to sleep after that callable's share (and its warm-up), for callables that
    leave busy threads behind (OpenBLAS workers spin ~0.07 s after a call). Returns {name:
    Timing} and {name: "Type: message"} for those that raised."""
    idle_after = idle_after or {}
    clock = time.perf_counter
    was = gc.isenabled()
    gc.disable()
    plan, errors, times = {}, {}, {}
    try:
        for name, fn in fns.items():
            try:
                repeat, number = _plan(fn, target, min_repeat, max_repeat)
            except Exception as e:  # noqa: BLE001 - reported per library
                errors[name] = f"{type(e).__name__}: {e}"
                continue
            finally:
                time.sleep(idle_after.get(name, 0.0))
            plan[name] = (fn, repeat, number)
            times[name] = []
        for r in range(rounds):
            for name, (fn, repeat, number) in plan.items():
                if name in errors:
                    continue
                share = repeat * (r + 1) // rounds - repeat * r // rounds
                try:
                    for _ in range(share):
                        t0 = clock()
                        for _ in range(number):
                            fn()
                        times[name].append((clock() - t0) / number)
                except Exception as e:  # noqa: BLE001
                    errors[name] = f"{type(e).__name__}: {e}"
                if share:
                    time.sleep(idle_after.get(name, 0.0))
        return ({name: Timing(t, plan[name][2]) for name, t in times.items() if t and name not in errors},
                errors)
    finally:
        if was:
            gc.enable()


# ---------------------------------------------------------------------------------------
# Machine probes
# ---------------------------------------------------------------------------------------


def peak_flops(dtype, isa, threads, budget=0.4, window=0.002):
    """FLOP/s of nnkernels' FMA loop for kernel set ``isa`` on ``threads`` threads: the best
    of many short runs of ``window`` seconds within about ``budget`` seconds. Short windows
    make the probe robust on a shared machine: one of them usually runs undisturbed, and a
    disturbed run can only under-estimate (every counted FMA was executed)."""
    from nnkernels import _C
    best = 0.0
    t_end = time.perf_counter() + budget
    while True:
        best = max(best, _C.peak_flops(str(dtype), isa, int(threads), float(window)))
        if time.perf_counter() >= t_end:
            return best


def physical_cores():
    """Distinct physical cores among the CPUs this process may run on (Linux sysfs), or None."""
    try:
        cpus = os.sched_getaffinity(0)
        cores = set()
        for c in cpus:
            base = f"/sys/devices/system/cpu/cpu{c}/topology/"
            with open(base + "core_id") as f1, open(base + "physical_package_id") as f2:
                cores.add((f2.read().strip(), f1.read().strip()))
        return len(cores) or None
    except (OSError, AttributeError):
        return None


def peak_reference(dtype, isa, threads):
    """The FMA peak used as 100%: the T-thread probe, or T x the 1-thread probe when the T
    threads fit on distinct physical cores and that is higher (on a busy machine T cores are
    rarely free at once, while one core often is; an FMA loop scales linearly over physical
    cores, up to the all-core clock being a little lower). Returns a dict with both probes,
    the reference and how it was chosen."""
    pt = peak_flops(dtype, isa, threads)
    p1 = pt if threads == 1 else peak_flops(dtype, isa, 1)
    ref, how = pt, f"{threads}-thread probe"
    cores = physical_cores()
    if threads > 1 and cores is not None and cores >= threads and threads * p1 > pt:
        ref, how = threads * p1, f"{threads} x 1-thread probe"
    return {"threads": pt, "one_thread": p1, "reference": ref, "how": how}


_BW_CACHE = {}


def copy_bandwidth(nbytes, threads, tries=20, min_time=0.004):
    """Copy bandwidth in bytes/s, counting read + write (2 * nbytes per copy): numpy copies
    of an ``nbytes`` array into a preallocated destination, split over ``threads`` Python
    threads (np.copyto releases the GIL), best of ``tries`` short runs. Cached per (nbytes, threads)."""
    key = (int(nbytes), int(threads))
    if key in _BW_CACHE:
        return _BW_CACHE[key]
    n = max(1, int(nbytes) // 8)
    src = np.ones(n, dtype=np.float64)
    dst = np.zeros_like(src)
    T = max(1, int(threads))
    bounds = [(n * i // T, n * (i + 1) // T) for i in range(T)]
    # Copies per timed run so one run lasts >= min_time (amortises thread start-up).
    t0 = time.perf_counter()
    np.copyto(dst, src)
    one = max(time.perf_counter() - t0, 1e-7) / T
    reps = max(1, int(min_time / one))

    def run_once():
        barrier = threading.Barrier(T + 1)

        def work(lo, hi):
            d, s = dst[lo:hi], src[lo:hi]
            barrier.wait()
            for _ in range(reps):
                np.copyto(d, s)

        ths = [threading.Thread(target=work, args=b) for b in bounds]
        for t in ths:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in ths:
            t.join()
        return (time.perf_counter() - t0) / reps

    best = min(run_once() for _ in range(tries))
    bw = 2.0 * n * 8 / best
    _BW_CACHE[key] = bw
    return bw


# ---------------------------------------------------------------------------------------
# Memory: peak resident set size of this process (Linux /proc)
# ---------------------------------------------------------------------------------------


def _status_bytes(key):
    """A size field of /proc/self/status (VmRSS, VmHWM) in bytes, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakRss:
    """Peak RSS growth of the code run inside ``with PeakRss() as p:`` -> ``p.growth``
    (bytes), ``p.base`` (RSS at entry), ``p.how``. Resets the kernel's high-water mark
    (VmHWM) by writing 5 to /proc/self/clear_refs (Linux >= 4.0); where that is refused,
    a thread samples VmRSS every 0.2 ms instead (it can miss a short-lived peak)."""

    def __enter__(self):
        gc.collect()
        self._stop = None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.how = "VmHWM reset through /proc/self/clear_refs"
        except OSError:
            self.how = "VmRSS sampled every 0.2 ms (clear_refs refused)"
            self._max = 0
            self._stop = threading.Event()

            def poll():
                while not self._stop.is_set():
                    self._max = max(self._max, _status_bytes("VmRSS") or 0)
                    time.sleep(0.0002)
            self._thread = threading.Thread(target=poll, daemon=True)
        self.base = _status_bytes("VmRSS")
        if self._stop is not None:
            self._max = self.base
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._stop is not None:
            self._stop.set()
            self._thread.join()
            peak = self._max
        else:
            peak = _status_bytes("VmHWM")
        self.peak = peak
        self.growth = None if peak is None or self.base is None else peak - self.base
        return False


def result_nbytes(r):
    """Bytes held by a call's result: numpy arrays and torch tensors, in tuples/lists."""
    if isinstance(r, (tuple, list)):
        return sum(result_nbytes(x) for x in r)
    nb = getattr(r, "nbytes", None)
    if nb is not None:
        return int(nb)
    if hasattr(r, "element_size") and hasattr(r, "numel"):
        return int(r.element_size() * r.numel())
    return 0


def fmt_bytes(b):
    if b is None:
        return "-"
    a = abs(b)
    if a < 1 << 20:
        return f"{b / 1024:.0f}KiB"
    if a < 1 << 30:
        return f"{b / (1 << 20):.1f}MiB"
    return f"{b / (1 << 30):.2f}GiB"


# ---------------------------------------------------------------------------------------
# OpenBLAS (numpy's BLAS) introspection through ctypes
# ---------------------------------------------------------------------------------------


def _openblas_lib():
    """The OpenBLAS library this process has loaded (found in /proc/self/maps), or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return None
    for p in sorted(paths):
        try:
            return ctypes.CDLL(p)
        except OSError:
            continue
    return None


def _openblas_fn(lib, stem):
    for name in (f"scipy_openblas_{stem}64_", f"scipy_openblas_{stem}", f"openblas_{stem}64_",
                 f"openblas_{stem}"):
        f = getattr(lib, name, None)
        if f is not None:
            return f
    return None


def openblas_info():
    """{'corename': OpenBLAS's kernel family in use, 'threads': its thread count} (None
    values where unknown). numpy must be imported (it is, by this module)."""
    info = {"corename": None, "threads": None}
    lib = _openblas_lib()
    if lib is None:
        return info
    f = _openblas_fn(lib, "get_corename")
    if f is not None:
        f.restype = ctypes.c_char_p
        info["corename"] = f().decode()
    g = _openblas_fn(lib, "get_num_threads")
    if g is not None:
        g.restype = ctypes.c_int
        info["threads"] = int(g())
    return info


def set_numpy_threads(n):
    """Limit numpy's BLAS to ``n`` threads in this process. Uses threadpoolctl when installed,
    otherwise OpenBLAS's own set_num_threads through ctypes. Returns a note saying how (or
    that it could not)."""
    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    if threadpoolctl is not None:
        global _TPC_LIMIT
        _TPC_LIMIT = threadpoolctl.threadpool_limits(limits=int(n), user_api="blas")
        return "threadpoolctl"
    lib = _openblas_lib()
    f = _openblas_fn(lib, "set_num_threads") if lib is not None else None
    if f is None:
        return "not set (threadpoolctl not installed, OpenBLAS not found)"
    f.argtypes = [ctypes.c_int]
    f(int(n))
    return "OpenBLAS set_num_threads via ctypes (threadpoolctl not installed)"


_TPC_LIMIT = None


def machine_info():
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "machine": platform.machine(), "python": platform.python_version(),
            "numpy": np.__version__, "cpus_usable": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else os.cpu_count()}


# ---------------------------------------------------------------------------------------
# Formatting and output
# ---------------------------------------------------------------------------------------


def fmt_time(s):
    if s is None or not math.isfinite(s):
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.2f}us"
    if s < 1.0:
        return f"{s * 1e3:.3f}ms"
    return f"{s:.3f}s"


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def fmt_rate(r, unit):
    return "-" if r is None else f"{r / 1e9:.1f} {unit}"


def fmt_frac(f):
    if f is None:
        return "-"
    return f"{100 * f:.1f}%" if f < 0.1 else f"{100 * f:.0f}%"


class Table:
    """Fixed-width table printed row by row (so progress shows while the suite runs)."""

    def __init__(self, columns, file=None):
        self.columns = columns  # list of (title, width, align) with align '<' or '>'
        self.file = file

    def _line(self, cells):
        out = []
        for (title, width, align), c in zip(self.columns, cells):
            out.append(f"{c:{align}{width}}")
        return "  ".join(out).rstrip()

    def header(self):
        print(self._line([c[0] for c in self.columns]), file=self.file, flush=True)
        print("-" * len(self._line([c[0] for c in self.columns])), file=self.file, flush=True)

    def row(self, cells):
        print(self._line([str(c) for c in cells]), file=self.file, flush=True)


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False, default=str)
        f.write("\n")
