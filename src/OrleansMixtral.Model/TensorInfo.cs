namespace OrleansMixtral.Model;

/// <summary>One tensor of a safetensors file: what it is and where its bytes lie.</summary>
public sealed class TensorInfo
{
    public required string Name { get; init; }
    public required TensorDType DType { get; init; }

    /// <summary>Row-major shape, outermost dimension first (a linear weight is [out, in]). Do not modify.</summary>
    public required long[] Shape { get; init; }

    public long ElementCount { get; init; }
    public long ByteLength => ElementCount * DType.ElementSize();

    /// <summary>The safetensors file holding the tensor.</summary>
    public required string FilePath { get; init; }

    /// <summary>Offset of the first byte from the start of the file (header included).</summary>
    internal long FileOffset { get; init; }

    public string ShapeText => FormatShape(Shape);

    public override string ToString() => $"{Name} {DType.ToSafeTensorsName()}{ShapeText}";

    public static string FormatShape(ReadOnlySpan<long> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";

    /// <summary>Product of the dimensions; a scalar (empty shape) has one element.</summary>
    public static long CountElements(ReadOnlySpan<long> shape)
    {
        long count = 1;
        foreach (long dim in shape)
        {
            if (dim < 0) throw new ArgumentException("negative dimension", nameof(shape));
            count = checked(count * dim);
        }
        return count;
    }
}

/// <summary>What a tensor will be when written: name, element type, shape.</summary>
public sealed record TensorSpec(string Name, TensorDType DType, long[] Shape)
{
    public long ElementCount => TensorInfo.CountElements(Shape);
    public long ByteLength => ElementCount * DType.ElementSize();
}

/// <summary>Called after each tensor is streamed so a caller can draw a progress bar.</summary>
/// <param name="tensorName">The tensor just finished.</param>
/// <param name="bytesDone">Bytes of source tensors processed so far, this one included.</param>
/// <param name="bytesTotal">Bytes of all source tensors to process.</param>
public delegate void LoadProgress(string tensorName, long bytesDone, long bytesTotal);
