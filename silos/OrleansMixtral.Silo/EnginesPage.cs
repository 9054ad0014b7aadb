using System.Globalization;
using System.Net;
using System.Text;
using Orleans.Dashboard;
using OrleansMixtral.Grains;
using OrleansMixtral.Grains.Contracts;

namespace OrleansMixtral.Silo;

/// <summary>
/// What the silo host serves beside the API: the Orleans
/// dashboard at <see cref="DashboardPath"/> (/ redirects there), and <see cref="EnginesPath"/>: every engine of the
/// cluster, as a page for a browser (<see cref="EnginesPage"/>) or as JSON for anything else.
/// </summary>
public static class SiloPages
{
    public const string DashboardPath = "/dashboard";
    public const string EnginesPath = "/engines";

    public static void Map(WebApplication app)
    {
        app.MapOrleansDashboard(DashboardPath);
        app.MapGet("/", () => Results.Redirect(DashboardPath + "/"));
        app.MapGet(EnginesPath, async (HttpContext ctx, EngineRouter engines) =>
        {
            var loads = await engines.GetLoadsAsync(fresh: true);
            // a browser asks for HTML; curl, scripts and tests (Accept */* or application/json) get the JSON they always got
            return ctx.Request.Headers.Accept.Any(a => a?.Contains("text/html", StringComparison.OrdinalIgnoreCase) == true)
                ? Results.Content(EnginesPage.Render(loads, DateTime.UtcNow), "text/html; charset=utf-8")
                : Results.Json(loads);
        });
    }
}

/// <summary>
/// The engines page: per silo its model, backend and device, running and queued sequences, the last step's batch, KV
/// cache use, tok/s and TTFT p50/p99 of its last requests, formatted for a person; rendered on the server (no script)
/// and refreshed every 2 s.
/// </summary>
public static class EnginesPage
{
    static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static string Render(IReadOnlyList<EngineLoad> loads, DateTime utcNow)
    {
        var html = new StringBuilder(4096);
        html.Append("""
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
            <title>OrleansMixtral engines</title>
            <style>
            body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1d2330; background: #f7f8fa; }
            h1 { font-size: 1.4em; margin: 0 0 .2em; } p.meta { color: #5b6475; margin: 0 0 1em; }
            table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
            th, td { padding: .45em .8em; border-bottom: 1px solid #e3e6ec; text-align: right; white-space: nowrap; }
            th { background: #27324a; color: #fff; font-weight: 600; } td.text, th.text { text-align: left; }
            .bar { display: inline-block; width: 6em; height: .6em; background: #e3e6ec; margin-left: .5em; vertical-align: middle; }
            .bar span { display: block; height: 100%; background: #3b7be0; } .idle { color: #8a93a3; }
            a { color: #2a5bb8; }
            </style></head><body>
            <h1>OrleansMixtral engines</h1>
            """);
        html.Append("<p class=\"meta\">").Append(loads.Count).Append(loads.Count == 1 ? " engine" : " engines")
            .Append(" · ").Append(E(utcNow.ToString("yyyy-MM-dd HH:mm:ss", Invariant))).Append(" UTC · refreshed every 2 s · ")
            .Append("<a href=\"").Append(SiloPages.DashboardPath).Append("/\">Orleans dashboard</a></p>\n");
        if (loads.Count == 0)
        {
            html.Append("<p id=\"no-engines\">No engine answers: the silos are starting, or none is in the cluster.</p>\n</body></html>\n");
            return html.ToString();
        }
        html.Append("""
            <table id="engines"><thead><tr>
            <th class="text">silo</th><th class="text">model</th><th class="text">backend</th><th class="text">device</th>
            <th>running</th><th>queued</th><th>batch</th><th>KV blocks in use</th><th>KV blocks cached</th>
            <th>tok/s</th><th>TTFT p50</th><th>TTFT p99</th><th>tokens generated</th><th>conversations</th>
            </tr></thead><tbody>

            """);
        foreach (var l in loads.OrderBy(l => l.Silo, StringComparer.Ordinal))
        {
            var kvShare = l.KvBlocksTotal > 0 ? (double)l.KvBlocksUsed / l.KvBlocksTotal : 0;
            html.Append("<tr class=\"engine\" data-silo=\"").Append(E(l.Silo)).Append("\">")
                .Append("<td class=\"text\">").Append(E(l.Silo)).Append("</td>")
                .Append("<td class=\"text model\">").Append(E(l.Model)).Append("</td>")
                .Append("<td class=\"text\">").Append(E(l.Backend)).Append("</td>")
                .Append("<td class=\"text\">").Append(E(Device(l))).Append("</td>")
                .Append("<td class=\"running\">").Append(N(l.Running)).Append("</td>")
                .Append("<td class=\"queued\">").Append(N(l.Waiting)).Append("</td>")
                .Append("<td class=\"batch\">").Append(N(l.LastBatchSize)).Append("</td>")
                .Append("<td class=\"kv\" title=\"blocks of ").Append(l.KvBlockSize).Append(" tokens: ").Append(N((long)l.KvBlocksTotal * l.KvBlockSize)).Append(" tokens in all\">")
                .Append(N(l.KvBlocksUsed)).Append(" / ").Append(N(l.KvBlocksTotal)).Append(" (").Append((100 * kvShare).ToString("F1", Invariant)).Append(" %)")
                .Append("<span class=\"bar\"><span style=\"width:").Append((100 * kvShare).ToString("F1", Invariant)).Append("%\"></span></span></td>")
                .Append("<td class=\"cached\">").Append(N(l.KvBlocksCached)).Append("</td>")
                .Append("<td class=\"tokens-per-second").Append(l.DecodeTokensPerSecond == 0 ? " idle" : "").Append("\">")
                .Append(l.DecodeTokensPerSecond.ToString("N1", Invariant)).Append("</td>")
                .Append("<td class=\"ttft-p50\">").Append(Milliseconds(l.TimeToFirstTokenP50Ms)).Append("</td>")
                .Append("<td class=\"ttft-p99\">").Append(Milliseconds(l.TimeToFirstTokenP99Ms)).Append("</td>")
                .Append("<td class=\"tokens-generated\">").Append(N(l.TokensGenerated)).Append("</td>")
                .Append("<td class=\"conversations\">").Append(N(l.ResidentConversations)).Append("</td></tr>\n");
        }
        html.Append("""
            </tbody></table>
            <p class="meta">TTFT: submission to first token in the engine (queue and prompt included), over each engine's last
            1,024 requests. tok/s: tokens generated over the last 5 s. KV: blocks held by running sequences (hover for their size
            in tokens); cached blocks hold reusable prefixes. The same figures as JSON: <code>curl -s </code>this URL.</p>
            </body></html>

            """);
        return html.ToString();
    }

    /// <summary>The engine's GPU with its index, or the CPU.</summary>
    public static string Device(EngineLoad l) => l.DeviceIndex is { } gpu ? $"GPU {gpu} ({l.DeviceName})" : "CPU";

    /// <summary>A latency for a person: "—" when none yet, "0.84 ms", "212.5 ms", "3.21 s".</summary>
    public static string Milliseconds(double? ms) => ms switch
    {
        null => "—",
        < 10 => ms.Value.ToString("F2", Invariant) + " ms",
        < 1000 => ms.Value.ToString("F1", Invariant) + " ms",
        _ => (ms.Value / 1000).ToString("F2", Invariant) + " s",
    };

    static string N(long value) => value.ToString("N0", Invariant);

    static string E(string text) => WebUtility.HtmlEncode(text);
}
