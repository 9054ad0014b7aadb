using OrleansMixtral.Cuda.Interop;
using OrleansMixtral.Model;

namespace OrleansMixtral.Cuda;

public enum CudaWeightFormat { Int8, BFloat16 }

/// <summary>A linear layer's weights on the device: [Rows, Cols] int8 + per-row fp32 scales, or bf16.</summary>
public sealed class DeviceLinear(DeviceBuffer weight, DeviceBuffer? scales, int rows, int cols) : IDisposable
{
    public DeviceBuffer Weight { get; } = weight;
    public DeviceBuffer? Scales { get; } = scales;
    public int Rows { get; } = rows;
    public int Cols { get; } = cols;
    public bool IsInt8 => Scales is not null;
    public void Dispose() { Weight.Dispose(); Scales?.Dispose(); }
}

/// <summary>One decoder layer on the device.</summary>
public sealed class DeviceLayer : IDisposable
{
    public required DeviceBuffer AttnNorm { get; init; }  // [hidden] f32
    public required DeviceLinear Qkv { get; init; }       // [qDim + 2·kvDim, hidden]: q, k, v projections fused
    public required DeviceLinear O { get; init; }         // [hidden, qDim]
    public required DeviceBuffer FfnNorm { get; init; }   // [hidden] f32
    public required DeviceBuffer Router { get; init; }    // [experts, hidden] f32
    public required DeviceBuffer W13 { get; init; }       // [experts, 2·inter, hidden]: w1 (gate) rows then w3 (up) rows
    public DeviceBuffer? W13Scales { get; init; }         // [experts, 2·inter]
    public required DeviceBuffer W2 { get; init; }        // [experts, hidden, inter]
    public DeviceBuffer? W2Scales { get; init; }          // [experts, hidden]

    public void Dispose()
    {
        foreach (var b in new[] { AttnNorm, FfnNorm, Router, W13, W2 }) b.Dispose();
        W13Scales?.Dispose();
        W2Scales?.Dispose();
        Qkv.Dispose();
        O.Dispose();
    }
}

/// <summary>
/// Puts a model's weights on the device: from a Hugging Face checkpoint (bf16/f16/f32 quantized to int8 while
/// streaming tensor by tensor, or a pre-quantized int8 checkpoint read as stored), or synthetic random weights
/// generated in place on the device (never through host memory) for benchmarks at the full Mixtral shape.
/// </summary>
public sealed class CudaWeightLoader(CudaDevice device, MixtralConfig c, CudaWeightFormat format)
{
    readonly bool _int8 = format == CudaWeightFormat.Int8;
    int ElementSize => _int8 ? 1 : 2;

    public (DeviceBuffer Embed, DeviceLayer[] Layers, DeviceBuffer FinalNorm, DeviceLinear LmHead) Load(CheckpointDirectory checkpoint, LoadProgress? progress)
    {
        long done = 0, total = checkpoint.TotalBytes;
        void Report(string name) { done += checkpoint.Get(name).ByteLength; progress?.Invoke(name, Math.Min(done, total), total); }
        int h = c.HiddenSize, inter = c.IntermediateSize, qDim = c.QueryDim, kvDim = c.KvDim, E = c.NumExperts;

        var embed = Bf16Tensor(checkpoint, MixtralWeightNames.EmbedTokens); Report(MixtralWeightNames.EmbedTokens);
        var layers = new DeviceLayer[c.NumLayers];
        for (var l = 0; l < c.NumLayers; l++)
        {
            var qkv = AllocLinear(qDim + 2 * kvDim, h);
            PutRows(checkpoint, MixtralWeightNames.QProj(l), qkv.Weight, qkv.Scales, 0, qDim, h);
            PutRows(checkpoint, MixtralWeightNames.KProj(l), qkv.Weight, qkv.Scales, qDim, kvDim, h);
            PutRows(checkpoint, MixtralWeightNames.VProj(l), qkv.Weight, qkv.Scales, qDim + kvDim, kvDim, h);
            Tile(qkv.Weight, 0, qDim + 2 * kvDim, h);
            var o = AllocLinear(h, qDim);
            PutRows(checkpoint, MixtralWeightNames.OProj(l), o.Weight, o.Scales, 0, h, qDim);
            Tile(o.Weight, 0, h, qDim);
            var w13 = device.Allocate((long)E * 2 * inter * h * ElementSize);
            var w13s = _int8 ? device.Allocate((long)E * 2 * inter * 4) : null;
            var w2 = device.Allocate((long)E * h * inter * ElementSize);
            var w2s = _int8 ? device.Allocate((long)E * h * 4) : null;
            for (var e = 0; e < E; e++)
            {
                PutRows(checkpoint, MixtralWeightNames.ExpertW1(l, e), w13, w13s, e * 2 * inter, inter, h);
                PutRows(checkpoint, MixtralWeightNames.ExpertW3(l, e), w13, w13s, e * 2 * inter + inter, inter, h);
                PutRows(checkpoint, MixtralWeightNames.ExpertW2(l, e), w2, w2s, e * h, h, inter);
                Tile(w13, (long)e * 2 * inter * h * ElementSize, 2 * inter, h);
                Tile(w2, (long)e * h * inter * ElementSize, h, inter);
                Report(MixtralWeightNames.ExpertW1(l, e)); Report(MixtralWeightNames.ExpertW3(l, e)); Report(MixtralWeightNames.ExpertW2(l, e));
            }
            layers[l] = new DeviceLayer
            {
                AttnNorm = F32Tensor(checkpoint, MixtralWeightNames.InputLayerNorm(l)),
                Qkv = qkv, O = o,
                FfnNorm = F32Tensor(checkpoint, MixtralWeightNames.PostAttentionLayerNorm(l)),
                Router = F32Tensor(checkpoint, MixtralWeightNames.Router(l)),
                W13 = w13, W13Scales = w13s, W2 = w2, W2Scales = w2s,
            };
            foreach (var n in new[] { MixtralWeightNames.QProj(l), MixtralWeightNames.KProj(l), MixtralWeightNames.VProj(l), MixtralWeightNames.OProj(l),
                         MixtralWeightNames.InputLayerNorm(l), MixtralWeightNames.PostAttentionLayerNorm(l), MixtralWeightNames.Router(l) }) Report(n);
        }
        var norm = F32Tensor(checkpoint, MixtralWeightNames.Norm); Report(MixtralWeightNames.Norm);
        DeviceLinear lmHead;
        DeviceBuffer lm;
        if (c.TieWordEmbeddings || !checkpoint.Contains(MixtralWeightNames.LmHead))
        {
            // tied: lm_head reads a tiled copy; the embedding lookup keeps the row-major table
            lm = device.Allocate(embed.Bytes);
            Cu.Check(Cu.cuMemcpyDtoDAsync(lm.Ptr, embed.Ptr, (nuint)embed.Bytes, device.Stream));
        }
        else
        {
            lm = Bf16Tensor(checkpoint, MixtralWeightNames.LmHead);
            Report(MixtralWeightNames.LmHead);
        }
        Tile(lm, 0, c.VocabSize, h, elementSize: 2);
        lmHead = new DeviceLinear(lm, null, c.VocabSize, h);
        device.Synchronize();
        _scratch?.Dispose();
        _scratch = null;
        return (embed, layers, norm, lmHead);
    }

    DeviceBuffer? _scratch;

    /// <summary>
    /// Rewrites rows [.., +rows) × cols of a row-major device weight (starting at byteOffset, on a 16-row tile
    /// boundary) into the tiled layout the decode kernels read (kernels/mma.cuh), through a scratch copy.
    /// </summary>
    void Tile(DeviceBuffer weight, long byteOffset, int rows, int cols, int? elementSize = null)
    {
        var bytes = (long)rows * cols * (elementSize ?? ElementSize);
        if (_scratch is null || _scratch.Bytes < bytes)
        {
            _scratch?.Dispose();
            _scratch = device.Allocate(bytes);
        }
        Cu.Check(Cu.cuMemcpyDtoDAsync(_scratch.Ptr, weight.At(byteOffset).Address, (nuint)bytes, device.Stream));
        device.Kernels.TileRows16(new(4096, 1, 256), _scratch, weight.At(byteOffset), (long)rows, bytes / rows);
    }

    /// <summary>
    /// Random weights at the config's shape, made on the device. Scales keep activations O(1). Random bytes are as
    /// random in the tiled layout as in row-major order, so nothing is rearranged.
    /// </summary>
    public (DeviceBuffer Embed, DeviceLayer[] Layers, DeviceBuffer FinalNorm, DeviceLinear LmHead) Synthetic(ulong seed, LoadProgress? progress)
    {
        int h = c.HiddenSize, inter = c.IntermediateSize, qDim = c.QueryDim, kvDim = c.KvDim, E = c.NumExperts;
        var s = seed;
        var embed = device.Allocate((long)c.VocabSize * h * 2);
        device.Kernels.FillRandomBf16(new(1024, 1, 256), embed, (long)c.VocabSize * h, s++, 1f);
        var layers = new DeviceLayer[c.NumLayers];
        for (var l = 0; l < c.NumLayers; l++)
        {
            var qkv = RandomLinear(qDim + 2 * kvDim, h, 1, ref s);
            var o = RandomLinear(h, qDim, 1, ref s);
            var w13 = RandomLinear(2 * inter, h, E, ref s);
            var w2 = RandomLinear(h, inter, E, ref s);
            layers[l] = new DeviceLayer
            {
                AttnNorm = Const(h, 1f), Qkv = qkv, O = o, FfnNorm = Const(h, 1f),
                Router = RandomF32((long)E * h, -1f / MathF.Sqrt(h), 1f / MathF.Sqrt(h), ref s),
                W13 = w13.Weight, W13Scales = w13.Scales, W2 = w2.Weight, W2Scales = w2.Scales,
            };
            progress?.Invoke($"model.layers.{l}", l + 1, c.NumLayers);
        }
        var lm = device.Allocate((long)c.VocabSize * h * 2);
        device.Kernels.FillRandomBf16(new(1024, 1, 256), lm, (long)c.VocabSize * h, s++, 1f / MathF.Sqrt(h));
        device.Synchronize();
        return (embed, layers, Const(h, 1f), new DeviceLinear(lm, null, c.VocabSize, h));
    }

    DeviceLinear RandomLinear(int rows, int cols, int experts, ref ulong seed)
    {
        var n = (long)experts * rows * cols;
        var w = device.Allocate(n * ElementSize);
        // uniform int8 in ±127 has std ≈ 73; a scale of 1/(73·√cols) gives unit-variance outputs
        var std = 1f / MathF.Sqrt(cols);
        if (_int8)
        {
            device.Kernels.FillRandomI8(new(4096, 1, 256), w, n, seed++);
            var scales = RandomF32((long)experts * rows, 0.5f * std / 73f, 1.5f * std / 73f, ref seed);
            return new DeviceLinear(w, scales, rows, cols);
        }
        device.Kernels.FillRandomBf16(new(4096, 1, 256), w, n, seed++, std * MathF.Sqrt(3f));
        return new DeviceLinear(w, null, rows, cols);
    }

    DeviceBuffer RandomF32(long n, float low, float high, ref ulong seed)
    {
        var b = device.Allocate(n * 4);
        device.Kernels.FillRandomF32(new(256, 1, 256), b, n, seed++, low, high);
        return b;
    }

    DeviceBuffer Const(int n, float value)
    {
        var b = device.Allocate((long)n * 4);
        device.Kernels.FillRandomF32(new(16, 1, 256), b, (long)n, 0UL, value, value);
        return b;
    }

    DeviceLinear AllocLinear(int rows, int cols) =>
        new(device.Allocate((long)rows * cols * ElementSize), _int8 ? device.Allocate((long)rows * 4) : null, rows, cols);

    /// <summary>Writes tensor [rows, cols] into rows [rowOffset, rowOffset+rows) of a device weight (+ its scales).</summary>
    void PutRows(CheckpointDirectory ck, string name, DeviceBuffer weight, DeviceBuffer? scales, int rowOffset, int rows, int cols)
    {
        var info = ck.RequireTensor(name, rows, cols);
        if (_int8)
        {
            if (info.DType == TensorDType.I8)
            {
                device.Upload(weight, (long)rowOffset * cols, ck.GetInt8(name));
                device.Upload(scales!, (long)rowOffset * 4, ck.GetScales(name));
                return;
            }
            var w = new float[(long)rows * cols];
            ck.ReadAsFloat32(name, w);
            var q = new sbyte[w.Length];
            var s = new float[rows];
            Int8Quantizer.QuantizeRows(w, rows, cols, q, s);
            device.Upload(weight, (long)rowOffset * cols, (ReadOnlySpan<sbyte>)q);
            device.Upload(scales!, (long)rowOffset * 4, (ReadOnlySpan<float>)s);
        }
        else
        {
            device.Upload(weight, (long)rowOffset * cols * 2, (ReadOnlySpan<ushort>)ToBf16(ck, name));
        }
    }

    DeviceBuffer F32Tensor(CheckpointDirectory ck, string name)
    {
        var info = ck.Get(name);
        var v = new float[info.ElementCount];
        ck.ReadAsFloat32(name, v);
        var b = device.Allocate(v.Length * 4L);
        device.Upload(b, 0, (ReadOnlySpan<float>)v);
        return b;
    }

    DeviceBuffer Bf16Tensor(CheckpointDirectory ck, string name)
    {
        var v = ToBf16(ck, name);
        var b = device.Allocate(v.Length * 2L);
        device.Upload(b, 0, (ReadOnlySpan<ushort>)v);
        return b;
    }

    static ushort[] ToBf16(CheckpointDirectory ck, string name)
    {
        var info = ck.Get(name);
        if (info.DType == TensorDType.BF16) return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(ck.GetBytes(name)).ToArray();
        var f = new float[info.ElementCount];
        ck.ReadAsFloat32(name, f);
        var r = new ushort[f.Length];
        for (var i = 0; i < f.Length; i++)
        {
            var u = BitConverter.SingleToUInt32Bits(f[i]);
            u += 0x7FFFu + ((u >> 16) & 1u); // round to nearest even
            r[i] = (ushort)(u >> 16);
        }
        return r;
    }
}
