"""The prompt GEMMs on the GPU machine: the wgmma kernels (wgmma_gemm_sm90a.cu, NVRTC for sm_90a as the C# backend
compiles them) against float64 references on fresh random inputs, then timed at the exact Mixtral 8x7B shapes beside
the mma.sync kernels of gemm.cu and torch.matmul in bf16 (the ceiling) in the same run.

    python3 kernels/harness/prompt_gemm.py [--tokens 512,2048,8192] [--define WGG_STAGES=5 ...] [--no-timings]

Prints a table; with $OUT set, writes $OUT/prompt-gemm.json.
"""
import argparse
import ctypes
import json
import os
import pathlib
import sys
import tempfile

import cupy as cp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from decode_kernels import (E, H, HERE, I, K, QKV, f16, module, moe_prompt, random_experts, ref_moe, rel, tile,  # noqa: E402
                            time_ms)

WGG_THREADS, WGG_TOKENS, WGG_ROWS = 384, 128, 256
TILES = (128, 64, 32)  # token tiles BN the kernels are stamped out for


def nvrtc_cubin(cu, arch="sm_90a", defines=()):
    """Compiles one kernels/*.cu the way CudaDevice.Compile does (headers by name) and returns the cubin's path."""
    lib = None
    for name in ("libnvrtc.so.13", "/usr/local/cuda/lib64/libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            pass
    assert lib is not None, "no NVRTC"
    headers = sorted(HERE.glob("*.cuh"))
    prog = ctypes.c_void_p()
    hs = (ctypes.c_char_p * len(headers))(*[h.read_bytes() for h in headers])
    hn = (ctypes.c_char_p * len(headers))(*[h.name.encode() for h in headers])
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), cu.read_bytes(), cu.name.encode(), len(headers), hs, hn) == 0
    opts = [f"--gpu-architecture={arch}", "--std=c++17", "-default-device", "-lineinfo"] + [f"-D{d}" for d in defines]
    r = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts]))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    text = log.value.decode(errors="replace").strip()
    if text:
        print(f"NVRTC {cu.name}: {text}")
    assert r == 0, f"NVRTC could not compile {cu.name}"
    lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
    cubin = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetCUBIN(prog, cubin)
    path = pathlib.Path(tempfile.mkdtemp()) / (cu.stem + ".cubin")
    path.write_bytes(cubin.raw)
    return str(path)


class Wgmma:
    """The wgmma kernels of one token tile BN (128 for prompts, 64 and 32 for decode steps)."""

    def __init__(self, defines=()):
        src = (HERE / "wgmma_gemm_sm90a.cu").read_text()
        stages = next((int(d.split("=")[1]) for d in defines if d.startswith("WGG_STAGES=")), 6)
        self.smem_for = lambda bn: stages * bn * 128 + 2 * stages * 8 + bn * 8 + 1024  # WGG_SMEM_FOR
        self.smem = self.smem_for(WGG_TOKENS)
        self.cubin = nvrtc_cubin(HERE / "wgmma_gemm_sm90a.cu", defines=defines)
        self.mod = cp.RawModule(path=self.cubin)
        self.f = {}
        for bn in TILES:
            for name in ("wgmma_dense_i8", "wgmma_gate_up_i8", "wgmma_down_i8"):
                f = self.mod.get_function(f"{name}_n{bn}")
                f.max_dynamic_shared_size_bytes = self.smem_for(bn)
                self.f[f"{name}_n{bn}"] = f
        self.perm = self.mod.get_function("permute_units_f16")
        assert "WGG_SMEM" in src

    def permute(self, x16, xp, T, C):
        """x16 → xp in the wgmma input order (the backend does this before every wgmma product)."""
        self.perm((T,), (256,), (x16, xp, np.int32(T), np.int32(C)))
        return xp

    def dense(self, W, scales, x16, y, T, acc=0, xp=None, bn=128):
        R, C = W.shape
        xp = self.permute(x16, cp.empty_like(x16) if xp is None else xp, T, C)
        self.f[f"wgmma_dense_i8_n{bn}"](((T + bn - 1) // bn, (R + 255) // 256), (WGG_THREADS,),
                                        (W, scales, xp, y, np.int32(T), np.int32(R), np.int32(C), np.int32(acc)), shared_mem=self.smem_for(bn))

    def experts(self, k, W13, s13, W2, s2, ids, w, x16, h16, out, T, I_, H_, bufs=None, xp=None, bn=128, split=1):
        """out [T·K·split, H]: row p·split + z is part z of pair p's down product (the norm adds a token's K·split rows)."""
        P = T * K
        x16 = self.permute(x16, cp.empty_like(x16) if xp is None else xp, T, H_)
        mt = P // bn + E
        if bufs is None:
            bufs = (cp.zeros(P, cp.int32), cp.zeros(3 * mt, cp.int32), cp.zeros(1, cp.int32))
        slots, tiles, count = bufs
        k.moe_group((1,), (256,), (ids, np.int32(P), np.int32(E), np.int32(bn), slots, tiles, count))
        self.f[f"wgmma_gate_up_i8_n{bn}"]((mt, I_ // 128), (WGG_THREADS,), (W13, s13, tiles, count, slots, x16, h16, np.int32(I_), np.int32(H_), np.int32(K)),
                                          shared_mem=self.smem_for(bn))
        self.f[f"wgmma_down_i8_n{bn}"]((mt, H_ // 256, split), (WGG_THREADS,), (W2, s2, tiles, count, slots, w, h16, out, np.int32(H_), np.int32(I_)),
                                       shared_mem=self.smem_for(bn))


def checks(wg, k):
    cp.random.seed(int.from_bytes(os.urandom(4), "little"))
    res = []
    for (R, C, T, bn) in [(1280, 1024, 300, 128), (6144, 4096, 128, 128), (512, 14336, 77, 128), (4096, 4096, 1, 128),
                          (1280, 1024, 100, 64), (6144, 4096, 64, 32), (512, 14336, 33, 32)]:
        x16 = f16(cp.random.standard_normal((T, C), dtype=cp.float32))
        Wq = cp.random.randint(-127, 128, (R, C), dtype=cp.int8)
        sc = (cp.random.random_sample(R, dtype=cp.float32) * 0.01 + 0.001).astype(cp.float32)
        y = cp.full((T, R), cp.nan, cp.float32)
        wg.dense(tile(Wq), sc, x16, y, T, bn=bn)
        ref = x16.astype(cp.float64) @ (Wq.astype(cp.float64) * sc[:, None]).T
        r1 = rel(y, ref)
        y2 = cp.random.standard_normal((T, R), dtype=cp.float32)
        base = y2.astype(cp.float64)
        wg.dense(tile(Wq), sc, x16, y2, T, acc=1, bn=bn)
        r2 = rel(y2, base + ref)
        ok = r1 < 1e-4 and r2 < 1e-4 and not bool(cp.isnan(y).any())  # fp32 sums of up to 14,336 exact fp16 products
        res.append((f"wgmma dense n{bn}", f"{T}x{R}x{C}", r1, r2, ok))
    for (I_, H_, T, bn, split) in [(1024, 1024, 300, 128, 1), (1024, 1024, 600, 128, 1), (1024, 1024, 600, 128, 2), (2048, 512, 40, 128, 1), (14336, 4096, 70, 128, 1),
                                   (1024, 1024, 100, 64, 1), (2048, 512, 64, 32, 2), (14336, 4096, 64, 32, 2), (14336, 4096, 128, 64, 1)]:
        W13, s13, W2, s2 = random_experts(I_, H_, True)
        x = cp.random.standard_normal((T, H_), dtype=cp.float32)
        x16 = f16(x)
        ids = cp.asarray(np.stack([np.random.permutation(E)[:K] for _ in range(T)]).reshape(-1).astype(np.int32))
        w = cp.random.random_sample(T * K, dtype=cp.float32)
        h16 = cp.full((T * K, I_), cp.nan, cp.float16)
        parts = cp.full((T * K * split, H_), cp.nan, cp.float32)
        wg.experts(k, tile(W13), s13, tile(W2), s2, ids, w, x16, h16, parts, T, I_, H_, bn=bn, split=split)
        out = parts.reshape(T * K, split, H_).sum(axis=1)
        ref = ref_moe(W13, s13, W2, s2, ids, w, x16, T, I_, H_) if T <= 100 or I_ <= 2048 else None
        r = rel(out, ref) if ref is not None else float("nan")
        # the old kernels on the same inputs (their order of sums differs: compare as two implementations)
        out_old = cp.full((T * K, H_), cp.nan, cp.float32)
        h_old = cp.zeros((T * K, I_), cp.float16)
        moe_prompt(k, tile(W13), s13, tile(W2), s2, ids, w, x16, h_old, out_old, T, I_, H_)
        ro = rel(out, out_old)
        ok = (ref is None or r < 2e-3) and ro < 1e-4 and not bool(cp.isnan(out).any())
        res.append((f"wgmma experts n{bn}", f"T={T} I={I_} H={H_} split {split}", r, ro, ok))
    for name, what, a, b, ok in res:
        print(f"check {name:20} {what:30} rel {a:9.2e}  {b:9.2e}  {'ok' if ok else 'FAILED'}")
    return res


def timings(wg, k, tokens, dense=True, down_parts=(1,)):
    import torch
    cp.random.seed(3)
    rows = []
    for T in tokens:
        for name, (R, C) in ({"qkv": (QKV, H), "o": (H, H)} if dense else {}).items():
            W = tile(cp.random.randint(-127, 128, (R, C), dtype=cp.int8)); sc = cp.full(R, 1e-3, cp.float32)
            x16 = f16(cp.random.standard_normal((T, C), dtype=cp.float32)); y = cp.zeros((T, R), cp.float32)
            xp = cp.empty_like(x16)
            new = time_ms(lambda: wg.dense(W, sc, x16, y, T, xp=xp), iters=10)
            narrow = {bn: time_ms(lambda bn=bn: wg.dense(W, sc, x16, y, T, xp=xp, bn=bn), iters=10) for bn in (64, 32)}
            old = time_ms(lambda: k.gemm_i8(((R + 255) // 256, (T + 63) // 64), (256,), (W, sc, x16, y, np.int32(T), np.int32(R), np.int32(C), np.int32(0))), iters=10)
            a = torch.randn(T, C, device="cuda", dtype=torch.bfloat16); b = torch.randn(C, R, device="cuda", dtype=torch.bfloat16)
            tt = torch_ms(lambda: torch.matmul(a, b))
            fl = 2 * T * R * C
            for bn, ms in narrow.items():
                rows.append({"op": f"dense {name} n{bn}", "T": T, "wgmma_ms": ms, "mma_sync_ms": old, "torch_bf16_ms": tt,
                             "wgmma_TFLOPs": fl / ms / 1e9, "mma_sync_TFLOPs": fl / old / 1e9, "torch_TFLOPs": fl / tt / 1e9})
            rows.append({"op": f"dense {name}", "T": T, "wgmma_ms": new, "mma_sync_ms": old, "torch_bf16_ms": tt,
                         "wgmma_TFLOPs": fl / new / 1e9, "mma_sync_TFLOPs": fl / old / 1e9, "torch_TFLOPs": fl / tt / 1e9})
        layers = 2
        W13 = [tile(cp.random.randint(-127, 128, (E, 2 * I, H), dtype=cp.int8)) for _ in range(layers)]
        W2 = [tile(cp.random.randint(-127, 128, (E, H, I), dtype=cp.int8)) for _ in range(layers)]
        s13 = cp.full((E, 2 * I), 1e-3, cp.float32); s2 = cp.full((E, H), 1e-3, cp.float32)
        x16 = f16(cp.random.standard_normal((T, H), dtype=cp.float32))
        rng = np.random.default_rng(T)  # the same routing for every variant (--define) of the kernels: comparable tile counts
        ids = cp.asarray(np.stack([rng.permutation(E)[:K] for _ in range(T)]).reshape(-1).astype(np.int32))
        w = cp.ones(T * K, cp.float32); h16 = cp.zeros((T * K, I), cp.float16); o = cp.zeros((T * K * max(down_parts), H), cp.float32)
        b128 = (cp.zeros(T * K, cp.int32), cp.zeros(3 * (T * K // 128 + E), cp.int32), cp.zeros(1, cp.int32))
        b64 = (cp.zeros(T * K, cp.int32), cp.zeros(3 * (T * K // 64 + E), cp.int32), cp.zeros(1, cp.int32))
        it = iter(range(10 ** 9))
        xp = cp.empty_like(x16)
        news = {parts: time_ms(lambda parts=parts: wg.experts(k, W13[next(it) % layers], s13, W2[next(it) % layers], s2, ids, w, x16, h16, o, T, I, H, b128, xp,
                                                            split=parts), iters=4) for parts in down_parts}
        new = news[down_parts[0]]
        old = time_ms(lambda: moe_prompt(k, W13[next(it) % layers], s13, W2[next(it) % layers], s2, ids, w, x16, h16, o, T, I, H, b64), iters=4)
        # ceiling: the same expert FLOPs as bf16 matmuls of T·K/E tokens per expert (uniform routing)
        n = T * K // E
        xa = torch.randn(n, H, device="cuda", dtype=torch.bfloat16)
        w13 = torch.randn(H, 2 * I, device="cuda", dtype=torch.bfloat16); w2 = torch.randn(I, H, device="cuda", dtype=torch.bfloat16)
        def tref():
            for _ in range(E):
                g = torch.matmul(xa, w13)
                torch.matmul(g[:, :I], w2)
        tt = torch_ms(tref)
        fl = 2 * T * K * 3 * I * H
        tiles = int(cp.asnumpy(b128[2])[0])
        for parts in down_parts[1:]:
            rows.append({"op": f"experts, down in {parts} parts", "T": T, "wgmma_ms": news[parts], "mma_sync_ms": old, "torch_bf16_ms": tt,
                         "wgmma_TFLOPs": fl / news[parts] / 1e9, "mma_sync_TFLOPs": fl / old / 1e9, "torch_TFLOPs": fl / tt / 1e9, "tiles": tiles})
        rows.append({"op": "experts (gate_up + down)", "T": T, "tiles": tiles, "wgmma_ms": new, "mma_sync_ms": old, "torch_bf16_ms": tt,
                     "wgmma_TFLOPs": fl / new / 1e9, "mma_sync_TFLOPs": fl / old / 1e9, "torch_TFLOPs": fl / tt / 1e9})
        del W13, W2
    for r in rows:
        print(f"time {r['op']:26} T={r['T']:5}{' tiles ' + str(r['tiles']) if 'tiles' in r else ''}: wgmma {r['wgmma_ms']:7.3f} ms {r['wgmma_TFLOPs']:5.0f} TFLOP/s | mma.sync {r['mma_sync_ms']:7.3f} ms "
              f"{r['mma_sync_TFLOPs']:5.0f} | torch bf16 {r['torch_bf16_ms']:7.3f} ms {r['torch_TFLOPs']:5.0f}")
    return rows


def decode_timings(wg, k, tokens=(16, 32, 64, 128), dense=True):
    """Decode steps of T sequences (one token each) at the 8x7B shapes: the experts and the dense products through every
    kernel that can run them, as weight-read bandwidth (each expert in use read once per step is the floor)."""
    from decode_kernels import gemv, moe, nt_for
    cp.random.seed(7)
    layers = 2  # two layers' weights alternate, so nothing stays in L2 between calls
    W13 = [tile(cp.random.randint(-127, 128, (E, 2 * I, H), dtype=cp.int8)) for _ in range(layers)]
    W2 = [tile(cp.random.randint(-127, 128, (E, H, I), dtype=cp.int8)) for _ in range(layers)]
    s13 = cp.full((E, 2 * I), 1e-3, cp.float32); s2 = cp.full((E, H), 1e-3, cp.float32)
    dense_w = {name: [(tile(cp.random.randint(-127, 128, (R, H), dtype=cp.int8)), cp.full(R, 1e-3, cp.float32)) for _ in range(4)]
             for name, R in (("qkv", QKV), ("o", H))}
    rows = []
    for T in tokens:
        rng = np.random.default_rng(T)
        ids_h = np.stack([rng.permutation(E)[:K] for _ in range(T)]).reshape(-1).astype(np.int32)
        ids = cp.asarray(ids_h)
        used = len(set(ids_h.tolist()))
        most = int(np.bincount(ids_h, minlength=E).max())
        x16 = f16(cp.random.standard_normal((T, H), dtype=cp.float32)); xp = cp.empty_like(x16)
        w = cp.ones(T * K, cp.float32); h16 = cp.zeros((T * K, I), cp.float16); o = cp.zeros((T * K * 2, H), cp.float32)
        it = iter(range(10 ** 9))
        variants = []
        if T <= 128:
            variants.append((f"skinny moe nt{nt_for(T)}", lambda: moe(k, W13[next(it) % layers], s13, W2[next(it) % layers], s2, ids, w, x16, h16, o, T, I, H)))
        for bn in TILES:
            for split in ((1, 2) if bn == 32 else (1,)):
                bufs = (cp.zeros(T * K, cp.int32), cp.zeros(3 * (T * K // bn + E), cp.int32), cp.zeros(1, cp.int32))
                variants.append((f"wgmma n{bn}" + (f" down split {split}" if split > 1 else ""), lambda bn=bn, split=split, bufs=bufs: wg.experts(
                    k, W13[next(it) % layers], s13, W2[next(it) % layers], s2, ids, w, x16, h16, o, T, I, H, bufs, xp, bn=bn, split=split)))
        for name, f in variants:
            ms = time_ms(f, iters=10)
            rows.append({"op": "experts", "T": T, "kernel": name, "ms": ms, "GB/s": used * 3 * I * H / ms / 1e6, "experts_used": used, "most_tokens": most})
        for dname, ws in (dense_w.items() if dense else ()):
            R = ws[0][0].shape[0]
            y = cp.zeros((T, R), cp.float32)
            dv = []
            if T <= 64:
                dv.append((f"gemv nt{nt_for(T)}", lambda ws=ws, y=y: gemv(k, *ws[next(it) % 4], x16, y, T)))
            dv.append(("gemm (mma.sync, 64-token tiles)", lambda ws=ws, y=y, R=R: k.gemm_i8(((R + 255) // 256, (T + 63) // 64), (256,),
                       (*ws[next(it) % 4], x16, y, np.int32(T), np.int32(R), np.int32(H), np.int32(0)))))
            for bn in TILES:
                dv.append((f"wgmma n{bn}", lambda ws=ws, y=y, bn=bn: wg.dense(*ws[next(it) % 4], x16, y, T, xp=xp, bn=bn)))
            for name, f in dv:
                ms = time_ms(f, iters=20)
                rows.append({"op": f"dense {dname}", "T": T, "kernel": name, "ms": ms, "GB/s": R * H / ms / 1e6})
    for r in rows:
        print(f"decode {r['op']:9} T={r['T']:4} {r['kernel']:34} {r['ms'] * 1000:9.1f} us {r['GB/s']:7.0f} GB/s"
              + (f"  ({r['experts_used']} experts, most tokens {r['most_tokens']})" if "experts_used" in r else ""))
    return rows


def torch_ms(fn, iters=10, reps=5):
    import torch
    fn(); torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(iters):
            fn()
        e.record(); e.synchronize()
        ts.append(s.elapsed_time(e) / iters)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="512,2048")
    ap.add_argument("--define", action="append", default=[])
    ap.add_argument("--no-timings", action="store_true")
    ap.add_argument("--down-parts", default="1", help="experts' down product in these numbers of parts (the first is the table's)")
    ap.add_argument("--diagnostic", action="store_true", help="no checks (WGG_DIAG variants compute garbage): time the experts only")
    ap.add_argument("--save-cubin", help="copy the compiled cubin here (for cuobjdump)")
    ap.add_argument("--decode", action="store_true", help="also time decode steps' experts and dense products (T = 16..128) by kernel")
    ap.add_argument("--decode-only", action="store_true", help="only the decode timings (experts, T = 32..128), for --define variants")
    args = ap.parse_args()
    wg = Wgmma(tuple(args.define))
    if args.save_cubin:
        import shutil
        shutil.copy(wg.cubin, args.save_cubin)
    for name, f in wg.f.items():
        print(f"{' '.join(args.define) or 'default':40} {name:24} registers {f.attributes['num_regs']:3}  local bytes {f.attributes['local_size_bytes']:4}  dynamic shared {f.max_dynamic_shared_size_bytes}")
    k = module(HERE)
    if args.decode_only:
        rows = decode_timings(wg, k, tokens=(32, 64, 128), dense=False)
        if os.environ.get("OUT"):
            pathlib.Path(os.environ["OUT"], "decode-experts" + ("-" + "-".join(args.define).replace("=", "_") if args.define else "") + ".json").write_text(json.dumps(rows, indent=1))
        return
    if args.diagnostic:
        timings(wg, k, [int(t) for t in args.tokens.split(",")], dense=False)
        return
    res = checks(wg, k)
    out = {"checks": [{"name": n, "what": w, "rel": a, "rel2": b, "ok": ok} for n, w, a, b, ok in res], "defines": args.define}
    if args.decode and all(r[-1] for r in res):
        out["decode"] = decode_timings(wg, k)
    if not args.no_timings and all(r[-1] for r in res):
        out["timings"] = timings(wg, k, [int(t) for t in args.tokens.split(",")], down_parts=tuple(int(p) for p in args.down_parts.split(",")))
    if os.environ.get("OUT"):
        pathlib.Path(os.environ["OUT"], "prompt-gemm" + ("-" + "-".join(args.define).replace("=", "_") if args.define else "") + ".json").write_text(json.dumps(out, indent=1))
    failed = sum(not r[-1] for r in res)
    print(f"{len(res) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
