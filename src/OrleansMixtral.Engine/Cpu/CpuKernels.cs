using System.Numerics.Tensors;

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

    /// <summary>
    /// Mixtral's router on one token's gate logits (overwritten by their softmax): the k most probable experts, first
    /// the most probable (the lowest index among equals), and their probabilities renormalised to sum to 1 (HF Mixtral).
    /// </summary>
    public static void RouteTopK(Span<float> logits, Span<int> experts, Span<float> weights)
    {
        Softmax(logits);
        var k = experts.Length;
        var sum = 0f;
        for (var j = 0; j < k; j++)
        {
            var best = -1;
            for (var e = 0; e < logits.Length; e++)
            {
                if (experts[..j].Contains(e)) continue;
                if (best < 0 || logits[e] > logits[best]) best = e;
            }
            experts[j] = best;
            weights[j] = logits[best];
            sum += logits[best];
        }
        for (var j = 0; j < k; j++) weights[j] /= sum;
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
}
