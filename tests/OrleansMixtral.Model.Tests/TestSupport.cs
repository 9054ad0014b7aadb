using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using OrleansMixtral.Model;

namespace OrleansMixtral.Model.Tests;

/// <summary>A fresh directory under the system temp folder, deleted on dispose.</summary>
sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "om-model-tests-" + Guid.NewGuid().ToString("N"));

    public TempDir() => Directory.CreateDirectory(Path);

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>Hand-assembled safetensors bytes, independent of the writer under test.</summary>
static class RawSafeTensors
{
    public static byte[] Build(string headerJson, byte[] data) => Build(Encoding.UTF8.GetBytes(headerJson), data, null);

    /// <param name="declaredHeaderLength">Lie about the header length (null: the true length).</param>
    public static byte[] Build(byte[] header, byte[] data, ulong? declaredHeaderLength)
    {
        var bytes = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, declaredHeaderLength ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + header.Length);
        return bytes;
    }

    public static void Write(string path, string headerJson, byte[] data) => System.IO.File.WriteAllBytes(path, Build(headerJson, data));
}

/// <summary>One tensor of a synthetic checkpoint: the float values it holds exactly, and their encoding.</summary>
sealed record SyntheticTensor(string Name, TensorDType DType, long[] Shape, float[] Values, bool IsLinear)
{
    public byte[] Bytes => Encode(Values, DType);

    public TensorSpec Spec => new(Name, DType, Shape);

    public static byte[] Encode(float[] values, TensorDType dtype)
    {
        var bytes = new byte[values.Length * dtype.ElementSize()];
        for (int i = 0; i < values.Length; i++)
        {
            switch (dtype)
            {
                case TensorDType.F32: BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(4 * i), values[i]); break;
                case TensorDType.BF16: BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(2 * i), (ushort)(BitConverter.SingleToUInt32Bits(values[i]) >> 16)); break;
                case TensorDType.F16: BinaryPrimitives.WriteHalfLittleEndian(bytes.AsSpan(2 * i), (Half)values[i]); break;
                default: throw new ArgumentException(dtype.ToString());
            }
        }
        return bytes;
    }

    /// <summary>Rounds to a value the dtype holds exactly, so writing and reading back must be lossless.</summary>
    public static float Representable(float value, TensorDType dtype) => dtype switch
    {
        TensorDType.BF16 => BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(value) & 0xFFFF0000u),
        TensorDType.F16 => (float)(Half)value,
        _ => value,
    };
}

/// <summary>
/// A small Mixtral (2 layers, hidden 16, intermediate 32, 4 heads / 2 kv heads, 4 experts top-2, vocab 64)
/// with random weights. Tensor names are spelled out here by hand, independent of MixtralWeightNames.
/// </summary>
static class SyntheticMixtral
{
    public const int Hidden = 16, Inter = 32, Layers = 2, Heads = 4, KvHeads = 2, HeadDim = 4, Experts = 4, Vocab = 64;

    /// <summary>Layer 0, expert 0, w1: row 3 is all zeros (exercises the zero-scale path).</summary>
    public const string WeightWithZeroRow = "model.layers.0.block_sparse_moe.experts.0.w1.weight";

    public static string ConfigJson(bool tied = false) => $$"""
        {
          "architectures": ["MixtralForCausalLM"],
          "model_type": "mixtral",
          "hidden_size": {{Hidden}},
          "intermediate_size": {{Inter}},
          "num_hidden_layers": {{Layers}},
          "num_attention_heads": {{Heads}},
          "num_key_value_heads": {{KvHeads}},
          "num_local_experts": {{Experts}},
          "num_experts_per_tok": 2,
          "rope_theta": 1000000.0,
          "rms_norm_eps": 1e-05,
          "max_position_embeddings": 128,
          "vocab_size": {{Vocab}},
          "sliding_window": null,
          "tie_word_embeddings": {{(tied ? "true" : "false")}},
          "bos_token_id": 1,
          "eos_token_id": 2,
          "torch_dtype": "bfloat16"
        }
        """;

    public static List<SyntheticTensor> Build(TensorDType dtype = TensorDType.BF16, bool tied = false, int seed = 1)
    {
        var random = new Random(seed);
        var tensors = new List<SyntheticTensor>();

        void Add(string name, bool isLinear, params long[] shape)
        {
            int rows = (int)shape[0], cols = shape.Length > 1 ? (int)shape[1] : 1;
            var values = new float[rows * cols];
            for (int r = 0; r < rows; r++)
            {
                // Rows of different magnitude give rows different scales.
                float rowMagnitude = isLinear ? 0.05f + 2f * random.NextSingle() : 1f;
                for (int c = 0; c < cols; c++)
                {
                    float value = shape.Length == 1
                        ? 1f + 0.1f * (random.NextSingle() - 0.5f)               // norm weights hover around 1
                        : rowMagnitude * (2f * random.NextSingle() - 1f);
                    values[r * cols + c] = SyntheticTensor.Representable(value, dtype);
                }
            }
            if (name == WeightWithZeroRow) Array.Clear(values, 3 * cols, cols);
            tensors.Add(new SyntheticTensor(name, dtype, shape, values, isLinear));
        }

        Add("model.embed_tokens.weight", false, Vocab, Hidden);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"model.layers.{l}";
            Add($"{p}.input_layernorm.weight", false, Hidden);
            Add($"{p}.self_attn.q_proj.weight", true, Heads * HeadDim, Hidden);
            Add($"{p}.self_attn.k_proj.weight", true, KvHeads * HeadDim, Hidden);
            Add($"{p}.self_attn.v_proj.weight", true, KvHeads * HeadDim, Hidden);
            Add($"{p}.self_attn.o_proj.weight", true, Hidden, Heads * HeadDim);
            Add($"{p}.post_attention_layernorm.weight", false, Hidden);
            Add($"{p}.block_sparse_moe.gate.weight", false, Experts, Hidden);
            for (int e = 0; e < Experts; e++)
            {
                Add($"{p}.block_sparse_moe.experts.{e}.w1.weight", true, Inter, Hidden);
                Add($"{p}.block_sparse_moe.experts.{e}.w2.weight", true, Hidden, Inter);
                Add($"{p}.block_sparse_moe.experts.{e}.w3.weight", true, Inter, Hidden);
            }
        }
        Add("model.norm.weight", false, Hidden);
        if (!tied) Add("lm_head.weight", false, Vocab, Hidden);
        return tensors;
    }

    /// <summary>Writes config.json and the tensors: one model.safetensors, or contiguous shards plus an index.</summary>
    public static void Write(string dir, IReadOnlyList<SyntheticTensor> tensors, string configJson, int shards = 1)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), configJson);
        if (shards == 1)
        {
            SafeTensorsWriter.WriteFile(Path.Combine(dir, "model.safetensors"), tensors.Select(t => (t.Spec, t.Bytes)).ToList());
            return;
        }
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        int perShard = (tensors.Count + shards - 1) / shards;
        for (int s = 0; s < shards; s++)
        {
            string file = $"model-{s + 1:D5}-of-{shards:D5}.safetensors";
            var chunk = tensors.Skip(s * perShard).Take(perShard).ToList();
            SafeTensorsWriter.WriteFile(Path.Combine(dir, file), chunk.Select(t => (t.Spec, t.Bytes)).ToList());
            foreach (SyntheticTensor t in chunk) weightMap[t.Name] = file;
        }
        WriteIndex(dir, weightMap);
    }

    public static void WriteIndex(string dir, IDictionary<string, string> weightMap)
    {
        var index = new Dictionary<string, object> { ["metadata"] = new Dictionary<string, long> { ["total_size"] = 0 }, ["weight_map"] = weightMap };
        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), JsonSerializer.Serialize(index));
    }

    public static List<SyntheticTensor> WriteDefault(string dir, TensorDType dtype = TensorDType.BF16, bool tied = false, int shards = 1)
    {
        List<SyntheticTensor> tensors = Build(dtype, tied);
        Write(dir, tensors, ConfigJson(tied), shards);
        return tensors;
    }
}
