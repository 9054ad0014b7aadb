using System.Buffers.Binary;
using System.Text;
using OrleansMixtral.Model;

namespace OrleansMixtral.Model.Tests;

public class SafeTensorsFileTests
{
    [Fact]
    public void Reads_bf16_of_known_floats_from_hand_written_bytes()
    {
        using var dir = new TempDir();
        string path = dir.File("bf16.safetensors");
        // 1.0 = 0x3F80, -2.5 = 0xC020, 3.140625 = 0x4049 (upper halves of their float32 bits), little-endian.
        byte[] data = [0x80, 0x3F, 0x20, 0xC0, 0x49, 0x40];
        RawSafeTensors.Write(path, """{"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}}""", data);

        using SafeTensorsFile file = SafeTensorsFile.Open(path);
        TensorInfo w = file.Get("w");
        Assert.Equal(TensorDType.BF16, w.DType);
        Assert.Equal([3L], w.Shape);
        Assert.Equal(3, w.ElementCount);
        Assert.Equal(data, file.GetBytes(w).ToArray());
        var floats = new float[3];
        file.ReadAsFloat32("w", floats);
        Assert.Equal([1.0f, -2.5f, 3.140625f], floats);
    }

    [Fact]
    public void Opens_a_file_through_a_symbolic_link_as_the_file_it_names()
    {
        // Hugging Face's cache: snapshots/<rev>/model.safetensors is a link to blobs/<hash>.
        using var dir = new TempDir();
        string target = dir.File("blob");
        byte[] data = [0x80, 0x3F, 0x20, 0xC0];
        RawSafeTensors.Write(target, """{"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}""", data);
        string link = dir.File("model.safetensors");
        File.CreateSymbolicLink(link, target);

        using SafeTensorsFile file = SafeTensorsFile.Open(link);
        Assert.Equal(new FileInfo(target).Length, file.FileLength);
        Assert.Equal(data, file.GetBytes(file.Get("w")).ToArray());
    }

    [Fact]
    public void Round_trips_bf16_f16_f32_and_i8_through_the_writer()
    {
        using var dir = new TempDir();
        string path = dir.File("all.safetensors");
        byte[] bf16 = [0x80, 0x3F, 0x20, 0xC0, 0x49, 0x40];                 // 1, -2.5, 3.140625
        byte[] f16 = [0x00, 0x3C, 0x00, 0xC1, 0x00, 0x38, 0xFF, 0x7B];      // 1, -2.5, 0.5, 65504
        byte[] f32 = new byte[8];
        BinaryPrimitives.WriteSingleLittleEndian(f32, 1.5f);
        BinaryPrimitives.WriteSingleLittleEndian(f32.AsSpan(4), -1e-30f);
        byte[] i8 = [0x7F, 0x81, 0x00]; // 127, -127, 0
        SafeTensorsWriter.WriteFile(path,
        [
            (new TensorSpec("a.bf16", TensorDType.BF16, [1, 3]), bf16),
            (new TensorSpec("b.f16", TensorDType.F16, [2, 2]), f16),
            (new TensorSpec("c.f32", TensorDType.F32, [2]), f32),
            (new TensorSpec("d.i8", TensorDType.I8, [3]), i8),
        ], new Dictionary<string, string> { ["format"] = "pt" });

        using SafeTensorsFile file = SafeTensorsFile.Open(path);
        Assert.Equal(["a.bf16", "b.f16", "c.f32", "d.i8"], file.Names.Order());
        Assert.Equal("pt", file.Metadata["format"]);

        var a = new float[3]; file.ReadAsFloat32("a.bf16", a);
        Assert.Equal([1.0f, -2.5f, 3.140625f], a);
        var b = new float[4]; file.ReadAsFloat32("b.f16", b);
        Assert.Equal([1.0f, -2.5f, 0.5f, 65504f], b);
        var c = new float[2]; file.ReadAsFloat32("c.f32", c);
        Assert.Equal([1.5f, -1e-30f], c);
        Assert.Equal([2L, 2L], file.Get("b.f16").Shape);
        Assert.Equal(i8, file.GetBytes("d.i8").ToArray());
        Assert.Equal(TensorDType.I8, file.Get("d.i8").DType);
    }

    [Theory]
    [InlineData(TensorDType.BF16)]
    [InlineData(TensorDType.F16)]
    [InlineData(TensorDType.F32)]
    public void Widens_long_tensors_exactly_across_vector_widths_and_tails(TensorDType dtype)
    {
        // 1003 elements: several full vectors of any width plus a ragged tail. Integers in [-128, 127] are exact in every dtype.
        const int count = 1003;
        var expected = new float[count];
        for (int i = 0; i < count; i++) expected[i] = i % 256 - 128;
        using var dir = new TempDir();
        string path = dir.File("long.safetensors");
        SafeTensorsWriter.WriteFile(path, [(new TensorSpec("x", dtype, [count]), SyntheticTensor.Encode(expected, dtype))]);

        using SafeTensorsFile file = SafeTensorsFile.Open(path);
        var actual = new float[count];
        file.ReadAsFloat32("x", actual);
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void Writer_output_is_the_documented_layout()
    {
        using var dir = new TempDir();
        string path = dir.File("layout.safetensors");
        SafeTensorsWriter.WriteFile(path, [(new TensorSpec("a", TensorDType.F32, [2]), new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 })]);

        string header = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""";
        header = header.PadRight((header.Length + 7) / 8 * 8); // space padding keeps the data 8-byte aligned
        byte[] expected = RawSafeTensors.Build(header, [1, 2, 3, 4, 5, 6, 7, 8]);
        Assert.Equal(expected, File.ReadAllBytes(path));
    }

    [Fact]
    public void Writer_enforces_the_planned_order_and_sizes_and_deletes_incomplete_files()
    {
        using var dir = new TempDir();
        string path = dir.File("partial.safetensors");
        TensorSpec[] plan = [new("a", TensorDType.I8, [2]), new("b", TensorDType.I8, [1])];
        using (var writer = new SafeTensorsWriter(path, plan))
        {
            Assert.Throws<InvalidOperationException>(() => writer.Write("b", new byte[1]));
            Assert.Throws<ArgumentException>(() => writer.Write("a", new byte[3]));
            writer.Write("a", new byte[2]);
            Assert.Throws<InvalidOperationException>(() => writer.Complete());
        }
        Assert.False(File.Exists(path));
        Assert.Throws<ArgumentException>(() => new SafeTensorsWriter(path, [new("a", TensorDType.I8, [1]), new("a", TensorDType.I8, [1])]));
    }

    public static TheoryData<string, string?, string> BrokenFiles => new()
    {
        { "empty", null, "shorter than the 8-byte header length" },
        { "three-bytes", null, "shorter than the 8-byte header length" },
        { "shorter-than-header", null, "shorter than its 100-byte header" },
        { "absurd-header-length", null, "absurd" },
        { "bad-json", null, "not valid JSON" },
        { "end-past-data", "the.weight", "run past the end of the data" },
        { "end-before-start", "the.weight", "end before start" },
        { "overlap", "second.weight", "overlaps tensor 'first.weight'" },
        { "size-mismatch", "the.weight", "cover 8 bytes but F32[3] needs 12" },
        { "unsupported-dtype", "the.weight", "unsupported dtype F64" },
        { "bad-shape", "the.weight", "'shape' must hold non-negative integers" },
        { "duplicate", "the.weight", "appears twice" },
    };

    [Theory]
    [MemberData(nameof(BrokenFiles))]
    public void Broken_files_raise_ModelFormatException_naming_file_and_tensor(string kind, string? tensor, string problem)
    {
        using var dir = new TempDir();
        string path = dir.File(kind + ".safetensors");
        File.WriteAllBytes(path, BrokenFile(kind));

        var error = Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(path));

        Assert.Contains(path, error.Message);
        Assert.Equal(path, error.FilePath);
        Assert.Contains(problem, error.Message);
        if (tensor is not null)
        {
            Assert.Contains($"'{tensor}'", error.Message);
            Assert.Equal(tensor, error.Item);
        }
    }

    static byte[] BrokenFile(string kind)
    {
        byte[] Entry(string header, int dataBytes) => RawSafeTensors.Build(header, new byte[dataBytes]);
        return kind switch
        {
            "empty" => [],
            "three-bytes" => [1, 2, 3],
            "shorter-than-header" => RawSafeTensors.Build(Encoding.UTF8.GetBytes("{}"), new byte[8], declaredHeaderLength: 100),
            "absurd-header-length" => RawSafeTensors.Build(Encoding.UTF8.GetBytes("{}"), new byte[8], declaredHeaderLength: 1UL << 40),
            "bad-json" => RawSafeTensors.Build("""{"the.weight": {"dtype": """, []),
            "end-past-data" => Entry("""{"the.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 4),
            "end-before-start" => Entry("""{"the.weight":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}""", 8),
            "overlap" => Entry("""{"first.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"second.weight":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12),
            "size-mismatch" => Entry("""{"the.weight":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", 8),
            "unsupported-dtype" => Entry("""{"the.weight":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}""", 8),
            "bad-shape" => Entry("""{"the.weight":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}""", 8),
            "duplicate" => Entry("""{"the.weight":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},"the.weight":{"dtype":"I8","shape":[1],"data_offsets":[1,2]}}""", 2),
            _ => throw new ArgumentException(kind),
        };
    }

    [Fact]
    public void Metadata_entry_is_not_a_tensor_and_header_padding_is_accepted()
    {
        using var dir = new TempDir();
        string path = dir.File("meta.safetensors");
        RawSafeTensors.Write(path, """{"__metadata__":{"format":"pt"},"x":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}}    """, [5, 250]);

        using SafeTensorsFile file = SafeTensorsFile.Open(path);
        Assert.Equal(["x"], file.Names);
        Assert.False(file.Contains("__metadata__"));
        Assert.Equal([5, 250], file.GetBytes("x").ToArray());
    }

    [Fact]
    public void Tensor_over_2_GiB_is_refused_with_a_clear_error()
    {
        using var dir = new TempDir();
        string path = dir.File("huge.safetensors");
        const long bytes = 3L << 30; // 3 GiB of I8: the file is sparse, so this costs no disk
        byte[] head = RawSafeTensors.Build($$$"""{"huge.weight":{"dtype":"I8","shape":[3,{{{1L << 30}}}],"data_offsets":[0,{{{bytes}}}]}}""", []);
        using (var stream = new FileStream(path, FileMode.Create))
        {
            stream.Write(head);
            stream.SetLength(head.Length + bytes);
        }

        using SafeTensorsFile file = SafeTensorsFile.Open(path);
        Assert.Equal(bytes, file.Get("huge.weight").ByteLength);
        var error = Assert.Throws<ModelFormatException>(() => { file.GetBytes("huge.weight"); });
        Assert.Contains(path, error.Message);
        Assert.Contains("'huge.weight'", error.Message);
        Assert.Contains("2 GiB", error.Message);
    }

    [Fact]
    public void Misuse_is_reported()
    {
        using var dir = new TempDir();
        string path = dir.File("x.safetensors");
        RawSafeTensors.Write(path, """{"q":{"dtype":"I8","shape":[2],"data_offsets":[0,2]},"f":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}""", new byte[6]);

        SafeTensorsFile file = SafeTensorsFile.Open(path);
        Assert.Throws<NotSupportedException>(() => file.ReadAsFloat32("q", new float[2]));
        Assert.Throws<ArgumentException>(() => file.ReadAsFloat32("f", new float[2]));
        var missing = Assert.Throws<ModelFormatException>(() => file.Get("nope"));
        Assert.Contains("'nope'", missing.Message);
        file.Dispose();
        Assert.Throws<ObjectDisposedException>(() => { file.GetBytes("f"); });
    }
}
