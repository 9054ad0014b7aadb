namespace OrleansMixtral.Model;

/// <summary>Element types this engine reads and writes in safetensors files.</summary>
public enum TensorDType
{
    F32,
    F16,
    BF16,
    I8,
}

public static class TensorDTypeExtensions
{
    public static int ElementSize(this TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => 4,
        TensorDType.F16 => 2,
        TensorDType.BF16 => 2,
        TensorDType.I8 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    /// <summary>The dtype string used in safetensors headers ("F32", "BF16", ...).</summary>
    public static string ToSafeTensorsName(this TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => "F32",
        TensorDType.F16 => "F16",
        TensorDType.BF16 => "BF16",
        TensorDType.I8 => "I8",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    /// <summary>Parses a safetensors dtype string; false for types this engine does not support (F64, I32, ...).</summary>
    public static bool TryParseSafeTensorsName(string name, out TensorDType dtype)
    {
        switch (name)
        {
            case "F32": dtype = TensorDType.F32; return true;
            case "F16": dtype = TensorDType.F16; return true;
            case "BF16": dtype = TensorDType.BF16; return true;
            case "I8": dtype = TensorDType.I8; return true;
            default: dtype = default; return false;
        }
    }

    public static bool IsFloat(this TensorDType dtype) => dtype is TensorDType.F32 or TensorDType.F16 or TensorDType.BF16;
}
