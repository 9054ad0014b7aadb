using System.Text.Json.Nodes;
using OrleansMixtral.Model;

namespace OrleansMixtral.Model.Tests;

public class MixtralConfigTests
{
    /// <summary>config.json of mistralai/Mixtral-8x7B-v0.1 as published (transformers 4 layout).</summary>
    const string Mixtral8x7BJson = """
        {
          "architectures": ["MixtralForCausalLM"],
          "attention_dropout": 0.0,
          "bos_token_id": 1,
          "eos_token_id": 2,
          "hidden_act": "silu",
          "hidden_size": 4096,
          "initializer_range": 0.02,
          "intermediate_size": 14336,
          "max_position_embeddings": 32768,
          "model_type": "mixtral",
          "num_attention_heads": 32,
          "num_experts_per_tok": 2,
          "num_hidden_layers": 32,
          "num_key_value_heads": 8,
          "num_local_experts": 8,
          "output_router_logits": false,
          "rms_norm_eps": 1e-05,
          "rope_theta": 1e6,
          "router_aux_loss_coef": 0.02,
          "sliding_window": null,
          "tie_word_embeddings": false,
          "torch_dtype": "bfloat16",
          "transformers_version": "4.36.0.dev0",
          "use_cache": true,
          "vocab_size": 32000
        }
        """;

    [Fact]
    public void Parses_the_published_Mixtral_8x7B_config()
    {
        MixtralConfig config = MixtralConfig.Parse(Mixtral8x7BJson);
        AssertIsMixtral8x7B(config);
        Assert.Null(config.Quantization);
    }

    [Fact]
    public void Builtin_Mixtral_8x7B_has_the_real_shape()
    {
        AssertIsMixtral8x7B(MixtralConfig.Mixtral8x7B);
        MixtralConfig.Mixtral8x7B.Validate();
    }

    static void AssertIsMixtral8x7B(MixtralConfig config)
    {
        Assert.Equal(4096, config.HiddenSize);
        Assert.Equal(14336, config.IntermediateSize);
        Assert.Equal(32, config.NumLayers);
        Assert.Equal(32, config.NumHeads);
        Assert.Equal(8, config.NumKvHeads);
        Assert.Equal(128, config.HeadDim);
        Assert.Equal(8, config.NumExperts);
        Assert.Equal(2, config.NumExpertsPerToken);
        Assert.Equal(1e6, config.RopeTheta);
        Assert.Equal(1e-5, config.RmsNormEps);
        Assert.Equal(32768, config.MaxPositionEmbeddings);
        Assert.Equal(32000, config.VocabSize);
        Assert.Null(config.SlidingWindow);
        Assert.False(config.TieWordEmbeddings);
        Assert.Equal(1, config.BosTokenId);
        Assert.Equal([2], config.EosTokenIds);
    }

    [Fact]
    public void Parameter_counts_match_the_published_46_7B_total_and_12_9B_active()
    {
        MixtralParameterCounts counts = MixtralConfig.Mixtral8x7B.ParameterCounts();
        // Per layer: attention 2·4096² + 2·1024·4096 = 41,943,040; router 32,768; one expert 3·14336·4096 = 176,160,768; norms 8,192.
        Assert.Equal(41_943_040, counts.AttentionPerLayer);
        Assert.Equal(176_160_768, counts.PerExpert);
        Assert.Equal(1_451_270_144, counts.PerLayer);
        // 32 layers + embeddings and lm_head (32000·4096 each) + final norm.
        Assert.Equal(46_702_792_704, counts.Total);
        // Only 2 of 8 experts per layer run for a token.
        Assert.Equal(12_879_925_248, counts.ActivePerToken);
    }

    [Fact]
    public void Parameter_counts_of_a_tiny_tied_model()
    {
        var tied = MixtralConfig.Parse(SyntheticMixtral.ConfigJson(tied: true));
        var untied = MixtralConfig.Parse(SyntheticMixtral.ConfigJson(tied: false));
        // embed 64·16 = 1024; per layer: attention 768, router 64, experts 4·1536 = 6144, norms 32 = 7008; final norm 16.
        Assert.Equal(1024 + 1024 + 2 * 7008 + 16, untied.ParameterCounts().Total);
        Assert.Equal(1024 + 2 * 7008 + 16, tied.ParameterCounts().Total);
        Assert.Equal(1024 + 1024 + 2 * (768 + 64 + 2 * 1536 + 32) + 16, untied.ParameterCounts().ActivePerToken);
    }

    [Fact]
    public void Parses_the_transformers_5_layout_with_rope_parameters()
    {
        JsonObject json = Mutable(Mixtral8x7BJson);
        json.Remove("rope_theta");
        json["rope_parameters"] = new JsonObject { ["rope_theta"] = 10000.0, ["rope_type"] = "default" };
        json["head_dim"] = 64;
        json["eos_token_id"] = new JsonArray(2, 7);
        json["sliding_window"] = 4096;
        json["tie_word_embeddings"] = true;

        MixtralConfig config = MixtralConfig.Parse(json.ToJsonString());

        Assert.Equal(10000.0, config.RopeTheta);
        Assert.Equal(64, config.HeadDim);
        Assert.Equal(32 * 64, config.QueryDim);
        Assert.Equal([2, 7], config.EosTokenIds);
        Assert.Equal(4096, config.SlidingWindow);
        Assert.True(config.TieWordEmbeddings);
    }

    [Fact]
    public void Optional_fields_take_their_defaults()
    {
        JsonObject json = Mutable(Mixtral8x7BJson);
        json.Remove("sliding_window");
        json.Remove("tie_word_embeddings");
        json["head_dim"] = null;

        MixtralConfig config = MixtralConfig.Parse(json.ToJsonString());

        Assert.Null(config.SlidingWindow);
        Assert.False(config.TieWordEmbeddings);
        Assert.Equal(4096 / 32, config.HeadDim);
    }

    [Theory]
    [InlineData("hidden_size")]
    [InlineData("intermediate_size")]
    [InlineData("num_hidden_layers")]
    [InlineData("num_key_value_heads")]
    [InlineData("num_local_experts")]
    [InlineData("num_experts_per_tok")]
    [InlineData("rms_norm_eps")]
    [InlineData("rope_theta")]
    [InlineData("vocab_size")]
    [InlineData("eos_token_id")]
    public void Missing_required_field_names_file_and_field(string field)
    {
        using var dir = new TempDir();
        JsonObject json = Mutable(Mixtral8x7BJson);
        json.Remove(field);
        string path = dir.File("config.json");
        File.WriteAllText(path, json.ToJsonString());

        var error = Assert.Throws<ModelFormatException>(() => MixtralConfig.Load(path));

        Assert.Contains(path, error.Message);
        Assert.Contains($"'{field}'", error.Message);
        Assert.Contains("missing", error.Message);
    }

    [Fact]
    public void Rope_parameters_without_rope_theta_is_an_error()
    {
        JsonObject json = Mutable(Mixtral8x7BJson);
        json.Remove("rope_theta");
        json["rope_parameters"] = new JsonObject { ["rope_type"] = "default" };

        var error = Assert.Throws<ModelFormatException>(() => MixtralConfig.Parse(json.ToJsonString(), "x/config.json"));
        Assert.Contains("x/config.json", error.Message);
        Assert.Contains("'rope_parameters.rope_theta'", error.Message);
    }

    [Theory]
    [InlineData("hidden_size", "\"4096\"", "must be an integer")]
    [InlineData("num_hidden_layers", "32.5", "must be an integer")]
    [InlineData("rms_norm_eps", "\"1e-5\"", "must be a number")]
    [InlineData("tie_word_embeddings", "\"yes\"", "must be true or false")]
    [InlineData("eos_token_id", "[]", "empty")]
    [InlineData("num_experts_per_tok", "9", "exceeds num_local_experts")]
    [InlineData("num_key_value_heads", "5", "does not divide")]
    [InlineData("vocab_size", "0", "must be positive")]
    [InlineData("rope_scaling", """{"rope_type":"yarn","factor":4.0}""", "not supported")]
    [InlineData("model_type", "\"llama\"", "only mixtral")]
    [InlineData("model_type", "7", "must be a string")]
    [InlineData("hidden_size", "1e12", "out of range")]
    [InlineData("num_hidden_layers", "-3000000000", "out of range")]
    [InlineData("max_position_embeddings", "1e400", "out of range")]
    public void Wrong_type_or_value_names_the_field(string field, string valueJson, string problem)
    {
        JsonObject json = Mutable(Mixtral8x7BJson);
        json[field] = JsonNode.Parse(valueJson);

        var error = Assert.Throws<ModelFormatException>(() => MixtralConfig.Parse(json.ToJsonString(), "the/config.json"));

        Assert.Contains("the/config.json", error.Message);
        Assert.Contains(field, error.Message);
        Assert.Contains(problem, error.Message);
    }

    [Fact]
    public void Integers_written_as_whole_floats_are_read_and_a_missing_model_type_is_accepted()
    {
        JsonObject json = Mutable(Mixtral8x7BJson);
        json["num_hidden_layers"] = JsonNode.Parse("3.2e1");
        json.Remove("model_type");

        Assert.Equal(32, MixtralConfig.Parse(json.ToJsonString()).NumLayers);
        var error = Assert.Throws<ModelFormatException>(() =>
        {
            json["hidden_size"] = JsonNode.Parse("1e12");
            MixtralConfig.Parse(json.ToJsonString(), "big/config.json");
        });
        Assert.DoesNotContain("must be an integer", error.Message);
    }

    [Fact]
    public void Invalid_json_names_the_file()
    {
        var error = Assert.Throws<ModelFormatException>(() => MixtralConfig.Parse("{ \"hidden_size\": ", "broken/config.json"));
        Assert.Contains("broken/config.json", error.Message);
    }

    [Fact]
    public void Reads_the_int8_quantization_config()
    {
        JsonObject json = Mutable(Mixtral8x7BJson);
        json["quantization_config"] = JsonNode.Parse("""
            {"quant_method": "int8_weight_only", "bits": 8, "granularity": "per_output_channel",
             "symmetric": true, "quantized_embeddings": false, "quantized_lm_head": true}
            """);

        QuantizationConfig? quantization = MixtralConfig.Parse(json.ToJsonString()).Quantization;

        Assert.NotNull(quantization);
        Assert.Equal("int8_weight_only", quantization.Method);
        Assert.Equal(8, quantization.Bits);
        Assert.False(quantization.QuantizedEmbeddings);
        Assert.True(quantization.QuantizedLmHead);
    }

    [Theory]
    [InlineData("""{"quant_method": "gptq", "bits": 4}""", "quantization_config.quant_method")]
    [InlineData("""{"quant_method": "int8_weight_only", "bits": 4}""", "quantization_config.bits")]
    [InlineData("""{"quant_method": "int8_weight_only", "symmetric": false}""", "quantization_config.symmetric")]
    [InlineData("""{"bits": 8}""", "quantization_config.quant_method")]
    public void Unsupported_quantization_is_refused(string section, string field)
    {
        JsonObject json = Mutable(Mixtral8x7BJson);
        json["quantization_config"] = JsonNode.Parse(section);

        var error = Assert.Throws<ModelFormatException>(() => MixtralConfig.Parse(json.ToJsonString(), "q/config.json"));
        Assert.Contains($"'{field}'", error.Message);
    }

    static JsonObject Mutable(string json) => JsonNode.Parse(json)!.AsObject();
}
