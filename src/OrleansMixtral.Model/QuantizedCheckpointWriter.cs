using System.Text.Json;
using System.Text.Json.Nodes;

namespace OrleansMixtral.Model;

public sealed record QuantizeOptions
{
    /// <summary>Also store model.embed_tokens.weight as int8 (default: keep its source dtype).</summary>
    public bool QuantizeEmbeddings { get; init; }

    /// <summary>Also store lm_head.weight as int8 (default: keep its source dtype).</summary>
    public bool QuantizeLmHead { get; init; }

    /// <summary>Tensor bytes per shard file; one tensor larger than this gets a shard of its own.</summary>
    public long MaxShardBytes { get; init; } = 2_000_000_000;
}

/// <summary>
/// Turns a float Mixtral checkpoint into a pre-quantized int8 weight-only one, streaming tensor by tensor:
/// host memory stays around one float32 copy of the largest quantized tensor.
/// </summary>
public static class QuantizedCheckpointWriter
{
    /// <summary>Non-weight files an engine or tokenizer needs, copied when present.</summary>
    static readonly string[] CopiedFiles =
        ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "tokenizer.model", "special_tokens_map.json"];

    /// <summary>transformers refuses safetensors files whose metadata lacks a known format.</summary>
    static readonly Dictionary<string, string> ShardMetadata = new() { ["format"] = "pt" };

    /// <summary>One source tensor and how it is written: as is, or as I8 values plus F32 row scales.</summary>
    sealed record Item(TensorInfo Source, bool Quantize)
    {
        public TensorSpec[] Outputs => Quantize
            ? [new(Source.Name, TensorDType.I8, Source.Shape), new(MixtralWeightNames.ScaleOf(Source.Name), TensorDType.F32, [Source.Shape[0]])]
            : [new(Source.Name, Source.DType, Source.Shape)];

        public long OutputBytes => Outputs.Sum(spec => spec.ByteLength);
    }

    public static void Quantize(string srcDir, string dstDir, QuantizeOptions? options = null, LoadProgress? progress = null)
    {
        options ??= new QuantizeOptions();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.MaxShardBytes);
        string source = Path.GetFullPath(srcDir), destination = Path.GetFullPath(dstDir);
        if (string.Equals(source.TrimEnd(Path.DirectorySeparatorChar), destination.TrimEnd(Path.DirectorySeparatorChar), StringComparison.Ordinal))
            throw new ArgumentException("source and destination must be different directories", nameof(dstDir));

        using CheckpointDirectory checkpoint = CheckpointDirectory.Open(source);
        if (checkpoint.Quantization is not null) throw new InvalidOperationException($"{source} is already quantized");
        checkpoint.ValidateMixtral(); // fail before writing gigabytes

        // Stale shards beside new ones would make a mixed checkpoint; refuse rather than delete someone's files.
        Directory.CreateDirectory(destination);
        if (Directory.EnumerateFiles(destination, "model*.safetensors*").Any())
            throw new InvalidOperationException($"{destination} already holds safetensors weights");

        var scheme = new QuantizationConfig { QuantizedEmbeddings = options.QuantizeEmbeddings, QuantizedLmHead = options.QuantizeLmHead };
        List<Item> items = Plan(checkpoint, scheme);
        List<List<Item>> shards = SplitIntoShards(items, options.MaxShardBytes);
        WriteShards(checkpoint, destination, shards, progress);
        WriteConfig(Path.Combine(source, CheckpointDirectory.ConfigFileName), Path.Combine(destination, CheckpointDirectory.ConfigFileName), scheme);
        foreach (string name in CopiedFiles)
        {
            string from = Path.Combine(source, name);
            if (File.Exists(from)) File.Copy(from, Path.Combine(destination, name), overwrite: true);
        }
    }

    /// <summary>Mixtral tensors in checkpoint order, then anything else the source holds (copied untouched).</summary>
    static List<Item> Plan(CheckpointDirectory checkpoint, QuantizationConfig scheme)
    {
        var items = new List<Item>();
        var known = new HashSet<string>(StringComparer.Ordinal);
        foreach (ExpectedTensor expected in MixtralWeightNames.All(checkpoint.Config))
        {
            known.Add(expected.Name);
            items.Add(new Item(checkpoint.Get(expected.Name), MixtralWeightNames.IsQuantized(expected.Role, scheme)));
        }
        foreach (string name in checkpoint.TensorNames.Where(n => !known.Contains(n)).Order(StringComparer.Ordinal))
            items.Add(new Item(checkpoint.Get(name), Quantize: false));
        return items;
    }

    /// <summary>Greedy packing in order; a weight and its scale always share a shard.</summary>
    static List<List<Item>> SplitIntoShards(List<Item> items, long maxShardBytes)
    {
        var shards = new List<List<Item>> { new() };
        long bytesInShard = 0;
        foreach (Item item in items)
        {
            if (bytesInShard > 0 && bytesInShard + item.OutputBytes > maxShardBytes)
            {
                shards.Add([]);
                bytesInShard = 0;
            }
            shards[^1].Add(item);
            bytesInShard += item.OutputBytes;
        }
        return shards;
    }

    static void WriteShards(CheckpointDirectory checkpoint, string destination, List<List<Item>> shards, LoadProgress? progress)
    {
        // Work buffers sized once for the largest quantized tensor, reused for every tensor.
        long maxElements = shards.SelectMany(s => s).Where(i => i.Quantize).Select(i => i.Source.ElementCount).DefaultIfEmpty(0).Max();
        long maxRows = shards.SelectMany(s => s).Where(i => i.Quantize).Select(i => i.Source.Shape[0]).DefaultIfEmpty(0).Max();
        if (maxElements > Array.MaxLength) throw new ModelFormatException(checkpoint.DirectoryPath, null, $"a tensor of {maxElements} elements is too large to quantize in memory");
        float[] weights = GC.AllocateUninitializedArray<float>((int)maxElements);
        sbyte[] quantized = GC.AllocateUninitializedArray<sbyte>((int)maxElements);
        float[] scales = new float[maxRows];

        long bytesTotal = shards.SelectMany(s => s).Sum(i => i.Source.ByteLength), bytesDone = 0;
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int s = 0; s < shards.Count; s++)
        {
            string fileName = shards.Count == 1 ? CheckpointDirectory.SingleFileName : $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
            List<TensorSpec> specs = shards[s].SelectMany(i => i.Outputs).ToList();
            using var writer = new SafeTensorsWriter(Path.Combine(destination, fileName), specs, ShardMetadata);
            foreach (Item item in shards[s])
            {
                TensorInfo tensor = item.Source;
                if (item.Quantize)
                {
                    int rows = (int)tensor.Shape[0], cols = (int)tensor.Shape[1], count = (int)tensor.ElementCount;
                    checkpoint.ReadAsFloat32(tensor.Name, weights.AsSpan(0, count));
                    Int8Quantizer.QuantizeRows(weights.AsSpan(0, count), rows, cols, quantized.AsSpan(0, count), scales.AsSpan(0, rows));
                    writer.Write<sbyte>(tensor.Name, quantized.AsSpan(0, count));
                    writer.Write<float>(MixtralWeightNames.ScaleOf(tensor.Name), scales.AsSpan(0, rows));
                }
                else
                {
                    writer.Write(tensor.Name, checkpoint.GetBytes(tensor.Name));
                }
                foreach (TensorSpec spec in item.Outputs) weightMap[spec.Name] = fileName;
                bytesDone += tensor.ByteLength;
                progress?.Invoke(tensor.Name, bytesDone, bytesTotal);
            }
            writer.Complete();
        }

        if (shards.Count > 1)
        {
            var index = new JsonObject
            {
                ["metadata"] = new JsonObject { ["total_size"] = shards.SelectMany(s => s).Sum(i => i.OutputBytes) },
                ["weight_map"] = new JsonObject(weightMap.Select(pair => KeyValuePair.Create(pair.Key, (JsonNode?)pair.Value))),
            };
            File.WriteAllText(Path.Combine(destination, CheckpointDirectory.IndexFileName), index.ToJsonString(Indented));
        }
    }

    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>The source config.json, every field kept, plus the quantization_config section.</summary>
    static void WriteConfig(string sourceConfig, string destinationConfig, QuantizationConfig scheme)
    {
        JsonNode root = JsonNode.Parse(File.ReadAllText(sourceConfig))!;
        root["quantization_config"] = scheme.ToJson();
        File.WriteAllText(destinationConfig, root.ToJsonString(Indented));
    }
}
