using OrleansMixtral.Engine.Cpu;
using OrleansMixtral.Model;
using OrleansMixtral.Tests;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Engine.Tests;

/// <summary>The bundled tiny model on the CPU backend, loaded once per weight format.</summary>
public static class TinyModel
{
    static readonly Lazy<MistralTokenizer> Tok = new(() => MistralTokenizer.Load(RepoPaths.TinyModel));

    public static MistralTokenizer Tokenizer => Tok.Value;

    public static CpuMixtralBackend Backend(CpuWeightFormat weights = CpuWeightFormat.Float32, long kvBytes = 64L << 20, int maxBatchTokens = 256)
    {
        using var checkpoint = CheckpointDirectory.Open(RepoPaths.TinyModel);
        return new CpuMixtralBackend(checkpoint, new CpuBackendOptions
        {
            Weights = weights, KvCacheBytes = kvBytes, MaxBatchTokens = maxBatchTokens,
        });
    }

    public static InferenceEngine Engine(CpuWeightFormat weights = CpuWeightFormat.Float32, long kvBytes = 64L << 20, EngineOptions? options = null)
        => new(Backend(weights, kvBytes), Tokenizer, options);

    /// <summary>Runs <paramref name="work"/> and reports the most sequences the engine ran at once meanwhile (polled every ms).</summary>
    public static async Task<(T Result, int MostRunning)> WatchRunning<T>(InferenceEngine engine, Func<Task<T>> work)
    {
        var mostRunning = 0;
        using var done = new CancellationTokenSource();
        var watch = Task.Run(async () =>
        {
            while (!done.IsCancellationRequested)
            {
                mostRunning = Math.Max(mostRunning, engine.GetStats().Running);
                await Task.Delay(1);
            }
        });
        try { return (await work(), mostRunning); }
        finally
        {
            done.Cancel();
            await watch;
        }
    }
}
