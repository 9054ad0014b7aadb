using OrleansMixtral.Tests;

namespace OrleansMixtral.Tokenization.Tests;

/// <summary>tools/tokenizer/make-tokenizer.mjs regenerates the bundled tokenizer files exactly.</summary>
public sealed class TokenizerToolTests
{
    [Fact]
    public void Rerunning_the_tool_reproduces_tokenizer_json_byte_for_byte()
    {
        JsReference.SkipWithoutNode();
        var outDir = Directory.CreateTempSubdirectory("tokenizer-tool-").FullName;
        try
        {
            JsReference.RunTool("make-tokenizer.mjs", outDir);
            foreach (var file in new[] { "tokenizer.json", "tokenizer_config.json" })
                Assert.True(File.ReadAllBytes(Path.Combine(RepoPaths.TinyModel, file)).AsSpan()
                    .SequenceEqual(File.ReadAllBytes(Path.Combine(outDir, file))), $"{file} differs from the tool's output");
        }
        finally
        {
            Directory.Delete(outDir, recursive: true);
        }
    }
}
