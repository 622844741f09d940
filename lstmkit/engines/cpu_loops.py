"""The fused engine's compiled LSTM time loops (csrc/lstm_loops.cpp) and the streams' compiled
step (csrc/stream_step.cpp), one extension built on first use.

Why: at small sizes an LSTM step is a 14.5 us matmul plus eight eager torch calls of 3.8 us each
(T, B, I, H = 200, 16, 128, 128; benchmarks/step_cost.py), so the Python time loops measured 1.53x
torch.nn.LSTM's fwd+bwd time there (benchmarks/results/engines-cpu-python-loops.md). The compiled
loop keeps the matmul in ATen and does the gate arithmetic in one vectorised pass (1.12x).

The extension is compiled by torch.utils.cpp_extension (needs a C++ compiler, the Python headers
and ninja) once per machine and cached under ~/.cache/torch_extensions/lstmkit (the environment
variable TORCH_EXTENSIONS_DIR moves it); the first call took 29 s on the 2-core development
machine. Where compiling fails, the fused engine runs its pure-PyTorch loops (same results, slower
at small sizes) and a warning says why, once. LSTMKIT_CPU_LOOPS=0 skips the compiled loops.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

log = logging.getLogger(__name__)

# lstm_loops.cpp: the fused engine's time loops; stream_step.cpp: one step of a stack (streams)
SOURCES = [Path(__file__).parent / "csrc" / name for name in ("lstm_loops.cpp", "stream_step.cpp")]
HEADERS = [Path(__file__).parent / "csrc" / "lstm_kernels.h"]
ENV_SWITCH = "LSTMKIT_CPU_LOOPS"
_lock = threading.Lock()
_loaded: dict[str, ModuleType | None] = {}


def _build_flags() -> tuple[str, list[str]]:
    """Module name and compiler flags. -ffast-math lets GCC vectorise exp / tanh through glibc's
    libmvec; it is a compile flag only (not linked, so the process keeps IEEE denormals).
    AVX2 + FMA only where this CPU has them; the name keys torch's build cache by variant."""
    flags = ["-O3", "-ffast-math", "-fopenmp-simd"]
    capability = torch.backends.cpu.get_cpu_capability()  # "DEFAULT", "AVX2", "AVX512", ...
    if capability.startswith("AVX"):
        flags += ["-mavx2", "-mfma"]
        return "lstmkit_cpu_loops_avx2", flags
    return "lstmkit_cpu_loops", flags


def cpu_loops() -> ModuleType | None:
    """The compiled loops, or None where they are switched off or cannot be built."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    with _lock:
        if "module" not in _loaded:
            _loaded["module"] = _build()
        return _loaded["module"]


def build_directory(name: str, flags: list[str] | None = None) -> Path:
    """Where the extension is built and cached: under TORCH_EXTENSIONS_DIR (default
    ~/.cache/torch_extensions), keyed by Python and torch version (a build is tied to both), by
    the sources' contents and the compiler flags (torch rebuilds when the .cpp changes, but does
    not see headers), and by the environment and the sources' location: build.ninja records
    the include paths of the torch it was made with and the paths of the sources, so two
    virtualenvs, or two copies of lstmkit (a checkout and mutation testing's copy of it), sharing
    one directory rebuild each other's build on every switch, a full build each time under
    torch's lock (docs/mutation.md)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    sources = b"".join(p.read_bytes() for p in [*SOURCES, *HEADERS])
    digest = hashlib.sha1(sources + " ".join(flags or []).encode()).hexdigest()[:10]
    env = f"{Path(torch.__file__).resolve().parent}|{SOURCES[0].parent.resolve()}"
    where = hashlib.sha1(env.encode()).hexdigest()[:8]
    return Path(root) / "lstmkit" / f"{name}-{py}-torch{torch.__version__}-{digest}-env{where}"


def _import_built(directory: Path, name: str) -> ModuleType | None:
    """The extension that an earlier process built in `directory`, imported directly. torch's
    load() takes the directory's lock and runs ninja in every new process: parallel processes
    queue on the lock, and one killed while it holds the lock (a test timeout) leaves the others
    waiting for _clear_stale_lock. The directory is keyed
    by everything the build depends on, so a library there is this build. None when there is
    none, or when it does not import (a link cut short): then load() builds it again."""
    library = directory / f"{name}.so"
    if not library.is_file():
        return None
    try:
        spec = importlib.util.spec_from_file_location(name, library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError:
        library.unlink(missing_ok=True)  # so that ninja links it again
        return None
    return module


class BuildNotice(UserWarning):
    """The one-off build of the compiled loops (filter it with warnings.simplefilter)."""


def _clear_stale_lock(directory: Path, max_age_s: float = 300.0, poll_s: float = 1.0) -> None:
    """torch's build lock is a file, and torch waits on it without a time limit; a build killed
    half-way (Ctrl-C) leaves it behind. So wait here instead: until the lock goes (another
    process finished its build) or is older than a build can take (29 s measured here; 300 s
    allowed), then remove it as stale."""
    lock = directory / "lock"
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > max_age_s:
            log.warning("lstmkit: removing a stale build lock %s (%.0f s old)", lock, age)
            lock.unlink(missing_ok=True)
            return
        time.sleep(poll_s)


def _notice(message: str) -> None:
    """A BuildNotice warning; where warnings are turned into errors (-W error), the same line
    on stderr instead, so that the notice never stops the build it announces."""
    try:
        warnings.warn(message, BuildNotice, stacklevel=5)
    except BuildNotice:
        print(message, file=sys.stderr)


def _build() -> ModuleType | None:
    name, flags = _build_flags()
    directory = build_directory(name, flags)
    built = _import_built(directory, name)
    if built is not None:
        return built
    fresh = not any(directory.glob(f"{name}*.so"))
    if fresh:  # the first fused call pauses here: say so while it happens, and for how long
        _notice(
            f"lstmkit: compiling the fused engine's CPU loops into {directory} (once per "
            "environment; 29 s on a 2-core machine)..."
        )
    start = time.perf_counter()
    try:
        from torch.utils.cpp_extension import load

        directory.mkdir(parents=True, exist_ok=True)
        _clear_stale_lock(directory)
        module = load(
            name=name,
            sources=[str(p) for p in SOURCES],
            extra_cflags=flags,
            build_directory=str(directory),
            verbose=False,
        )
        if fresh:
            _notice(f"lstmkit: compiled CPU loops built in {time.perf_counter() - start:.0f} s")
        return module
    except Exception as exc:  # no compiler / headers / ninja: the pure-PyTorch loops still work
        warnings.warn(
            f"lstmkit could not build its compiled CPU loops ({type(exc).__name__}: {exc}). "
            "The fused engine falls back to its pure-PyTorch loops: same results, slower at "
            "small sizes (measured 1.53x at T=200, B=16, H=128). Install a C++ compiler and "
            "`pip install ninja` to get them, "
            f"or set {ENV_SWITCH}=0 to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def usable(*tensors: Tensor | None) -> bool:
    """Whether the compiled loops take these tensors: CPU, float32 / float64."""
    return all(
        t is None or (t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64))
        for t in tensors
    )
