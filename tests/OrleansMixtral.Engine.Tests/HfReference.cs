using System.Text.Json;
using OrleansMixtral.Model;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Engine.Tests;

/// <summary>The Hugging Face transformers (fp32) outputs of the tiny model, written by tools/tiny-model/make_fixtures.py.</summary>
public sealed class HfReference
{
    public static HfReference Load() => Cached.Value;
    static readonly Lazy<HfReference> Cached = new(() => new HfReference());

    HfReference()
    {
        var dir = Path.Combine(RepoPaths.Fixtures, "tiny-mixtral");
        using var prompts = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "prompts.json")));
        Prompts = prompts.RootElement.GetProperty("prompts").EnumerateArray()
            .Select(p => p.GetProperty("ids").EnumerateArray().Select(i => i.GetInt32()).ToArray()).ToArray();
        var reference = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "reference.json"))).RootElement;
        Top20 = reference.GetProperty("top20").EnumerateArray().Select(t => (
            t.GetProperty("prompt").GetInt32(),
            t.GetProperty("ids").EnumerateArray().Select(r => r.EnumerateArray().Select(i => i.GetInt32()).ToArray()).ToArray(),
            t.GetProperty("logits").EnumerateArray().Select(r => r.EnumerateArray().Select(v => v.GetSingle()).ToArray()).ToArray())).ToArray();
        Greedy = reference.GetProperty("greedy").EnumerateArray().Select(g => (
            g.GetProperty("prompt").GetInt32(),
            g.GetProperty("ids").EnumerateArray().Select(i => i.GetInt32()).ToArray(),
            g.GetProperty("text").GetString()!)).ToArray();
        var router = reference.GetProperty("router");
        RouterPrompt = router.GetProperty("prompt").GetInt32();
        RouterExperts = router.GetProperty("layers").EnumerateArray().Select(l => l.GetProperty("experts").EnumerateArray()
            .Select(r => r.EnumerateArray().Select(i => i.GetInt32()).ToArray()).ToArray()).ToArray();
        RouterWeights = router.GetProperty("layers").EnumerateArray().Select(l => l.GetProperty("weights").EnumerateArray()
            .Select(r => r.EnumerateArray().Select(i => i.GetSingle()).ToArray()).ToArray()).ToArray();
        Perplexity = reference.GetProperty("perplexity").EnumerateObject()
            .Where(p => p.Value.ValueKind == JsonValueKind.Object)
            .ToDictionary(p => p.Name, p => p.Value.GetProperty("perplexity").GetDouble());
        using var logits = SafeTensorsFile.Open(Path.Combine(dir, "last_logits.safetensors"));
        LastLogits = logits.Names.ToDictionary(n => int.Parse(n["prompt_".Length..]), n =>
        {
            var v = new float[logits.Get(n).ElementCount];
            logits.ReadAsFloat32(n, v);
            return v;
        });
        HeldOutText = File.ReadAllText(Path.Combine(dir, "heldout.txt"));
    }

    public int[][] Prompts { get; }
    public (int Prompt, int[][] Ids, float[][] Logits)[] Top20 { get; }
    public (int Prompt, int[] Ids, string Text)[] Greedy { get; }
    public int RouterPrompt { get; }
    /// <summary>[layer][position] → the two experts, best first.</summary>
    public int[][][] RouterExperts { get; }
    public float[][][] RouterWeights { get; }
    public Dictionary<string, double> Perplexity { get; }
    public Dictionary<int, float[]> LastLogits { get; }
    public string HeldOutText { get; }
}
