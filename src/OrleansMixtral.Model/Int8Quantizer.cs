using System.Numerics.Tensors;

namespace OrleansMixtral.Model;

/// <summary>
/// Symmetric int8 weight-only quantization with one scale per output channel (row of a [out, in] weight):
/// scale = max|row| / 127, q = round-half-away-from-zero(w / scale), so w ≈ q × scale with error ≤ scale / 2.
/// </summary>
public static class Int8Quantizer
{
    public const float MaxQ = 127f;

    /// <summary>Below this many elements threads cost more than they save.</summary>
    const long ParallelThreshold = 1 << 16;

    /// <param name="w">Row-major [rows, cols] weights.</param>
    /// <param name="q">Receives [rows, cols] int8 values in [-127, 127].</param>
    /// <param name="scales">Receives one scale per row; 0 for an all-zero row.</param>
    public static void QuantizeRows(ReadOnlySpan<float> w, int rows, int cols, Span<sbyte> q, Span<float> scales)
    {
        CheckShapes(w.Length, q.Length, scales.Length, rows, cols);
        if ((long)rows * cols < ParallelThreshold)
        {
            float[] scratch = new float[cols];
            for (int r = 0; r < rows; r++)
                scales[r] = QuantizeRow(w.Slice(r * cols, cols), q.Slice(r * cols, cols), scratch);
        }
        else
        {
            QuantizeRowsInParallel(w, rows, cols, q, scales);
        }

        for (int r = 0; r < rows; r++)
            if (float.IsNaN(scales[r])) throw new ArgumentException($"row {r} contains NaN or infinity", nameof(w));
    }

    static unsafe void QuantizeRowsInParallel(ReadOnlySpan<float> w, int rows, int cols, Span<sbyte> q, Span<float> scales)
    {
        // Spans cannot enter a lambda; the caller's memory stays pinned by `fixed` for the whole Parallel.For.
        fixed (float* wp = w) fixed (sbyte* qp = q) fixed (float* sp = scales)
        {
            nint wAddress = (nint)wp, qAddress = (nint)qp, scaleAddress = (nint)sp;
            int partitions = Math.Min(rows, Environment.ProcessorCount * 4);
            Parallel.For(0, partitions, () => new float[cols], (partition, _, scratch) =>
            {
                int first = (int)((long)rows * partition / partitions), end = (int)((long)rows * (partition + 1) / partitions);
                for (int r = first; r < end; r++)
                {
                    long offset = (long)r * cols;
                    var row = new ReadOnlySpan<float>((float*)wAddress + offset, cols);
                    var qRow = new Span<sbyte>((sbyte*)qAddress + offset, cols);
                    ((float*)scaleAddress)[r] = QuantizeRow(row, qRow, scratch);
                }
                return scratch;
            }, _ => { });
        }
    }

    /// <returns>The row's scale, or NaN when the row holds NaN or infinity (reported once all rows are done).</returns>
    static float QuantizeRow(ReadOnlySpan<float> row, Span<sbyte> qRow, float[] scratch)
    {
        float maxAbs = MathF.Abs(TensorPrimitives.MaxMagnitude(row));
        if (!float.IsFinite(maxAbs))
        {
            qRow.Clear();
            return float.NaN;
        }
        float scale = maxAbs / MaxQ;
        if (scale == 0f)
        {
            // All zeros (or so tiny the scale underflows): q = 0 and scale 0 dequantise to exactly 0.
            qRow.Clear();
            return 0f;
        }
        Span<float> scaled = scratch;
        TensorPrimitives.Divide(row, scale, scaled);
        TensorPrimitives.Round(scaled, MidpointRounding.AwayFromZero, scaled);
        // Rounding keeps |w / scale| ≤ 127 except for last-bit division error; clamp so q never leaves ±127.
        TensorPrimitives.Min(scaled, MaxQ, scaled);
        TensorPrimitives.Max(scaled, -MaxQ, scaled);
        TensorPrimitives.ConvertTruncating<float, sbyte>(scaled, qRow);
        return scale;
    }

    /// <summary>w[r, c] = q[r, c] × scales[r].</summary>
    public static void DequantizeRows(ReadOnlySpan<sbyte> q, ReadOnlySpan<float> scales, int rows, int cols, Span<float> w)
    {
        CheckShapes(w.Length, q.Length, scales.Length, rows, cols);
        TensorPrimitives.ConvertTruncating<sbyte, float>(q, w);
        for (int r = 0; r < rows; r++)
        {
            Span<float> row = w.Slice(r * cols, cols);
            TensorPrimitives.Multiply(row, scales[r], row);
        }
    }

    static void CheckShapes(int weights, int quantized, int scales, int rows, int cols)
    {
        if (rows < 0 || cols < 0) throw new ArgumentOutOfRangeException(nameof(rows), "rows and cols must be non-negative");
        long elements = (long)rows * cols;
        if (weights != elements || quantized != elements)
            throw new ArgumentException($"[{rows}, {cols}] needs {elements} weights and int8 values, got {weights} and {quantized}");
        if (scales != rows) throw new ArgumentException($"[{rows}, {cols}] needs {rows} scales, got {scales}");
    }
}
