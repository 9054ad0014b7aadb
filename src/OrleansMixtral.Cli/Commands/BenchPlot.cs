namespace OrleansMixtral.Cli.Commands;

/// <summary>The bench's PNG: per-request (perceived) and aggregate output tokens/s against concurrency.</summary>
static class BenchPlot
{
    public static void Save(string path, string title, (int Concurrency, double PerRequest, double Aggregate)[] levels)
    {
        var plot = new ScottPlot.Plot();
        // A machine without system fonts (the GPU machine) draws no text: MIXTRAL_PLOT_FONT names a .ttf to use.
        if (Environment.GetEnvironmentVariable("MIXTRAL_PLOT_FONT") is { Length: > 0 } font && File.Exists(font))
        {
            ScottPlot.Fonts.AddFontFile("bench", font);
            plot.Font.Set("bench");
        }
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
        plot.Title(title.Length > 90 ? title[..90] + "…" : title);
        plot.ShowLegend();
        if (Path.GetDirectoryName(Path.GetFullPath(path)) is { } dir) Directory.CreateDirectory(dir);
        plot.SavePng(path, 1000, 600);
    }
}
