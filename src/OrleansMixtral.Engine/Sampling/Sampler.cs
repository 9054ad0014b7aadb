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

    /// <summary>Whether a backend's <see cref="IDeviceSampling"/> can stand in for <see cref="Sample"/> (top-k and top-p off).</summary>
    public static bool OnDevice(SamplingOptions p) => p.TopK == 0 && p.TopP >= 1f;

    /// <summary>
    /// What <see cref="Sample"/> does with top-k and top-p off, given its one draw u in [0, 1): the first token whose
    /// cumulative softmax(logits / temperature) exceeds u of the total — the reference for device sampling.
    /// </summary>
    public int SampleWithDraw(ReadOnlySpan<float> logits, float temperature, double u)
    {
        if (temperature == 0f) return Argmax(logits);
        var n = logits.Length;
        var probs = _probs.AsSpan(0, n);
        TensorPrimitives.Divide(logits, temperature, probs);
        var max = TensorPrimitives.Max(probs);
        var sum = 0.0;
        for (var i = 0; i < n; i++) sum += probs[i] = MathF.Exp(probs[i] - max);
        var target = u * sum;
        for (var i = 0; i < n; i++) if ((target -= probs[i]) < 0) return i;
        return n - 1;
    }

    public int Sample(ReadOnlySpan<float> logits, SamplingOptions p, ref SplitMix64 rng)
    {
        if (p.IsGreedy) return Argmax(logits);
        if (OnDevice(p)) return SampleWithDraw(logits, p.Temperature, rng.NextDouble());
        var n = logits.Length;
        var probs = _probs.AsSpan(0, n);
        TensorPrimitives.Divide(logits, p.Temperature, probs);

        // top-k / top-p: candidates sorted by probability
        var order = _order.AsSpan(0, n);
        for (var i = 0; i < n; i++) order[i] = i;
        var count = p.TopK > 0 ? Math.Min(p.TopK, n) : n;
        order.Sort(new DescendingBy(_probs)); // a struct comparer: nothing allocates per token
        var max = probs[order[0]];
        var sum = 0.0;
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

    /// <summary>Token indices by descending score, ties by index (the host's order for top-k / top-p).</summary>
    readonly struct DescendingBy(float[] scores) : IComparer<int>
    {
        public int Compare(int a, int b) => scores[b].CompareTo(scores[a]) is var c && c != 0 ? c : a.CompareTo(b);
    }
}
