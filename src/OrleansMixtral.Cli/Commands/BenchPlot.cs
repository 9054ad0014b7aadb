using OrleansMixtral.LoadBench;

namespace OrleansMixtral.Cli.Commands;

/// <summary>The bench's PNG: per-request (perceived) and aggregate output tokens/s against concurrency, or TTFT against prompt length.</summary>
static class BenchPlot
{
    public static void Save(string path, string title, (int Concurrency, double PerRequest, double Aggregate)[] levels)
    {
        var plot = PlotFiles.NewPlot();
        double[] xs = levels.Select(l => Math.Log2(l.Concurrency)).ToArray();
        var perRequest = plot.Add.Scatter(xs, levels.Select(l => l.PerRequest).ToArray());
        perRequest.LegendText = "per request (perceived tok/s)";
        var aggregate = plot.Add.Scatter(xs, levels.Select(l => l.Aggregate).ToArray());
        aggregate.LegendText = "aggregate output tok/s";
        // concurrency doubles between levels: a log₂ axis labelled with the levels themselves
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            xs, levels.Select(l => l.Concurrency.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray());
        plot.Axes.Bottom.Label.Text = "concurrent requests";
        plot.Axes.Left.Label.Text = "tokens / s";
        PlotFiles.Save(plot, path, title);
    }

    /// <summary>With several prompt lengths: TTFT (p50) against prompt length, one line per concurrency level.</summary>
    public static void SaveTtft(string path, string title, (int PromptTokens, int Concurrency, double TtftP50Ms)[] levels)
    {
        var plot = PlotFiles.NewPlot();
        int[] lengths = levels.Select(l => l.PromptTokens).Distinct().Order().ToArray();
        foreach (var group in levels.GroupBy(l => l.Concurrency))
        {
            var points = group.OrderBy(l => l.PromptTokens).ToArray();
            var line = plot.Add.Scatter(points.Select(l => Math.Log2(l.PromptTokens)).ToArray(), points.Select(l => l.TtftP50Ms).ToArray());
            line.LegendText = group.Key == 1 ? "1 request" : $"{group.Key} concurrent requests";
        }
        // prompt lengths grow by factors: a log₂ axis labelled with the lengths themselves
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            lengths.Select(l => Math.Log2(l)).ToArray(), lengths.Select(l => l.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray());
        plot.Axes.Bottom.Label.Text = "prompt tokens";
        plot.Axes.Left.Label.Text = "time to first token, p50 (ms)";
        PlotFiles.Save(plot, path, title);
    }
}
