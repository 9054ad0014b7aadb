using System.Runtime.InteropServices;
using System.Text.Json;

namespace OrleansMixtral.Model;

/// <summary>
/// A Hugging Face Mixtral checkpoint directory as shipped: config.json plus either model.safetensors or
/// model.safetensors.index.json naming the shards. All shards are memory-mapped; tensors are read on demand.
/// </summary>
public sealed class CheckpointDirectory : IDisposable
{
    public const string ConfigFileName = "config.json";
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    readonly List<SafeTensorsFile> _files = [];
    readonly Dictionary<string, SafeTensorsFile> _fileOf = new(StringComparer.Ordinal);

    public string DirectoryPath { get; }
    public MixtralConfig Config { get; }

    /// <summary>The int8 scheme of a pre-quantized checkpoint, or null for float weights.</summary>
    public QuantizationConfig? Quantization => Config.Quantization;

    /// <summary>model.safetensors, or the index of a sharded checkpoint: where a missing tensor should have been.</summary>
    public string WeightsPath { get; }

    public IReadOnlyCollection<string> TensorNames => _fileOf.Keys;

    /// <summary>Bytes of all tensors, for progress reporting.</summary>
    public long TotalBytes { get; }

    CheckpointDirectory(string directory)
    {
        DirectoryPath = directory;
        Config = MixtralConfig.Load(Path.Combine(directory, ConfigFileName));
        string single = Path.Combine(directory, SingleFileName), index = Path.Combine(directory, IndexFileName);
        try
        {
            if (File.Exists(single))
            {
                WeightsPath = single;
                SafeTensorsFile file = OpenFile(single);
                foreach (string name in file.Names) _fileOf[name] = file;
            }
            else if (File.Exists(index))
            {
                WeightsPath = index;
                ReadIndex(index);
            }
            else
            {
                throw new ModelFormatException(directory, null, $"no weights: neither {SingleFileName} nor {IndexFileName}");
            }
            TotalBytes = _fileOf.Select(pair => pair.Value.Get(pair.Key).ByteLength).Sum();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public static CheckpointDirectory Open(string directory)
    {
        string fullPath = Path.GetFullPath(directory);
        if (!Directory.Exists(fullPath)) throw new ModelFormatException(fullPath, null, "checkpoint directory not found");
        return new CheckpointDirectory(fullPath);
    }

    SafeTensorsFile OpenFile(string path)
    {
        SafeTensorsFile file = SafeTensorsFile.Open(path);
        _files.Add(file);
        return file;
    }

    /// <summary>Reads {"weight_map": {tensor: shard}} and opens each shard once.</summary>
    void ReadIndex(string indexPath)
    {
        JsonDocument document;
        try { document = JsonDocument.Parse(File.ReadAllText(indexPath)); }
        catch (JsonException e) { throw new ModelFormatException(indexPath, null, $"not valid JSON: {e.Message}", e); }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("weight_map", out JsonElement weightMap)
                || weightMap.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(indexPath, "weight_map", "missing or not a JSON object");

            var shards = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
            foreach (JsonProperty entry in weightMap.EnumerateObject())
            {
                string tensor = entry.Name;
                if (entry.Value.ValueKind != JsonValueKind.String)
                    throw new ModelFormatException(indexPath, tensor, "shard name is not a string");
                string shard = entry.Value.GetString()!;
                // Shards live beside the index; a path here would let an index reach outside the checkpoint.
                if (shard.Length == 0 || shard != Path.GetFileName(shard) || shard is "." or "..")
                    throw new ModelFormatException(indexPath, tensor, $"shard '{shard}' is not a plain file name");
                if (!shards.TryGetValue(shard, out SafeTensorsFile? file))
                {
                    string shardPath = Path.Combine(DirectoryPath, shard);
                    if (!File.Exists(shardPath))
                        throw new ModelFormatException(indexPath, tensor, $"shard '{shard}' does not exist ({shardPath})");
                    file = OpenFile(shardPath);
                    shards[shard] = file;
                }
                if (!file.Contains(tensor))
                    throw new ModelFormatException(file.FilePath, tensor, $"listed in {IndexFileName} but not in shard '{shard}'");
                if (!_fileOf.TryAdd(tensor, file))
                    throw new ModelFormatException(indexPath, tensor, "listed twice in weight_map");
            }
        }
    }

    public bool Contains(string name) => _fileOf.ContainsKey(name);

    public TensorInfo Get(string name) =>
        _fileOf.TryGetValue(name, out SafeTensorsFile? file) ? file.Get(name) : throw Missing(name);

    ModelFormatException Missing(string name) => new(WeightsPath, name, "tensor is missing");

    /// <summary>The tensor's raw bytes (no copy); valid until this directory is disposed.</summary>
    public ReadOnlySpan<byte> GetBytes(string name) =>
        _fileOf.TryGetValue(name, out SafeTensorsFile? file) ? file.GetBytes(name) : throw Missing(name);

    /// <summary>
    /// The tensor as float32 in <paramref name="destination"/> (exactly its element count). BF16/F16/F32 are
    /// widened; an I8 weight of a quantized checkpoint is dequantised with its per-row scale.
    /// </summary>
    public void ReadAsFloat32(string name, Span<float> destination)
    {
        TensorInfo tensor = Get(name);
        if (tensor.DType != TensorDType.I8)
        {
            _fileOf[name].ReadAsFloat32(tensor, destination);
            return;
        }
        if (destination.Length != tensor.ElementCount)
            throw new ArgumentException($"'{name}' has {tensor.ElementCount} elements, destination holds {destination.Length}", nameof(destination));
        (int rows, int cols) = Matrix(tensor);
        Int8Quantizer.DequantizeRows(GetInt8(name), GetScales(name), rows, cols, destination);
    }

    /// <summary>A quantized weight's int8 values, [rows, cols] row-major (no copy).</summary>
    public ReadOnlySpan<sbyte> GetInt8(string name)
    {
        TensorInfo tensor = Get(name);
        if (tensor.DType != TensorDType.I8) throw new ModelFormatException(tensor.FilePath, name, $"is {tensor.DType}, not I8");
        return MemoryMarshal.Cast<byte, sbyte>(GetBytes(name));
    }

    /// <summary>The per-row F32 scales of a quantized weight, read from "{...}.weight_scale" (no copy).</summary>
    public ReadOnlySpan<float> GetScales(string weightName)
    {
        (int rows, _) = Matrix(Get(weightName));
        TensorInfo scale = RequireTensor(MixtralWeightNames.ScaleOf(weightName), rows);
        if (scale.DType != TensorDType.F32)
            throw new ModelFormatException(scale.FilePath, scale.Name, $"scale must be F32, found {scale.DType}");
        return MemoryMarshal.Cast<byte, float>(GetBytes(scale.Name));
    }

    static (int Rows, int Cols) Matrix(TensorInfo tensor)
    {
        if (tensor.Shape.Length != 2)
            throw new ModelFormatException(tensor.FilePath, tensor.Name, $"an int8 weight must be 2-D, found {tensor.ShapeText}");
        return ((int)tensor.Shape[0], (int)tensor.Shape[1]);
    }

    /// <summary>
    /// Loads tensors one at a time through <paramref name="load"/> (which reads them however it stores them) and
    /// reports progress after each. All names are resolved first, so a missing tensor fails before any work.
    /// </summary>
    public void ForEachTensor(IEnumerable<string> names, Action<TensorInfo> load, LoadProgress? progress = null)
    {
        TensorInfo[] tensors = names.Select(Get).ToArray();
        long bytesTotal = tensors.Sum(t => t.ByteLength), bytesDone = 0;
        foreach (TensorInfo tensor in tensors)
        {
            load(tensor);
            bytesDone += tensor.ByteLength;
            progress?.Invoke(tensor.Name, bytesDone, bytesTotal);
        }
    }

    /// <summary>The tensor, which must exist with exactly this shape.</summary>
    public TensorInfo RequireTensor(string name, params long[] shape)
    {
        TensorInfo tensor = Get(name);
        if (!tensor.Shape.AsSpan().SequenceEqual(shape))
            throw new ModelFormatException(tensor.FilePath, name, $"shape is {tensor.ShapeText}, expected {TensorInfo.FormatShape(shape)}");
        return tensor;
    }

    /// <summary>
    /// Checks every tensor the config implies is present with the right shape and a usable dtype
    /// (BF16/F16/F32; I8 with an F32 [rows] scale where the quantization scheme says so). Throws on the first problem.
    /// </summary>
    public void ValidateMixtral()
    {
        foreach (ExpectedTensor expected in MixtralWeightNames.All(Config))
        {
            TensorInfo tensor = RequireTensor(expected.Name, expected.Shape);
            if (MixtralWeightNames.IsQuantized(expected.Role, Quantization))
            {
                if (tensor.DType != TensorDType.I8)
                    throw new ModelFormatException(tensor.FilePath, tensor.Name, $"is {tensor.DType}, but the quantization config makes it I8");
                GetScales(expected.Name); // checks presence, shape [rows] and F32
            }
            else if (!tensor.DType.IsFloat())
            {
                throw new ModelFormatException(tensor.FilePath, tensor.Name, $"dtype {tensor.DType} is not supported here (expected BF16, F16 or F32)");
            }
        }
    }

    public void Dispose()
    {
        foreach (SafeTensorsFile file in _files) file.Dispose();
        _files.Clear();
    }
}
