using System.Numerics.Tensors;
using OrleansMixtral.Engine.Cpu;

namespace OrleansMixtral.Cuda.Tests;

/// <summary>
/// Plain C# references of single kernels, for KernelTests, which launch one kernel through its typed launcher.
/// The math is the CPU backend's (CpuKernels, MatMul, the engine's Sampler); what is here is only the kernels' own
/// conventions around it: the tiled weight layout, fp16 outputs, the paged KV cache's slots, the fused residual.
/// </summary>
static class KernelReferences
{
    /// <summary>
    /// Where 16-byte piece <paramref name="c"/> of row <paramref name="r"/> of a row-major weight goes in the tiled layout
    /// (kernels/mma.cuh, tiled_piece of kernels/quant.cu): 16-row tiles of 1 KB units, a unit's two 8-row halves in turn.
    /// </summary>
    public static long TiledPiece(long r, long c, long piecesPerRow)
    {
        var units = piecesPerRow / 4;
        return ((r / 16 * units + c / 4) * 2 + r % 16 / 8) * 32 + r % 8 * 4 + c % 4;
    }

    /// <summary>Row-major [rows, rowBytes] bytes → the tiled layout (what tile_rows_16 does on the device).</summary>
    public static byte[] Tile(ReadOnlySpan<byte> rowMajor, int rows, int rowBytes)
    {
        var tiled = new byte[rowMajor.Length];
        long perRow = rowBytes / 16;
        for (long r = 0; r < rows; r++)
            for (long c = 0; c < perRow; c++)
                rowMajor.Slice((int)((r * perRow + c) * 16), 16).CopyTo(tiled.AsSpan((int)(TiledPiece(r, c, perRow) * 16), 16));
        return tiled;
    }

    /// <summary>fp16 rounding, as the kernels store activations and the KV cache (round to nearest even).</summary>
    public static float F16(float v) => (float)(Half)v;

    /// <summary>
    /// residual_rmsnorm_f16 for row i: v = x[t] + Σ_k pairs[t, k] (t = rows?[i] ?? i), out = fp16(RMSNorm(v)); v goes back
    /// to x[t] when there are pairs and writeBack.
    /// </summary>
    public static void ResidualRmsNorm(float[] x, int[]? rows, float[]? pairs, int K, bool writeBack, float[] w, float[] output, int n, int H, float eps)
    {
        var v = new float[H];
        for (var i = 0; i < n; i++)
        {
            var t = rows?[i] ?? i;
            x.AsSpan(t * H, H).CopyTo(v);
            if (pairs is not null)
            {
                for (var k = 0; k < K; k++) TensorPrimitives.Add(v, pairs.AsSpan((t * K + k) * H, H), v);
                if (writeBack) v.CopyTo(x.AsSpan(t * H, H));
            }
            var o = output.AsSpan(i * H, H);
            CpuKernels.RmsNorm(v, w, eps, o);
            for (var j = 0; j < H; j++) o[j] = F16(o[j]);
        }
    }

    /// <summary>
    /// rmsnorm_router for each token: the fp16 normed row, and the router on the fp32 normed row (its softmax over all
    /// experts in <paramref name="probabilities"/> [T, E], to tell near ties).
    /// </summary>
    public static void RmsNormRouter(float[] x, float[] w, float[] gate, int T, int H, int E, int K, float eps, float[] normed16, int[] experts, float[] weights,
        float[] probabilities)
    {
        var row = new float[H];
        for (var t = 0; t < T; t++)
        {
            CpuKernels.RmsNorm(x.AsSpan(t * H, H), w, eps, row);
            for (var j = 0; j < H; j++) normed16[t * H + j] = F16(row[j]);
            var logits = probabilities.AsSpan(t * E, E);
            for (var e = 0; e < E; e++) logits[e] = TensorPrimitives.Dot(row, gate.AsSpan(e * H, H));
            CpuKernels.RouteTopK(logits, experts.AsSpan(t * K, K), weights.AsSpan(t * K, K));
        }
    }

    /// <summary>
    /// rope_store_kv: q and k heads of each token's qkv row rotated (CpuKernels.Rope) at its position, q in place; the
    /// rotated k and the v heads stored as fp16 in the token's KV block slot (block table of its sequence).
    /// </summary>
    public static void RopeStoreKv(float[] qkv, int[] positions, int[] seqOfToken, int[] blockTables, int maxBlocks, float[] kCache, float[] vCache,
        float[] cos, float[] sin, int nHeads, int nKv, int D, int blockSize)
    {
        int half = D / 2, qDim = nHeads * D, kvDim = nKv * D, stride = qDim + 2 * kvDim;
        for (var t = 0; t < positions.Length; t++)
        {
            var pos = positions[t];
            var row = qkv.AsSpan(t * stride, stride);
            for (var head = 0; head < nHeads + nKv; head++) CpuKernels.Rope(row.Slice(head * D, D), cos.AsSpan(pos * half, half), sin.AsSpan(pos * half, half));
            var block = blockTables[seqOfToken[t] * maxBlocks + pos / blockSize];
            var slot = ((long)block * blockSize + pos % blockSize) * kvDim;
            for (var j = 0; j < kvDim; j++)
            {
                kCache[slot + j] = F16(row[qDim + j]);
                vCache[slot + j] = F16(row[qDim + kvDim + j]);
            }
        }
    }

    /// <summary>
    /// Causal attention over the paged fp16 KV cache, as every attention kernel computes it: token t's head h attends to
    /// positions 0..positions[t] of its sequence, softmax(q · k · scale) (CpuKernels.Softmax) over the kv head h / group;
    /// out [T, nHeads · D] rounded to fp16. q rows are qStride apart.
    /// </summary>
    public static float[] PagedAttention(float[] q, int qStride, float[] kCache, float[] vCache, int[] positions, int[] seqOfToken, int[] blockTables,
        int maxBlocks, int nHeads, int nKv, int D, int blockSize, float scale)
    {
        int T = positions.Length, kvDim = nKv * D, group = nHeads / nKv;
        var output = new float[T * nHeads * D];
        for (var t = 0; t < T; t++)
            for (var head = 0; head < nHeads; head++)
            {
                var n = positions[t] + 1;
                var scores = new float[n];
                var qh = q.AsSpan(t * qStride + head * D, D);
                long Slot(int j) => ((long)blockTables[seqOfToken[t] * maxBlocks + j / blockSize] * blockSize + j % blockSize) * kvDim + head / group * D;
                for (var j = 0; j < n; j++) scores[j] = TensorPrimitives.Dot(qh, kCache.AsSpan((int)Slot(j), D)) * scale;
                CpuKernels.Softmax(scores);
                var o = output.AsSpan((t * nHeads + head) * D, D);
                for (var j = 0; j < n; j++) TensorPrimitives.MultiplyAdd(vCache.AsSpan((int)Slot(j), D), scores[j], o, o);
                for (var d = 0; d < D; d++) o[d] = F16(o[d]);
            }
        return output;
    }

    /// <summary>
    /// moe_group: the (token, choice) pairs p ordered by expert, then by p; and (expert, first slot, count) for each
    /// piece of at most <paramref name="tileSlots"/> slots of each expert's run, experts ascending.
    /// </summary>
    public static (int[] Slots, int[] Tiles) GroupByExpert(int[] expertIds, int E, int tileSlots)
    {
        var slots = Enumerable.Range(0, expertIds.Length).OrderBy(p => expertIds[p]).ThenBy(p => p).ToArray();
        var tiles = new List<int>();
        var at = 0;
        for (var e = 0; e < E; e++)
        {
            var count = expertIds.Count(id => id == e);
            for (var s = 0; s < count; s += tileSlots) tiles.AddRange([e, at + s, Math.Min(tileSlots, count - s)]);
            at += count;
        }
        return (slots, tiles.ToArray());
    }

    /// <summary>
    /// The skinny experts' gate/up (moe_gate_up_i8_nt*): for each pair p = t·K + k, with e = expertIds[p],
    /// h[p] = fp16(SwiGLU(W1_e · x_t, W3_e · x_t)); W13 is [E · 2I, H] (each expert's I gate rows, then its I up rows)
    /// with a scale per row, x fp16 [T, H]. The products are the CPU backend's int8 product over the expert's rows.
    /// </summary>
    public static float[] MoeGateUpInt8(sbyte[] W13, float[] scales, int[] expertIds, float[] x16, int T, int I, int H, int K)
    {
        var h = new float[T * K * I];
        var y = new float[scales.Length];
        for (var p = 0; p < T * K; p++)
        {
            var e = expertIds[p];
            MatMul.Int8(x16.AsSpan(p / K * H, H).ToArray(), 1, W13, scales, scales.Length, H, y, e * 2 * I, (e + 1) * 2 * I);
            var gate = y.AsSpan(e * 2 * I, I);
            CpuKernels.SwiGlu(gate, y.AsSpan(e * 2 * I + I, I));
            for (var r = 0; r < I; r++) h[p * I + r] = F16(gate[r]);
        }
        return h;
    }

    /// <summary>The skinny experts' down (moe_down_i8_nt*): out[p] = expertW[p] · (W2_e · h[p]), W2 [E · H, I] with a scale per row, h fp16 [T · K, I].</summary>
    public static float[] MoeDownInt8(sbyte[] W2, float[] scales, int[] expertIds, float[] expertW, float[] h16, int T, int H, int I, int K)
    {
        var output = new float[T * K * H];
        var y = new float[scales.Length];
        for (var p = 0; p < T * K; p++)
        {
            var e = expertIds[p];
            MatMul.Int8(h16.AsSpan(p * I, I).ToArray(), 1, W2, scales, scales.Length, I, y, e * H, (e + 1) * H);
            TensorPrimitives.Multiply(y.AsSpan(e * H, H), expertW[p], output.AsSpan(p * H, H));
        }
        return output;
    }

    /// <summary>Where fp16 column c of a row goes in the wgmma input order (wgmma_column of kernels/wgmma_gemm_sm90a.cu): pair i = c / 2 of its 64-column unit moves to 8j + w, with i = 8q + 2j + b and w = q + 4b.</summary>
    public static int WgmmaColumn(int c)
    {
        int unit = c / 64, i = c / 2 % 32, j = i % 8 / 2, w = i / 8 + 4 * (i % 2);
        return unit * 64 + 2 * (8 * j + w) + c % 2;
    }

    /// <summary>y[t, r] (+)= scale[r] · Σ_c W[r, c] · x[t, c] on fp16-rounded x (the gemv kernels' input), by the CPU backend's int8 product.</summary>
    public static void GemvInt8(sbyte[] W, float[] scales, float[] x16, float[] y, int T, int R, int C, bool accumulate)
    {
        var product = new float[T * R];
        MatMul.Int8(x16, T, W, scales, R, C, product, 0, R);
        for (var i = 0; i < T * R; i++) y[i] = accumulate ? y[i] + product[i] : product[i];
    }
}
