using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace OrleansMixtral.Engine.Cpu;

/// <summary>The element-wise and reduction ops of the forward pass, on fp32 rows.</summary>
public static class CpuKernels
{
    /// <summary>out = w * x / sqrt(mean(x²) + eps), as Hugging Face's MixtralRMSNorm computes it in fp32.</summary>
    public static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> output)
    {
        var sumSquares = TensorPrimitives.Dot(x, x);
        var inv = 1f / MathF.Sqrt(sumSquares / x.Length + eps);
        TensorPrimitives.Multiply(x, inv, output);
        TensorPrimitives.Multiply(output, weight, output);
    }

    /// <summary>In-place softmax over a row.</summary>
    public static void Softmax(Span<float> x)
    {
        var max = TensorPrimitives.Max(x);
        TensorPrimitives.Subtract(x, max, x);
        TensorPrimitives.Exp(x, x);
        TensorPrimitives.Divide(x, TensorPrimitives.Sum(x), x);
    }

    /// <summary>gate = silu(gate) * up, SwiGLU's element-wise half.</summary>
    public static void SwiGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        for (var i = 0; i < gate.Length; i++)
        {
            var g = gate[i];
            gate[i] = g / (1f + MathF.Exp(-g)) * up[i];
        }
    }

    /// <summary>
    /// Rotary embedding in Hugging Face's half-split layout (rotate_half): for i &lt; d/2,
    /// (x_i, x_{i+d/2}) is rotated by position·θ^(−2i/d). cos/sin hold [positions, d/2].
    /// </summary>
    public static void Rope(Span<float> head, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        var half = head.Length / 2;
        for (var i = 0; i < half; i++)
        {
            var a = head[i];
            var b = head[i + half];
            head[i] = a * cos[i] - b * sin[i];
            head[i + half] = b * cos[i] + a * sin[i];
        }
    }

    /// <summary>Dot product of fp32 x with an int8 row (the scale is applied by the caller).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float DotInt8(ReadOnlySpan<float> x, ReadOnlySpan<sbyte> w)
    {
        var n = x.Length;
        var i = 0;
        var sum = 0f;
        if (Avx2.IsSupported && Fma.IsSupported && n >= 8)
        {
            ref var xr = ref MemoryMarshal.GetReference(x);
            ref var wr = ref Unsafe.As<sbyte, byte>(ref MemoryMarshal.GetReference(w));
            var acc0 = Vector256<float>.Zero;
            var acc1 = Vector256<float>.Zero;
            for (; i + 16 <= n; i += 16)
            {
                var w16 = Vector128.LoadUnsafe(ref wr, (nuint)i).AsSByte();
                var wLo = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(w16));
                var wHi = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(w16, 8)));
                acc0 = Fma.MultiplyAdd(Vector256.LoadUnsafe(ref xr, (nuint)i), wLo, acc0);
                acc1 = Fma.MultiplyAdd(Vector256.LoadUnsafe(ref xr, (nuint)(i + 8)), wHi, acc1);
            }
            for (; i + 8 <= n; i += 8)
            {
                var w8 = Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<long>(ref Unsafe.Add(ref wr, i))).AsSByte();
                acc0 = Fma.MultiplyAdd(Vector256.LoadUnsafe(ref xr, (nuint)i), Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(w8)), acc0);
            }
            sum = Vector256.Sum(acc0 + acc1);
        }
        for (; i < n; i++) sum += x[i] * w[i];
        return sum;
    }
}
