namespace OrleansMixtral.Engine.Sampling;

/// <summary>
/// Log-probabilities from one row of logits: log-softmax in double precision (max subtracted before exp), the engine's
/// one formula for logprobs, prompt scores and perplexity.
/// </summary>
public static class LogSoftmax
{
    /// <summary>log Σ exp(logits): log-softmax of token t is logits[t] − this.</summary>
    public static double LogNormalizer(ReadOnlySpan<float> logits)
    {
        double max = logits[0];
        foreach (var v in logits) if (v > max) max = v;
        double sum = 0;
        foreach (var v in logits) sum += Math.Exp(v - max);
        return max + Math.Log(sum);
    }

    public static double At(ReadOnlySpan<float> logits, int token) => logits[token] - LogNormalizer(logits);

    /// <summary>
    /// <paramref name="token"/>'s log-probability and the <paramref name="top"/> most likely tokens with theirs, best first
    /// (equal logits: the lower id first).
    /// </summary>
    public static TokenLogprobs Of(ReadOnlySpan<float> logits, int token, int top)
    {
        var normalizer = LogNormalizer(logits);
        top = Math.Min(top, logits.Length);
        var ids = new int[top];
        var count = 0;
        // insertion into a short sorted list: a logit below the list's last is rejected with one comparison
        for (var i = 0; i < logits.Length && top > 0; i++)
        {
            var v = logits[i];
            if (count == top && !(v > logits[ids[count - 1]])) continue;
            var at = Math.Min(count, top - 1);
            while (at > 0 && v > logits[ids[at - 1]])
            {
                ids[at] = ids[at - 1];
                at--;
            }
            ids[at] = i;
            if (count < top) count++;
        }
        var values = new float[top];
        for (var k = 0; k < top; k++) values[k] = (float)(logits[ids[k]] - normalizer);
        return new TokenLogprobs(token, (float)(logits[token] - normalizer), ids, values);
    }
}
