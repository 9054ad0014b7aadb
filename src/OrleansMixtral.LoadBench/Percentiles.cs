namespace OrleansMixtral.LoadBench;

/// <summary>Percentiles by linear interpolation between the closest ranks (NumPy's default, as every bench here reports).</summary>
public static class Percentiles
{
    /// <summary>The <paramref name="q"/>-quantile (0 to 1) of values already sorted ascending; NaN when there are none.</summary>
    public static double OfSorted(IReadOnlyList<double> sorted, double q)
    {
        if (q is < 0 or > 1 || double.IsNaN(q)) throw new ArgumentOutOfRangeException(nameof(q), q, "a quantile lies in [0, 1]");
        if (sorted.Count == 0) return double.NaN;
        double rank = q * (sorted.Count - 1);
        int lo = (int)Math.Floor(rank), hi = (int)Math.Ceiling(rank);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
    }

    /// <summary>The <paramref name="q"/>-quantile of values in any order; NaN when there are none.</summary>
    public static double Of(IEnumerable<double> values, double q) => OfSorted(values.Order().ToArray(), q);
}

/// <summary>One latency's distribution over the requests (or token gaps) of a rate, in milliseconds.</summary>
public sealed record Latency(int Count, double Mean, double Min, double P50, double P90, double P99, double Max)
{
    /// <summary>The summary of <paramref name="values"/>, rounded to microseconds; null when there are none (JSON has no NaN).</summary>
    public static Latency? Of(IEnumerable<double> values)
    {
        double[] sorted = values.Order().ToArray();
        if (sorted.Length == 0) return null;
        return new Latency(sorted.Length, R(sorted.Average()), R(sorted[0]), R(Percentiles.OfSorted(sorted, 0.5)), R(Percentiles.OfSorted(sorted, 0.9)),
            R(Percentiles.OfSorted(sorted, 0.99)), R(sorted[^1]));
    }

    static double R(double v) => Math.Round(v, 3);
}
