using System.Runtime.InteropServices;
using OrleansMixtral.Cuda.Interop;
using OrleansMixtral.Engine;
using OrleansMixtral.Model;

namespace OrleansMixtral.Cuda;

public sealed record CudaBackendOptions
{
    public CudaWeightFormat Weights { get; init; } = CudaWeightFormat.Int8;
    public int KvBlockSize { get; init; } = 16;
    /// <summary>KV cache bytes; null = most of the memory left after weights and buffers.</summary>
    public long? KvCacheBytes { get; init; }
    /// <summary>Prompt tokens per engine step (chunked prefill): the setting; <see cref="MaxBatchTokens"/> follows from it.</summary>
    public int PrefillChunkTokens { get; init; } = PrefillChunk.CudaDefault;
    /// <summary>Most tokens in one forward call: unless set, a chunk plus the decodes that share its step.</summary>
    public int MaxBatchTokens
    {
        get => _maxBatchTokens ?? PrefillChunk.BatchTokens(PrefillChunkTokens);
        init => _maxBatchTokens = value;
    }
    readonly int? _maxBatchTokens;
    /// <summary>Most sequences one step carries (rows of the block table).</summary>
    public int MaxSequences { get; init; } = PrefillChunk.DecodeTokens;
    /// <summary>Replay decode steps (≤ 128 tokens) from CUDA graphs captured per (tokens, logit rows).</summary>
    public bool UseGraphs { get; init; } = true;
    public int Device { get; init; }
}

/// <summary>
/// The Mixtral forward pass on one NVIDIA GPU with int8 (or bf16) weights, an fp32 residual stream, fp16
/// activations into every product, an fp16 paged KV cache, and the engine's scheduling unchanged. Every product
/// runs on the tensor cores straight from the int8 weights (W8A16, kernels/mma.cuh): small decode steps through
/// "skinny" kernels that read each weight once per step — each chosen expert once for every token routed to it — and
/// larger steps and prompts through tiled GEMMs, experts grouped on the device (on Hopper with token tiles sized to the
/// step, so a 64-sequence step still reads each expert once at full speed). No host round trip inside a step; decode
/// steps replay from CUDA graphs.
/// </summary>
public sealed unsafe class CudaMixtralBackend : IModelBackend, IDeviceSampling
{
    const int DecodeMaxTokens = PrefillChunk.DecodeTokens; // steps up to this many tokens replay from graphs
    // Products of up to this many tokens use the skinny kernels (gemv.cu, moe.cu), larger ones the GEMMs. Measured (H200,
    // harness prompt_gemm.py --decode, 2026-11-29): all experts of a layer at 16 tokens 362 µs skinny / 403 wgmma (32-token
    // tiles, down in two parts), at 32 510 / 404, at 64 955 / 406; qkv at 64 tokens 30 µs skinny / 42 wgmma, at 128 the
    // skinny kernels cannot (≤ 64 tokens). Without wgmma the experts' GEMM (64-token mma.sync tiles) takes over at 32.
    int SkinnyExpertTokens => _wgmma ? 16 : 32;
    const int SkinnyDenseTokens = 64;
    readonly CudaDevice _d;
    readonly Kernels _k;
    readonly MixtralConfig _c;
    readonly CudaBackendOptions _o;
    readonly DeviceBuffer _embed, _finalNorm;
    readonly DeviceLayer[] _layers;
    readonly DeviceLinear _lmHead;
    readonly DeviceBuffer[] _kCache, _vCache;
    readonly DeviceBuffer _cos, _sin;
    readonly List<DeviceBuffer> _buffers = [];
    // activations
    readonly DeviceBuffer _x, _qkv, _act16, _pairH16, _pairs, _ids, _expW, _slots, _tiles, _tileCount, _xl16, _logits;
    readonly DeviceBuffer _attPartO, _attPartMl, _attArrivals; // decode attention split over AttentionSplits blocks per (token, head)
    const int AttentionSplits = 8; // most blocks per (token, head) in attention_split; sizes its partial buffers
    // Hopper: int8 prompt products on wgmma (kernels/wgmma_gemm_sm90a.cu), inputs first permuted into its column order
    readonly bool _wgmma;
    readonly DeviceBuffer? _xPerm16;
    const int WgmmaRows = 256;
    static readonly WgmmaTile[] WgmmaTiles = Kernels.WgmmaTiles;
    // Logit rows held: one per sequence of a step, or a ModelRunner's all-position chunk of up to this many tokens; not
    // one per token (T × vocab × 4 bytes: 270 MB at a 2048-token chunk).
    const int RunnerLogitRows = 512;
    // step inputs: one device block written by one copy per step, at fixed addresses (graph-safe)
    readonly DeviceBuffer _step;
    readonly long _offTokens, _offPositions, _offSeq, _offTables, _offLogitRows, _offTemperatures, _offUniforms, _offQueryTiles, _stepBytes;
    int _queryTiles; // query tiles of the current step (attention_prefill), built by UploadStep
    readonly IntPtr _pinned, _pinnedSampled;
    readonly DeviceBuffer _sampled; // chosen token per logit row (device sampling)
    readonly int _maxBlocks;
    readonly Dictionary<(int Tokens, int Logits, bool Sample, bool OwnRows), IntPtr> _graphs = new();
    bool _ownRows; // the current step's tokens are each the only token of their own sequence (OwnRows)
    readonly int[] _hostIds;
    readonly float[] _hostW;

    public CudaMixtralBackend(CudaDevice device, MixtralConfig config, CudaBackendOptions? options, Func<CudaWeightLoader, (DeviceBuffer, DeviceLayer[], DeviceBuffer, DeviceLinear)> load)
    {
        _d = device;
        _k = device.Kernels;
        _c = config;
        _o = options ?? new CudaBackendOptions();
        if (_c.HiddenSize % 64 != 0 || _c.IntermediateSize % 64 != 0 || _c.QueryDim % 64 != 0 || _c.HiddenSize > 4096 || _c.VocabSize % 16 != 0
            || _c.HeadDim > 128 || _c.HeadDim % 32 != 0 || _c.NumExperts > 64)
            throw new NotSupportedException("the CUDA kernels need hidden (≤ 4096: the norm + router kernel keeps a row in registers), intermediate and query sizes that are multiples of 64, a vocabulary that is a multiple of 16, head_dim a multiple of 32 up to 128, ≤ 64 experts");
        Name = $"cuda-{(_o.Weights == CudaWeightFormat.Int8 ? "int8" : "bf16")} ({device.Name})";
        try
        {
            (_embed, _layers, _finalNorm, _lmHead) = load(new CudaWeightLoader(device, config, _o.Weights));
            int h = _c.HiddenSize, inter = _c.IntermediateSize, qDim = _c.QueryDim, kvDim = _c.KvDim, K = _c.NumExpertsPerToken;
            var T = MaxBatchTokens = _o.MaxBatchTokens;
            if (T < 1) throw new ArgumentOutOfRangeException(nameof(options), $"MaxBatchTokens must be at least 1, got {T}");
            PrefillChunkTokens = Math.Min(_o.PrefillChunkTokens, T); // a forward size set below the chunk caps it
            MaxLogitRows = Math.Min(T, Math.Max(_o.MaxSequences, RunnerLogitRows));
            var qkvRows = qDim + 2 * kvDim;
            DeviceBuffer F(long elements, int size = 4) { var b = device.Allocate(elements * size); _buffers.Add(b); return b; }
            _x = F((long)T * h);                             // residual stream, fp32
            _qkv = F((long)T * qkvRows);
            _act16 = F((long)T * Math.Max(h, qDim), 2);     // normed rows / attention output: the next product's input
            _pairH16 = F((long)T * K * inter, 2);            // silu(gate)·up per (token, choice)
            _pairs = F((long)Math.Max(T, DownPartsSplit * Math.Min(T, DownPartsMaxPromptTokens)) * K * h); // weighted expert output per (token, choice[, part])
            _ids = F((long)T * K); _expW = F((long)T * K);   // routing
            _slots = F((long)T * K); _tiles = F(3L * ExpertTiles(T, (int)WgmmaTiles[0])); _tileCount = F(1); // experts grouped on the device
            _xl16 = F((long)T * h, 2);
            _wgmma = _o.Weights == CudaWeightFormat.Int8 && _k.HasWgmma;
            if (_wgmma) _xPerm16 = F((long)T * Math.Max(h, qDim), 2);
            _logits = F((long)MaxLogitRows * _c.VocabSize);
            var decodeHeads = (long)Math.Min(T, DecodeMaxTokens) * _c.NumHeads;
            _attPartO = F(decodeHeads * AttentionSplits * _c.HeadDim);
            _attPartMl = F(decodeHeads * AttentionSplits * 2);
            _attArrivals = F(decodeHeads);
            device.Upload(_attArrivals, 0, (ReadOnlySpan<int>)new int[decodeHeads]); // the kernel keeps them at 0 between steps

            _maxBlocks = (_c.MaxPositionEmbeddings + _o.KvBlockSize - 1) / _o.KvBlockSize;
            _offTokens = 0;
            _offPositions = _offTokens + 4L * T;
            _offSeq = _offPositions + 4L * T;
            _offLogitRows = _offSeq + 4L * T;
            _offTemperatures = _offLogitRows + 4L * T;
            _offUniforms = (_offTemperatures + 4L * T + 7) / 8 * 8;
            _offQueryTiles = _offUniforms + 8L * T;
            _offTables = _offQueryTiles + 8L * T;
            _stepBytes = _offTables + 4L * _o.MaxSequences * _maxBlocks;
            _step = F(_stepBytes / 4);
            Cu.Check(Cu.cuMemAllocHost(out _pinned, (nuint)_stepBytes));
            _sampled = F(T);
            Cu.Check(Cu.cuMemAllocHost(out _pinnedSampled, (nuint)(4L * T)));

            var (cos, sin) = RopeTables.Compute(_c.MaxPositionEmbeddings, _c.HeadDim, (float)_c.RopeTheta);
            _cos = F(cos.Length); _sin = F(sin.Length);
            device.Upload(_cos, 0, (ReadOnlySpan<float>)cos);
            device.Upload(_sin, 0, (ReadOnlySpan<float>)sin);

            KvBlockSize = _o.KvBlockSize;
            var perBlock = 2L * _c.NumLayers * KvBlockSize * kvDim * 2;
            var budget = _o.KvCacheBytes ?? (long)((device.MemoryInfo().Free - (768L << 20)) * 0.95);
            KvBlockCount = (int)Math.Clamp(budget / perBlock, 0, int.MaxValue);
            if (KvBlockCount < _maxBlocks)
                throw new CudaOutOfMemoryException($"after the weights, GPU memory holds {KvBlockCount} KV blocks; one full context needs {_maxBlocks}");
            _kCache = new DeviceBuffer[_c.NumLayers];
            _vCache = new DeviceBuffer[_c.NumLayers];
            for (var l = 0; l < _c.NumLayers; l++)
            {
                _kCache[l] = F((long)KvBlockCount * KvBlockSize * kvDim, 2);
                _vCache[l] = F((long)KvBlockCount * KvBlockSize * kvDim, 2);
            }
            _hostIds = new int[T * K];
            _hostW = new float[T * K];
            device.Synchronize();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Loads a Hugging Face directory (bf16/f16/f32 → int8 while streaming, or a pre-quantized checkpoint).</summary>
    public static CudaMixtralBackend Load(CudaDevice device, CheckpointDirectory checkpoint, CudaBackendOptions? options = null, LoadProgress? progress = null)
    {
        checkpoint.ValidateMixtral();
        return new CudaMixtralBackend(device, checkpoint.Config, options, loader => loader.Load(checkpoint, progress));
    }

    /// <summary>Random weights at <paramref name="config"/>'s shape, generated on the device.</summary>
    public static CudaMixtralBackend Synthetic(CudaDevice device, MixtralConfig config, CudaBackendOptions? options = null, ulong seed = 1, LoadProgress? progress = null) =>
        new(device, config, options, loader => loader.Synthetic(seed, progress));

    public string Name { get; }
    public MixtralConfig Config => _c;
    public CudaDevice Device => _d;
    public int KvBlockSize { get; }
    public int KvBlockCount { get; }
    public int MaxBatchTokens { get; }
    public int PrefillChunkTokens { get; }
    public int MaxLogitRows { get; }
    public int MaxSequences => _o.MaxSequences;
    public RouterTrace? RouterTrace { get; set; }

    public void Forward(ForwardBatch batch, Span<float> logits)
    {
        int T = batch.TokenCount, N = batch.LogitCount;
        if (T == 0) return;
        Run(batch, sample: false);
        if (N > 0)
        {
            fixed (float* dst = logits)
                Cu.Check(Cu.cuMemcpyDtoHAsync(dst, _logits.Ptr, (nuint)((long)N * _c.VocabSize * 4), _d.Stream));
        }
        _d.Synchronize();
    }

    /// <summary>The forward pass, then sample_rows (kernels/sample.cu): 4 bytes per row come back instead of the logits.</summary>
    public void ForwardAndSample(ForwardBatch batch, ReadOnlySpan<float> temperatures, ReadOnlySpan<double> uniforms, Span<int> tokens)
    {
        int T = batch.TokenCount, N = batch.LogitCount;
        if (T == 0) return;
        if (temperatures.Length < N || uniforms.Length < N || tokens.Length < N)
            throw new ArgumentException($"{N} logit rows need {N} temperatures, draws and token slots");
        var p = (byte*)_pinned;
        temperatures[..N].CopyTo(new Span<float>(p + _offTemperatures, N));
        uniforms[..N].CopyTo(new Span<double>(p + _offUniforms, N));
        Run(batch, sample: true);
        if (N > 0) Cu.Check(Cu.cuMemcpyDtoHAsync((void*)_pinnedSampled, _sampled.Ptr, (nuint)(4L * N), _d.Stream));
        _d.Synchronize();
        new ReadOnlySpan<int>((void*)_pinnedSampled, N).CopyTo(tokens);
    }

    void Run(ForwardBatch batch, bool sample)
    {
        int T = batch.TokenCount, N = batch.LogitCount;
        _d.MakeCurrent();
        if (T > MaxBatchTokens) throw new ArgumentException($"batch of {T} tokens exceeds MaxBatchTokens {MaxBatchTokens}");
        if (batch.SequenceCount > _o.MaxSequences) throw new ArgumentException($"batch of {batch.SequenceCount} sequences exceeds {_o.MaxSequences}");
        if (N > MaxLogitRows) throw new ArgumentException($"batch asks for {N} logit rows; the backend holds {MaxLogitRows}");
        for (var t = 0; t < T; t++)
            if ((uint)batch.Positions[t] >= (uint)_c.MaxPositionEmbeddings)
                throw new ArgumentException($"position {batch.Positions[t]} is outside the context of {_c.MaxPositionEmbeddings}");
        UploadStep(batch);
        _ownRows = OwnRows(batch);
        if (T <= DecodeMaxTokens && N <= DecodeMaxTokens && _o.UseGraphs && RouterTrace is null) Replay(T, N, sample);
        else Layers(T, N, sample);
    }

    void UploadStep(ForwardBatch b)
    {
        var p = (byte*)_pinned;
        int T = b.TokenCount;
        b.Tokens.AsSpan(0, T).CopyTo(new Span<int>(p + _offTokens, T));
        b.Positions.AsSpan(0, T).CopyTo(new Span<int>(p + _offPositions, T));
        b.SequenceOfToken.AsSpan(0, T).CopyTo(new Span<int>(p + _offSeq, T));
        b.LogitTokens.AsSpan(0, b.LogitCount).CopyTo(new Span<int>(p + _offLogitRows, b.LogitCount));
        _queryTiles = QueryTiles(b, new Span<int>(p + _offQueryTiles, 2 * T));
        for (var s = 0; s < b.SequenceCount; s++)
            b.BlockTables[s].AsSpan(0, _maxBlocks).CopyTo(new Span<int>(p + _offTables + 4L * s * _maxBlocks, _maxBlocks));
        var bytes = _offTables + 4L * b.SequenceCount * _maxBlocks; // temperatures, draws and query tiles sit before the tables
        Cu.Check(Cu.cuMemcpyHtoDAsync(_step.Ptr, p, (nuint)bytes, _d.Stream));
    }

    DevicePtr Tokens => _step.At(_offTokens);
    DevicePtr Positions => _step.At(_offPositions);
    DevicePtr SeqOf => _step.At(_offSeq);
    DevicePtr Tables => _step.At(_offTables);
    DevicePtr QueryTilesPtr => _step.At(_offQueryTiles);

    /// <summary>
    /// attention_prefill's query tiles (kernels/attention.cu): runs of one sequence's consecutive positions, contiguous in
    /// the batch, cut into pieces of at most 64 tokens; tiles[2i] = first token, tiles[2i + 1] = count. Returns how many.
    /// </summary>
    public static int QueryTiles(ForwardBatch b, Span<int> tiles)
    {
        var n = 0;
        for (var t = 0; t < b.TokenCount;)
        {
            var start = t++;
            while (t < b.TokenCount && t - start < PrefillAttentionRows && b.SequenceOfToken[t] == b.SequenceOfToken[start]
                   && b.Positions[t] == b.Positions[start] + (t - start)) t++;
            tiles[2 * n] = start;
            tiles[2 * n + 1] = t - start;
            n++;
        }
        return n;
    }

    const int PrefillAttentionRows = 64; // PF_ROWS of kernels/attention.cu
    DevicePtr LogitRows => _step.At(_offLogitRows);
    DevicePtr Temperatures => _step.At(_offTemperatures);
    DevicePtr Uniforms => _step.At(_offUniforms);

    /// <summary>
    /// Whether token t of the step is the one token of sequence t, for every t (a decode step): then no token attends
    /// to a row another token of the step writes, and the decode attention kernels rotate q and k and store the
    /// token's own K/V themselves (rope_store_kv fused in: one kernel a layer fewer).
    /// </summary>
    static bool OwnRows(ForwardBatch b)
    {
        if (b.SequenceCount != b.TokenCount) return false;
        for (var t = 0; t < b.TokenCount; t++)
            if (b.SequenceOfToken[t] != t) return false;
        return true;
    }

    void Replay(int T, int N, bool sample)
    {
        if (!_graphs.TryGetValue((T, N, sample, _ownRows), out var exec))
        {
            Cu.Check(Cu.cuStreamBeginCapture(_d.Stream, Cu.CU_STREAM_CAPTURE_MODE_RELAXED));
            try { Layers(T, N, sample); }
            catch
            {
                // end the capture so the stream is usable again, and report the launch that failed, not the capture
                if (Cu.cuStreamEndCapture(_d.Stream, out var broken) == 0 && broken != IntPtr.Zero) Cu.cuGraphDestroy(broken);
                throw;
            }
            Cu.Check(Cu.cuStreamEndCapture(_d.Stream, out var graph));
            try { Cu.Check(Cu.cuGraphInstantiateWithFlags(out exec, graph, 0)); }
            finally { Cu.cuGraphDestroy(graph); }
            _graphs[(T, N, sample, _ownRows)] = exec;
        }
        Cu.Check(Cu.cuGraphLaunch(exec, _d.Stream));
    }

    static uint Blocks(long n, int per) => (uint)((n + per - 1) / per);

    // Most tiles moe_group cuts a step's (token, choice) pairs into: tileSlots-slot pieces of each expert's run
    int ExpertTiles(int T, int tileSlots) => T * _c.NumExpertsPerToken / tileSlots + _c.NumExperts;
    const int GemmTokens = 64; // GEMM_TOKENS of kernels/gemm.cu: slots of a tile there

    /// <summary>
    /// The wgmma experts' token tile for a step of T tokens: the smallest that holds an expert's average share (T·K/E),
    /// so little is computed for padding. Decode steps of 64 and 128 sequences: 32-token tiles (two blocks an SM), even
    /// where an expert gets 41 tokens (T = 128: 489 µs for all experts, 547 with 64-token tiles; H200, harness,
    /// 2026-11-29); prompts: 128.
    /// </summary>
    WgmmaTile ExpertTile(int T)
    {
        var share = T * _c.NumExpertsPerToken / _c.NumExperts;
        foreach (var n in WgmmaTiles) if (share <= (int)n) return n; // ascending: no sort (and no allocation) a layer
        return WgmmaTiles[^1];
    }

    /// <summary>
    /// Parts the wgmma experts' down product splits its row length into (down_body of kernels/wgmma_gemm_sm90a.cu), so
    /// its few blocks fill the GPU: two in decode steps of up to 64 tokens, whose down has only (experts in use) × 16
    /// blocks, one an SM, where the 32-token tiles need two an SM to hide their latency (all experts at 64 tokens: 406 µs
    /// against 454 in one part; at 128 tokens more tiles fill the GPU already: 516 against 491); two in prompt steps of up
    /// to 512 tokens, whose ≈ 11 expert tiles make 176 blocks, 1.3 waves (all experts at 512 tokens: 0.918 ms against
    /// 0.960; at 1,024 tokens, 21 tiles, 1.683 against 1.587). H200, harness, 2026-11-29. The norm that follows adds a
    /// pair's parts. One elsewhere.
    /// </summary>
    int DownParts(int T) => _wgmma && T > SkinnyExpertTokens && (T <= DownPartsMaxDecodeTokens || T > DecodeMaxTokens && T <= DownPartsMaxPromptTokens)
        ? DownPartsSplit : 1;
    const int DownPartsSplit = 2, DownPartsMaxDecodeTokens = 64, DownPartsMaxPromptTokens = 512;

    /// <summary>
    /// The wgmma dense products' token tile: 32 for decode-sized steps, where more blocks beat fewer wider ones (qkv at
    /// 128 tokens: 43 µs with 32-token tiles, 47 with 64, 60 with 128); for prompts 128, or 64 where 128-token tiles would
    /// leave half the SMs idle (the o projection at 512 tokens, 64 blocks: 46 µs against 58; qkv there, 96 blocks: 90
    /// against 62 stays at 128, and so does every product from 1,024 tokens on). H200, harness, 2026-11-29.
    /// </summary>
    WgmmaTile DenseTile(int T, int rows) =>
        T <= DecodeMaxTokens ? WgmmaTiles[0]
        : 2 * Blocks(T, (int)WgmmaTiles[^1]) * Blocks(rows, WgmmaRows) < _d.Multiprocessors ? WgmmaTiles[^2] : WgmmaTiles[^1];

    /// <summary>
    /// The forward pass over T tokens. A layer ends with its experts' outputs per (token, choice) in _pairs; the next
    /// layer's norm (or the final one) adds them to the residual.
    /// </summary>
    void Layers(int T, int N, bool sample)
    {
        int h = _c.HiddenSize, K = _c.NumExpertsPerToken, pairRows = K * DownParts(T);
        var eps = (float)_c.RmsNormEps;
        _k.EmbedBf16(new((uint)T, 1, 256), Tokens, _embed, _x, h);
        for (var l = 0; l < _layers.Length; l++)
        {
            var L = _layers[l];
            _k.ResidualRmsnormF16(new((uint)T, 1, 256), _x, DevicePtr.Null, l > 0 ? _pairs : DevicePtr.Null, pairRows, 1, L.AttnNorm, _act16, h, eps);
            Linear(L.Qkv, _act16, _qkv, T, accumulate: false);
            Attention(l, T);
            Linear(L.O, _act16, _x, T, accumulate: true); // the residual add is fused
            _k.RmsnormRouter(new((uint)T, 1, 256), _x, L.FfnNorm, _act16, L.Router, _ids, _expW, h, eps, _c.NumExperts, K);
            TraceRouter(l, T);
            Experts(L, T);
        }
        Logits(N, pairRows);
        if (sample && N > 0) _k.SampleRows(new((uint)N, 1, 1024), _logits, _c.VocabSize, Temperatures, Uniforms, _sampled);
    }

    /// <summary>y (+)= x · Wᵀ: skinny kernels for few tokens (every weight read once), tiled GEMMs for many.</summary>
    void Linear(DeviceLinear w, DeviceBuffer x16, DeviceBuffer y, int T, bool accumulate)
    {
        if (T <= SkinnyDenseTokens)
        {
            Grid grid = new((uint)(w.Rows / 16), 1, 256); // one 16-row tile per block: gemv.cu
            if (w.IsInt8) _k.GemvI8(grid, TokenTiles(T), w.Weight, w.Scales ?? DevicePtr.Null, x16, y, T, w.Rows, w.Cols, accumulate ? 1 : 0);
            else _k.GemvBf16(grid, TokenTiles(T), w.Weight, w.Scales ?? DevicePtr.Null, x16, y, T, w.Rows, w.Cols, accumulate ? 1 : 0);
        }
        else if (_wgmma && w.IsInt8)
        {
            var tile = DenseTile(T, w.Rows);
            _k.PermuteUnitsF16(new((uint)T, 1, 256), x16, _xPerm16!, T, w.Cols);
            _k.WgmmaDenseI8(new(Blocks(T, (int)tile), Blocks(w.Rows, WgmmaRows), 1, Kernels.WgmmaThreads), tile,
                w.Weight, w.Scales!, _xPerm16!, y, T, w.Rows, w.Cols, accumulate ? 1 : 0);
        }
        else
        {
            Grid grid = new(Blocks(w.Rows, 256), Blocks(T, 64), 256); // 256 rows × 64 tokens per block: gemm.cu
            if (w.IsInt8) _k.GemmI8(grid, w.Weight, w.Scales ?? DevicePtr.Null, x16, y, T, w.Rows, w.Cols, accumulate ? 1 : 0);
            else _k.GemmBf16(grid, w.Weight, w.Scales ?? DevicePtr.Null, x16, y, T, w.Rows, w.Cols, accumulate ? 1 : 0);
        }
    }

    // 8-token tiles per pass: NT in gemv.cu / moe.cu
    static SkinnyTokenTiles TokenTiles(int T) => T <= 8 ? SkinnyTokenTiles.Nt1 : T <= 16 ? SkinnyTokenTiles.Nt2 : T <= 32 ? SkinnyTokenTiles.Nt4 : SkinnyTokenTiles.Nt8;

    /// <summary>The routed experts of every token: _act16 (normed rows) → _pairs (weighted outputs per (token, choice)).</summary>
    void Experts(DeviceLayer L, int T)
    {
        int h = _c.HiddenSize, inter = _c.IntermediateSize, E = _c.NumExperts, K = _c.NumExpertsPerToken;
        var int8 = L.W13Scales is not null;
        if (T <= SkinnyExpertTokens)
        {
            // one block row per expert in use (found from the routing on the device), all its tokens at once
            var nt = TokenTiles(T);
            var experts = (uint)Math.Min(E, T * K);
            Grid gateUp = new((uint)(inter / 16), experts, 256), down = new((uint)(h / 16), experts, 256);
            if (int8)
            {
                _k.MoeGateUpI8(gateUp, nt, L.W13, L.W13Scales!, _ids, _act16, _pairH16, T, inter, h, K);
                _k.MoeDownI8(down, nt, L.W2, L.W2Scales ?? DevicePtr.Null, _ids, _expW, _pairH16, _pairs, T, h, inter, K);
            }
            else
            {
                _k.MoeGateUpBf16(gateUp, nt, L.W13, DevicePtr.Null, _ids, _act16, _pairH16, T, inter, h, K);
                _k.MoeDownBf16(down, nt, L.W2, L.W2Scales ?? DevicePtr.Null, _ids, _expW, _pairH16, _pairs, T, h, inter, K);
            }
            return;
        }
        // group the (token, choice) pairs by expert on the device, then one GEMM launch per projection for all experts
        if (_wgmma && L.W13Scales is not null)
        {
            var tile = ExpertTile(T);
            var groups = (uint)ExpertTiles(T, (int)tile);
            _k.MoeGroup(new(1, 1, 256), _ids, T * K, E, (int)tile, _slots, _tiles, _tileCount);
            _k.PermuteUnitsF16(new((uint)T, 1, 256), _act16, _xPerm16!, T, h);
            // gate/up writes h in down's input order; down writes DownParts(T) partial rows a pair
            _k.WgmmaGateUpI8(new(groups, Blocks(inter, WgmmaRows / 2), 1, Kernels.WgmmaThreads), tile,
                L.W13, L.W13Scales, _tiles, _tileCount, _slots, _xPerm16!, _pairH16, inter, h, K);
            _k.WgmmaDownI8(new(groups, Blocks(h, WgmmaRows), (uint)DownParts(T), Kernels.WgmmaThreads), tile,
                L.W2, L.W2Scales!, _tiles, _tileCount, _slots, _expW, _pairH16, _pairs, h, inter);
            return;
        }
        var tiles = (uint)ExpertTiles(T, GemmTokens);
        _k.MoeGroup(new(1, 1, 256), _ids, T * K, E, GemmTokens, _slots, _tiles, _tileCount);
        Grid gateUpTiles = new(tiles, Blocks(inter, 128), 256), downTiles = new(tiles, Blocks(h, 256), 256); // tiles fastest: an expert's tiles share its weight reads
        if (int8)
        {
            _k.MoeGemmGateUpI8(gateUpTiles, L.W13, L.W13Scales!, _tiles, _tileCount, _slots, _act16, _pairH16, inter, h, K);
            _k.MoeGemmDownI8(downTiles, L.W2, L.W2Scales ?? DevicePtr.Null, _tiles, _tileCount, _slots, _expW, _pairH16, _pairs, h, inter);
        }
        else
        {
            _k.MoeGemmGateUpBf16(gateUpTiles, L.W13, DevicePtr.Null, _tiles, _tileCount, _slots, _act16, _pairH16, inter, h, K);
            _k.MoeGemmDownBf16(downTiles, L.W2, L.W2Scales ?? DevicePtr.Null, _tiles, _tileCount, _slots, _expW, _pairH16, _pairs, h, inter);
        }
    }

    /// <summary>
    /// Fewest tokens a step's attention_decode_gqa serves: one sequence is faster with its 32 heads split over 8 blocks
    /// each (attention_split: 10.1 µs against 13.1 at 512 positions); from 4 sequences on, one read of each K/V row for 4
    /// query heads wins (4 × 2,048: 24.1 against 28.8; 64 × 144: 23.1 against 40.9 for attention_paged; 64 × 4,096: 421
    /// against 599). H200, harness decode_kernels.py --decode-attention-only, 2026-11-29.
    /// </summary>
    const int GqaMinTokens = 4;

    /// <summary>
    /// Most tokens of a decode step (OwnRows) whose attention kernel also rotates q/k and stores the token's own K/V,
    /// instead of a rope_store_kv launch before it: per layer at 600 positions, 1 sequence 14.0 µs either way alone but
    /// the whole 32-layer step 4.57 → 4.50 ms (one kernel boundary fewer); 4 sequences 20.6 → 19.4 µs, 16 27.6 → 25.9; 64
    /// 96.5 → 97.8 and 128 188 → 193 (each block rotating its query heads costs more than the launch it saves). H200,
    /// harness decode_kernels.py --fused-rope-only, 2026-11-29.
    /// </summary>
    const int FusedRopeMaxTokens = 32;

    void Attention(int layer, int T)
    {
        int qDim = _c.QueryDim, kvDim = _c.KvDim;
        // the output (fp16) goes to _act16, the o projection's input
        var scale = 1f / MathF.Sqrt(_c.HeadDim);
        // Few (token, head) pairs (a decode step of 1-4 sequences): split each one's positions over blocks so the GPU
        // fills (fixed per T, so graph replays stay valid). More pairs fill it already: one block each, 16 warps for a
        // decode step, 4 for prompts (many blocks). H100, ctx 600: T = 1 10.5 µs split / 12.1 µs not; T = 8 35 / 24.
        var splits = Math.Min(AttentionSplits, 2 * _d.Multiprocessors / (_c.NumHeads * T));
        var gqa = T >= GqaMinTokens && T <= DecodeMaxTokens && _c.HeadDim == 128 && _c.NumHeads / _c.NumKvHeads <= 4;
        var split = !gqa && T <= DecodeMaxTokens && splits >= 2;
        // small decode steps on the split or GQA kernels rotate q/k and store the token's K/V themselves (OwnRows)
        var fusedRope = _ownRows && (gqa || split) && T <= FusedRopeMaxTokens;
        if (!fusedRope)
            _k.RopeStoreKv(new((uint)T, (uint)(_c.NumHeads + _c.NumKvHeads), (uint)(_c.HeadDim / 2)), _qkv, Positions, SeqOf, Tables, _maxBlocks, _kCache[layer], _vCache[layer],
                _cos, _sin, _c.NumHeads, _c.NumKvHeads, _c.HeadDim, KvBlockSize);
        DevicePtr cos = fusedRope ? _cos : DevicePtr.Null, sin = fusedRope ? _sin : DevicePtr.Null;
        if (T > DecodeMaxTokens && _c.HeadDim == 128) // prompts: flash-style on the tensor cores, query tiles of ≤ 64 rows
            _k.AttentionPrefill(new((uint)_queryTiles, (uint)_c.NumHeads, 128), _qkv, _kCache[layer], _vCache[layer], Positions, SeqOf, Tables,
                _maxBlocks, _act16, _c.NumHeads, _c.NumKvHeads, _c.HeadDim, KvBlockSize, scale, qDim + 2 * kvDim, QueryTilesPtr, _queryTiles);
        else if (gqa)
            // decode steps of 4+ sequences: one block per (token, kv head) serves its query heads from one read of each
            // K/V row, its positions split until there are ≈ 2 blocks an SM (fixed per T, so graph replays stay valid)
            _k.AttentionDecodeGqa(new((uint)_c.NumKvHeads, (uint)T, (uint)Math.Clamp(2 * _d.Multiprocessors / (_c.NumKvHeads * T), 1, AttentionSplits), 128),
                _qkv, _kCache[layer], _vCache[layer], Positions, SeqOf, Tables, _maxBlocks, _act16, _c.NumHeads, _c.NumKvHeads, _c.HeadDim, KvBlockSize,
                scale, qDim + 2 * kvDim, _attPartO, _attPartMl, _attArrivals, cos, sin);
        else if (split)
            _k.AttentionSplit(new((uint)_c.NumHeads, (uint)T, (uint)splits, 128), _qkv, _kCache[layer], _vCache[layer], Positions, SeqOf, Tables,
                _maxBlocks, _act16, _c.NumHeads, _c.NumKvHeads, _c.HeadDim, KvBlockSize, scale, qDim + 2 * kvDim, _attPartO, _attPartMl, _attArrivals, cos, sin);
        else
            _k.AttentionPaged(new((uint)_c.NumHeads, (uint)T, T <= 8 ? 512u : 128u), _qkv, _kCache[layer], _vCache[layer], Positions, SeqOf, Tables,
                _maxBlocks, _act16, _c.NumHeads, _c.NumKvHeads, _c.HeadDim, KvBlockSize, scale, qDim + 2 * kvDim);
    }

    /// <summary>The final norm of the rows that want logits (adding the last layer's experts: pairRows a token), then lm_head.</summary>
    void Logits(int N, int pairRows)
    {
        if (N == 0) return;
        int h = _c.HiddenSize;
        _k.ResidualRmsnormF16(new((uint)N, 1, 256), _x, LogitRows, _pairs, pairRows, 0, _finalNorm, _xl16, h, (float)_c.RmsNormEps);
        Linear(_lmHead, _xl16, _logits, N, accumulate: false);
    }

    void TraceRouter(int layer, int T)
    {
        if (RouterTrace is null) return;
        _d.Download(_ids, 0, _hostIds.AsSpan(0, T * _c.NumExpertsPerToken));
        _d.Download(_expW, 0, _hostW.AsSpan(0, T * _c.NumExpertsPerToken));
        RecordRouter(layer, T);
    }

    void RecordRouter(int layer, int T)
    {
        if (RouterTrace is null) return;
        var K = _c.NumExpertsPerToken;
        for (var t = 0; t < T; t++)
            RouterTrace.Entries.Add((layer, _hostIds.AsSpan(t * K, K).ToArray(), _hostW.AsSpan(t * K, K).ToArray()));
    }

    public void CopyKvBlock(int sourceBlock, int destinationBlock, int tokens)
    {
        _d.MakeCurrent();
        var blockBytes = (long)KvBlockSize * _c.KvDim * 2;
        var bytes = (nuint)((long)tokens * _c.KvDim * 2);
        for (var l = 0; l < _c.NumLayers; l++)
        {
            Cu.Check(Cu.cuMemcpyDtoDAsync(_kCache[l].At(destinationBlock * blockBytes).Address, _kCache[l].At(sourceBlock * blockBytes).Address, bytes, _d.Stream));
            Cu.Check(Cu.cuMemcpyDtoDAsync(_vCache[l].At(destinationBlock * blockBytes).Address, _vCache[l].At(sourceBlock * blockBytes).Address, bytes, _d.Stream));
        }
    }

    /// <summary>Bytes of weights on the device.</summary>
    // Every term in its own parentheses: `??` binds looser than `+`, so `layers ?? 0 + embed + lm_head` left the
    // embeddings and lm_head out whenever the layers were there.
    public long WeightBytes =>
        (_layers?.Sum(l => l.Qkv.Weight.Bytes + (l.Qkv.Scales?.Bytes ?? 0) + l.O.Weight.Bytes + (l.O.Scales?.Bytes ?? 0)
            + l.W13.Bytes + (l.W13Scales?.Bytes ?? 0) + l.W2.Bytes + (l.W2Scales?.Bytes ?? 0) + l.Router.Bytes + l.AttnNorm.Bytes + l.FfnNorm.Bytes) ?? 0)
        + (_embed?.Bytes ?? 0)
        + (_finalNorm?.Bytes ?? 0)
        + (ReferenceEquals(_lmHead?.Weight, _embed) ? 0 : (_lmHead?.Weight.Bytes ?? 0) + (_lmHead?.Scales?.Bytes ?? 0));

    public void Dispose()
    {
        foreach (var g in _graphs.Values) Cu.cuGraphExecDestroy(g);
        _graphs.Clear();
        foreach (var b in _buffers) b.Dispose();
        if (_layers is not null) foreach (var l in _layers) l?.Dispose();
        if (_lmHead is not null && !ReferenceEquals(_lmHead.Weight, _embed)) _lmHead.Dispose();
        _embed?.Dispose();
        _finalNorm?.Dispose();
        if (_pinned != IntPtr.Zero) Cu.cuMemFreeHost(_pinned);
        if (_pinnedSampled != IntPtr.Zero) Cu.cuMemFreeHost(_pinnedSampled);
    }
}
