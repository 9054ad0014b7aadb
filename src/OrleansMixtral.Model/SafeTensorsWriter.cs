using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace OrleansMixtral.Model;

/// <summary>
/// Writes one safetensors file without holding its tensors in memory. The header lists every tensor's
/// offsets, so the full tensor list is given up front; data then follows tensor by tensor, in that order.
/// Call <see cref="Complete"/> at the end: disposing an incomplete writer deletes the partial file.
/// </summary>
public sealed class SafeTensorsWriter : IDisposable
{
    readonly IReadOnlyList<TensorSpec> _tensors;
    readonly FileStream _stream;
    int _next;        // index of the next tensor expected
    bool _completed;

    public string FilePath { get; }

    public SafeTensorsWriter(string path, IReadOnlyList<TensorSpec> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        FilePath = Path.GetFullPath(path);
        _tensors = tensors;
        byte[] header = BuildHeader(tensors, metadata);
        _stream = new FileStream(FilePath, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1 << 20);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
        _stream.Write(length);
        _stream.Write(header);
    }

    /// <summary>The JSON header, space-padded to a multiple of 8 bytes so the data starts aligned.</summary>
    static byte[] BuildHeader(IReadOnlyList<TensorSpec> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        using var json = new MemoryStream();
        using (var writer = new Utf8JsonWriter(json))
        {
            writer.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                writer.WriteStartObject("__metadata__");
                foreach ((string key, string value) in metadata) writer.WriteString(key, value);
                writer.WriteEndObject();
            }
            long offset = 0;
            foreach (TensorSpec tensor in tensors)
            {
                if (tensor.Name == "__metadata__" || !names.Add(tensor.Name))
                    throw new ArgumentException($"tensor name '{tensor.Name}' is reserved or repeated", nameof(tensors));
                writer.WriteStartObject(tensor.Name);
                writer.WriteString("dtype", tensor.DType.ToSafeTensorsName());
                writer.WriteStartArray("shape");
                foreach (long dim in tensor.Shape) writer.WriteNumberValue(dim);
                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(offset);
                writer.WriteNumberValue(offset + tensor.ByteLength);
                writer.WriteEndArray();
                writer.WriteEndObject();
                offset += tensor.ByteLength;
            }
            writer.WriteEndObject();
        }
        int padded = (int)((json.Length + 7) / 8 * 8);
        while (json.Length < padded) json.WriteByte((byte)' ');
        return json.ToArray();
    }

    /// <summary>Writes the next tensor's bytes; name and length must match the planned list.</summary>
    public void Write(string name, ReadOnlySpan<byte> data)
    {
        ObjectDisposedException.ThrowIf(_completed, this);
        if (_next >= _tensors.Count) throw new InvalidOperationException($"{FilePath}: '{name}' is beyond the {_tensors.Count} planned tensors");
        TensorSpec expected = _tensors[_next];
        if (expected.Name != name)
            throw new InvalidOperationException($"{FilePath}: expected tensor '{expected.Name}' next, got '{name}'");
        if (data.Length != expected.ByteLength)
            throw new ArgumentException($"{FilePath}: '{name}' needs {expected.ByteLength} bytes, got {data.Length}", nameof(data));
        _stream.Write(data);
        _next++;
    }

    public void Write<T>(string name, ReadOnlySpan<T> data) where T : unmanaged => Write(name, MemoryMarshal.AsBytes(data));

    /// <summary>Checks every planned tensor was written and closes the file.</summary>
    public void Complete()
    {
        if (_completed) return;
        if (_next != _tensors.Count)
            throw new InvalidOperationException($"{FilePath}: only {_next} of {_tensors.Count} tensors written; next is '{_tensors[_next].Name}'");
        _stream.Flush(flushToDisk: false);
        _stream.Dispose();
        _completed = true;
    }

    public void Dispose()
    {
        if (_completed) return;
        _stream.Dispose();
        File.Delete(FilePath); // a half-written file must not pass for a checkpoint
        _completed = true;
    }

    /// <summary>Writes a whole file from in-memory tensors (small files, tests).</summary>
    public static void WriteFile(string path, IReadOnlyList<(TensorSpec Spec, byte[] Data)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        using var writer = new SafeTensorsWriter(path, tensors.Select(t => t.Spec).ToList(), metadata);
        foreach ((TensorSpec spec, byte[] data) in tensors) writer.Write(spec.Name, data);
        writer.Complete();
    }
}
