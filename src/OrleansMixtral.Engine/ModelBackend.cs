using OrleansMixtral.Model;

namespace OrleansMixtral.Engine;

/// <summary>
/// A Mixtral forward pass over a paged KV cache. The engine decides what runs (which tokens, which KV blocks);
/// a backend only computes. Implemented by the CPU backend here and by the CUDA backend.
/// </summary>
public interface IModelBackend : IDisposable
{
    string Name { get; }
    MixtralConfig Config { get; }
    /// <summary>Tokens per KV block.</summary>
    int KvBlockSize { get; }
    /// <summary>Physical KV blocks this backend holds.</summary>
    int KvBlockCount { get; }
    /// <summary>Most tokens one <see cref="Forward"/> call may carry.</summary>
    int MaxBatchTokens { get; }
    /// <summary>Prompt tokens of one sequence the engine computes per step (see <see cref="PrefillChunk"/>); ≤ <see cref="MaxBatchTokens"/>.</summary>
    int PrefillChunkTokens => MaxBatchTokens;
    /// <summary>Most logit rows one <see cref="Forward"/> call may ask for (a backend may hold fewer rows than tokens).</summary>
    int MaxLogitRows => MaxBatchTokens;
    /// <summary>Most sequences one <see cref="Forward"/> call may carry (the engine runs no more at once).</summary>
    int MaxSequences => MaxLogitRows;

    /// <summary>
    /// Runs the model over <paramref name="batch"/>: writes each token's K/V into its sequence's blocks at its
    /// position, attends causally over the sequence's cache, and writes the logits of the tokens marked in
    /// <see cref="ForwardBatch.LogitTokens"/> (in that order) to <paramref name="logits"/> [LogitCount, vocab].
    /// </summary>
    void Forward(ForwardBatch batch, Span<float> logits);

    /// <summary>Copies the first <paramref name="tokens"/> token slots of a KV block (all layers) into another.</summary>
    void CopyKvBlock(int sourceBlock, int destinationBlock, int tokens);

    /// <summary>When set, the backend records each layer's top-k expert choices for every token it computes.</summary>
    RouterTrace? RouterTrace { get; set; }
}

/// <summary>
/// A backend that can also choose each logit row's next token where the logits are (a GPU), so only token ids come
/// back: what <see cref="Sampling.Sampler"/> does with top-k and top-p off. The engine still owns the randomness.
/// </summary>
public interface IDeviceSampling
{
    /// <summary>
    /// <see cref="IModelBackend.Forward"/>, then for logit row i: the argmax (first of equal maxima) when
    /// temperatures[i] is 0, else the first token whose cumulative softmax(logits / temperatures[i]) probability
    /// exceeds uniforms[i] of the total, uniforms[i] in [0, 1) drawn by the engine from the request's generator.
    /// </summary>
    void ForwardAndSample(ForwardBatch batch, ReadOnlySpan<float> temperatures, ReadOnlySpan<double> uniforms, Span<int> tokens);
}

/// <summary>The work of one forward call, in preallocated arrays (nothing allocates per step).</summary>
public sealed class ForwardBatch
{
    public ForwardBatch(int maxTokens, int maxSequences, int maxBlocksPerSequence)
    {
        Tokens = new int[maxTokens];
        Positions = new int[maxTokens];
        SequenceOfToken = new int[maxTokens];
        LogitTokens = new int[maxTokens];
        BlockTables = new int[maxSequences][];
        for (var i = 0; i < maxSequences; i++) BlockTables[i] = new int[maxBlocksPerSequence];
    }

    public int TokenCount { get; private set; }
    public int SequenceCount { get; private set; }
    public int LogitCount { get; private set; }
    /// <summary>[TokenCount] token ids.</summary>
    public int[] Tokens { get; }
    /// <summary>[TokenCount] absolute position of each token in its sequence.</summary>
    public int[] Positions { get; }
    /// <summary>[TokenCount] index into <see cref="BlockTables"/>.</summary>
    public int[] SequenceOfToken { get; }
    /// <summary>[LogitCount] indices of the tokens whose logits are wanted.</summary>
    public int[] LogitTokens { get; }
    /// <summary>Per sequence: logical block i of the sequence lives in physical block BlockTables[s][i].</summary>
    public int[][] BlockTables { get; }

    public int MaxTokens => Tokens.Length;

    public void Clear() { TokenCount = 0; SequenceCount = 0; LogitCount = 0; }

    public int AddSequence(IReadOnlyList<int> blockTable)
    {
        var s = SequenceCount++;
        var table = BlockTables[s];
        for (var i = 0; i < blockTable.Count; i++) table[i] = blockTable[i];
        return s;
    }

    public void AddToken(int sequence, int token, int position, bool wantLogits)
    {
        var t = TokenCount++;
        Tokens[t] = token;
        Positions[t] = position;
        SequenceOfToken[t] = sequence;
        if (wantLogits) LogitTokens[LogitCount++] = t;
    }
}

/// <summary>Per layer, per computed token: the chosen experts (best first) and their renormalised weights.</summary>
public sealed class RouterTrace
{
    public List<(int Layer, int[] Experts, float[] Weights)> Entries { get; } = [];
}
