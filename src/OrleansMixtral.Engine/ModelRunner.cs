using OrleansMixtral.Engine.Sampling;

namespace OrleansMixtral.Engine;

/// <summary>
/// Runs a backend directly over one token sequence, outside the engine's scheduler: logits at chosen
/// positions and windowed perplexity. Uses KV blocks 0..n of the backend, so never share a backend
/// between a runner and a live engine.
/// </summary>
public sealed class ModelRunner
{
    readonly IModelBackend _backend;
    readonly ForwardBatch _batch;
    readonly int[] _table;
    readonly float[] _logits;

    public ModelRunner(IModelBackend backend)
    {
        _backend = backend;
        var c = backend.Config;
        var blocks = (c.MaxPositionEmbeddings + backend.KvBlockSize - 1) / backend.KvBlockSize;
        if (blocks > backend.KvBlockCount)
            throw new InvalidOperationException($"the backend's KV cache ({backend.KvBlockCount} blocks) cannot hold one full context ({blocks} blocks)");
        _table = Enumerable.Range(0, blocks).ToArray();
        _batch = new ForwardBatch(backend.MaxBatchTokens, 1, blocks);
        _logits = new float[(long)Math.Min(backend.MaxBatchTokens, backend.MaxLogitRows) * c.VocabSize];
    }

    /// <summary>
    /// Feeds <paramref name="tokens"/> from position 0 in chunks and calls <paramref name="onLogits"/> with
    /// (position, logits) for every position (or only the last when <paramref name="allPositions"/> is false).
    /// </summary>
    public void Run(IReadOnlyList<int> tokens, bool allPositions, Action<int, ReadOnlySpan<float>> onLogits)
    {
        var vocab = _backend.Config.VocabSize;
        if (tokens.Count > _backend.Config.MaxPositionEmbeddings)
            throw new InvalidRequestException($"{tokens.Count} tokens exceed the context of {_backend.Config.MaxPositionEmbeddings}", ErrorKind.ContextLengthExceeded);
        // every position's logits: no more tokens per forward than the backend holds logit rows
        var chunk = allPositions ? Math.Min(_backend.MaxBatchTokens, _backend.MaxLogitRows) : _backend.MaxBatchTokens;
        for (var start = 0; start < tokens.Count; start += chunk)
        {
            var n = Math.Min(chunk, tokens.Count - start);
            _batch.Clear();
            _batch.AddSequence(_table);
            for (var i = 0; i < n; i++)
            {
                var pos = start + i;
                _batch.AddToken(0, tokens[pos], pos, allPositions || pos == tokens.Count - 1);
            }
            _backend.Forward(_batch, _logits);
            for (var r = 0; r < _batch.LogitCount; r++)
                onLogits(start + _batch.LogitTokens[r], new ReadOnlySpan<float>(_logits, r * vocab, vocab));
        }
    }

    /// <summary>Logits at the last position, copied.</summary>
    public float[] LastLogits(IReadOnlyList<int> tokens)
    {
        float[] result = [];
        Run(tokens, false, (_, l) => result = l.ToArray());
        return result;
    }

    /// <summary>
    /// Perplexity of a token stream (no BOS in it) with the project's windowing: chunks of context − 1
    /// tokens, each window = [BOS] + chunk, every chunk token predicted exactly once.
    /// </summary>
    public PerplexityResult Perplexity(IReadOnlyList<int> stream, int bosId, int? maxWindows = null, Action<int, int>? progress = null)
    {
        var chunk = _backend.Config.MaxPositionEmbeddings - 1;
        var windows = (stream.Count + chunk - 1) / chunk;
        if (maxWindows is { } m) windows = Math.Min(windows, m);
        double nll = 0;
        long count = 0;
        var window = new List<int>(chunk + 1);
        for (var w = 0; w < windows; w++)
        {
            window.Clear();
            window.Add(bosId);
            var start = w * chunk;
            for (var i = start; i < Math.Min(stream.Count, start + chunk); i++) window.Add(stream[i]);
            Run(window, allPositions: true, (pos, logits) =>
            {
                if (pos + 1 >= window.Count) return;
                nll -= LogSoftmax.At(logits, window[pos + 1]);
                count++;
            });
            progress?.Invoke(w + 1, windows);
        }
        return new PerplexityResult(Math.Exp(nll / count), count, windows, nll);
    }
}

public sealed record PerplexityResult(double Perplexity, long Tokens, int Windows, double NllSum);
