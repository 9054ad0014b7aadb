using OrleansMixtral.Tests;

namespace OrleansMixtral.Tokenization.Tests;

internal static class TestTokenizer
{
    static readonly Lazy<MistralTokenizer> Loaded = new(() => MistralTokenizer.Load(RepoPaths.TinyModel));

    public static MistralTokenizer Instance => Loaded.Value;

    /// <summary>"text: ours [..] vs reference [..]" for the first few differing lines, for failure messages.</summary>
    public static string DescribeMismatches(IEnumerable<(string Text, int[] Ours, int[] Reference)> mismatches, int total)
    {
        var list = mismatches.ToList();
        return $"{list.Count} of {total} lines differ; first ones:\n" + string.Join("\n", list.Take(5).Select(m =>
            $"  {System.Text.Json.JsonSerializer.Serialize(m.Text)}\n    ours [{string.Join(",", m.Ours)}]\n    ref  [{string.Join(",", m.Reference)}]"));
    }
}
