namespace OrleansMixtral.Model;

/// <summary>What a weight does, which decides how it may be stored (only Linear, and optionally Embedding/LmHead, go int8).</summary>
public enum WeightRole
{
    Embedding,
    Norm,
    /// <summary>Attention q/k/v/o and expert w1/w2/w3 projections.</summary>
    Linear,
    /// <summary>The MoE gate [experts, hidden]: small and precision-sensitive, never quantized.</summary>
    Router,
    LmHead,
}

/// <summary>A tensor a Mixtral checkpoint must hold, with its shape.</summary>
public sealed record ExpectedTensor(string Name, long[] Shape, WeightRole Role);

/// <summary>Hugging Face tensor names of a Mixtral checkpoint. Linear weights are [out_features, in_features].</summary>
public static class MixtralWeightNames
{
    public const string EmbedTokens = "model.embed_tokens.weight";
    public const string Norm = "model.norm.weight";
    public const string LmHead = "lm_head.weight";

    static string Layer(int layer) => $"model.layers.{layer}";

    public static string InputLayerNorm(int layer) => $"{Layer(layer)}.input_layernorm.weight";
    public static string PostAttentionLayerNorm(int layer) => $"{Layer(layer)}.post_attention_layernorm.weight";

    /// <summary>[heads × head_dim, hidden]</summary>
    public static string QProj(int layer) => $"{Layer(layer)}.self_attn.q_proj.weight";
    /// <summary>[kv_heads × head_dim, hidden]</summary>
    public static string KProj(int layer) => $"{Layer(layer)}.self_attn.k_proj.weight";
    /// <summary>[kv_heads × head_dim, hidden]</summary>
    public static string VProj(int layer) => $"{Layer(layer)}.self_attn.v_proj.weight";
    /// <summary>[hidden, heads × head_dim]</summary>
    public static string OProj(int layer) => $"{Layer(layer)}.self_attn.o_proj.weight";

    /// <summary>The router, [experts, hidden].</summary>
    public static string Router(int layer) => $"{Layer(layer)}.block_sparse_moe.gate.weight";

    /// <summary>w1, the gate projection (goes through SiLU), [intermediate, hidden].</summary>
    public static string ExpertW1(int layer, int expert) => $"{Layer(layer)}.block_sparse_moe.experts.{expert}.w1.weight";
    /// <summary>w2, the down projection, [hidden, intermediate].</summary>
    public static string ExpertW2(int layer, int expert) => $"{Layer(layer)}.block_sparse_moe.experts.{expert}.w2.weight";
    /// <summary>w3, the up projection, [intermediate, hidden].</summary>
    public static string ExpertW3(int layer, int expert) => $"{Layer(layer)}.block_sparse_moe.experts.{expert}.w3.weight";

    /// <summary>The F32 per-row scale of an int8 weight: "x.weight" → "x.weight_scale".</summary>
    public static string ScaleOf(string weightName)
    {
        const string suffix = ".weight";
        if (!weightName.EndsWith(suffix, StringComparison.Ordinal))
            throw new ArgumentException($"'{weightName}' is not a weight name (no '{suffix}' suffix)", nameof(weightName));
        return weightName[..^suffix.Length] + ".weight_scale";
    }

    /// <summary>
    /// Every tensor the config implies, in checkpoint order (embedding, layer by layer, final norm, lm_head).
    /// lm_head is left out when the embeddings are tied.
    /// </summary>
    public static IEnumerable<ExpectedTensor> All(MixtralConfig config)
    {
        long hidden = config.HiddenSize, inter = config.IntermediateSize;
        yield return new(EmbedTokens, [config.VocabSize, hidden], WeightRole.Embedding);
        for (int l = 0; l < config.NumLayers; l++)
        {
            yield return new(InputLayerNorm(l), [hidden], WeightRole.Norm);
            yield return new(QProj(l), [config.QueryDim, hidden], WeightRole.Linear);
            yield return new(KProj(l), [config.KvDim, hidden], WeightRole.Linear);
            yield return new(VProj(l), [config.KvDim, hidden], WeightRole.Linear);
            yield return new(OProj(l), [hidden, config.QueryDim], WeightRole.Linear);
            yield return new(PostAttentionLayerNorm(l), [hidden], WeightRole.Norm);
            yield return new(Router(l), [config.NumExperts, hidden], WeightRole.Router);
            for (int e = 0; e < config.NumExperts; e++)
            {
                yield return new(ExpertW1(l, e), [inter, hidden], WeightRole.Linear);
                yield return new(ExpertW2(l, e), [hidden, inter], WeightRole.Linear);
                yield return new(ExpertW3(l, e), [inter, hidden], WeightRole.Linear);
            }
        }
        yield return new(Norm, [hidden], WeightRole.Norm);
        if (!config.TieWordEmbeddings) yield return new(LmHead, [config.VocabSize, hidden], WeightRole.LmHead);
    }

    /// <summary>Whether a quantized checkpoint under <paramref name="scheme"/> stores this weight as I8 + scale.</summary>
    public static bool IsQuantized(WeightRole role, QuantizationConfig? scheme) => scheme is not null && role switch
    {
        WeightRole.Linear => true,
        WeightRole.Embedding => scheme.QuantizedEmbeddings,
        WeightRole.LmHead => scheme.QuantizedLmHead,
        _ => false,
    };
}
