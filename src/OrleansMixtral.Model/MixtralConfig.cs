using System.Text.Json;

namespace OrleansMixtral.Model;

/// <summary>The model shape and constants from a Hugging Face Mixtral config.json.</summary>
public sealed record MixtralConfig
{
    public required int HiddenSize { get; init; }
    /// <summary>Width of one expert's feed-forward layer.</summary>
    public required int IntermediateSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    /// <summary>Key/value heads (grouped-query attention: NumHeads / NumKvHeads query heads share one).</summary>
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int NumExperts { get; init; }
    public required int NumExpertsPerToken { get; init; }
    public required double RopeTheta { get; init; }
    public required double RmsNormEps { get; init; }
    public required int MaxPositionEmbeddings { get; init; }
    public required int VocabSize { get; init; }
    /// <summary>Attention window in tokens, or null for full attention.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary>lm_head shares model.embed_tokens.weight (and is absent from the checkpoint).</summary>
    public bool TieWordEmbeddings { get; init; }
    public required int BosTokenId { get; init; }
    public required int[] EosTokenIds { get; init; }
    /// <summary>Set for a pre-quantized checkpoint; null for plain float weights.</summary>
    public QuantizationConfig? Quantization { get; init; }

    public int QueryDim => NumHeads * HeadDim;
    public int KvDim => NumKvHeads * HeadDim;

    /// <summary>mistralai/Mixtral-8x7B-v0.1 as published.</summary>
    public static MixtralConfig Mixtral8x7B { get; } = new()
    {
        HiddenSize = 4096,
        IntermediateSize = 14336,
        NumLayers = 32,
        NumHeads = 32,
        NumKvHeads = 8,
        HeadDim = 128,
        NumExperts = 8,
        NumExpertsPerToken = 2,
        RopeTheta = 1e6,
        RmsNormEps = 1e-5,
        MaxPositionEmbeddings = 32768,
        VocabSize = 32000,
        SlidingWindow = null,
        TieWordEmbeddings = false,
        BosTokenId = 1,
        EosTokenIds = [2],
    };

    public static MixtralConfig Load(string path)
    {
        string fullPath = Path.GetFullPath(path);
        if (!File.Exists(fullPath)) throw new ModelFormatException(fullPath, null, "file not found");
        return Parse(File.ReadAllText(fullPath), fullPath);
    }

    /// <param name="sourceName">Named in error messages (normally the config.json path).</param>
    public static MixtralConfig Parse(string json, string sourceName = "config.json")
    {
        JsonDocument document;
        try { document = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new ModelFormatException(sourceName, null, $"not valid JSON: {e.Message}", e); }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(sourceName, null, "config is not a JSON object");
            var fields = new ConfigJsonReader(document.RootElement, sourceName);
            // Other architectures share many of these field names (a Llama or Mistral config would load as a broken model).
            if (fields.OptionalString("model_type") is { } modelType && modelType != "mixtral")
                throw fields.Error("model_type", $"'{modelType}' is not supported: only mixtral (MixtralForCausalLM) models");

            int hiddenSize = fields.Int("hidden_size");
            int numHeads = fields.Int("num_attention_heads");
            if (numHeads <= 0) throw fields.Error("num_attention_heads", $"must be positive, found {numHeads}");
            int? headDim = fields.OptionalInt("head_dim");
            if (headDim is null && hiddenSize % numHeads != 0)
                throw fields.Error("head_dim", $"absent, and hidden_size {hiddenSize} is not a multiple of num_attention_heads {numHeads}");

            var config = new MixtralConfig
            {
                HiddenSize = hiddenSize,
                IntermediateSize = fields.Int("intermediate_size"),
                NumLayers = fields.Int("num_hidden_layers"),
                NumHeads = numHeads,
                NumKvHeads = fields.Int("num_key_value_heads"),
                HeadDim = headDim ?? hiddenSize / numHeads,
                NumExperts = fields.Int("num_local_experts"),
                NumExpertsPerToken = fields.Int("num_experts_per_tok"),
                RopeTheta = ReadRopeTheta(fields),
                RmsNormEps = fields.Double("rms_norm_eps"),
                MaxPositionEmbeddings = fields.Int("max_position_embeddings"),
                VocabSize = fields.Int("vocab_size"),
                SlidingWindow = fields.OptionalInt("sliding_window"),
                TieWordEmbeddings = fields.OptionalBool("tie_word_embeddings", false),
                BosTokenId = fields.Int("bos_token_id"),
                EosTokenIds = fields.IntOrIntArray("eos_token_id"),
                Quantization = fields.OptionalObject("quantization_config") is { } section ? QuantizationConfig.Parse(section) : null,
            };
            config.Validate(sourceName);
            return config;
        }
    }

    /// <summary>
    /// transformers 4 writes a top-level rope_theta; transformers 5 moves it into rope_parameters.
    /// Scaled RoPE variants (yarn, linear, ...) would silently change outputs, so they are refused.
    /// </summary>
    static double ReadRopeTheta(ConfigJsonReader json)
    {
        if (json.OptionalObject("rope_scaling") is { } scaling) CheckDefaultRope(scaling);
        if (json.OptionalObject("rope_parameters") is { } parameters)
        {
            CheckDefaultRope(parameters);
            return parameters.Double("rope_theta");
        }
        return json.Double("rope_theta");
    }

    static void CheckDefaultRope(ConfigJsonReader section)
    {
        string field = section.Has("rope_type") ? "rope_type" : "type";
        string? ropeType = section.OptionalString(field);
        if (ropeType is not null && ropeType != "default")
            throw section.Error(field, $"RoPE scaling '{ropeType}' is not supported (only default)");
    }

    /// <summary>Checks the values make a runnable model; errors name the source and the field.</summary>
    public void Validate(string sourceName = "config")
    {
        void Positive(string field, long value)
        {
            if (value <= 0) throw new ModelFormatException(sourceName, field, $"must be positive, found {value}");
        }
        Positive("hidden_size", HiddenSize);
        Positive("intermediate_size", IntermediateSize);
        Positive("num_hidden_layers", NumLayers);
        Positive("num_attention_heads", NumHeads);
        Positive("num_key_value_heads", NumKvHeads);
        Positive("head_dim", HeadDim);
        Positive("num_local_experts", NumExperts);
        Positive("num_experts_per_tok", NumExpertsPerToken);
        Positive("max_position_embeddings", MaxPositionEmbeddings);
        Positive("vocab_size", VocabSize);
        if (SlidingWindow is { } window) Positive("sliding_window", window);

        ModelFormatException Bad(string field, string problem) => new(sourceName, field, problem);
        if (HeadDim % 2 != 0) throw Bad("head_dim", $"RoPE rotates pairs, so it must be even, found {HeadDim}");
        if (NumHeads % NumKvHeads != 0)
            throw Bad("num_key_value_heads", $"{NumKvHeads} does not divide num_attention_heads {NumHeads}");
        if (NumExpertsPerToken > NumExperts)
            throw Bad("num_experts_per_tok", $"{NumExpertsPerToken} exceeds num_local_experts {NumExperts}");
        if (!(RmsNormEps > 0) || !double.IsFinite(RmsNormEps)) throw Bad("rms_norm_eps", $"must be a positive number, found {RmsNormEps}");
        if (!(RopeTheta > 0) || !double.IsFinite(RopeTheta)) throw Bad("rope_theta", $"must be a positive number, found {RopeTheta}");
        if ((uint)BosTokenId >= (uint)VocabSize) throw Bad("bos_token_id", $"{BosTokenId} is outside the vocabulary of {VocabSize}");
        foreach (int eos in EosTokenIds)
            if ((uint)eos >= (uint)VocabSize) throw Bad("eos_token_id", $"{eos} is outside the vocabulary of {VocabSize}");
    }

    public MixtralParameterCounts ParameterCounts() => new(
        Embedding: (long)VocabSize * HiddenSize,
        LmHead: TieWordEmbeddings ? 0 : (long)VocabSize * HiddenSize,
        AttentionPerLayer: 2L * QueryDim * HiddenSize + 2L * KvDim * HiddenSize,
        RouterPerLayer: (long)NumExperts * HiddenSize,
        PerExpert: 3L * IntermediateSize * HiddenSize,
        NormsPerLayer: 2L * HiddenSize,
        FinalNorm: HiddenSize,
        Layers: NumLayers,
        Experts: NumExperts,
        ExpertsPerToken: NumExpertsPerToken);
}

/// <summary>Parameter counts by part. A tied lm_head counts zero (it is the embedding).</summary>
public sealed record MixtralParameterCounts(
    long Embedding,
    long LmHead,
    long AttentionPerLayer,
    long RouterPerLayer,
    long PerExpert,
    long NormsPerLayer,
    long FinalNorm,
    int Layers,
    int Experts,
    int ExpertsPerToken)
{
    long LayerWith(int experts) => AttentionPerLayer + RouterPerLayer + experts * PerExpert + NormsPerLayer;

    public long PerLayer => LayerWith(Experts);

    /// <summary>Every weight in the checkpoint.</summary>
    public long Total => Embedding + LmHead + Layers * PerLayer + FinalNorm;

    /// <summary>Weights one token touches: only its top-k experts of each layer.</summary>
    public long ActivePerToken => Embedding + LmHead + Layers * LayerWith(ExpertsPerToken) + FinalNorm;
}
