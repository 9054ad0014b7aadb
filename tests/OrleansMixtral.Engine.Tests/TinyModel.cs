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
}
