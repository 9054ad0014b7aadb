using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace OrleansMixtral.Engine.Cpu;

/// <summary>
/// y[t, r] = Σ_c x[t, c]·W[r, c] over a range of weight rows, for fp32 or int8 W. The inner loop is a 4-row ×
/// 4-token register tile (16 AVX2 accumulators): each weight vector is loaded once for four tokens, which
/// is what makes prefill (many tokens) compute-bound instead of bound by reloading rows.
/// </summary>
public static class MatMul
{
    static bool Fast => Avx2.IsSupported && Fma.IsSupported;

    public static void Float32(float[] x, int tokens, float[] w, int rows, int cols, float[] y, int rowStart, int rowEnd)
    {
        if (!Fast || cols % 8 != 0)
        {
            Scalar(x, tokens, (r, c) => w[(long)r * cols + c], rows, cols, y, rowStart, rowEnd, null);
            return;
        }
        ref var xr = ref MemoryMarshal.GetArrayDataReference(x);
        ref var wr = ref MemoryMarshal.GetArrayDataReference(w);
        var r = rowStart;
        for (; r + 4 <= rowEnd; r += 4)
        {
            ref var w0 = ref Unsafe.Add(ref wr, (nint)r * cols);
            ref var w1 = ref Unsafe.Add(ref w0, cols);
            ref var w2 = ref Unsafe.Add(ref w1, cols);
            ref var w3 = ref Unsafe.Add(ref w2, cols);
            var t = 0;
            for (; t + 4 <= tokens; t += 4)
            {
                ref var x0 = ref Unsafe.Add(ref xr, (nint)t * cols);
                Tile4x4(ref x0, cols, ref w0, ref w1, ref w2, ref w3, out var o);
                Store4x4(y, rows, r, t, o, null);
            }
            for (; t < tokens; t++)
            {
                ref var x0 = ref Unsafe.Add(ref xr, (nint)t * cols);
                var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
                for (var c = 0; c < cols; c += 8)
                {
                    var xv = Vector256.LoadUnsafe(ref x0, (nuint)c);
                    a0 = Fma.MultiplyAdd(Vector256.LoadUnsafe(ref w0, (nuint)c), xv, a0);
                    a1 = Fma.MultiplyAdd(Vector256.LoadUnsafe(ref w1, (nuint)c), xv, a1);
                    a2 = Fma.MultiplyAdd(Vector256.LoadUnsafe(ref w2, (nuint)c), xv, a2);
                    a3 = Fma.MultiplyAdd(Vector256.LoadUnsafe(ref w3, (nuint)c), xv, a3);
                }
                y[t * rows + r] = Vector256.Sum(a0);
                y[t * rows + r + 1] = Vector256.Sum(a1);
                y[t * rows + r + 2] = Vector256.Sum(a2);
                y[t * rows + r + 3] = Vector256.Sum(a3);
            }
        }
        for (; r < rowEnd; r++)
        {
            ref var w0 = ref Unsafe.Add(ref wr, (nint)r * cols);
            for (var t = 0; t < tokens; t++)
            {
                ref var x0 = ref Unsafe.Add(ref xr, (nint)t * cols);
                var a0 = Vector256<float>.Zero;
                for (var c = 0; c < cols; c += 8)
                    a0 = Fma.MultiplyAdd(Vector256.LoadUnsafe(ref w0, (nuint)c), Vector256.LoadUnsafe(ref x0, (nuint)c), a0);
                y[t * rows + r] = Vector256.Sum(a0);
            }
        }
    }

    public static void Int8(float[] x, int tokens, sbyte[] w, float[] scales, int rows, int cols, float[] y, int rowStart, int rowEnd)
    {
        if (!Fast || cols % 8 != 0)
        {
            Scalar(x, tokens, (r, c) => w[(long)r * cols + c], rows, cols, y, rowStart, rowEnd, scales);
            return;
        }
        ref var xr = ref MemoryMarshal.GetArrayDataReference(x);
        ref var wr = ref Unsafe.As<sbyte, byte>(ref MemoryMarshal.GetArrayDataReference(w));
        var r = rowStart;
        for (; r + 4 <= rowEnd; r += 4)
        {
            ref var w0 = ref Unsafe.Add(ref wr, (nint)r * cols);
            ref var w1 = ref Unsafe.Add(ref w0, cols);
            ref var w2 = ref Unsafe.Add(ref w1, cols);
            ref var w3 = ref Unsafe.Add(ref w2, cols);
            var t = 0;
            for (; t + 4 <= tokens; t += 4)
            {
                ref var x0 = ref Unsafe.Add(ref xr, (nint)t * cols);
                TileInt8_4x4(ref x0, cols, ref w0, ref w1, ref w2, ref w3, out var o);
                Store4x4(y, rows, r, t, o, scales);
            }
            for (; t < tokens; t++)
            {
                ref var x0 = ref Unsafe.Add(ref xr, (nint)t * cols);
                var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
                for (var c = 0; c < cols; c += 8)
                {
                    var xv = Vector256.LoadUnsafe(ref x0, (nuint)c);
                    a0 = Fma.MultiplyAdd(Widen(ref w0, c), xv, a0);
                    a1 = Fma.MultiplyAdd(Widen(ref w1, c), xv, a1);
                    a2 = Fma.MultiplyAdd(Widen(ref w2, c), xv, a2);
                    a3 = Fma.MultiplyAdd(Widen(ref w3, c), xv, a3);
                }
                y[t * rows + r] = Vector256.Sum(a0) * scales[r];
                y[t * rows + r + 1] = Vector256.Sum(a1) * scales[r + 1];
                y[t * rows + r + 2] = Vector256.Sum(a2) * scales[r + 2];
                y[t * rows + r + 3] = Vector256.Sum(a3) * scales[r + 3];
            }
        }
        for (; r < rowEnd; r++)
        {
            ref var w0 = ref Unsafe.Add(ref wr, (nint)r * cols);
            for (var t = 0; t < tokens; t++)
            {
                ref var x0 = ref Unsafe.Add(ref xr, (nint)t * cols);
                var a0 = Vector256<float>.Zero;
                for (var c = 0; c < cols; c += 8)
                    a0 = Fma.MultiplyAdd(Widen(ref w0, c), Vector256.LoadUnsafe(ref x0, (nuint)c), a0);
                y[t * rows + r] = Vector256.Sum(a0) * scales[r];
            }
        }
    }

    /// <summary>8 int8 weights → 8 floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Widen(ref byte w, int c) =>
        Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(
            Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<long>(ref Unsafe.Add(ref w, c))).AsSByte()));

    [InlineArray(16)]
    struct Tile { Vector256<float> _e; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Tile4x4(ref float x0, int cols, ref float w0, ref float w1, ref float w2, ref float w3, out Tile o)
    {
        ref var x1 = ref Unsafe.Add(ref x0, cols);
        ref var x2 = ref Unsafe.Add(ref x1, cols);
        ref var x3 = ref Unsafe.Add(ref x2, cols);
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default,
            a10 = default, a11 = default, a12 = default, a13 = default,
            a20 = default, a21 = default, a22 = default, a23 = default,
            a30 = default, a31 = default, a32 = default, a33 = default;
        for (var c = 0; c < cols; c += 8)
        {
            var v0 = Vector256.LoadUnsafe(ref x0, (nuint)c);
            var v1 = Vector256.LoadUnsafe(ref x1, (nuint)c);
            var v2 = Vector256.LoadUnsafe(ref x2, (nuint)c);
            var v3 = Vector256.LoadUnsafe(ref x3, (nuint)c);
            var k = Vector256.LoadUnsafe(ref w0, (nuint)c);
            a00 = Fma.MultiplyAdd(k, v0, a00); a01 = Fma.MultiplyAdd(k, v1, a01); a02 = Fma.MultiplyAdd(k, v2, a02); a03 = Fma.MultiplyAdd(k, v3, a03);
            k = Vector256.LoadUnsafe(ref w1, (nuint)c);
            a10 = Fma.MultiplyAdd(k, v0, a10); a11 = Fma.MultiplyAdd(k, v1, a11); a12 = Fma.MultiplyAdd(k, v2, a12); a13 = Fma.MultiplyAdd(k, v3, a13);
            k = Vector256.LoadUnsafe(ref w2, (nuint)c);
            a20 = Fma.MultiplyAdd(k, v0, a20); a21 = Fma.MultiplyAdd(k, v1, a21); a22 = Fma.MultiplyAdd(k, v2, a22); a23 = Fma.MultiplyAdd(k, v3, a23);
            k = Vector256.LoadUnsafe(ref w3, (nuint)c);
            a30 = Fma.MultiplyAdd(k, v0, a30); a31 = Fma.MultiplyAdd(k, v1, a31); a32 = Fma.MultiplyAdd(k, v2, a32); a33 = Fma.MultiplyAdd(k, v3, a33);
        }
        o = default;
        o[0] = a00; o[1] = a01; o[2] = a02; o[3] = a03; o[4] = a10; o[5] = a11; o[6] = a12; o[7] = a13;
        o[8] = a20; o[9] = a21; o[10] = a22; o[11] = a23; o[12] = a30; o[13] = a31; o[14] = a32; o[15] = a33;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void TileInt8_4x4(ref float x0, int cols, ref byte w0, ref byte w1, ref byte w2, ref byte w3, out Tile o)
    {
        ref var x1 = ref Unsafe.Add(ref x0, cols);
        ref var x2 = ref Unsafe.Add(ref x1, cols);
        ref var x3 = ref Unsafe.Add(ref x2, cols);
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default,
            a10 = default, a11 = default, a12 = default, a13 = default,
            a20 = default, a21 = default, a22 = default, a23 = default,
            a30 = default, a31 = default, a32 = default, a33 = default;
        for (var c = 0; c < cols; c += 8)
        {
            var v0 = Vector256.LoadUnsafe(ref x0, (nuint)c);
            var v1 = Vector256.LoadUnsafe(ref x1, (nuint)c);
            var v2 = Vector256.LoadUnsafe(ref x2, (nuint)c);
            var v3 = Vector256.LoadUnsafe(ref x3, (nuint)c);
            var k = Widen(ref w0, c);
            a00 = Fma.MultiplyAdd(k, v0, a00); a01 = Fma.MultiplyAdd(k, v1, a01); a02 = Fma.MultiplyAdd(k, v2, a02); a03 = Fma.MultiplyAdd(k, v3, a03);
            k = Widen(ref w1, c);
            a10 = Fma.MultiplyAdd(k, v0, a10); a11 = Fma.MultiplyAdd(k, v1, a11); a12 = Fma.MultiplyAdd(k, v2, a12); a13 = Fma.MultiplyAdd(k, v3, a13);
            k = Widen(ref w2, c);
            a20 = Fma.MultiplyAdd(k, v0, a20); a21 = Fma.MultiplyAdd(k, v1, a21); a22 = Fma.MultiplyAdd(k, v2, a22); a23 = Fma.MultiplyAdd(k, v3, a23);
            k = Widen(ref w3, c);
            a30 = Fma.MultiplyAdd(k, v0, a30); a31 = Fma.MultiplyAdd(k, v1, a31); a32 = Fma.MultiplyAdd(k, v2, a32); a33 = Fma.MultiplyAdd(k, v3, a33);
        }
        o = default;
        o[0] = a00; o[1] = a01; o[2] = a02; o[3] = a03; o[4] = a10; o[5] = a11; o[6] = a12; o[7] = a13;
        o[8] = a20; o[9] = a21; o[10] = a22; o[11] = a23; o[12] = a30; o[13] = a31; o[14] = a32; o[15] = a33;
    }

    /// <summary>Tile element [i*4 + j] holds row r+i, token t+j.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store4x4(float[] y, int rows, int r, int t, in Tile o, float[]? scales)
    {
        for (var i = 0; i < 4; i++)
        {
            var s = scales is null ? 1f : scales[r + i];
            for (var j = 0; j < 4; j++) y[(t + j) * rows + r + i] = Vector256.Sum(o[i * 4 + j]) * s;
        }
    }

    static void Scalar(float[] x, int tokens, Func<int, int, float> w, int rows, int cols, float[] y, int rowStart, int rowEnd, float[]? scales)
    {
        for (var r = rowStart; r < rowEnd; r++)
        {
            for (var t = 0; t < tokens; t++)
            {
                var sum = 0f;
                for (var c = 0; c < cols; c++) sum += x[t * cols + c] * w(r, c);
                y[t * rows + r] = scales is null ? sum : sum * scales[r];
            }
        }
    }
}
