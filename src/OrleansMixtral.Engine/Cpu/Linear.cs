using OrleansMixtral.Model;

namespace OrleansMixtral.Engine.Cpu;

/// <summary>
/// y[t, r] = Σ_c x[t, c] · W[r, c] for t in [0, tokens): a linear layer without bias, as every Mixtral
/// projection is. Quantization swaps this component (fp32 or int8 weights); the model code does not change.
/// </summary>
public abstract class Linear : IParallelBody
{
    protected Linear(int rows, int cols) { Rows = rows; Cols = cols; }

    /// <summary>Output features (weight rows).</summary>
    public int Rows { get; }
    /// <summary>Input features (weight columns).</summary>
    public int Cols { get; }
    public abstract long WeightBytes { get; }

    // The job of the call in flight (one caller at a time: the engine's forward thread).
    float[] _x = [], _y = [];
    int _tokens;

    /// <summary>x: [tokens, Cols] → y: [tokens, Rows], split over weight rows.</summary>
    public void Forward(float[] x, float[] y, int tokens, ParallelRunner runner)
    {
        _x = x; _y = y; _tokens = tokens;
        runner.For(Rows, this, minPerPart: Math.Max(1, 16384 / Math.Max(1, Cols * tokens)));
    }

    public void Run(int start, int end) => ComputeRows(_x, _y, _tokens, start, end);

    protected abstract void ComputeRows(float[] x, float[] y, int tokens, int rowStart, int rowEnd);
}

/// <summary>fp32 weights [rows, cols].</summary>
public sealed class Fp32Linear(float[] weight, int rows, int cols) : Linear(rows, cols)
{
    public float[] Weight { get; } = weight;
    public override long WeightBytes => (long)Weight.Length * sizeof(float);

    protected override void ComputeRows(float[] x, float[] y, int tokens, int rowStart, int rowEnd) =>
        MatMul.Float32(x, tokens, Weight, Rows, Cols, y, rowStart, rowEnd);
}

/// <summary>int8 weights [rows, cols] with one fp32 scale per row (symmetric, per output channel).</summary>
public sealed class Int8Linear(sbyte[] weight, float[] scales, int rows, int cols) : Linear(rows, cols)
{
    public sbyte[] Weight { get; } = weight;
    public float[] Scales { get; } = scales;
    public override long WeightBytes => Weight.Length + (long)Scales.Length * sizeof(float);

    public static Int8Linear Quantize(ReadOnlySpan<float> weight, int rows, int cols)
    {
        var q = new sbyte[(long)rows * cols];
        var s = new float[rows];
        Int8Quantizer.QuantizeRows(weight, rows, cols, q, s);
        return new Int8Linear(q, s, rows, cols);
    }

    protected override void ComputeRows(float[] x, float[] y, int tokens, int rowStart, int rowEnd) =>
        MatMul.Int8(x, tokens, Weight, Scales, Rows, Cols, y, rowStart, rowEnd);
}
