using System.Numerics.Tensors;

namespace OrleansMixtral.Engine.Sampling;

/// <summary>SplitMix64: a tiny, well-mixed generator whose sequence is the same on every platform and runtime.</summary>
public struct SplitMix64(ulong seed)
{
    ulong _state = seed;

    public ulong Next()
    {
        var z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1) with 53 bits.</summary>
    public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));
}

/// <summary>
/// Chooses the next token from logits: greedy (temperature 0), or temperature → top-k → top-p (nucleus) →
/// draw. Scratch buffers are the sampler's own (one sampler per engine thread), so nothing allocates.
/// </summary>
public sealed class Sampler(int vocabSize)
{
    readonly float[] _probs = new float[vocabSize];
    readonly int[] _order = new int[vocabSize];

    public static int Argmax(ReadOnlySpan<float> logits)
    {
        var best = 0;
        for (var i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best; // the first of equal maxima, as torch.argmax
    }

    public int Sample(ReadOnlySpan<float> logits, SamplingParams p, ref SplitMix64 rng)
    {
        if (p.Temperature == 0f) return Argmax(logits);
        var n = logits.Length;
        var probs = _probs.AsSpan(0, n);
        TensorPrimitives.Divide(logits, p.Temperature, probs);

        // candidates sorted by probability when top-k/top-p need an order; otherwise the whole vocabulary
        var order = _order.AsSpan(0, n);
        var count = n;
        if (p.TopK > 0 || p.TopP < 1f)
        {
            for (var i = 0; i < n; i++) order[i] = i;
            count = p.TopK > 0 ? Math.Min(p.TopK, n) : n;
            var keys = _probs; // sort indices by descending logit
            order.Sort((a, b) => keys[b].CompareTo(keys[a]) is var c && c != 0 ? c : a.CompareTo(b));
        }
        var max = p.TopK > 0 || p.TopP < 1f ? probs[order[0]] : TensorPrimitives.Max(probs);
        var sum = 0.0;
        if (count == n && p.TopP >= 1f)
        {
            for (var i = 0; i < n; i++) sum += probs[i] = MathF.Exp(probs[i] - max);
            var u = rng.NextDouble() * sum;
            for (var i = 0; i < n; i++) if ((u -= probs[i]) < 0) return i;
            return n - 1;
        }
        for (var i = 0; i < count; i++) sum += probs[order[i]] = MathF.Exp(probs[order[i]] - max);
        if (p.TopP < 1f)
        {
            // keep the smallest prefix whose probability reaches top_p
            var target = p.TopP * sum;
            var kept = 0.0;
            var keep = 0;
            while (keep < count && kept < target) kept += probs[order[keep++]];
            count = Math.Max(1, keep);
            sum = kept;
        }
        var draw = rng.NextDouble() * sum;
        for (var i = 0; i < count; i++) if ((draw -= probs[order[i]]) < 0) return order[i];
        return order[count - 1];
    }
}
