using OrleansMixtral.Engine;
using OrleansMixtral.Engine.Sampling;

namespace OrleansMixtral.Cuda.Tests;

/// <summary>
/// sample_rows (kernels/sample.cu) against the host sampler given the same draw: greedy rows exactly; temperature
/// rows the same token unless the draw falls within rounding of the edge between two tokens. Skipped without a GPU.
/// </summary>
[Collection("gpu")]
public sealed class DeviceSamplingTests
{
    [Theory]
    [InlineData(CudaWeightFormat.Int8, 40)]     // 40 rows: the prompt path (GEMMs), replayed from a graph
    [InlineData(CudaWeightFormat.BFloat16, 8)]  // 8 rows: the decode path
    public void Tokens_chosen_on_the_gpu_are_the_host_samplers_for_the_same_draws(CudaWeightFormat weights, int rows)
    {
        using var gpu = CudaVsCpuTests.GpuBackend(weights);
        var vocab = gpu.Config.VocabSize;
        var rng = new SplitMix64((ulong)rows * 977);
        var batch = new ForwardBatch(rows, 1, (gpu.Config.MaxPositionEmbeddings + gpu.KvBlockSize - 1) / gpu.KvBlockSize);
        batch.AddSequence(Enumerable.Range(0, (rows + gpu.KvBlockSize - 1) / gpu.KvBlockSize).ToArray());
        for (var i = 0; i < rows; i++) batch.AddToken(0, i == 0 ? 1 : 3 + (int)(rng.Next() % (ulong)(vocab - 3)), i, wantLogits: true);

        var logits = new float[rows * vocab];
        gpu.Forward(batch, logits);
        float[] temperatures = [.. Enumerable.Range(0, rows).Select(i => new[] { 0f, 0.5f, 1f, 2f }[i % 4])];
        double[] draws = [.. Enumerable.Range(0, rows).Select(_ => rng.NextDouble())];
        var tokens = new int[rows];
        for (var repeat = 0; repeat < 2; repeat++) // the step is captured once and replayed
        {
            gpu.ForwardAndSample(batch, temperatures, draws, tokens);
            var sampler = new Sampler(vocab);
            var edges = 0;
            for (var i = 0; i < rows; i++)
            {
                var row = logits.AsSpan(i * vocab, vocab);
                var expected = sampler.SampleWithDraw(row, temperatures[i], draws[i]);
                if (tokens[i] == expected) continue;
                Assert.True(temperatures[i] > 0, $"row {i}: greedy gave {tokens[i]} on the GPU, {expected} on the host");
                // a different token only where the draw sits on the boundary between the two, within rounding
                var (boundary, total) = CumulativeBefore(row, temperatures[i], Math.Max(tokens[i], expected));
                Assert.True(Math.Abs(boundary - draws[i] * total) <= 1e-5 * total,
                    $"row {i}: GPU {tokens[i]}, host {expected}, draw {draws[i]}, boundary {boundary / total}");
                edges++;
            }
            Assert.True(edges <= 1, $"{edges} rows parted at an edge");
        }
    }

    /// <summary>Σ softmax weight of the tokens before <paramref name="token"/>, and the total (double).</summary>
    static (double Before, double Total) CumulativeBefore(ReadOnlySpan<float> logits, float t, int token)
    {
        var max = double.NegativeInfinity;
        foreach (var l in logits) max = Math.Max(max, l / t);
        double before = 0, total = 0;
        for (var i = 0; i < logits.Length; i++)
        {
            var p = Math.Exp(logits[i] / t - max);
            if (i < token) before += p;
            total += p;
        }
        return (before, total);
    }
}
