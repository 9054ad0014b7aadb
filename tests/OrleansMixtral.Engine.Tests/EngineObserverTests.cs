using System.Collections.Concurrent;
using System.Diagnostics;

namespace OrleansMixtral.Engine.Tests;

/// <summary>
/// What the engine reports for metrics (<see cref="IEngineObserver"/>: queue waits, first tokens, steps, prompt chunks),
/// checked against what the requests themselves imply, and the throughput figure that falls to 0 when the engine idles.
/// </summary>
public sealed class EngineObserverTests
{
    sealed class Recorder : IEngineObserver
    {
        public readonly ConcurrentQueue<TimeSpan> QueueWaits = new(), FirstTokens = new();
        public readonly ConcurrentQueue<int> PromptChunks = new();
        public readonly ConcurrentQueue<(TimeSpan Duration, int Tokens, int Sequences)> Steps = new();
        public void Admitted(TimeSpan queueWait) => QueueWaits.Enqueue(queueWait);
        public void FirstToken(TimeSpan timeToFirstToken) => FirstTokens.Enqueue(timeToFirstToken);
        public void PromptChunk(int tokens) => PromptChunks.Enqueue(tokens);
        public void StepCompleted(TimeSpan duration, int tokens, int sequences) => Steps.Enqueue((duration, tokens, sequences));
    }

    [Fact]
    public async Task Every_request_step_and_prompt_chunk_is_reported_as_the_requests_imply()
    {
        var recorder = new Recorder();
        var backend = TinyModel.Backend(maxBatchTokens: 256);
        int chunk = backend.PrefillChunkTokens;
        await using var engine = new InferenceEngine(backend, TinyModel.Tokenizer, new EngineOptions { Observer = recorder });
        // prompts of 300 (more than a chunk), 40 and 9 tokens; 12 tokens each, EOS ignored
        int[][] prompts =
        [
            TinyModel.Tokenizer.Encode(string.Concat(Enumerable.Repeat("The river rose and the town council met again. ", 30)))[..300],
            TinyModel.Tokenizer.Encode(string.Concat(Enumerable.Repeat("Once upon a time ", 10)))[..40],
            [1, 415, 2936, 9060, 285, 1142, 28705, 28770, 28723],
        ];
        const int output = 12;
        var results = await Task.WhenAll(prompts.Select(p =>
            engine.Submit(new GenerationRequest(p, SamplingOptions.Greedy(output) with { IgnoreEos = true })).ReadToEndAsync()));

        Assert.Equal(3, recorder.QueueWaits.Count);
        Assert.All(recorder.QueueWaits, w => Assert.True(w >= TimeSpan.Zero));
        // the first tokens are the results' own times to first token
        Assert.Equal(results.Select(r => r.TimeToFirstToken).Order(), recorder.FirstTokens.Order());
        // prompt chunks: every computed prompt token once, at most a chunk at a time
        int computed = results.Sum(r => r.Usage.PromptTokens - r.Usage.CachedPromptTokens);
        Assert.Equal(computed, recorder.PromptChunks.Sum());
        Assert.All(recorder.PromptChunks, c => Assert.InRange(c, 1, chunk));
        Assert.Contains(recorder.PromptChunks, c => c == chunk); // the long prompt took whole chunks
        // steps: every computed prompt token and every generated token fed back (all but the last of each request)
        Assert.Equal(computed + prompts.Length * (output - 1), recorder.Steps.Sum(s => s.Tokens));
        Assert.All(recorder.Steps, s => Assert.InRange(s.Tokens, 1, backend.MaxBatchTokens));
        Assert.All(recorder.Steps, s => Assert.InRange(s.Sequences, 1, prompts.Length));
        Assert.All(recorder.Steps, s => Assert.True(s.Duration > TimeSpan.Zero));
        Assert.True(recorder.Steps.Count >= output, $"{recorder.Steps.Count} steps");
    }

    [Fact]
    public async Task Tokens_per_second_counts_the_last_window_and_falls_to_zero_when_idle()
    {
        var window = TimeSpan.FromMilliseconds(600);
        await using var engine = new InferenceEngine(TinyModel.Backend(), TinyModel.Tokenizer, new EngineOptions { ThroughputWindow = window });
        Assert.Equal(0, engine.GetStats().DecodeTokensPerSecond);

        var watch = Stopwatch.StartNew();
        var result = await engine.Submit(new GenerationRequest([1, 415, 2936], SamplingOptions.Greedy(48) with { IgnoreEos = true })).ReadToEndAsync();
        var busy = engine.GetStats().DecodeTokensPerSecond;
        var elapsed = watch.Elapsed;
        Assert.Equal(48, result.Usage.CompletionTokens);
        // at most every token generated, over at least nine tenths of the window; at least those of the window's span
        Assert.InRange(busy, 0.1, 48 / (0.9 * window.TotalSeconds) + 0.1);
        if (elapsed < window * 0.9) Assert.True(busy >= 48 / window.TotalSeconds - 1, $"{busy} tok/s for 48 tokens in {elapsed.TotalMilliseconds:F0} ms");
        Assert.Equal(Math.Round(busy, 1), busy); // one decimal, as the dashboard shows it

        await Task.Delay(window * 1.2);
        Assert.Equal(0, engine.GetStats().DecodeTokensPerSecond);
    }
}
