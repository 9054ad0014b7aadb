using OrleansMixtral.Tests;

namespace OrleansMixtral.Tokenization.Tests;

public sealed class LoadTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("tokenizer-load-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Load_ReadsSpecialIds()
    {
        MistralTokenizer tokenizer = MistralTokenizer.Load(RepoPaths.TinyModel);
        Assert.Equal((1, 2, 0, 32000), (tokenizer.BosId, tokenizer.EosId, tokenizer.UnkId, tokenizer.VocabSize));
    }

    [Fact]
    public void Load_AcceptsTheFileItself_WithoutConfig()
    {
        string file = Path.Combine(_dir, "tokenizer.json");
        File.Copy(Path.Combine(RepoPaths.TinyModel, "tokenizer.json"), file);
        MistralTokenizer tokenizer = MistralTokenizer.Load(file);
        Assert.Equal([1, 22557, 1526, 28808], tokenizer.Encode("Hello world!"));
        Assert.Equal((1, 2), (tokenizer.BosId, tokenizer.EosId));
    }

    [Theory]
    [InlineData("{ not json")]
    [InlineData("[]")]
    [InlineData("""{"model": {"type": "Unigram", "vocab": [], "merges": []}}""")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"<unk>": 0, "a": 1}, "merges": []}}""")]
    public void InvalidTokenizerJson_ThrowsFormatExceptionNamingTheFile(string json)
    {
        string file = Path.Combine(_dir, "tokenizer.json");
        File.WriteAllText(file, json);
        var error = Assert.Throws<TokenizerFormatException>(() => MistralTokenizer.Load(_dir));
        Assert.Equal(file, error.FilePath);
        Assert.Contains(file, error.Message);
    }

    [Fact]
    public void MergeOfUnknownPieces_ThrowsFormatException()
    {
        string text = File.ReadAllText(Path.Combine(RepoPaths.TinyModel, "tokenizer.json"));
        string file = Path.Combine(_dir, "tokenizer.json");
        File.WriteAllText(file, text.Replace("\"merges\": [", "\"merges\": [\n      \"nosuch piece\","));
        var error = Assert.Throws<TokenizerFormatException>(() => MistralTokenizer.Load(file));
        Assert.Contains("nosuch", error.Message);
    }

    [Fact]
    public void InvalidConfig_ThrowsFormatExceptionNamingIt()
    {
        File.Copy(Path.Combine(RepoPaths.TinyModel, "tokenizer.json"), Path.Combine(_dir, "tokenizer.json"));
        string config = Path.Combine(_dir, "tokenizer_config.json");
        File.WriteAllText(config, """{"bos_token": "<nope>"}""");
        var error = Assert.Throws<TokenizerFormatException>(() => MistralTokenizer.Load(_dir));
        Assert.Equal(config, error.FilePath);
    }
}
