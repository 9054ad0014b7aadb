using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace OrleansMixtral.Engine.Cpu;

/// <summary>
/// y[t, r] = scale[r] · Σ_c x[t, c]·W[r, c] over a range of weight rows, for fp32 or int8 W. The inner loop is a
/// 4-row × 4-token register tile (16 AVX2 accumulators): each weight vector is loaded once for four tokens, which
/// is what makes prefill (many tokens) compute-bound instead of bound by reloading rows. The two weight formats
/// differ only in how 8 weights become 8 floats (<see cref="IWeightRows"/>); the JIT specialises the loop for each.
/// </summary>
public static class MatMul
{
    static bool Fast => Avx2.IsSupported && Fma.IsSupported;

    public static void Float32(float[] x, int tokens, float[] w, int rows, int cols, float[] y, int rowStart, int rowEnd) =>
        Run(new Fp32Rows(w), x, tokens, rows, cols, y, rowStart, rowEnd);

    public static void Int8(float[] x, int tokens, sbyte[] w, float[] scales, int rows, int cols, float[] y, int rowStart, int rowEnd) =>
        Run(new Int8Rows(w, scales), x, tokens, rows, cols, y, rowStart, rowEnd);

    /// <summary>A weight matrix [rows, cols] read as floats; offsets count elements from its start.</summary>
    interface IWeightRows
    {
        Vector256<float> Load8(nint offset);
        float Load1(nint offset);
        float Scale(int row);
    }

    readonly struct Fp32Rows(float[] w) : IWeightRows
    {
        public Vector256<float> Load8(nint offset) => Vector256.LoadUnsafe(ref MemoryMarshal.GetArrayDataReference(w), (nuint)offset);
        public float Load1(nint offset) => w[offset];
        public float Scale(int row) => 1f;
    }

    readonly struct Int8Rows(sbyte[] w, float[] scales) : IWeightRows
    {
        /// <summary>8 int8 weights → 8 floats (the row's scale is applied to the finished dot product).</summary>
        public Vector256<float> Load8(nint offset) =>
            Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Vector128.CreateScalarUnsafe(
                Unsafe.ReadUnaligned<long>(ref Unsafe.As<sbyte, byte>(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(w), offset)))).AsSByte()));
        public float Load1(nint offset) => w[offset];
        public float Scale(int row) => scales[row];
    }

    static void Run<TRows>(TRows w, float[] x, int tokens, int rows, int cols, float[] y, int rowStart, int rowEnd)
        where TRows : struct, IWeightRows
    {
        if (!Fast || cols % 8 != 0)
        {
            Scalar(w, x, tokens, rows, cols, y, rowStart, rowEnd);
            return;
        }
        ref var xr = ref MemoryMarshal.GetArrayDataReference(x);
        var r = rowStart;
        for (; r + 4 <= rowEnd; r += 4)
        {
            nint o0 = (nint)r * cols, o1 = o0 + cols, o2 = o1 + cols, o3 = o2 + cols;
            var t = 0;
            for (; t + 4 <= tokens; t += 4)
            {
                Tile4x4(w, ref Unsafe.Add(ref xr, (nint)t * cols), cols, o0, o1, o2, o3, out var o);
                for (var i = 0; i < 4; i++)
                {
                    var s = w.Scale(r + i);
                    for (var j = 0; j < 4; j++) y[(t + j) * rows + r + i] = Vector256.Sum(o[i * 4 + j]) * s;
                }
            }
            for (; t < tokens; t++)
            {
                ref var x0 = ref Unsafe.Add(ref xr, (nint)t * cols);
                var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
                for (var c = 0; c < cols; c += 8)
                {
                    var xv = Vector256.LoadUnsafe(ref x0, (nuint)c);
                    a0 = Fma.MultiplyAdd(w.Load8(o0 + c), xv, a0);
                    a1 = Fma.MultiplyAdd(w.Load8(o1 + c), xv, a1);
                    a2 = Fma.MultiplyAdd(w.Load8(o2 + c), xv, a2);
                    a3 = Fma.MultiplyAdd(w.Load8(o3 + c), xv, a3);
                }
                y[t * rows + r] = Vector256.Sum(a0) * w.Scale(r);
                y[t * rows + r + 1] = Vector256.Sum(a1) * w.Scale(r + 1);
                y[t * rows + r + 2] = Vector256.Sum(a2) * w.Scale(r + 2);
                y[t * rows + r + 3] = Vector256.Sum(a3) * w.Scale(r + 3);
            }
        }
        for (; r < rowEnd; r++)
        {
            var o0 = (nint)r * cols;
            for (var t = 0; t < tokens; t++)
            {
                ref var x0 = ref Unsafe.Add(ref xr, (nint)t * cols);
                var a0 = Vector256<float>.Zero;
                for (var c = 0; c < cols; c += 8)
                    a0 = Fma.MultiplyAdd(w.Load8(o0 + c), Vector256.LoadUnsafe(ref x0, (nuint)c), a0);
                y[t * rows + r] = Vector256.Sum(a0) * w.Scale(r);
            }
        }
    }

    [InlineArray(16)]
    struct Tile { Vector256<float> _e; }

    /// <summary>Rows o0..o3 × tokens x0..x0+3cols: tile element [i*4 + j] holds row i, token j.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Tile4x4<TRows>(TRows w, ref float x0, int cols, nint o0, nint o1, nint o2, nint o3, out Tile o)
        where TRows : struct, IWeightRows
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
            var k = w.Load8(o0 + c);
            a00 = Fma.MultiplyAdd(k, v0, a00); a01 = Fma.MultiplyAdd(k, v1, a01); a02 = Fma.MultiplyAdd(k, v2, a02); a03 = Fma.MultiplyAdd(k, v3, a03);
            k = w.Load8(o1 + c);
            a10 = Fma.MultiplyAdd(k, v0, a10); a11 = Fma.MultiplyAdd(k, v1, a11); a12 = Fma.MultiplyAdd(k, v2, a12); a13 = Fma.MultiplyAdd(k, v3, a13);
            k = w.Load8(o2 + c);
            a20 = Fma.MultiplyAdd(k, v0, a20); a21 = Fma.MultiplyAdd(k, v1, a21); a22 = Fma.MultiplyAdd(k, v2, a22); a23 = Fma.MultiplyAdd(k, v3, a23);
            k = w.Load8(o3 + c);
            a30 = Fma.MultiplyAdd(k, v0, a30); a31 = Fma.MultiplyAdd(k, v1, a31); a32 = Fma.MultiplyAdd(k, v2, a32); a33 = Fma.MultiplyAdd(k, v3, a33);
        }
        o = default;
        o[0] = a00; o[1] = a01; o[2] = a02; o[3] = a03; o[4] = a10; o[5] = a11; o[6] = a12; o[7] = a13;
        o[8] = a20; o[9] = a21; o[10] = a22; o[11] = a23; o[12] = a30; o[13] = a31; o[14] = a32; o[15] = a33;
    }

    static void Scalar<TRows>(TRows w, float[] x, int tokens, int rows, int cols, float[] y, int rowStart, int rowEnd)
        where TRows : struct, IWeightRows
    {
        for (var r = rowStart; r < rowEnd; r++)
        {
            for (var t = 0; t < tokens; t++)
            {
                var sum = 0f;
                for (var c = 0; c < cols; c++) sum += x[t * cols + c] * w.Load1((nint)r * cols + c);
                y[t * rows + r] = sum * w.Scale(r);
            }
        }
    }
}
