using OrleansMixtral.Model;

namespace OrleansMixtral.Model.Tests;

public class Int8QuantizerTests
{
    [Fact]
    public void Quantizes_a_hand_computed_2x4_matrix()
    {
        // Row 0: max|w| = 127 → scale 1; 0.5 rounds away from zero to 1.
        // Row 1: max|w| = 254 → scale 2; 127/2 = 63.5 → 64 and -1/2 = -0.5 → -1 (away from zero, not to even).
        float[] w = [1, -2, 0.5f, 127, -254, 127, -1, 0];
        var q = new sbyte[8];
        var scales = new float[2];

        Int8Quantizer.QuantizeRows(w, 2, 4, q, scales);

        Assert.Equal([1f, 2f], scales);
        Assert.Equal([1, -2, 1, 127, -127, 64, -1, 0], q);
    }

    [Fact]
    public void Rounds_half_away_from_zero_without_the_add_a_half_bug()
    {
        float justBelowHalf = BitConverter.Int32BitsToSingle(0x3EFFFFFF); // 0.49999997: must round to 0, not 1
        float[] w = [127, 2.5f, -2.5f, justBelowHalf, -justBelowHalf, 1.5f];
        var q = new sbyte[6];
        var scales = new float[1];

        Int8Quantizer.QuantizeRows(w, 1, 6, q, scales);

        Assert.Equal([1f], scales);
        Assert.Equal([127, 3, -3, 0, 0, 2], q);
    }

    [Fact]
    public void All_zero_row_gets_scale_zero_and_dequantises_to_zero()
    {
        float[] w = [0, 0, 0, 0, 0, 127, -63.5f, 1];
        var q = new sbyte[8];
        var scales = new float[2];

        Int8Quantizer.QuantizeRows(w, 2, 4, q, scales);

        Assert.Equal([0f, 1f], scales);
        Assert.Equal([0, 0, 0, 0, 0, 127, -64, 1], q);
        var back = new float[8];
        Int8Quantizer.DequantizeRows(q, scales, 2, 4, back);
        Assert.Equal([0f, 0, 0, 0, 0, 127, -64, 1], back);
    }

    [Fact]
    public void Dequantises_q_times_row_scale()
    {
        var back = new float[4];
        Int8Quantizer.DequantizeRows([1, -2, 127, -127], [0.5f, 0.25f], 2, 2, back);
        Assert.Equal([0.5f, -1f, 31.75f, -31.75f], back);
    }

    [Fact]
    public void Error_is_within_half_a_step_on_random_data_in_the_parallel_path()
    {
        const int rows = 257, cols = 1000; // 257k elements: above the threading threshold, rows not a multiple of the partitions
        var random = new Random(42);
        var w = new float[rows * cols];
        for (int r = 0; r < rows; r++)
        {
            float magnitude = MathF.Pow(10, 4 * random.NextSingle() - 3); // rows from 1e-3 to 10
            for (int c = 0; c < cols; c++) w[r * cols + c] = magnitude * (2 * random.NextSingle() - 1);
        }
        var q = new sbyte[w.Length];
        var scales = new float[rows];

        Int8Quantizer.QuantizeRows(w, rows, cols, q, scales);

        for (int r = 0; r < rows; r++)
        {
            float maxAbs = 0;
            int maxQ = 0;
            for (int c = 0; c < cols; c++)
            {
                maxAbs = MathF.Max(maxAbs, MathF.Abs(w[r * cols + c]));
                maxQ = Math.Max(maxQ, Math.Abs((int)q[r * cols + c]));
            }
            float s = scales[r];
            Assert.Equal(maxAbs / 127, s, tolerance: s * 1e-6);
            Assert.Equal(127, maxQ); // the largest weight lands on the end of the range
            for (int c = 0; c < cols; c++)
            {
                float error = MathF.Abs(w[r * cols + c] - q[r * cols + c] * s);
                // s/2 exactly in real arithmetic; allow float rounding of the product.
                Assert.True(error <= s / 2 * (1 + 1e-5f), $"row {r} col {c}: |{w[r * cols + c]} - {q[r * cols + c]}·{s}| = {error} > {s / 2}");
            }
        }
    }

    [Fact]
    public void Rejects_mismatched_sizes_and_non_finite_weights()
    {
        Assert.Throws<ArgumentException>(() => Int8Quantizer.QuantizeRows(new float[8], 2, 4, new sbyte[7], new float[2]));
        Assert.Throws<ArgumentException>(() => Int8Quantizer.QuantizeRows(new float[8], 2, 4, new sbyte[8], new float[3]));
        Assert.Throws<ArgumentException>(() => Int8Quantizer.QuantizeRows(new float[9], 2, 4, new sbyte[8], new float[2]));

        float[] w = [1, 2, 3, 4, 5, float.NaN];
        var error = Assert.Throws<ArgumentException>(() => Int8Quantizer.QuantizeRows(w, 3, 2, new sbyte[6], new float[3]));
        Assert.Contains("row 2", error.Message);
    }
}
