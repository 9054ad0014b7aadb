namespace OrleansMixtral.Engine;

/// <summary>
/// Chunked prefill: how many prompt tokens of one sequence an engine step computes. One setting, with one default per
/// backend kind; a backend's forward size (<see cref="IModelBackend.MaxBatchTokens"/>) is derived from it, so the two
/// never disagree. Set it through the backend's options (ModelLoadOptions, the CLI's --prefill-chunk, the silo's
/// Mixtral:PrefillChunkTokens); the engine takes the backend's.
/// </summary>
public static class PrefillChunk
{
    /// <summary>Smallest chunk a user may ask for (smaller ones only add per-step overhead).</summary>
    public const int MinTokens = 16;

    /// <summary>The CPU backend's chunk: its prompt speed is flat beyond a few hundred tokens.</summary>
    public const int CpuDefault = 512;

    /// <summary>
    /// The CUDA backend's chunk, measured (H200, docs/PERFORMANCE.md "Prefill chunk"): chunks of 2048 or more come within
    /// 6 % of whole-prompt steps at 8,192 tokens, and a chunk is also how long running decodes wait behind a prompt.
    /// </summary>
    public const int CudaDefault = 2048;

    /// <summary>
    /// Decode tokens that may share a step with a chunk: the engine fills a step with one token per decoding sequence
    /// first, then prompt chunks (the CUDA backend's MaxSequences: decode batches of up to 128 sequences).
    /// </summary>
    public const int DecodeTokens = 128;

    /// <summary>The forward size a backend needs so a whole chunk still fits beside a step's decodes.</summary>
    public static int BatchTokens(int chunkTokens) => chunkTokens + DecodeTokens;

    /// <summary>Why <paramref name="chunkTokens"/> is not a usable chunk for a model of this context; null when it is.</summary>
    public static string? Check(int chunkTokens, int contextTokens) =>
        chunkTokens < MinTokens || chunkTokens > contextTokens
            ? $"the prefill chunk must be between {MinTokens} and the model's context of {contextTokens} tokens, got {chunkTokens}"
            : null;
}
