#!/usr/bin/env python3
"""Latency of a small committer's fsyncs on DIR while a write-behind copy runs there.

The committer mimics an index commit: 8 new files of 16 KiB, each written and fsynced,
then the folder fsynced. The copy writes 1 MiB chunks, hands each WINDOW to the disk with
sync_file_range(WRITE) and waits for the window before (as cairn's WriteBehind), at RATE
bytes/s (0: as fast as it goes).
  fsync-under-copy.py DIR SECS RATE_MB WINDOW_KIB   (RATE_MB -1: no copy)
"""
import ctypes, os, sys, threading, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
WRITE, WAIT_ALL = 2, 7

def copy(path, rate, window, stop, out):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    buf = os.urandom(1 << 20)
    written = started = waited = 0
    t0 = time.time()
    while not stop.is_set():
        os.write(fd, buf)
        written += len(buf)
        if written - started >= window:
            libc.sync_file_range(fd, started, written - started, WRITE)
            if started > waited:
                libc.sync_file_range(fd, waited, started - waited, WAIT_ALL)
                waited = started
            started = written
        if rate:
            d = t0 + written / rate - time.time()
            if d > 0:
                time.sleep(d)
    os.fsync(fd)
    os.close(fd)
    out.append(written / (time.time() - t0))

def commits(d, secs):
    lat, k, end = [], 0, time.time() + secs
    dfd = os.open(d, os.O_RDONLY)
    while time.time() < end:
        t = time.time()
        for i in range(8):
            p = os.path.join(d, f"c{k}-{i}")
            fd = os.open(p, os.O_WRONLY | os.O_CREAT)
            os.write(fd, b"x" * 16384)
            os.fsync(fd)
            os.close(fd)
        os.fsync(dfd)
        lat.append(time.time() - t)
        for i in range(8):
            os.unlink(os.path.join(d, f"c{k}-{i}"))
        k += 1
    return sorted(lat)

d, secs, rate_mb, window_kib = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
os.makedirs(os.path.join(d, "commits"), exist_ok=True)
stop, out = threading.Event(), []
th = None
if rate_mb >= 0:
    th = threading.Thread(target=copy, args=(os.path.join(d, "copy.bin"), int(rate_mb * 1e6), window_kib * 1024, stop, out))
    th.start()
time.sleep(1)
lat = commits(os.path.join(d, "commits"), secs)
stop.set()
if th:
    th.join()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
copy_rate = f"{out[0] / 1e6:.1f} MB/s" if out else "no copy"
print(f"rate {rate_mb} MB/s window {window_kib} KiB: copy {copy_rate}; {len(lat)} commits, p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {lat[-1] * 1000:.1f} ms")
if os.path.exists(os.path.join(d, "copy.bin")):
    os.unlink(os.path.join(d, "copy.bin"))
