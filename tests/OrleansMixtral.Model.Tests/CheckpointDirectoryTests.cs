using OrleansMixtral.Model;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Model.Tests;

public class CheckpointDirectoryTests
{
    [Fact]
    public void Reads_a_single_file_checkpoint_exactly()
    {
        using var dir = new TempDir();
        List<SyntheticTensor> tensors = SyntheticMixtral.WriteDefault(dir.Path);

        using CheckpointDirectory checkpoint = CheckpointDirectory.Open(dir.Path);

        Assert.Equal(16, checkpoint.Config.HiddenSize);
        Assert.Null(checkpoint.Quantization);
        checkpoint.ValidateMixtral();
        Assert.Equal(tensors.Count, checkpoint.TensorNames.Count);
        Assert.Equal(tensors.Sum(t => t.Values.Length * 2L), checkpoint.TotalBytes);
        foreach (SyntheticTensor expected in tensors)
        {
            TensorInfo info = checkpoint.Get(expected.Name);
            Assert.Equal(expected.DType, info.DType);
            Assert.Equal(expected.Shape, info.Shape);
            var actual = new float[expected.Values.Length];
            checkpoint.ReadAsFloat32(expected.Name, actual);
            Assert.Equal(expected.Values, actual);
        }
    }

    [Fact]
    public void Sharded_checkpoint_with_index_reads_identically_to_the_single_file()
    {
        using var single = new TempDir();
        using var sharded = new TempDir();
        SyntheticMixtral.WriteDefault(single.Path, TensorDType.F16);
        SyntheticMixtral.WriteDefault(sharded.Path, TensorDType.F16, shards: 3);
        Assert.False(File.Exists(sharded.File("model.safetensors")));
        Assert.True(File.Exists(sharded.File("model-00003-of-00003.safetensors")));

        using CheckpointDirectory a = CheckpointDirectory.Open(single.Path);
        using CheckpointDirectory b = CheckpointDirectory.Open(sharded.Path);

        b.ValidateMixtral();
        Assert.Equal(a.TensorNames.Order(), b.TensorNames.Order());
        Assert.EndsWith("model.safetensors.index.json", b.WeightsPath);
        foreach (string name in a.TensorNames)
        {
            Assert.Equal(a.Get(name).Shape, b.Get(name).Shape);
            Assert.Equal(a.Get(name).DType, b.Get(name).DType);
            Assert.True(a.GetBytes(name).SequenceEqual(b.GetBytes(name)), name);
        }
        // The same tensor lives in different files.
        Assert.NotEqual(b.Get("model.embed_tokens.weight").FilePath, b.Get("lm_head.weight").FilePath);
    }

    [Fact]
    public void ForEachTensor_streams_in_order_and_reports_progress()
    {
        using var dir = new TempDir();
        SyntheticMixtral.WriteDefault(dir.Path, TensorDType.F32);
        using CheckpointDirectory checkpoint = CheckpointDirectory.Open(dir.Path);
        string[] names = ["model.norm.weight", "model.embed_tokens.weight", "model.layers.0.block_sparse_moe.gate.weight"];
        var loaded = new List<string>();
        var reports = new List<(string Name, long Done, long Total)>();

        checkpoint.ForEachTensor(names, t => loaded.Add(t.Name), (name, done, total) => reports.Add((name, done, total)));

        Assert.Equal(names, loaded);
        // F32: norm 16·4 = 64 bytes, embeddings 64·16·4 = 4096, router 4·16·4 = 256; 4416 in all.
        Assert.Equal([("model.norm.weight", 64L, 4416L), ("model.embed_tokens.weight", 4160L, 4416L),
                      ("model.layers.0.block_sparse_moe.gate.weight", 4416L, 4416L)], reports);

        loaded.Clear();
        Assert.Throws<ModelFormatException>(() => checkpoint.ForEachTensor(["model.norm.weight", "no.such.weight"], t => loaded.Add(t.Name)));
        Assert.Empty(loaded);
    }

    [Fact]
    public void Tied_embeddings_need_no_lm_head()
    {
        using var dir = new TempDir();
        SyntheticMixtral.WriteDefault(dir.Path, tied: true);

        using CheckpointDirectory checkpoint = CheckpointDirectory.Open(dir.Path);

        Assert.True(checkpoint.Config.TieWordEmbeddings);
        Assert.False(checkpoint.Contains("lm_head.weight"));
        checkpoint.ValidateMixtral();
    }

    [Fact]
    public void Untied_checkpoint_without_lm_head_fails_validation()
    {
        using var dir = new TempDir();
        List<SyntheticTensor> tensors = SyntheticMixtral.Build(tied: false);
        tensors.RemoveAll(t => t.Name == "lm_head.weight");
        SyntheticMixtral.Write(dir.Path, tensors, SyntheticMixtral.ConfigJson(tied: false));

        using CheckpointDirectory checkpoint = CheckpointDirectory.Open(dir.Path);
        var error = Assert.Throws<ModelFormatException>(checkpoint.ValidateMixtral);

        Assert.Contains("'lm_head.weight'", error.Message);
        Assert.Contains(dir.File("model.safetensors"), error.Message);
        Assert.Contains("missing", error.Message);
    }

    [Fact]
    public void Missing_tensor_is_named_with_its_file()
    {
        const string dropped = "model.layers.1.block_sparse_moe.experts.2.w2.weight";
        using var dir = new TempDir();
        List<SyntheticTensor> tensors = SyntheticMixtral.Build();
        tensors.RemoveAll(t => t.Name == dropped);
        SyntheticMixtral.Write(dir.Path, tensors, SyntheticMixtral.ConfigJson(), shards: 2);

        using CheckpointDirectory checkpoint = CheckpointDirectory.Open(dir.Path);

        var validation = Assert.Throws<ModelFormatException>(checkpoint.ValidateMixtral);
        Assert.Contains($"'{dropped}'", validation.Message);
        Assert.Contains(dir.File("model.safetensors.index.json"), validation.Message);
        var get = Assert.Throws<ModelFormatException>(() => checkpoint.Get(dropped));
        Assert.Equal(dropped, get.Item);
        Assert.False(checkpoint.Contains(dropped));
    }

    [Fact]
    public void Wrong_shape_is_named_with_its_file_and_both_shapes()
    {
        const string transposed = "model.layers.0.self_attn.o_proj.weight";
        using var dir = new TempDir();
        List<SyntheticTensor> tensors = SyntheticMixtral.Build();
        int i = tensors.FindIndex(t => t.Name == transposed);
        tensors[i] = tensors[i] with { Shape = [8, 32] }; // same element count as [16, 16], wrong shape
        SyntheticMixtral.Write(dir.Path, tensors, SyntheticMixtral.ConfigJson());

        using CheckpointDirectory checkpoint = CheckpointDirectory.Open(dir.Path);

        var validation = Assert.Throws<ModelFormatException>(checkpoint.ValidateMixtral);
        Assert.Contains($"'{transposed}'", validation.Message);
        Assert.Contains(dir.File("model.safetensors"), validation.Message);
        Assert.Contains("[8, 32]", validation.Message);
        Assert.Contains("[16, 16]", validation.Message);
        Assert.Throws<ModelFormatException>(() => checkpoint.RequireTensor(transposed, 16, 16));
        Assert.Equal([8L, 32L], checkpoint.RequireTensor(transposed, 8, 32).Shape);
    }

    [Fact]
    public void Int8_tensor_in_an_unquantized_checkpoint_fails_validation()
    {
        const string norm = "model.layers.1.input_layernorm.weight";
        using var dir = new TempDir();
        List<SyntheticTensor> tensors = SyntheticMixtral.Build(TensorDType.F32);
        SyntheticMixtral.Write(dir.Path, tensors, SyntheticMixtral.ConfigJson());
        // Rewrite with the norm as I8: encode the other tensors as they are and this one as 16 raw bytes.
        var specs = tensors.Select(t => t.Name == norm
            ? (new TensorSpec(norm, TensorDType.I8, [16]), new byte[16])
            : (t.Spec, t.Bytes)).ToList();
        SafeTensorsWriter.WriteFile(dir.File("model.safetensors"), specs);

        using CheckpointDirectory checkpoint = CheckpointDirectory.Open(dir.Path);
        var error = Assert.Throws<ModelFormatException>(checkpoint.ValidateMixtral);
        Assert.Contains($"'{norm}'", error.Message);
        Assert.Contains("I8", error.Message);
    }

    [Fact]
    public void Index_naming_a_missing_shard_names_the_shard()
    {
        using var dir = new TempDir();
        SyntheticMixtral.WriteDefault(dir.Path, shards: 2);
        File.Delete(dir.File("model-00002-of-00002.safetensors"));

        var error = Assert.Throws<ModelFormatException>(() => CheckpointDirectory.Open(dir.Path));
        Assert.Contains("model-00002-of-00002.safetensors", error.Message);
        Assert.Contains("does not exist", error.Message);
    }

    [Fact]
    public void Index_listing_a_tensor_its_shard_lacks_is_an_error()
    {
        using var dir = new TempDir();
        SyntheticMixtral.WriteDefault(dir.Path, shards: 2);
        File.WriteAllText(dir.File("model.safetensors.index.json"),
            """{"weight_map":{"model.norm.weight":"model-00001-of-00002.safetensors"}}""");

        var error = Assert.Throws<ModelFormatException>(() => CheckpointDirectory.Open(dir.Path));
        Assert.Contains("'model.norm.weight'", error.Message);
        Assert.Contains("model-00001-of-00002.safetensors", error.Message);
    }

    [Fact]
    public void Index_shard_names_cannot_leave_the_directory()
    {
        using var dir = new TempDir();
        SyntheticMixtral.WriteDefault(dir.Path);
        File.Move(dir.File("model.safetensors"), dir.File("elsewhere.safetensors"));
        File.WriteAllText(dir.File("model.safetensors.index.json"),
            """{"weight_map":{"model.norm.weight":"../elsewhere.safetensors"}}""");

        var error = Assert.Throws<ModelFormatException>(() => CheckpointDirectory.Open(dir.Path));
        Assert.Contains("not a plain file name", error.Message);
    }

    [Fact]
    public void Unknown_directory_or_one_without_weights_or_config_is_a_clear_error()
    {
        using var dir = new TempDir();
        string nowhere = dir.Sub("does-not-exist");
        var notFound = Assert.Throws<ModelFormatException>(() => CheckpointDirectory.Open(nowhere));
        Assert.Contains(nowhere, notFound.Message);
        Assert.DoesNotContain('\n', notFound.Message);

        File.WriteAllText(dir.File("config.json"), SyntheticMixtral.ConfigJson());
        var noWeights = Assert.Throws<ModelFormatException>(() => CheckpointDirectory.Open(dir.Path));
        Assert.Contains("model.safetensors", noWeights.Message);
        Assert.Contains(dir.Path, noWeights.Message);

        File.Delete(dir.File("config.json"));
        var noConfig = Assert.Throws<ModelFormatException>(() => CheckpointDirectory.Open(dir.Path));
        Assert.Contains("config.json", noConfig.Message);
    }

    [Fact]
    public void Weight_names_follow_hugging_face()
    {
        Assert.Equal("model.embed_tokens.weight", MixtralWeightNames.EmbedTokens);
        Assert.Equal("model.layers.7.self_attn.k_proj.weight", MixtralWeightNames.KProj(7));
        Assert.Equal("model.layers.31.block_sparse_moe.gate.weight", MixtralWeightNames.Router(31));
        Assert.Equal("model.layers.1.block_sparse_moe.experts.3.w2.weight", MixtralWeightNames.ExpertW2(1, 3));
        Assert.Equal("model.layers.0.post_attention_layernorm.weight", MixtralWeightNames.PostAttentionLayerNorm(0));
        Assert.Equal("model.layers.0.self_attn.q_proj.weight_scale", MixtralWeightNames.ScaleOf("model.layers.0.self_attn.q_proj.weight"));
        // embed + per layer (2 norms, q k v o, router, 3 per expert) + final norm (+ lm_head when untied).
        var config = MixtralConfig.Mixtral8x7B;
        Assert.Equal(1 + 32 * (2 + 4 + 1 + 3 * 8) + 1 + 1, MixtralWeightNames.All(config).Count());
        Assert.Equal(1 + 32 * (2 + 4 + 1 + 3 * 8) + 1, MixtralWeightNames.All(config with { TieWordEmbeddings = true }).Count());
    }

    [Fact]
    public void Tiny_model_in_the_repository_validates()
    {
        string dir = RepoPaths.TinyModel;

        using CheckpointDirectory checkpoint = CheckpointDirectory.Open(dir);
        checkpoint.ValidateMixtral();
        foreach (ExpectedTensor expected in MixtralWeightNames.All(checkpoint.Config))
        {
            var values = new float[checkpoint.Get(expected.Name).ElementCount];
            checkpoint.ReadAsFloat32(expected.Name, values);
            Assert.True(values.All(float.IsFinite), $"{expected.Name} holds NaN or infinity");
        }
    }
}
