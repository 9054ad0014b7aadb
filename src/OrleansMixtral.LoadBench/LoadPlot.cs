using System.Globalization;

namespace OrleansMixtral.LoadBench;

/// <summary>
/// The load run's PNG: latency against throughput, a point per rate (labelled with it). TTFT p50 and p99 on the left
/// axis, inter-token latency p50 on the right (it is an order of magnitude smaller); both axes start at 0; the legend
/// sits below the data.
/// </summary>
public static class LoadPlot
{
    public static void Save(string path, string title, IReadOnlyList<RateReport> rates)
    {
        var plot = PlotFiles.NewPlot();
        var points = rates.Where(r => r.TtftMs is not null).OrderBy(r => r.OutputTokensPerSecond).ToArray();
        double[] xs = points.Select(r => r.OutputTokensPerSecond).ToArray();

        var p50 = plot.Add.Scatter(xs, points.Select(r => r.TtftMs!.P50).ToArray());
        p50.LegendText = "TTFT p50 (left)";
        var p99 = plot.Add.Scatter(xs, points.Select(r => r.TtftMs!.P99).ToArray());
        p99.LegendText = "TTFT p99 (left)";
        p99.LinePattern = ScottPlot.LinePattern.Dashed;
        var itlPoints = points.Where(r => r.ItlMs is not null).ToArray();
        var itl = plot.Add.Scatter(itlPoints.Select(r => r.OutputTokensPerSecond).ToArray(), itlPoints.Select(r => r.ItlMs!.P50).ToArray());
        itl.LegendText = "inter-token latency p50 (right)";
        itl.Axes.YAxis = plot.Axes.Right;

        foreach (RateReport r in points)
        {
            var label = plot.Add.Text(r.Rate.ToString("0.##", CultureInfo.InvariantCulture) + "/s", r.OutputTokensPerSecond, r.TtftMs!.P99);
            label.LabelFontSize = 11;
            label.LabelAlignment = ScottPlot.Alignment.LowerCenter;
            label.OffsetY = -6;
        }

        plot.Axes.Bottom.Label.Text = "throughput, output tokens / s (labels: arrival rate, requests / s)";
        plot.Axes.Left.Label.Text = "time to first token (ms)";
        plot.Axes.Right.Label.Text = "inter-token latency (ms)";
        plot.Axes.AutoScale();
        // latency from 0 on both axes, with room above the highest point (and its label)
        double top = points.Length > 0 ? points.Max(r => r.TtftMs!.P99) : 1;
        plot.Axes.SetLimitsY(0, top > 0 ? top * 1.15 : 1, plot.Axes.Left);
        double itlTop = itlPoints.Length > 0 ? itlPoints.Max(r => r.ItlMs!.P50) : 1;
        plot.Axes.SetLimitsY(0, itlTop > 0 ? itlTop * 1.15 : 1, plot.Axes.Right);
        if (xs.Length > 0)
        {
            double lo = xs.Min(), hi = xs.Max(), pad = Math.Max((hi - lo) * 0.08, Math.Max(hi * 0.05, 1e-3));
            plot.Axes.SetLimitsX(Math.Max(0, lo - pad), hi + pad, plot.Axes.Bottom);
        }
        PlotFiles.Save(plot, path, title, legendOutside: true);
    }
}

/// <summary>What every bench PNG shares: the font set-up and how it is titled and written.</summary>
public static class PlotFiles
{
    public static ScottPlot.Plot NewPlot()
    {
        var plot = new ScottPlot.Plot();
        if (FontFile is { } font)
        {
            ScottPlot.Fonts.AddFontFile("bench", font);
            plot.Font.Set("bench");
        }
        return plot;
    }

    /// <summary>A machine without system fonts (the GPU machine) draws no text: MIXTRAL_PLOT_FONT names a .ttf to use.</summary>
    static string? FontFile => Environment.GetEnvironmentVariable("MIXTRAL_PLOT_FONT") is { Length: > 0 } font && File.Exists(font) ? font : null;

    /// <summary>
    /// Several plots side by side under one title, in one PNG: each panel's y axis from 0 (with room above its highest
    /// point) and its legend below its data.
    /// </summary>
    public static void SavePanels(string path, string title, IReadOnlyList<ScottPlot.Plot> panels, int width = 1400, int height = 620)
    {
        const int header = 48;
        foreach (var panel in panels)
        {
            panel.Axes.AutoScale();
            var top = panel.Axes.GetLimits().Top;
            panel.Axes.SetLimitsY(0, top > 0 && double.IsFinite(top) ? top * 1.1 : 1);
            panel.ShowLegend(ScottPlot.Edge.Bottom);
        }
        var multiplot = new ScottPlot.Multiplot(panels[0]);
        foreach (var panel in panels.Skip(1)) multiplot.Subplots.Add(panel);
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Columns();

        using var surface = SkiaSharp.SKSurface.Create(new SkiaSharp.SKImageInfo(width, height));
        surface.Canvas.Clear(SkiaSharp.SKColors.White);
        // the panels below the title (the multiplot draws from its canvas's origin, and clears all of it first)
        surface.Canvas.Save();
        surface.Canvas.Translate(0, header);
        multiplot.Render(surface.Canvas, new ScottPlot.PixelRect(0, width, height - header, 0));
        surface.Canvas.Restore();
        // the title over the panels, in the plots' font
        using (var typeface = FontFile is { } file ? SkiaSharp.SKTypeface.FromFile(file) : SkiaSharp.SKTypeface.FromFamilyName(ScottPlot.Fonts.Default, SkiaSharp.SKFontStyle.Bold))
        using (var font = new SkiaSharp.SKFont(typeface, 18))
        using (var ink = new SkiaSharp.SKPaint { Color = SkiaSharp.SKColors.Black, IsAntialias = true })
            surface.Canvas.DrawText(title.Length > 150 ? title[..150] + "…" : title, width / 2f, header * 0.65f, SkiaSharp.SKTextAlign.Center, font, ink);
        if (Path.GetDirectoryName(Path.GetFullPath(path)) is { } dir) Directory.CreateDirectory(dir);
        using var image = surface.Snapshot();
        using var png = image.Encode(SkiaSharp.SKEncodedImageFormat.Png, 100);
        File.WriteAllBytes(path, png.ToArray());
    }

    /// <param name="legendOutside">The legend below the data area instead of inside it.</param>
    public static void Save(ScottPlot.Plot plot, string path, string title, bool legendOutside = false, int width = 1000, int height = 600)
    {
        plot.Title(title.Length > 90 ? title[..90] + "…" : title);
        if (legendOutside) plot.ShowLegend(ScottPlot.Edge.Bottom);
        else plot.ShowLegend();
        if (Path.GetDirectoryName(Path.GetFullPath(path)) is { } dir) Directory.CreateDirectory(dir);
        plot.SavePng(path, width, height);
    }
}
