"""Run nlpipe's commands with tcmalloc where it is installed: training steps on a CPU 1.11-1.24x faster.

Why: glibc's malloc serves every block above 32 MiB with a fresh `mmap` and unmaps it on free, so a training
step that allocates the same large tensors every step (a seq2seq batch's (B·T, vocab) float32 logits are
≈ 45 MB) has the kernel map and zero fresh pages for them every step, one page fault per 4 KiB. tcmalloc
keeps such pages for reuse. Measured with `benchmarks/perf_allocator.py` (AMD EPYC, one thread, raw training
steps): `translation-transformer` 1.24x faster with a lower peak (1,284 vs 1,531 MB), `translation-lstm-luong`
1.11x (1,313 vs 1,478 MB). We tried the alternatives: glibc's own options (`mallopt`: no mmap, no trimming) were as fast but grew
the heap step after step (aligned blocks do not fit the freed ones: +45 % memory after 240 steps); jemalloc with
its defaults returns pages to the OS and was slower than glibc here; transparent huge pages for torch's
blocks (`THP_MEM_ALLOC_ENABLE=1`) cut the faults 30x but gained only 1.06x (the pages are still zeroed).

How: tcmalloc must be loaded before the C library's malloc is first used, so `use_tcmalloc()` re-executes the
command (the same interpreter and arguments, `sys.orig_argv`) once with `LD_PRELOAD` naming it — what
PyTorch's own CPU launcher (`torch.backends.xeon.run_cpu --enable_tcmalloc`) does. It finds the library the
way the dynamic linker does (Debian/Ubuntu: `apt install libtcmalloc-minimal4`; conda: `gperftools`). Nothing
happens on other systems, when it is not installed, when `LD_PRELOAD` already names an allocator, or with
``NLPIPE_ALLOCATOR=system``.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

ENV_SWITCH = "NLPIPE_ALLOCATOR"
"""``system``: keep the C library's malloc (the default is ``tcmalloc`` where it is installed)."""
_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")
_REEXECUTED = "_NLPIPE_ALLOCATOR_REEXEC"


def find_tcmalloc() -> str | None:
    """The tcmalloc shared library's name as the dynamic linker finds it (`libtcmalloc_minimal.so.4`), or None."""
    for name in ("tcmalloc_minimal", "tcmalloc"):
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def loaded_allocator() -> str:
    """``tcmalloc``/``jemalloc``/``mimalloc`` when one is mapped into this process, else ``system``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return next((name for name in _ALLOCATORS if f"lib{name}" in maps), "system")


def use_tcmalloc() -> None:
    """Re-execute this command with tcmalloc preloaded, where that applies (see the module docstring).

    Returns normally when nothing is to be done; otherwise does not return (`os.execve`).
    """
    choice = os.environ.get(ENV_SWITCH, "tcmalloc")
    if choice not in ("tcmalloc", "system"):
        sys.exit(f"error: environment variable {ENV_SWITCH}={choice!r}: use tcmalloc (the default) or system")
    if not sys.platform.startswith("linux") or choice == "system":
        return
    preload = os.environ.get("LD_PRELOAD", "")
    if os.environ.get(_REEXECUTED) or any(name in preload for name in _ALLOCATORS):
        return
    library = find_tcmalloc()
    if library is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = f"{library}:{preload}" if preload else library
    env[_REEXECUTED] = "1"
    # tcmalloc reports every allocation above 1 GiB on stderr; such blocks are normal here (datasets, weights).
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)
