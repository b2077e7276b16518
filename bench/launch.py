"""Run a command and write its wall time and rusage to a file (used by measure.py).

    python -I -S bench/launch.py OUTFILE COMMAND [ARG...]

Why a launcher: on Linux a process's ``ru_maxrss`` starts from the high-water RSS of the
memory image it had before ``exec``, which for a child forked (or vforked) straight from
the benchmark is the benchmark's own RSS (tens of MiB). This tiny interpreter (``-S``: no
site packages) forks the command from a small image instead, so the command's peak RSS is
measured exactly whenever it exceeds the launcher's own (``floor_kib`` in the output,
about 10 MiB). Output: one line
``wall_s user_s sys_s maxrss_kib floor_kib exit_code minflt majflt nvcsw nivcsw``.
The launcher exits with the command's exit code.
"""

import os
import resource
import sys
import time


def main() -> int:
    out_path, argv = sys.argv[1], sys.argv[2:]
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(2, f"launch.py: cannot run {argv[0]}: {exc}\n".encode())
        os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    with open(out_path, "w") as out:
        out.write(
            f"{wall:.6f} {usage.ru_utime:.6f} {usage.ru_stime:.6f} {usage.ru_maxrss} {floor} {code} "
            f"{usage.ru_minflt} {usage.ru_majflt} {usage.ru_nvcsw} {usage.ru_nivcsw}\n"
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
