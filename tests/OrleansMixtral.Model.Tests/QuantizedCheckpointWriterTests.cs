using System.Runtime.InteropServices;
using System.Text.Json;
using OrleansMixtral.Model;

namespace OrleansMixtral.Model.Tests;

public class QuantizedCheckpointWriterTests
{
    [Fact]
    public void Quantizes_linear_weights_and_keeps_router_norms_and_embeddings_exact()
    {
        using var src = new TempDir();
        using var dst = new TempDir();
        List<SyntheticTensor> originals = SyntheticMixtral.WriteDefault(src.Path);
        File.WriteAllText(src.File("tokenizer.json"), """{"model":{"type":"BPE"}}""");
        File.WriteAllText(src.File("generation_config.json"), """{"bos_token_id":1}""");
        var reports = new List<(string Name, long Done, long Total)>();

        QuantizedCheckpointWriter.Quantize(src.Path, dst.Path, new QuantizeOptions(), (name, done, total) => reports.Add((name, done, total)));

        Assert.True(File.Exists(dst.File("model.safetensors")));
        Assert.False(File.Exists(dst.File("model.safetensors.index.json")));
        Assert.Equal(File.ReadAllText(src.File("tokenizer.json")), File.ReadAllText(dst.File("tokenizer.json")));
        Assert.True(File.Exists(dst.File("generation_config.json")));
        Assert.False(File.Exists(dst.File("tokenizer_config.json")));

        using (JsonDocument config = JsonDocument.Parse(File.ReadAllText(dst.File("config.json"))))
        {
            JsonElement section = config.RootElement.GetProperty("quantization_config");
            Assert.Equal("int8_weight_only", section.GetProperty("quant_method").GetString());
            Assert.Equal(8, section.GetProperty("bits").GetInt32());
            Assert.Equal("per_output_channel", section.GetProperty("granularity").GetString());
            Assert.True(section.GetProperty("symmetric").GetBoolean());
            Assert.False(section.GetProperty("quantized_embeddings").GetBoolean());
            Assert.False(section.GetProperty("quantized_lm_head").GetBoolean());
            Assert.Equal("bfloat16", config.RootElement.GetProperty("torch_dtype").GetString()); // other fields kept
        }

        // Progress: one report per source tensor, ending at the total of the source bytes (BF16: 2 per element).
        long sourceBytes = originals.Sum(t => 2L * t.Values.Length);
        Assert.Equal(originals.Count, reports.Count);
        Assert.All(reports, r => Assert.Equal(sourceBytes, r.Total));
        Assert.Equal(sourceBytes, reports[^1].Done);
        Assert.True(reports.Zip(reports.Skip(1)).All(pair => pair.First.Done < pair.Second.Done));

        using CheckpointDirectory quantized = CheckpointDirectory.Open(dst.Path);
        Assert.NotNull(quantized.Quantization);
        Assert.False(quantized.Quantization.QuantizedEmbeddings);
        Assert.False(quantized.Quantization.QuantizedLmHead);
        quantized.ValidateMixtral();
        using CheckpointDirectory source = CheckpointDirectory.Open(src.Path);

        foreach (SyntheticTensor original in originals)
        {
            TensorInfo info = quantized.Get(original.Name);
            Assert.Equal(original.Shape, info.Shape);
            if (original.IsLinear)
            {
                Assert.Equal(TensorDType.I8, info.DType);
                AssertWithinHalfAStep(quantized, original);
            }
            else
            {
                // Router, norms, embeddings and lm_head are copied byte for byte in their source dtype.
                Assert.Equal(TensorDType.BF16, info.DType);
                Assert.True(source.GetBytes(original.Name).SequenceEqual(quantized.GetBytes(original.Name)), original.Name);
                Assert.False(quantized.Contains(original.Name + "_scale"));
            }
        }
        Assert.Equal(originals.Count + originals.Count(t => t.IsLinear), quantized.TensorNames.Count);

        // The all-zero row: scale 0, values 0.
        string zeroRowScale = SyntheticMixtral.WeightWithZeroRow.Replace(".weight", ".weight_scale");
        var scales = new float[SyntheticMixtral.Inter];
        quantized.ReadAsFloat32(zeroRowScale, scales);
        Assert.Equal(0f, scales[3]);
        Assert.All(scales.Where((_, row) => row != 3), s => Assert.True(s > 0));
    }

    /// <summary>Checks I8 + F32 scale against the original floats: |w − q·s| ≤ s/2, and the largest |q| of a row is 127.</summary>
    static void AssertWithinHalfAStep(CheckpointDirectory quantized, SyntheticTensor original)
    {
        int rows = (int)original.Shape[0], cols = (int)original.Shape[1];
        string scaleName = original.Name[..^".weight".Length] + ".weight_scale";
        TensorInfo scaleInfo = quantized.Get(scaleName);
        Assert.Equal(TensorDType.F32, scaleInfo.DType);
        Assert.Equal([(long)rows], scaleInfo.Shape);

        sbyte[] q = MemoryMarshal.Cast<byte, sbyte>(quantized.GetBytes(original.Name)).ToArray();
        float[] s = MemoryMarshal.Cast<byte, float>(quantized.GetBytes(scaleName)).ToArray();
        var dequantised = new float[rows * cols];
        quantized.ReadAsFloat32(original.Name, dequantised);
        for (int r = 0; r < rows; r++)
        {
            int maxQ = 0;
            for (int c = 0; c < cols; c++)
            {
                int i = r * cols + c;
                Assert.Equal(q[i] * s[r], dequantised[i]);
                Assert.True(MathF.Abs(original.Values[i] - q[i] * s[r]) <= s[r] / 2 * (1 + 1e-5f), $"{original.Name}[{r}, {c}]");
                maxQ = Math.Max(maxQ, Math.Abs((int)q[i]));
            }
            Assert.Equal(s[r] == 0 ? 0 : 127, maxQ);
        }
    }

    [Fact]
    public void Quantizing_embeddings_and_lm_head_into_small_shards_writes_an_index()
    {
        using var src = new TempDir();
        using var dst = new TempDir();
        List<SyntheticTensor> originals = SyntheticMixtral.WriteDefault(src.Path, TensorDType.F32, shards: 2);
        var options = new QuantizeOptions { QuantizeEmbeddings = true, QuantizeLmHead = true, MaxShardBytes = 8 * 1024 };

        QuantizedCheckpointWriter.Quantize(src.Path, dst.Path, options);

        Assert.False(File.Exists(dst.File("model.safetensors")));
        Assert.True(File.Exists(dst.File("model.safetensors.index.json")));
        string[] shards = Directory.GetFiles(dst.Path, "model-*.safetensors");
        Assert.True(shards.Length > 1);
        foreach (string shard in shards)
        {
            using SafeTensorsFile file = SafeTensorsFile.Open(shard);
            long tensorBytes = file.Tensors.Sum(t => t.ByteLength);
            // Only a lone tensor may exceed the limit (none here does: the largest, 64×16 I8 + scales, is 1280 bytes).
            Assert.True(tensorBytes <= options.MaxShardBytes, $"{shard}: {tensorBytes} bytes");
            Assert.Equal("pt", file.Metadata["format"]);
            // A weight and its scale share a shard.
            foreach (string name in file.Names.Where(n => n.EndsWith("_scale", StringComparison.Ordinal)))
                Assert.True(file.Contains(name[..^"_scale".Length]), name);
        }

        using CheckpointDirectory quantized = CheckpointDirectory.Open(dst.Path);
        Assert.True(quantized.Quantization!.QuantizedEmbeddings);
        Assert.True(quantized.Quantization.QuantizedLmHead);
        quantized.ValidateMixtral();
        foreach (SyntheticTensor original in originals)
        {
            bool shouldBeInt8 = original.IsLinear || original.Name is "model.embed_tokens.weight" or "lm_head.weight";
            if (shouldBeInt8) AssertWithinHalfAStep(quantized, original);
            else
            {
                var values = new float[original.Values.Length];
                quantized.ReadAsFloat32(original.Name, values);
                Assert.Equal(original.Values, values); // F32 router and norms: exact
            }
        }
    }

    [Fact]
    public void Tied_checkpoint_quantizes_without_an_lm_head()
    {
        using var src = new TempDir();
        using var dst = new TempDir();
        SyntheticMixtral.WriteDefault(src.Path, tied: true);

        QuantizedCheckpointWriter.Quantize(src.Path, dst.Path, new QuantizeOptions { QuantizeLmHead = true });

        using CheckpointDirectory quantized = CheckpointDirectory.Open(dst.Path);
        Assert.True(quantized.Config.TieWordEmbeddings);
        Assert.False(quantized.Contains("lm_head.weight"));
        Assert.Equal(TensorDType.BF16, quantized.Get("model.embed_tokens.weight").DType);
        quantized.ValidateMixtral();
    }

    [Fact]
    public void Refuses_to_requantize_overwrite_or_write_in_place()
    {
        using var src = new TempDir();
        using var dst = new TempDir();
        SyntheticMixtral.WriteDefault(src.Path);

        Assert.Throws<ArgumentException>(() => QuantizedCheckpointWriter.Quantize(src.Path, src.Path));
        QuantizedCheckpointWriter.Quantize(src.Path, dst.Path);
        Assert.Throws<InvalidOperationException>(() => QuantizedCheckpointWriter.Quantize(src.Path, dst.Path));
        using var again = new TempDir();
        Assert.Throws<InvalidOperationException>(() => QuantizedCheckpointWriter.Quantize(dst.Path, again.Path));
    }

    [Fact]
    public void Validation_of_a_quantized_checkpoint_requires_the_scales()
    {
        const string weight = "model.layers.1.self_attn.v_proj.weight";
        using var src = new TempDir();
        using var dst = new TempDir();
        SyntheticMixtral.WriteDefault(src.Path);
        QuantizedCheckpointWriter.Quantize(src.Path, dst.Path);

        // Rewrite the quantized file without one scale.
        List<(TensorSpec, byte[])> kept;
        using (var file = SafeTensorsFile.Open(dst.File("model.safetensors")))
            kept = file.Tensors.Where(t => t.Name != "model.layers.1.self_attn.v_proj.weight_scale")
                .Select(t => (new TensorSpec(t.Name, t.DType, t.Shape), file.GetBytes(t).ToArray())).ToList();
        SafeTensorsWriter.WriteFile(dst.File("model.safetensors"), kept);

        using CheckpointDirectory quantized = CheckpointDirectory.Open(dst.Path);
        var error = Assert.Throws<ModelFormatException>(quantized.ValidateMixtral);
        Assert.Contains("'model.layers.1.self_attn.v_proj.weight_scale'", error.Message);
        Assert.Throws<ModelFormatException>(() => quantized.ReadAsFloat32(weight, new float[8 * 16]));
    }
}
