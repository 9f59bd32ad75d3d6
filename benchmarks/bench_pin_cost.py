"""What an offline brute force of a PIN costs against a stolen copy of the inspection database.

    .venv/bin/python benchmarks/bench_pin_cost.py [--guesses 9] [--parallel N]

Times `app.users.verify_secret` (one guess = one scrypt check with the stored
parameters, exactly what an attacker with the file must compute) on one core,
for today's parameters and the old ones (n=2^14), and prints the median ms per
guess and the fastest one, and the time to try all 10^6 six-digit PINs at the
fastest (an attacker runs on a quiet machine; this one is shared). Then runs --parallel
processes at once (default: every core of this machine) and prints the
aggregate rate: scrypt at 64 MiB per check is not memory-limited on a PC, so
an attacker's cores add up. The target is over a day on one core (> 86.4 ms
per guess); a GPU or a dedicated cracking rig is faster and not measured here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.users import SCRYPT_N, SCRYPT_P, SCRYPT_R, hash_secret, verify_secret  # noqa: E402

SPACE = 10**6  # every 6-digit PIN
DAY_S = 86400.0


def time_guesses(stored: str, guesses: int) -> list[float]:
    """Seconds per wrong guess, one after the other on this core."""
    out = []
    for i in range(guesses):
        t0 = time.perf_counter()
        verify_secret(f"{i:06d}", stored)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guesses", type=int, default=9, help="guesses timed per measurement (fastest and median reported)")
    ap.add_argument("--parallel", type=int, default=os.cpu_count() or 1, help="processes guessing at once")
    args = ap.parse_args()

    current = hash_secret("246813")
    old = hash_secret("246813", n=2**14, r=8, p=1)
    print(f"machine: {os.cpu_count()} cores; one guess = one scrypt check with the stored parameters")
    for label, stored in (("old   n=2^14 r=8 p=1, 16 MiB", old),
                          (f"today n=2^{SCRYPT_N.bit_length() - 1} r={SCRYPT_R} p={SCRYPT_P}, "
                           f"{128 * SCRYPT_R * SCRYPT_N // 2**20} MiB", current)):
        times = time_guesses(stored, args.guesses)
        fastest = min(times)
        print(f"{label}: {fastest * 1000:6.1f} ms per guess on one core (median {statistics.median(times) * 1000:.1f})"
              f" -> all 10^6 six-digit PINs in {fastest * SPACE / DAY_S:5.2f} days on one core")

    n = max(1, args.parallel)
    with ProcessPoolExecutor(n) as pool:
        t0 = time.perf_counter()
        done = sum(len(r) for r in pool.map(time_guesses, [current] * n, [args.guesses] * n))
        wall = time.perf_counter() - t0
    rate = done / wall
    print(f"today's parameters, {n} processes at once: {rate:.1f} guesses/s in all -> all 10^6 PINs in "
          f"{SPACE / rate / 3600:.1f} hours with {n} cores ({SPACE / rate / DAY_S:.2f} days)")


if __name__ == "__main__":
    main()
