using System.Globalization;
using System.Text;

namespace OrleansMixtral.LoadBench;

/// <summary>The console table of a load run: one row per rate (the CLI draws it with Spectre, ClusterBench as Markdown).</summary>
public static class LoadTable
{
    public static readonly string[] Columns =
    [
        "rate /s", "sent", "failed", "done /s", "out tok/s",
        "TTFT p50", "TTFT p90", "TTFT p99", "ITL p50", "ITL p99", "E2E p50", "E2E p99", "peak", "wall s",
    ];

    public const string Notes =
        "rate = requests/s asked for; done /s and out tok/s = completed requests and their output tokens over first send to " +
        "last completion; latencies in ms over completed requests: TTFT and E2E (end-to-end) from the moment a request is " +
        "sent, ITL = gaps between consecutive tokens of a stream, pooled; peak = most requests in flight at once";

    public static IEnumerable<string[]> Rows(IEnumerable<RateReport> rates) => rates.Select(r => new[]
    {
        F(r.Rate, r.Rate == Math.Floor(r.Rate) ? 0 : 2), r.Sent.ToString(CultureInfo.InvariantCulture), r.Failed.ToString(CultureInfo.InvariantCulture),
        F(r.RequestsPerSecond, 2), F(r.OutputTokensPerSecond, 1),
        F(r.TtftMs?.P50, 1), F(r.TtftMs?.P90, 1), F(r.TtftMs?.P99, 1),
        F(r.ItlMs?.P50, 2), F(r.ItlMs?.P99, 2),
        F(r.EndToEndMs?.P50, 1), F(r.EndToEndMs?.P99, 1),
        r.MaxInFlight.ToString(CultureInfo.InvariantCulture), F(r.WallSeconds, 2),
    });

    /// <summary>A GitHub Markdown table (right-aligned figures, first column left).</summary>
    public static string Markdown(string[] columns, IEnumerable<string[]> rows)
    {
        var text = new StringBuilder();
        text.Append("| ").AppendJoin(" | ", columns).AppendLine(" |");
        text.Append("|---").Append(string.Concat(Enumerable.Repeat("|---:", columns.Length - 1))).AppendLine("|");
        foreach (string[] row in rows) text.Append("| ").AppendJoin(" | ", row).AppendLine(" |");
        return text.ToString();
    }

    static string F(double? v, int digits) => v is { } x ? x.ToString("F" + digits, CultureInfo.InvariantCulture) : "–";
}
