"""Ahead-of-time compilation of the Triton engine's kernels for NVIDIA sm_80 (A100), sm_90 (H100).

What this proves: every @triton.jit kernel of lstmkit/engines/triton_*.py goes through Triton's
real compiler (TTIR -> TTGIR -> LLVM -> PTX) and NVIDIA's ptxas to a non-empty cubin for both
targets, with exactly the argument types, alignment specialisations and constexpr flags that the
launch sites in triton_gpu.py / triton_backward.py produce: the engine itself is run on CPU with
each kernel replaced by a recorder, and every recorded launch is bound the way
JITFunction.run binds it (triton 3.9 internals: create_function_from_signature, _pack_args;
default options: num_warps 4 as the engine launches, debug off).
What it does NOT prove: numerics (tests/test_triton_engine.py checks those under the CPU
interpreter) or speed; both need a GPU. Register use and spills are recorded but not asserted.

Why a subprocess: Triton decides between interpreter and compiler when `triton` is first imported
(its own library functions, tl.sigmoid included, are decorated then), and test_triton_engine.py
relies on being that first import with TRITON_INTERPRET=1. So this module never imports triton
itself; one child process without TRITON_INTERPRET records and compiles everything (with its own
empty cache, so ptxas really runs), and the tests check its JSON report. Run this file directly
(`python tests/test_triton_compile.py out.json`) to get that report with registers and spills.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

if __name__ != "__main__" and importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed (pip install -e '.[dev]')", allow_module_level=True)

ARCHS = (80, 90)  # compute capability: A100 (sm_80), H100 (sm_90, compiled as sm_90a)
KERNELS = {
    "LSTM": ("lstm_forward", "lstm_backward"),
    "GRU": ("gru_forward", "gru_backward"),
    "RNN": ("rnn_forward", "rnn_backward"),
}
STORAGE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp64": "float64"}


@dataclass
class Config:
    """One layer run whose kernel launches get compiled; `flags` are the constexprs it must hit."""

    cell: str
    name: str
    dtype: str  # Triton's name of the storage dtype: fp32, bf16, fp16, fp64
    kwargs: dict
    flags: dict
    training: bool = False
    hidden: int = 32
    batch: int = 16  # 16 rows: every per-step slice stays 16-byte aligned (one specialisation)
    lengths: list[int] | None = field(default_factory=lambda: [2, 1] * 8)

    @property
    def id(self) -> str:
        return f"{self.cell}-{self.name}-{self.dtype}"


def _configs() -> list[Config]:
    out = []
    off = dict(HAS_BIAS=False, LN=False, ZONE_H=0, HAS_VALID=False, ACC="fp32")
    for cell in KERNELS:
        extra = {"nonlinearity": "relu"} if cell == "RNN" else {}
        lstm = cell == "LSTM"
        eval_on = dict(HAS_BIAS=True, LN=True, ZONE_H=2, HAS_VALID=True)
        eval_kw = dict(layer_norm=True, zoneout=0.3, **extra)
        train_on = dict(eval_on, ZONE_H=1)
        train_kw = dict(eval_kw, recurrent_dropout=0.2)
        if lstm:
            eval_on.update(PEEP=True, ZONE_C=2, COUPLED=False, PROJ=False, G=4)
            eval_kw.update(peephole=True, zoneout=(0.3, 0.5))
            train_on = dict(eval_on, ZONE_H=1, ZONE_C=1, COUPLED=True, PROJ=True, G=3)
            train_kw = dict(eval_kw, recurrent_dropout=0.2, coupled=True, proj_size=16)
        if cell == "RNN":
            eval_on["RELU"] = train_on["RELU"] = True
        lstm_off = dict(PEEP=False, ZONE_C=0, COUPLED=False, PROJ=False, G=4) if lstm else {}
        rnn_off = {"RELU": False} if cell == "RNN" else {}
        out.append(
            Config(
                cell, "off", "fp32", {"bias": False}, {**off, **lstm_off, **rnn_off}, lengths=None
            )
        )
        for dt in ("fp32", "bf16", "fp16", "fp64"):  # every flag the engine has in evaluation
            acc = "fp64" if dt == "fp64" else "fp32"
            out.append(Config(cell, "on-eval", dt, eval_kw, dict(eval_on, ACC=acc)))
        for dt in ("bf16", "fp16"):  # zoneout masks (and for LSTM coupled gates and proj_size)
            out.append(Config(cell, "on-train", dt, train_kw, dict(train_on, ACC="fp32"), True))
        # H = 5, B = 3: no 16-divisibility specialisation of H (and of pointers that move with b, t)
        odd = dict(hidden=5, batch=3, lengths=[2, 1, 2])
        out.append(Config(cell, "on-odd", "fp32", eval_kw, dict(eval_on, ACC="fp32"), **odd))
        # a wide layer-norm row: one program holds BLOCK = H = 1024 units (register pressure)
        out.append(
            Config(cell, "on-H1024", "bf16", eval_kw, dict(eval_on, ACC="fp32"), hidden=1024)
        )
    return out


CONFIGS = _configs()


# ---------------------------------------------------------------- child process (imports triton)


def _record(cfg: Config, launches: list) -> None:
    """Run the Triton engine forward and backward on CPU with recorders in place of the kernels."""
    import torch

    import lstmkit

    torch.manual_seed(0)
    dtype = getattr(torch, STORAGE[cfg.dtype])
    m = getattr(lstmkit, cfg.cell)(4, cfg.hidden, **cfg.kwargs).to(dtype)
    m.engine = "triton"
    m.train(cfg.training)
    x = torch.randn(2, cfg.batch, 4, dtype=dtype, requires_grad=True)  # (T, B, I)
    lengths = None if cfg.lengths is None else torch.tensor(cfg.lengths)
    out, state = m(x, lengths=lengths)
    assert m.last_engine == "triton", m.last_engine_reason
    states = state if isinstance(state, tuple) else (state,)
    # outputs are uninitialised memory (no kernel ran); backward only needs them to exist
    sum(s.float().sum() for s in (out, *states)).backward()
    assert launches, f"{cfg.id}: the engine launched no kernel"


def _resources(cubin: bytes, tmp: Path) -> dict:
    """Target arch of the ELF and the per-thread registers / stack / local memory (spills)."""
    import re

    import triton

    tool = triton.knobs.nvidia.cuobjdump.path
    path = tmp / "k.cubin"
    path.write_bytes(cubin)
    elf = subprocess.run([tool, "-elf", str(path)], capture_output=True, text=True, check=True)
    use = subprocess.run(
        [tool, "--dump-resource-usage", str(path)], capture_output=True, text=True, check=True
    )
    sm = re.search(r"sm=(\w+)", elf.stdout)
    res = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|LOCAL|SHARED):(\d+)", use.stdout)}
    return {"sm": sm.group(1) if sm else None, **res}


def _jsonable(v):
    return v if isinstance(v, (bool, int, float, str)) or v is None else str(v)


def compile_all(out_path: Path) -> None:
    """Record every config's launches, compile each distinct specialisation for every arch."""
    assert os.environ.get("TRITON_INTERPRET") != "1", "compiling needs the interpreter off"
    try:
        import triton  # noqa: F401
    except ImportError as e:  # the one case the tests skip: say why
        out_path.write_text(json.dumps({"skip": f"triton is not importable: {e!r}"}))
        return
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.compiler import compile as tcompile
    from triton.runtime.jit import JITFunction, create_function_from_signature

    from lstmkit.engines import triton_gpu, triton_gru, triton_lstm

    launches: list = []

    class Recorder:
        def __init__(self, kernel):
            assert isinstance(kernel, JITFunction), f"{kernel!r} is not a compiling JITFunction"
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append((self.kernel, args, kwargs))

    for module in (triton_lstm, triton_gru):
        for name in (n for names in KERNELS.values() for n in names):
            if hasattr(module, name):
                setattr(module, name, Recorder(getattr(module, name)))
    triton_gpu.interpreting = lambda: True  # lets the engine accept CPU tensors; nothing runs

    tmp = out_path.parent
    report: dict = {}
    for cfg in CONFIGS:
        entry = report[cfg.id] = {"error": None, "compiled": {str(a): {} for a in ARCHS}}
        launches.clear()
        try:
            _record(cfg, launches)
        except Exception:  # reported per config: the tests fail with this traceback
            entry["error"] = traceback.format_exc()
            continue
        for arch in ARCHS:
            target = GPUTarget("cuda", arch, 32)
            backend = make_backend(target)
            seen = set()
            for kernel, args, kwargs in launches:  # bound as JITFunction.run binds them
                bind = create_function_from_signature(kernel.signature, kernel.params, backend)
                bound, spec, opts = bind(*args, **kwargs)
                options, sig, consts, attrs = kernel._pack_args(backend, kwargs, bound, spec, opts)
                key = repr((kernel.fn.__name__, sig, consts, attrs))
                if key in seen:
                    continue
                seen.add(key)
                names = list(kernel.arg_names)
                rec = {
                    "params": names,
                    "signature": {k: v for k, v in sig.items() if v != "constexpr"},
                    "constexprs": {names[p[0]]: _jsonable(v) for p, v in consts.items()},
                    "aligned": sorted(names[p[0]] for p, a in attrs.items() if a),
                    "error": None,
                }
                try:
                    src = ASTSource(kernel, sig, consts, attrs)
                    compiled = tcompile(src, target=target, options=options.__dict__)
                    cubin = compiled.asm["cubin"]
                    rec.update(cubin_bytes=len(cubin), **_resources(cubin, tmp))
                except Exception:  # reported per specialisation: the test fails with it
                    rec["error"] = traceback.format_exc()
                runs = entry["compiled"][str(arch)].setdefault(kernel.fn.__name__, [])
                runs.append(rec)
    out_path.write_text(json.dumps(report, indent=1))


# ---------------------------------------------------------------- the tests (never import triton)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("triton_aot")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp / "cache")  # empty: every cubin comes from ptxas now
    out = tmp / "report.json"
    proc = subprocess.run(
        [sys.executable, __file__, str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"compile process failed:\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(out.read_text())
    if "skip" in data:
        pytest.skip(data["skip"])
    return data


CASES = [(c, k, a) for c in CONFIGS for k in KERNELS[c.cell] for a in ARCHS]


@pytest.mark.parametrize("cfg,kernel,arch", CASES, ids=[f"{c.id}-{k}-sm{a}" for c, k, a in CASES])
def test_kernel_compiles_to_cubin(report, cfg: Config, kernel: str, arch: int):
    entry = report[cfg.id]
    assert entry["error"] is None, f"{cfg.id}: recording the launches failed:\n{entry['error']}"
    runs = entry["compiled"][str(arch)].get(kernel)
    assert runs, f"{cfg.id}: the engine never launched {kernel} (launched: {entry['compiled']})"
    for rec in runs:
        assert rec["error"] is None, f"{kernel} for sm_{arch}, {rec['constexprs']}:\n{rec['error']}"
        assert rec["cubin_bytes"] > 0, f"{kernel} for sm_{arch}: empty cubin"
        assert rec["sm"] in (str(arch), f"{arch}a"), f"cubin is for sm_{rec['sm']}, not sm_{arch}"
        names = [k for k in cfg.flags if k in rec["params"]]  # e.g. no HAS_BIAS in backward
        assert {"LN", "ZONE_H", "ACC"} <= set(names), f"{kernel} params: {rec['params']}"
        flags = {k: rec["constexprs"].get(k, "<not a constexpr>") for k in names}
        expected = {k: cfg.flags[k] for k in names}
        assert flags == expected, f"{cfg.id}: {kernel} launched with {flags}, config is {expected}"
        pointers = set(rec["signature"].values())
        assert f"*{cfg.dtype}" in pointers, f"{kernel}: no *{cfg.dtype} argument in {pointers}"
        # Triton specialises H on divisibility by 16 (vectorised rows): both variants compile
        assert ("H" in rec["aligned"]) == (cfg.hidden % 16 == 0), rec["aligned"]


def test_every_kernel_is_covered():
    """Each @triton.jit kernel in lstmkit/engines/triton_*.py is in KERNELS (so gets compiled)."""
    import ast

    found = set()
    for path in (Path(__file__).parents[1] / "lstmkit" / "engines").glob("triton_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            jit = isinstance(node, ast.FunctionDef) and any(
                ast.unparse(d) == "triton.jit" for d in node.decorator_list
            )
            if jit and not node.name.startswith("_"):  # _helpers are compiled inside kernels
                found.add(node.name)
    assert found == {k for names in KERNELS.values() for k in names}, found


if __name__ == "__main__":
    compile_all(Path(sys.argv[1]))
