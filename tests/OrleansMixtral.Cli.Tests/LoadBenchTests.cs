using System.Diagnostics;
using OrleansMixtral.LoadBench;

namespace OrleansMixtral.Cli.Tests;

/// <summary>The load benchmark's shared parts (src/OrleansMixtral.LoadBench), used by `mixtral bench --rate` and ClusterBench.</summary>
public sealed class LoadBenchTests
{
    [Fact]
    public void A_seed_gives_the_same_schedule_every_time_and_another_seed_another()
    {
        double[] a = ArrivalSchedule.Poisson(4, seed: 7, count: 500, durationSeconds: null);
        double[] b = ArrivalSchedule.Poisson(4, seed: 7, count: 500, durationSeconds: null);
        double[] c = ArrivalSchedule.Poisson(4, seed: 8, count: 500, durationSeconds: null);

        Assert.Equal(500, a.Length);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.Equal(0, a[0]);
        Assert.All(a.Zip(a.Skip(1)), p => Assert.True(p.Second > p.First)); // ascending
    }

    [Fact]
    public void The_rates_of_one_seed_share_their_draws_scaled_by_the_rate()
    {
        double[] slow = ArrivalSchedule.Poisson(2, seed: 1, count: 100, durationSeconds: null);
        double[] fast = ArrivalSchedule.Poisson(50, seed: 1, count: 100, durationSeconds: null);

        for (int i = 0; i < slow.Length; i++) Assert.Equal(slow[i] * 2 / 50, fast[i], 1e-9 * Math.Max(1, slow[i]));
    }

    [Theory]
    [InlineData(0.5, 1)]
    [InlineData(3, 2)]
    [InlineData(250, 3)]
    public void Gaps_are_exponential_of_mean_one_over_the_rate(double rate, int seed)
    {
        const int Count = 4001;
        double[] arrivals = ArrivalSchedule.Poisson(rate, seed, Count, durationSeconds: null);
        double[] gaps = arrivals.Zip(arrivals.Skip(1), (x, y) => y - x).ToArray();
        int n = gaps.Length;

        // the mean of n exponential gaps has standard error (1/rate)/√n: within five of them
        double mean = gaps.Average();
        Assert.InRange(mean, 1 / rate - 5 / rate / Math.Sqrt(n), 1 / rate + 5 / rate / Math.Sqrt(n));
        // exponential: the variance is the mean squared (the sample variance's relative standard error is √(8/n))
        double variance = gaps.Sum(g => (g - mean) * (g - mean)) / (n - 1);
        Assert.InRange(variance * rate * rate, 1 - 5 * Math.Sqrt(8.0 / n), 1 + 5 * Math.Sqrt(8.0 / n));
        Assert.All(gaps, g => Assert.True(g >= 0));
    }

    [Theory]
    [InlineData(10, 60, 4)]
    [InlineData(400, 5, 5)]
    public void A_duration_holds_every_arrival_before_it_about_rate_times_duration(double rate, double seconds, int seed)
    {
        double[] arrivals = ArrivalSchedule.Poisson(rate, seed, count: null, durationSeconds: seconds);

        Assert.Equal(0, arrivals[0]);
        Assert.All(arrivals, t => Assert.InRange(t, 0, seconds - 1e-12));
        // after the arrival at 0, a Poisson count of mean rate × duration: within five standard deviations
        double expected = rate * seconds;
        Assert.InRange(arrivals.Length - 1, expected - 5 * Math.Sqrt(expected), expected + 5 * Math.Sqrt(expected));
        // the next draw would have passed the end: the same seed with a count one longer goes past it
        double[] longer = ArrivalSchedule.Poisson(rate, seed, arrivals.Length + 1, durationSeconds: null);
        Assert.Equal(arrivals, longer[..^1]);
        Assert.True(longer[^1] >= seconds);
    }

    [Fact]
    public void A_schedule_needs_a_positive_rate_and_one_bound()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => ArrivalSchedule.Poisson(0, 0, 10, null));
        Assert.Throws<ArgumentOutOfRangeException>(() => ArrivalSchedule.Poisson(double.NaN, 0, 10, null));
        Assert.Throws<ArgumentOutOfRangeException>(() => ArrivalSchedule.Poisson(double.PositiveInfinity, 0, 10, null));
        Assert.Throws<ArgumentException>(() => ArrivalSchedule.Poisson(1, 0, null, null));
        Assert.Throws<ArgumentException>(() => ArrivalSchedule.Poisson(1, 0, 10, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => ArrivalSchedule.Poisson(1, 0, 0, null));
        Assert.Throws<ArgumentOutOfRangeException>(() => ArrivalSchedule.Poisson(1, 0, null, 0));
    }

    [Fact]
    public void Percentiles_interpolate_between_the_closest_ranks()
    {
        double[] values = [40, 15, 50, 35, 20]; // sorted: 15 20 35 40 50
        Assert.Equal(15, Percentiles.Of(values, 0));
        Assert.Equal(35, Percentiles.Of(values, 0.5));
        Assert.Equal(46, Percentiles.Of(values, 0.9), 1e-12);   // rank 3.6: 40 + 0.6 × 10
        Assert.Equal(49.6, Percentiles.Of(values, 0.99), 1e-12); // rank 3.96: 40 + 0.96 × 10
        Assert.Equal(50, Percentiles.Of(values, 1));
        Assert.Equal(2.5, Percentiles.OfSorted([1, 2, 3, 4], 0.5));
        Assert.Equal(3.7, Percentiles.OfSorted([1, 2, 3, 4], 0.9), 1e-12);
        Assert.Equal(7, Percentiles.OfSorted([7], 0.99));
        Assert.True(double.IsNaN(Percentiles.OfSorted([], 0.5)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Percentiles.OfSorted([1.0], 1.5));

        Latency l = Latency.Of(values)!;
        Assert.Equal(new Latency(5, 32, 15, 35, 46, 49.6, 50), l);
        Assert.Null(Latency.Of([]));
    }

    [Fact]
    public void Token_gaps_split_a_chunk_over_the_time_since_the_previous_arrival()
    {
        // one token at 100 ms, one at 110, two at 130, one at 131; tokens that come with the first are gaps of 0
        Assert.Equal([10, 10, 10, 1], TokenGaps.Of([(100, 1), (110, 1), (130, 2), (131, 1)]));
        Assert.Equal([0, 0, 5], TokenGaps.Of([(50, 3), (55, 1)]));
        Assert.Empty(TokenGaps.Of([(50, 1)]));
        Assert.Empty(TokenGaps.Of([]));
        double[] gaps = TokenGaps.Of([(0, 2), (9, 3), (30, 1)]);
        Assert.Equal(5, gaps.Length);             // tokens − 1
        Assert.Equal(30, gaps.Sum(), 1e-12);      // last − first arrival
    }

    [Fact]
    public void In_flight_counts_the_most_overlapping_intervals()
    {
        Assert.Equal(2, RateReport.MostOverlapping([(0, 10), (5, 15), (10, 20)])); // one ends as the next starts
        Assert.Equal(3, RateReport.MostOverlapping([(0, 100), (1, 2), (1, 50), (60, 70)]));
        Assert.Equal(1, RateReport.MostOverlapping([(0, 1), (1, 2), (2, 3)]));
    }

    [Fact]
    public async Task The_runner_sends_on_schedule_and_reports_completed_requests_only()
    {
        double[] arrivals = ArrivalSchedule.Poisson(100, seed: 5, count: 10, durationSeconds: null);
        var started = Stopwatch.GetTimestamp();
        RateReport report = await LoadRunner.RunAsync(100, arrivals, async (i, clock, ct) =>
        {
            if (i == 3) throw new InvalidOperationException("refused");
            await AtLeast(20, ct);
            clock.Tokens();
            await AtLeast(10, ct);
            clock.Tokens(2);
            return new RequestOutcome(true, 16, 3, "Length");
        });
        TimeSpan elapsed = Stopwatch.GetElapsedTime(started);

        Assert.Equal((100.0, 10, 9, 1, 27), (report.Rate, report.Sent, report.Completed, report.Failed, report.OutputTokens));
        Assert.Equal(Math.Round(arrivals[^1], 6), report.ScheduleSeconds);
        Assert.InRange(report.WallSeconds, arrivals[^1] + 0.029, elapsed.TotalSeconds);
        Assert.Equal(27 / report.WallSeconds, report.OutputTokensPerSecond, 0.01 * 27 / report.WallSeconds);
        Assert.Equal(9 / report.WallSeconds, report.RequestsPerSecond, 0.01 * 9 / report.WallSeconds);
        Assert.Equal(9, report.TtftMs!.Count);
        Assert.Equal(9, report.EndToEndMs!.Count);
        Assert.Equal(18, report.ItlMs!.Count); // two gaps per completed request
        Assert.True(report.TtftMs.Min >= 20, $"TTFT {report.TtftMs}");
        Assert.True(report.EndToEndMs.Min >= 30, $"E2E {report.EndToEndMs}");
        Assert.True(report.ItlMs.Min >= 5, $"ITL {report.ItlMs}"); // at least 10 ms over a chunk of two
        Assert.True(report.TtftMs.P50 <= report.TtftMs.P90 && report.TtftMs.P90 <= report.TtftMs.P99 && report.TtftMs.P99 <= report.TtftMs.Max);
        Assert.InRange(report.MaxInFlight, 1, 10);

        Assert.Equal(Enumerable.Range(0, 10), report.Requests.Select(q => q.Index));
        Assert.Equal(arrivals.Select(a => Math.Round(a, 6)), report.Requests.Select(q => q.ArrivalSeconds));
        Assert.All(report.Requests, q => Assert.True(q.SendLagMs >= 0, $"request {q.Index} left {q.SendLagMs} ms early"));
        RequestReport failed = report.Requests[3];
        Assert.Equal(("Error", null, 0), (failed.Finish, failed.TtftMs, failed.OutputTokens));
        Assert.Contains("refused", failed.Error);
        Assert.All(report.Requests.Where(q => q.Index != 3), q =>
        {
            Assert.InRange(q.TtftMs!.Value, 20, q.EndToEndMs);
            Assert.Equal(Math.Round((q.EndToEndMs - q.TtftMs.Value) / 2, 0), Math.Round(q.ItlMeanMs!.Value, 0), 1.0);
        });
    }

    /// <summary>Waits at least this long (timers may fire a little early).</summary>
    static async Task AtLeast(double ms, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        while (Stopwatch.GetElapsedTime(started).TotalMilliseconds < ms) await Task.Delay(1, ct);
    }

    [Fact]
    public async Task The_runner_stops_when_cancelled()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        double[] arrivals = ArrivalSchedule.Poisson(1, seed: 0, count: 100, durationSeconds: null); // about 100 s
        var started = Stopwatch.GetTimestamp();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => LoadRunner.RunAsync(1, arrivals, async (_, clock, ct) =>
        {
            await Task.Delay(1, ct);
            clock.Tokens();
            return new RequestOutcome(true, 1, 1, "Length");
        }, cts.Token));
        Assert.True(Stopwatch.GetElapsedTime(started) < TimeSpan.FromSeconds(5));
    }

    [Fact]
    public void Rates_are_positive_decimals_up_to_the_limit()
    {
        Assert.True(LoadFlags.TryParseRates(["0.5,1", "2 ", "10000"], out double[] rates, out string? error));
        Assert.Equal([0.5, 1, 2, 10000], rates);
        Assert.Null(error);
        foreach (string bad in new[] { "0", "-1", "abc", "NaN", "Infinity", "1e3", "10000.5", "", ",", "1,,x" })
        {
            Assert.False(LoadFlags.TryParseRates([bad], out _, out error), bad);
            Assert.Contains("--rate", error);
        }
        Assert.Null(LoadFlags.CheckDuration(0.5));
        Assert.NotNull(LoadFlags.CheckDuration(0));
        Assert.NotNull(LoadFlags.CheckDuration(double.NaN));
        Assert.NotNull(LoadFlags.CheckDuration(86_401));
        Assert.Null(LoadFlags.CheckArrivals([10, 100], 3600));
        Assert.NotNull(LoadFlags.CheckArrivals([10_000], 3600));
        Assert.Null(LoadFlags.CheckArrivals([10_000], null));
    }

    // ClusterBench's load mode reads its flags with LoadArguments (it has no command-line library).
    static readonly string[] ClusterOptions = ["--model", "--threads"];

    [Fact]
    public void Load_arguments_parse_with_their_defaults_and_the_callers_options()
    {
        LoadArguments a = LoadArguments.Parse(["--rate", "1,2.5", "--model", "synthetic:mixtral-8x7b"], ClusterOptions);
        Assert.Equal([1, 2.5], a.Settings.Rates);
        Assert.Equal((200, (double?)null, 512, 128, 0), (a.Settings.Requests, a.Settings.DurationSeconds, a.Settings.PromptTokens, a.Settings.OutputTokens, a.Settings.Seed));
        Assert.Null(a.JsonFile);
        Assert.Null(a.PlotFile);
        Assert.Equal("synthetic:mixtral-8x7b", a.Other["--model"]);
        Assert.False(a.Other.ContainsKey("--threads"));

        a = LoadArguments.Parse(["--duration", "30", "--rate", "4", "--prompt-tokens", "64", "--output-tokens", "8", "--seed", "-3",
            "--json", "out/load.json", "--plot", "out/load.png", "--threads", "2"], ClusterOptions);
        Assert.Equal([4], a.Settings.Rates);
        Assert.Equal(((int?)null, (double?)30, 64, 8, -3), (a.Settings.Requests, a.Settings.DurationSeconds, a.Settings.PromptTokens, a.Settings.OutputTokens, a.Settings.Seed));
        Assert.Equal(("out/load.json", "out/load.png", "2"), (a.JsonFile, a.PlotFile, a.Other["--threads"]));
        Assert.Equal(a.Settings.Schedule(4), ArrivalSchedule.Poisson(4, -3, null, 30));
    }

    public static TheoryData<string[], string> BadLoadArguments => new()
    {
        { ["--requests", "10"], "needs --rate" },
        { ["--rate", "0"], "--rate" },
        { ["--rate", "fast"], "--rate" },
        { ["--rate", "1", "--requests", "0"], "--requests" },
        { ["--rate", "1", "--requests", "ten"], "--requests" },
        { ["--rate", "1", "--duration", "0"], "--duration" },
        { ["--rate", "1", "--duration", "-5"], "--duration" },
        { ["--rate", "1", "--requests", "10", "--duration", "5"], "exclusive" },
        { ["--rate", "10000", "--duration", "86400"], "at most" },
        { ["--rate", "1", "--prompt-tokens", "0"], "--prompt-tokens" },
        { ["--rate", "1", "--output-tokens", "-1"], "--output-tokens" },
        { ["--rate", "1", "--seed", "1.5"], "--seed" },
        { ["--rate", "1", "--rate", "2"], "twice" },
        { ["--rate"], "needs a value" },
        { ["--rate", "1", "--json"], "needs a value" },
        { ["--rate", "1", "--concurrency", "4"], "unknown option --concurrency" },
        { ["--rate", "1", "--runs", "4"], "unknown option --runs" },
        { ["--rate", "1", "stray"], "unexpected argument" },
    };

    [Theory]
    [MemberData(nameof(BadLoadArguments))]
    public void Bad_load_arguments_say_what_is_wrong(string[] args, string message)
    {
        var e = Assert.Throws<LoadUsageException>(() => LoadArguments.Parse(args, ClusterOptions));
        Assert.Contains(message, e.Message);
    }
}
