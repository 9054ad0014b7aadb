using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text.Json;

namespace OrleansMixtral.Model;

/// <summary>
/// A read-only, memory-mapped safetensors file: an 8-byte little-endian header length, a JSON header
/// mapping tensor names to {dtype, shape, data_offsets}, then the raw tensor bytes.
/// Nothing is read until asked for, so a 94 GB checkpoint costs only page cache.
/// Spans handed out stay valid until the file is disposed. Safe for concurrent readers.
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    /// <summary>The safetensors format caps the header at 100 MB; a larger length means a corrupt or foreign file.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    const string MetadataKey = "__metadata__";

    readonly MemoryMappedFile _map;
    readonly MemoryMappedViewAccessor _view;
    readonly Dictionary<string, TensorInfo> _tensors = new(StringComparer.Ordinal);
    readonly Dictionary<string, string> _metadata = new(StringComparer.Ordinal);
    byte* _base;

    public string FilePath { get; }
    public long FileLength { get; }

    /// <summary>Tensor names (the "__metadata__" entry is not a tensor).</summary>
    public IReadOnlyCollection<string> Names => _tensors.Keys;
    public IReadOnlyCollection<TensorInfo> Tensors => _tensors.Values;

    /// <summary>The optional "__metadata__" string map (e.g. {"format": "pt"}).</summary>
    public IReadOnlyDictionary<string, string> Metadata => _metadata;

    public static SafeTensorsFile Open(string path) => new(path);

    SafeTensorsFile(string path)
    {
        // safetensors data is little-endian and is handed out as-is.
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors needs a little-endian machine");
        FilePath = Path.GetFullPath(path);
        if (!File.Exists(FilePath)) throw new ModelFormatException(FilePath, null, "file not found");
        // A link's own length is its target's path length: Hugging Face's cache lays a snapshot out as links to its blobs.
        var file = new FileInfo(FilePath);
        FileLength = (file.ResolveLinkTarget(returnFinalTarget: true) as FileInfo ?? file).Length;
        if (FileLength < 8)
            throw new ModelFormatException(FilePath, null, $"file is {FileLength} bytes, shorter than the 8-byte header length; not a safetensors file");

        _map = MemoryMappedFile.CreateFromFile(FilePath, FileMode.Open, mapName: null, 0, MemoryMappedFileAccess.Read);
        try
        {
            _view = _map.CreateViewAccessor(0, FileLength, MemoryMappedFileAccess.Read);
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref _base);
            _base += _view.PointerOffset;
            ParseHeader();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    void ParseHeader()
    {
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(_base, 8));
        if (headerLength > MaxHeaderBytes)
            throw new ModelFormatException(FilePath, null, $"header length {headerLength} is absurd (limit {MaxHeaderBytes}); not a safetensors file");
        if (8 + (long)headerLength > FileLength)
            throw new ModelFormatException(FilePath, null, $"file is {FileLength} bytes, shorter than its {headerLength}-byte header (truncated?)");

        long dataStart = 8 + (long)headerLength;
        long dataLength = FileLength - dataStart;
        byte[] headerBytes = new ReadOnlySpan<byte>(_base + 8, (int)headerLength).ToArray();

        JsonDocument header;
        try { header = JsonDocument.Parse(headerBytes); }
        catch (JsonException e) { throw new ModelFormatException(FilePath, null, $"header is not valid JSON: {e.Message}", e); }

        using (header)
        {
            if (header.RootElement.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(FilePath, null, "header is not a JSON object");

            foreach (JsonProperty entry in header.RootElement.EnumerateObject())
            {
                if (entry.Name == MetadataKey) { ReadMetadata(entry.Value); continue; }
                TensorInfo tensor = ReadTensorEntry(entry.Name, entry.Value, dataStart, dataLength);
                if (!_tensors.TryAdd(tensor.Name, tensor))
                    throw new ModelFormatException(FilePath, tensor.Name, "tensor appears twice in the header");
            }
        }
        CheckNoOverlap();
    }

    void ReadMetadata(JsonElement metadata)
    {
        if (metadata.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(FilePath, MetadataKey, "must be a JSON object");
        foreach (JsonProperty item in metadata.EnumerateObject())
            _metadata[item.Name] = item.Value.ValueKind == JsonValueKind.String ? item.Value.GetString()! : item.Value.GetRawText();
    }

    TensorInfo ReadTensorEntry(string name, JsonElement entry, long dataStart, long dataLength)
    {
        ModelFormatException Bad(string problem) => new(FilePath, name, problem);

        if (entry.ValueKind != JsonValueKind.Object) throw Bad("header entry is not a JSON object");
        if (!entry.TryGetProperty("dtype", out JsonElement dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw Bad("missing string field 'dtype'");
        string dtypeName = dtypeElement.GetString()!;
        if (!TensorDTypeExtensions.TryParseSafeTensorsName(dtypeName, out TensorDType dtype))
            throw Bad($"unsupported dtype {dtypeName} (supported: F32, F16, BF16, I8)");

        long[] shape = ReadLongArray(entry, "shape", -1, Bad);
        long[] offsets = ReadLongArray(entry, "data_offsets", 2, Bad);
        long start = offsets[0], end = offsets[1];

        long elementCount;
        try { elementCount = TensorInfo.CountElements(shape); }
        catch (OverflowException) { throw Bad($"shape {TensorInfo.FormatShape(shape)} overflows"); }

        if (end < start) throw Bad($"data_offsets [{start}, {end}] end before start");
        if (end > dataLength) throw Bad($"data_offsets [{start}, {end}] run past the end of the data ({dataLength} bytes; truncated file?)");
        long expectedBytes = elementCount > long.MaxValue / dtype.ElementSize() ? -1 : elementCount * dtype.ElementSize();
        if (end - start != expectedBytes)
            throw Bad($"data_offsets [{start}, {end}] cover {end - start} bytes but {dtypeName}{TensorInfo.FormatShape(shape)} needs {expectedBytes}");

        return new TensorInfo
        {
            Name = name,
            DType = dtype,
            Shape = shape,
            ElementCount = elementCount,
            FilePath = FilePath,
            FileOffset = dataStart + start,
        };
    }

    static long[] ReadLongArray(JsonElement entry, string field, int requiredLength, Func<string, ModelFormatException> bad)
    {
        if (!entry.TryGetProperty(field, out JsonElement array) || array.ValueKind != JsonValueKind.Array)
            throw bad($"missing array field '{field}'");
        if (requiredLength >= 0 && array.GetArrayLength() != requiredLength)
            throw bad($"'{field}' must have {requiredLength} entries");
        var values = new long[array.GetArrayLength()];
        int i = 0;
        foreach (JsonElement item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out long value) || value < 0)
                throw bad($"'{field}' must hold non-negative integers, found {item.GetRawText()}");
            values[i++] = value;
        }
        return values;
    }

    /// <summary>Two tensors sharing bytes would alias each other's data: reject the file.</summary>
    void CheckNoOverlap()
    {
        TensorInfo[] byOffset = _tensors.Values.OrderBy(t => t.FileOffset).ThenBy(t => t.ByteLength).ToArray();
        for (int i = 1; i < byOffset.Length; i++)
        {
            TensorInfo previous = byOffset[i - 1], current = byOffset[i];
            if (current.FileOffset < previous.FileOffset + previous.ByteLength)
                throw new ModelFormatException(FilePath, current.Name, $"data overlaps tensor '{previous.Name}'");
        }
    }

    public bool Contains(string name) => _tensors.ContainsKey(name);

    public bool TryGet(string name, out TensorInfo tensor) => _tensors.TryGetValue(name, out tensor!);

    public TensorInfo Get(string name) =>
        _tensors.TryGetValue(name, out TensorInfo? tensor) ? tensor : throw new ModelFormatException(FilePath, name, "no such tensor");

    /// <summary>The tensor's raw little-endian bytes, straight from the mapping (no copy).</summary>
    public ReadOnlySpan<byte> GetBytes(TensorInfo tensor)
    {
        ObjectDisposedException.ThrowIf(_base == null, this);
        if (!_tensors.TryGetValue(tensor.Name, out TensorInfo? own) || !ReferenceEquals(own, tensor))
            throw new ArgumentException($"tensor '{tensor.Name}' does not belong to {FilePath}", nameof(tensor));
        if (tensor.ByteLength > int.MaxValue)
            throw new ModelFormatException(FilePath, tensor.Name, $"is {tensor.ByteLength} bytes; tensors are read through spans, limited to 2 GiB each");
        return new ReadOnlySpan<byte>(_base + tensor.FileOffset, (int)tensor.ByteLength);
    }

    public ReadOnlySpan<byte> GetBytes(string name) => GetBytes(Get(name));

    /// <summary>Widens a BF16/F16/F32 tensor into <paramref name="destination"/>, which must hold exactly its element count.</summary>
    public void ReadAsFloat32(TensorInfo tensor, Span<float> destination)
    {
        if (!tensor.DType.IsFloat())
            throw new NotSupportedException($"{FilePath}: '{tensor.Name}' is {tensor.DType}, not a float tensor; int8 weights need their scales (CheckpointDirectory.ReadAsFloat32 applies them)");
        if (destination.Length != tensor.ElementCount)
            throw new ArgumentException($"'{tensor.Name}' has {tensor.ElementCount} elements, destination holds {destination.Length}", nameof(destination));
        FloatConversion.ToSingle(GetBytes(tensor), tensor.DType, destination);
    }

    public void ReadAsFloat32(string name, Span<float> destination) => ReadAsFloat32(Get(name), destination);

    public void Dispose()
    {
        if (_base != null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _base = null;
        }
        _view?.Dispose();
        _map.Dispose();
    }
}
