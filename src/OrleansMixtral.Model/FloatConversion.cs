using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace OrleansMixtral.Model;

/// <summary>Vectorised widening of 16-bit floats to float32.</summary>
public static class FloatConversion
{
    /// <summary>bfloat16 is the upper half of a float32, so widening is a 16-bit shift of the bits.</summary>
    public static void BFloat16ToSingle(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        CheckLengths(source.Length, destination.Length);
        ref ushort src = ref MemoryMarshal.GetReference(source);
        ref uint dst = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(destination));
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            int step = Vector<ushort>.Count; // one load widens into two stores of Vector<uint>.Count = step / 2
            for (; i <= source.Length - step; i += step)
            {
                Vector.Widen(Vector.LoadUnsafe(ref src, (nuint)i), out Vector<uint> low, out Vector<uint> high);
                Vector.StoreUnsafe(low << 16, ref dst, (nuint)i);
                Vector.StoreUnsafe(high << 16, ref dst, (nuint)(i + step / 2));
            }
        }
        for (; i < source.Length; i++) Unsafe.Add(ref dst, i) = (uint)Unsafe.Add(ref src, i) << 16;
    }

    public static void HalfToSingle(ReadOnlySpan<Half> source, Span<float> destination)
    {
        CheckLengths(source.Length, destination.Length);
        TensorPrimitives.ConvertToSingle(source, destination);
    }

    /// <summary>Widens raw little-endian tensor bytes of a float dtype into float32.</summary>
    public static void ToSingle(ReadOnlySpan<byte> bytes, TensorDType dtype, Span<float> destination)
    {
        switch (dtype)
        {
            case TensorDType.F32:
                CheckLengths(bytes.Length / sizeof(float), destination.Length);
                MemoryMarshal.Cast<byte, float>(bytes).CopyTo(destination);
                break;
            case TensorDType.BF16:
                BFloat16ToSingle(MemoryMarshal.Cast<byte, ushort>(bytes), destination);
                break;
            case TensorDType.F16:
                HalfToSingle(MemoryMarshal.Cast<byte, Half>(bytes), destination);
                break;
            default:
                throw new NotSupportedException($"{dtype} is not a float type; int8 weights need their scales (CheckpointDirectory.ReadAsFloat32 applies them)");
        }
    }

    static void CheckLengths(int source, int destination)
    {
        if (source != destination)
            throw new ArgumentException($"destination holds {destination} elements, source has {source}", nameof(destination));
    }
}
