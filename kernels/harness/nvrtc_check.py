"""Compile-checks every kernels/*.cu with NVRTC (no GPU needed), the way the C# backend compiles them:
headers passed by name, --gpu-architecture=sm_90, -default-device, --std=c++17.

    python3 kernels/harness/nvrtc_check.py [--lib libnvrtc.so.11.2] [--arch sm_90]

On this project's CPU machines NVRTC 11.8 comes from Debian's non-free libnvrtc11.2; the GPU machine's
NVRTC 13 is the one that counts, but syntax and type errors show up here first.
"""
import argparse
import ctypes
import pathlib
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--lib", default="libnvrtc.so.11.2")
ap.add_argument("--arch", default="sm_90")
args = ap.parse_args()
nv = ctypes.CDLL(args.lib)
here = pathlib.Path(__file__).resolve().parent.parent
headers = sorted(here.glob("*.cuh"))
failed = 0
for cu in sorted(here.glob("*.cu")):
    if cu.name.endswith("_sm90a.cu") and args.arch != "sm_90a":
        continue  # wgmma/setmaxnreg: compile-check with --arch sm_90a (NVRTC ≥ 12)
    prog = ctypes.c_void_p()
    hs = (ctypes.c_char_p * len(headers))(*[h.read_bytes() for h in headers])
    hn = (ctypes.c_char_p * len(headers))(*[h.name.encode() for h in headers])
    assert nv.nvrtcCreateProgram(ctypes.byref(prog), cu.read_bytes(), cu.name.encode(), len(headers), hs, hn) == 0
    opts = [f"--gpu-architecture={args.arch}".encode(), b"--std=c++17", b"-default-device"]
    r = nv.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    nv.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nv.nvrtcGetProgramLog(prog, log)
    text = log.value.decode(errors="replace").strip()
    print(f"{cu.name}: {'ok' if r == 0 else 'FAILED'}" + (f"\n{text}" if text else ""))
    failed += r != 0
    nv.nvrtcDestroyProgram(ctypes.byref(prog))
sys.exit(1 if failed else 0)
