using System.Text.Json;

namespace OrleansMixtral.Cli.Tests;

public sealed class QuantizeTests : IDisposable
{
    readonly string _dir = Path.Combine(Path.GetTempPath(), "mixtral-cli-q8-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void Quantized_checkpoint_generates_what_int8_on_the_bf16_checkpoint_generates()
    {
        var q = Cli.Run("quantize", Cli.Model, _dir);
        Assert.True(q.ExitCode == 0, q.ToString());
        Assert.Contains("int8", q.Out);
        using (var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "config.json"))))
            Assert.Equal("int8_weight_only", config.RootElement.GetProperty("quantization_config").GetProperty("quant_method").GetString());
        Assert.True(File.Exists(Path.Combine(_dir, "tokenizer.json")));

        string[] prompt = ["--prompt", "The committee said on Friday that the", "--temperature", "0", "--max-tokens", "32", "--ignore-eos"];
        var fromQuantized = Cli.Run(["generate", "--model", _dir, .. prompt]);
        var onTheFly = Cli.Run(["generate", "--model", Cli.Model, "--int8", .. prompt]);

        Assert.True(fromQuantized.ExitCode == 0, fromQuantized.ToString());
        Assert.Contains("cpu-int8 (pre-quantized)", fromQuantized.Err); // a pre-quantized checkpoint implies --int8
        Assert.Contains("cpu-int8", onTheFly.Err);
        Assert.Equal(onTheFly.Out, fromQuantized.Out);
        Assert.Equal(32, TokenCount(fromQuantized.Err));
        Assert.NotEqual("", fromQuantized.Out);

        // A second run into the same directory refuses to mix weights.
        var again = Cli.Run("quantize", Cli.Model, _dir);
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("already holds", Assert.Single(again.ErrLines));

        // Quantizing a quantized checkpoint is refused too.
        var twice = Cli.Run("quantize", _dir, _dir + "-2");
        Assert.Equal(1, twice.ExitCode);
        Assert.Contains("already quantized", Assert.Single(twice.ErrLines));
        Assert.False(Directory.Exists(_dir + "-2") && Directory.EnumerateFiles(_dir + "-2").Any());
        if (Directory.Exists(_dir + "-2")) Directory.Delete(_dir + "-2", recursive: true);
    }

    static int TokenCount(string err)
    {
        int at = err.IndexOf("[", StringComparison.Ordinal);
        return int.Parse(err[(at + 1)..err.IndexOf(" tokens", at, StringComparison.Ordinal)]);
    }
}
