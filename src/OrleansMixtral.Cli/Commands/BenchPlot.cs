using OrleansMixtral.LoadBench;

namespace OrleansMixtral.Cli.Commands;

/// <summary>
/// The concurrency bench's PNG, two panels under the run's title: time to first token (p50, p90) and output tokens/s
/// (per request, perceived, and aggregate) — against concurrency for one prompt length, against prompt length (a line
/// per concurrency level) for several. Both y axes start at 0; the legends sit below the data.
/// </summary>
static class BenchPlot
{
    public sealed record Level(int PromptTokens, int Concurrency, double TtftP50Ms, double TtftP90Ms, double PerRequestTokensPerSecond, double AggregateTokensPerSecond);

    public static void Save(string path, string title, IReadOnlyList<Level> levels)
    {
        var ttft = PlotFiles.NewPlot();
        var speed = PlotFiles.NewPlot();
        int[] lengths = [.. levels.Select(l => l.PromptTokens).Distinct().Order()];
        if (lengths.Length == 1)
        {
            Level[] points = [.. levels.OrderBy(l => l.Concurrency)];
            double[] xs = [.. points.Select(l => Math.Log2(l.Concurrency))];
            Line(ttft, xs, points.Select(l => l.TtftP50Ms), "TTFT p50");
            Line(ttft, xs, points.Select(l => l.TtftP90Ms), "TTFT p90").LinePattern = ScottPlot.LinePattern.Dashed;
            Line(speed, xs, points.Select(l => l.PerRequestTokensPerSecond), "per request (perceived)");
            Line(speed, xs, points.Select(l => l.AggregateTokensPerSecond), "aggregate (all requests)");
            // concurrency doubles between levels: a log₂ axis labelled with the levels themselves
            foreach (var plot in new[] { ttft, speed }) LogAxis(plot, points.Select(l => l.Concurrency).ToArray(), "concurrent requests");
        }
        else
        {
            foreach (var group in levels.GroupBy(l => l.Concurrency).OrderBy(g => g.Key))
            {
                Level[] points = [.. group.OrderBy(l => l.PromptTokens)];
                double[] xs = [.. points.Select(l => Math.Log2(l.PromptTokens))];
                string name = group.Key == 1 ? "1 request" : $"{group.Key} concurrent requests";
                Line(ttft, xs, points.Select(l => l.TtftP50Ms), name);
                Line(speed, xs, points.Select(l => l.AggregateTokensPerSecond), name);
            }
            foreach (var plot in new[] { ttft, speed }) LogAxis(plot, lengths, "prompt tokens");
        }
        ttft.Title(lengths.Length == 1 ? "time to first token" : "time to first token, p50");
        ttft.Axes.Left.Label.Text = "ms";
        speed.Title(lengths.Length == 1 ? "output tokens per second" : "output tokens per second, all requests");
        speed.Axes.Left.Label.Text = "tokens / s";
        PlotFiles.SavePanels(path, title, [ttft, speed]);
    }

    static ScottPlot.Plottables.Scatter Line(ScottPlot.Plot plot, double[] xs, IEnumerable<double> ys, string legend)
    {
        var line = plot.Add.Scatter(xs, ys.ToArray());
        line.LegendText = legend;
        return line;
    }

    /// <summary>Values that grow by factors (levels, prompt lengths) on a log₂ axis labelled with the values themselves.</summary>
    static void LogAxis(ScottPlot.Plot plot, int[] values, string label)
    {
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            values.Select(v => Math.Log2(v)).ToArray(), values.Select(v => v.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray());
        plot.Axes.Bottom.Label.Text = label;
    }
}
