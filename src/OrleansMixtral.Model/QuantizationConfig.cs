using System.Text.Json.Nodes;

namespace OrleansMixtral.Model;

/// <summary>
/// The "quantization_config" section of a pre-quantized checkpoint's config.json. The only scheme is int8
/// weight-only: each linear weight is stored as I8 [rows, cols] plus an F32 "{...}.weight_scale" [rows],
/// with weight ≈ q × scale[row].
/// </summary>
public sealed record QuantizationConfig
{
    public const string Int8WeightOnly = "int8_weight_only";
    public const string PerOutputChannel = "per_output_channel";

    public string Method { get; init; } = Int8WeightOnly;
    public int Bits { get; init; } = 8;
    public string Granularity { get; init; } = PerOutputChannel;
    public bool Symmetric { get; init; } = true;

    /// <summary>model.embed_tokens.weight is I8 + scale (else kept in its source dtype).</summary>
    public bool QuantizedEmbeddings { get; init; }

    /// <summary>lm_head.weight is I8 + scale (else kept in its source dtype).</summary>
    public bool QuantizedLmHead { get; init; }

    internal static QuantizationConfig Parse(ConfigJsonReader section)
    {
        string method = section.String("quant_method");
        if (method != Int8WeightOnly)
            throw section.Error("quant_method", $"unsupported quantization '{method}' (only {Int8WeightOnly})");
        int bits = section.OptionalInt("bits") ?? 8;
        if (bits != 8) throw section.Error("bits", $"must be 8, found {bits}");
        string granularity = section.OptionalString("granularity") ?? PerOutputChannel;
        if (granularity != PerOutputChannel) throw section.Error("granularity", $"unsupported granularity '{granularity}'");
        if (!section.OptionalBool("symmetric", true)) throw section.Error("symmetric", "only symmetric quantization is supported");

        return new QuantizationConfig
        {
            QuantizedEmbeddings = section.OptionalBool("quantized_embeddings", false),
            QuantizedLmHead = section.OptionalBool("quantized_lm_head", false),
        };
    }

    public JsonObject ToJson() => new()
    {
        ["quant_method"] = Method,
        ["bits"] = Bits,
        ["granularity"] = Granularity,
        ["symmetric"] = Symmetric,
        ["quantized_embeddings"] = QuantizedEmbeddings,
        ["quantized_lm_head"] = QuantizedLmHead,
    };
}
