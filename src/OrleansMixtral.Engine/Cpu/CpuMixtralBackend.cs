using System.Numerics.Tensors;
using OrleansMixtral.Model;

namespace OrleansMixtral.Engine.Cpu;

/// <summary>Which weights are held as int8 (weight-only, per output channel) on the CPU.</summary>
public enum CpuWeightFormat { Float32, Int8 }

public sealed record CpuBackendOptions
{
    public CpuWeightFormat Weights { get; init; } = CpuWeightFormat.Float32;
    /// <summary>Also hold lm_head as int8 (the embedding table stays fp32: it is gathered, not multiplied).</summary>
    public bool QuantizeLmHead { get; init; }
    public int KvBlockSize { get; init; } = 16;
    /// <summary>KV cache budget in bytes (all layers, K and V).</summary>
    public long KvCacheBytes { get; init; } = 256L << 20;
    /// <summary>Prompt tokens per engine step (chunked prefill): the setting; <see cref="MaxBatchTokens"/> follows from it.</summary>
    public int PrefillChunkTokens { get; init; } = PrefillChunk.CpuDefault;
    /// <summary>Most tokens in one forward call: unless set, a chunk plus the decodes that share its step.</summary>
    public int MaxBatchTokens
    {
        get => _maxBatchTokens ?? PrefillChunk.BatchTokens(PrefillChunkTokens);
        init => _maxBatchTokens = value;
    }
    readonly int? _maxBatchTokens;
    public int Threads { get; init; } = Environment.ProcessorCount;
}

/// <summary>
/// The Mixtral forward pass on the CPU, in fp32 activations with fp32 or int8 weights. Reads top to bottom
/// like llama2.c's run.c: embed → per layer [RMSNorm → GQA attention with RoPE → residual → RMSNorm →
/// top-2 router → SwiGLU experts → residual] → final norm → lm_head. All buffers are allocated once.
/// </summary>
public sealed class CpuMixtralBackend : IModelBackend
{
    sealed class Expert
    {
        public required Linear W1 { get; init; } // [inter, hidden] gate projection
        public required Linear W3 { get; init; } // [inter, hidden] up projection
        public required Linear W2 { get; init; } // [hidden, inter] down projection
    }

    sealed class Layer
    {
        public required float[] AttnNorm { get; init; } // [hidden]
        public required Linear Wq { get; init; }        // [heads*headDim, hidden]
        public required Linear Wk { get; init; }        // [kvHeads*headDim, hidden]
        public required Linear Wv { get; init; }        // [kvHeads*headDim, hidden]
        public required Linear Wo { get; init; }        // [hidden, heads*headDim]
        public required float[] FfnNorm { get; init; }  // [hidden]
        public required float[] Router { get; init; }   // [experts, hidden], kept in fp32
        public required Expert[] Experts { get; init; }
    }

    readonly MixtralConfig _c;
    readonly ParallelRunner _runner;
    readonly float[] _embed;     // [vocab, hidden]
    readonly Layer[] _layers;
    readonly float[] _finalNorm; // [hidden]
    readonly Linear _lmHead;     // [vocab, hidden]

    // KV cache: per layer, [blocks, blockSize, kvDim] for K and for V.
    readonly float[][] _kCache, _vCache;

    // RoPE tables: [maxPositions, headDim/2].
    readonly float[] _cos, _sin;

    // Activations, sized for MaxBatchTokens.
    readonly float[] _x;      // [T, hidden] residual stream
    readonly float[] _xb;     // [T, hidden] normed
    readonly float[] _q;      // [T, heads*headDim]
    readonly float[] _k;      // [T, kvDim]
    readonly float[] _v;      // [T, kvDim]
    readonly float[] _att;    // [T, heads*headDim] attention output
    readonly float[] _proj;   // [T, hidden] attention / MoE output
    readonly float[] _routerLogits; // [T, experts]
    readonly int[] _topExperts;     // [T, topK]
    readonly float[] _topWeights;   // [T, topK]
    readonly int[][] _expertTokens; // [experts][T·topK] token index routed to the expert
    readonly float[][] _expertTokenWeights; // [experts][T·topK]
    readonly int[] _expertCount;    // [experts]
    readonly float[] _expertIn;     // [T, hidden] gathered inputs of one expert
    readonly float[] _h1, _h3;      // [T, inter]
    readonly float[] _expertOut;    // [T, hidden]
    readonly float[] _logitIn;      // [MaxLogitRows, hidden] normed rows whose logits are wanted
    readonly float[] _logitOut;     // [MaxLogitRows, vocab]
    // Logit rows held: one per sequence of a step, or a ModelRunner's all-position chunk of up to this many tokens; not
    // one per token (T × vocab × 4 bytes: 270 MB at a 2048-token chunk).
    const int RunnerLogitRows = 512;
    readonly AttentionJob _attention;

    public CpuMixtralBackend(CheckpointDirectory checkpoint, CpuBackendOptions? options = null, LoadProgress? progress = null)
    {
        var o = options ?? new CpuBackendOptions();
        checkpoint.ValidateMixtral();
        _c = checkpoint.Config;
        Options = o;
        Name = o.Weights == CpuWeightFormat.Int8 ? "cpu-int8" : "cpu-fp32";
        _runner = new ParallelRunner(o.Threads);
        var loader = new WeightLoader(checkpoint, o, progress);

        int h = _c.HiddenSize, inter = _c.IntermediateSize, qDim = _c.QueryDim, kvDim = _c.KvDim;
        _embed = loader.Float(MixtralWeightNames.EmbedTokens);
        _layers = new Layer[_c.NumLayers];
        for (var l = 0; l < _c.NumLayers; l++)
        {
            var experts = new Expert[_c.NumExperts];
            for (var e = 0; e < experts.Length; e++)
            {
                experts[e] = new Expert
                {
                    W1 = loader.Linear(MixtralWeightNames.ExpertW1(l, e), inter, h),
                    W3 = loader.Linear(MixtralWeightNames.ExpertW3(l, e), inter, h),
                    W2 = loader.Linear(MixtralWeightNames.ExpertW2(l, e), h, inter),
                };
            }
            _layers[l] = new Layer
            {
                AttnNorm = loader.Float(MixtralWeightNames.InputLayerNorm(l)),
                Wq = loader.Linear(MixtralWeightNames.QProj(l), qDim, h),
                Wk = loader.Linear(MixtralWeightNames.KProj(l), kvDim, h),
                Wv = loader.Linear(MixtralWeightNames.VProj(l), kvDim, h),
                Wo = loader.Linear(MixtralWeightNames.OProj(l), h, qDim),
                FfnNorm = loader.Float(MixtralWeightNames.PostAttentionLayerNorm(l)),
                Router = loader.Float(MixtralWeightNames.Router(l)),
                Experts = experts,
            };
        }
        _finalNorm = loader.Float(MixtralWeightNames.Norm);
        _lmHead = _c.TieWordEmbeddings || !checkpoint.Contains(MixtralWeightNames.LmHead)
            ? (o.QuantizeLmHead ? Int8Linear.Quantize(_embed, _c.VocabSize, h) : new Fp32Linear(_embed, _c.VocabSize, h))
            : loader.Linear(MixtralWeightNames.LmHead, _c.VocabSize, h, quantize: o.QuantizeLmHead);
        WeightBytes = loader.BytesHeld + (_lmHead is Fp32Linear f && ReferenceEquals(f.Weight, _embed) ? 0 : _lmHead.WeightBytes);

        KvBlockSize = o.KvBlockSize;
        var bytesPerBlock = 2L * _c.NumLayers * KvBlockSize * kvDim * sizeof(float);
        KvBlockCount = (int)Math.Clamp(o.KvCacheBytes / bytesPerBlock, 1, int.MaxValue / (KvBlockSize * kvDim));
        _kCache = new float[_c.NumLayers][];
        _vCache = new float[_c.NumLayers][];
        for (var l = 0; l < _c.NumLayers; l++)
        {
            _kCache[l] = new float[(long)KvBlockCount * KvBlockSize * kvDim];
            _vCache[l] = new float[(long)KvBlockCount * KvBlockSize * kvDim];
        }

        (_cos, _sin) = RopeTables.Compute(_c.MaxPositionEmbeddings, _c.HeadDim, (float)_c.RopeTheta);

        var T = MaxBatchTokens = o.MaxBatchTokens;
        if (T < 1 || (long)T * Math.Max(Math.Max(h, qDim), Math.Max(inter, _c.VocabSize)) > Array.MaxLength)
            throw new ArgumentOutOfRangeException(nameof(options), $"MaxBatchTokens {T}: the activation buffers of that many tokens do not fit .NET arrays");
        PrefillChunkTokens = Math.Min(o.PrefillChunkTokens, T); // a forward size set below the chunk caps it
        _x = new float[T * h];
        _xb = new float[T * h];
        _q = new float[T * qDim];
        _k = new float[T * kvDim];
        _v = new float[T * kvDim];
        _att = new float[T * qDim];
        _proj = new float[T * h];
        _routerLogits = new float[T * _c.NumExperts];
        _topExperts = new int[T * _c.NumExpertsPerToken];
        _topWeights = new float[T * _c.NumExpertsPerToken];
        _expertTokens = new int[_c.NumExperts][];
        _expertTokenWeights = new float[_c.NumExperts][];
        for (var e = 0; e < _c.NumExperts; e++)
        {
            _expertTokens[e] = new int[T];
            _expertTokenWeights[e] = new float[T];
        }
        _expertCount = new int[_c.NumExperts];
        _expertIn = new float[T * h];
        _h1 = new float[T * inter];
        _h3 = new float[T * inter];
        _expertOut = new float[T * h];
        MaxLogitRows = Math.Min(T, RunnerLogitRows);
        _logitIn = new float[MaxLogitRows * h];
        _logitOut = new float[MaxLogitRows * _c.VocabSize];
        _attention = new AttentionJob(this, _c.MaxPositionEmbeddings);
    }

    public string Name { get; }
    public MixtralConfig Config => _c;
    public CpuBackendOptions Options { get; }
    public int KvBlockSize { get; }
    public int KvBlockCount { get; }
    public int MaxBatchTokens { get; }
    public int PrefillChunkTokens { get; }
    public int MaxLogitRows { get; }
    public long WeightBytes { get; }
    public RouterTrace? RouterTrace { get; set; }

    public void Forward(ForwardBatch batch, Span<float> logits)
    {
        var T = batch.TokenCount;
        if (T == 0) return;
        if (T > MaxBatchTokens) throw new ArgumentException($"batch of {T} tokens exceeds MaxBatchTokens {MaxBatchTokens}");
        if (batch.LogitCount > MaxLogitRows) throw new ArgumentException($"batch asks for {batch.LogitCount} logit rows; the backend holds {MaxLogitRows}");
        int h = _c.HiddenSize, qDim = _c.QueryDim, kvDim = _c.KvDim;
        var eps = (float)_c.RmsNormEps;

        for (var t = 0; t < T; t++)
        {
            var pos = batch.Positions[t];
            if ((uint)pos >= (uint)_c.MaxPositionEmbeddings)
                throw new ArgumentException($"position {pos} is outside the context of {_c.MaxPositionEmbeddings}");
            new ReadOnlySpan<float>(_embed, batch.Tokens[t] * h, h).CopyTo(_x.AsSpan(t * h, h));
        }

        for (var l = 0; l < _layers.Length; l++)
        {
            var layer = _layers[l];

            // attention: x += Wo · attend(rope(Wq·n(x)), cache(rope(Wk·n(x)), Wv·n(x)))
            for (var t = 0; t < T; t++)
                CpuKernels.RmsNorm(_x.AsSpan(t * h, h), layer.AttnNorm, eps, _xb.AsSpan(t * h, h));
            layer.Wq.Forward(_xb, _q, T, _runner);
            layer.Wk.Forward(_xb, _k, T, _runner);
            layer.Wv.Forward(_xb, _v, T, _runner);
            ApplyRopeAndStoreKv(batch, l);
            _attention.Run(batch, l);
            layer.Wo.Forward(_att, _proj, T, _runner);
            TensorPrimitives.Add(_x.AsSpan(0, T * h), _proj.AsSpan(0, T * h), _x.AsSpan(0, T * h));

            // mixture of experts: x += Σ_{e in top-k} w_e · W2_e(silu(W1_e·n(x)) ⊙ W3_e·n(x))
            for (var t = 0; t < T; t++)
                CpuKernels.RmsNorm(_x.AsSpan(t * h, h), layer.FfnNorm, eps, _xb.AsSpan(t * h, h));
            Route(layer, T, l);
            RunExperts(layer, T);
            TensorPrimitives.Add(_x.AsSpan(0, T * h), _proj.AsSpan(0, T * h), _x.AsSpan(0, T * h));
        }

        // logits only for the tokens that need them
        var n = batch.LogitCount;
        if (n == 0) return;
        for (var i = 0; i < n; i++)
            CpuKernels.RmsNorm(_x.AsSpan(batch.LogitTokens[i] * h, h), _finalNorm, eps, _logitIn.AsSpan(i * h, h));
        _lmHead.Forward(_logitIn, _logitOut, n, _runner);
        _logitOut.AsSpan(0, n * _c.VocabSize).CopyTo(logits);
    }

    void ApplyRopeAndStoreKv(ForwardBatch batch, int layer)
    {
        int hd = _c.HeadDim, half = hd / 2, qDim = _c.QueryDim, kvDim = _c.KvDim, bs = KvBlockSize;
        for (var t = 0; t < batch.TokenCount; t++)
        {
            var pos = batch.Positions[t];
            var cos = new ReadOnlySpan<float>(_cos, pos * half, half);
            var sin = new ReadOnlySpan<float>(_sin, pos * half, half);
            for (var hq = 0; hq < _c.NumHeads; hq++) CpuKernels.Rope(_q.AsSpan(t * qDim + hq * hd, hd), cos, sin);
            for (var hk = 0; hk < _c.NumKvHeads; hk++) CpuKernels.Rope(_k.AsSpan(t * kvDim + hk * hd, hd), cos, sin);
            var block = batch.BlockTables[batch.SequenceOfToken[t]][pos / bs];
            var slot = ((long)block * bs + pos % bs) * kvDim;
            _k.AsSpan(t * kvDim, kvDim).CopyTo(_kCache[layer].AsSpan((int)slot, kvDim));
            _v.AsSpan(t * kvDim, kvDim).CopyTo(_vCache[layer].AsSpan((int)slot, kvDim));
        }
    }

    /// <summary>Softmax over all experts, keep the top k, renormalise their weights to sum to 1 (HF Mixtral).</summary>
    void Route(Layer layer, int T, int layerIndex)
    {
        int h = _c.HiddenSize, E = _c.NumExperts, k = _c.NumExpertsPerToken;
        Array.Clear(_expertCount);
        for (var t = 0; t < T; t++)
        {
            var logits = _routerLogits.AsSpan(t * E, E);
            var xb = new ReadOnlySpan<float>(_xb, t * h, h);
            for (var e = 0; e < E; e++) logits[e] = TensorPrimitives.Dot(xb, new ReadOnlySpan<float>(layer.Router, e * h, h));
            var experts = _topExperts.AsSpan(t * k, k);
            var weights = _topWeights.AsSpan(t * k, k);
            CpuKernels.RouteTopK(logits, experts, weights);
            for (var j = 0; j < k; j++)
            {
                var e = experts[j];
                _expertTokens[e][_expertCount[e]] = t;
                _expertTokenWeights[e][_expertCount[e]++] = weights[j];
            }
            RouterTrace?.Entries.Add((layerIndex, experts.ToArray(), weights.ToArray()));
        }
    }

    void RunExperts(Layer layer, int T)
    {
        int h = _c.HiddenSize, inter = _c.IntermediateSize;
        Array.Clear(_proj, 0, T * h);
        for (var e = 0; e < _c.NumExperts; e++)
        {
            var n = _expertCount[e];
            if (n == 0) continue; // only the experts a token chose are ever read
            var tokens = _expertTokens[e];
            for (var i = 0; i < n; i++)
                new ReadOnlySpan<float>(_xb, tokens[i] * h, h).CopyTo(_expertIn.AsSpan(i * h, h));
            var expert = layer.Experts[e];
            expert.W1.Forward(_expertIn, _h1, n, _runner);
            expert.W3.Forward(_expertIn, _h3, n, _runner);
            CpuKernels.SwiGlu(_h1.AsSpan(0, n * inter), _h3.AsSpan(0, n * inter));
            expert.W2.Forward(_h1, _expertOut, n, _runner);
            var weights = _expertTokenWeights[e];
            for (var i = 0; i < n; i++)
            {
                var dst = _proj.AsSpan(tokens[i] * h, h);
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(_expertOut, i * h, h), weights[i], dst, dst);
            }
        }
    }

    public void CopyKvBlock(int sourceBlock, int destinationBlock, int tokens)
    {
        var n = tokens * _c.KvDim;
        for (var l = 0; l < _c.NumLayers; l++)
        {
            long src = (long)sourceBlock * KvBlockSize * _c.KvDim, dst = (long)destinationBlock * KvBlockSize * _c.KvDim;
            Array.Copy(_kCache[l], src, _kCache[l], dst, n);
            Array.Copy(_vCache[l], src, _vCache[l], dst, n);
        }
    }

    /// <summary>Causal attention of each (token, head) over its sequence's cached positions 0..pos.</summary>
    sealed class AttentionJob(CpuMixtralBackend m, int maxPositions) : IParallelBody
    {
        // One scores row per thread, made on the thread's first use (the forward threads are fixed).
        [ThreadStatic] static float[]? t_scores;
        ForwardBatch _batch = null!;
        int _layer;

        public void Run(ForwardBatch batch, int layer)
        {
            _batch = batch;
            _layer = layer;
            m._runner.For(batch.TokenCount * m._c.NumHeads, this);
        }

        public void Run(int start, int end)
        {
            var c = m._c;
            int hd = c.HeadDim, qDim = c.QueryDim, kvDim = c.KvDim, bs = m.KvBlockSize;
            var group = c.NumHeads / c.NumKvHeads;
            var scale = 1f / MathF.Sqrt(hd);
            var kCache = m._kCache[_layer];
            var vCache = m._vCache[_layer];
            var scores = t_scores is { } mine && mine.Length >= maxPositions ? mine : t_scores = new float[maxPositions];
            for (var item = start; item < end; item++)
            {
                int t = item / c.NumHeads, head = item % c.NumHeads, kvHead = head / group;
                var pos = _batch.Positions[t];
                var table = _batch.BlockTables[_batch.SequenceOfToken[t]];
                var q = new ReadOnlySpan<float>(m._q, t * qDim + head * hd, hd);
                for (var j = 0; j <= pos; j++)
                {
                    var slot = ((long)table[j / bs] * bs + j % bs) * kvDim + kvHead * hd;
                    scores[j] = TensorPrimitives.Dot(q, new ReadOnlySpan<float>(kCache, (int)slot, hd)) * scale;
                }
                var s = scores.AsSpan(0, pos + 1);
                CpuKernels.Softmax(s);
                var output = m._att.AsSpan(t * qDim + head * hd, hd);
                output.Clear();
                for (var j = 0; j <= pos; j++)
                {
                    var slot = ((long)table[j / bs] * bs + j % bs) * kvDim + kvHead * hd;
                    TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(vCache, (int)slot, hd), s[j], output, output);
                }
            }
        }
    }

    public void Dispose() => _runner.Dispose();
}
