namespace OrleansMixtral.Engine.Tests;

/// <summary>
/// The output text of a completion (<see cref="GenerationRequest.ContinuesPrompt"/>) is what it adds to the prompt's text,
/// its leading space kept; a reply's (chat) starts a text of its own.
/// </summary>
public sealed class ContinuationTextTests
{
    readonly HfReference _hf = HfReference.Load();

    [Fact]
    public async Task A_completion_continues_the_prompt_text_and_a_reply_starts_its_own()
    {
        await using var engine = TinyModel.Engine();
        var tokenizer = TinyModel.Tokenizer;
        foreach (var (prompt, ids, _) in _hf.Greedy)
        {
            var promptIds = _hf.Prompts[prompt];
            var sampling = SamplingOptions.Greedy(ids.Length) with { IgnoreEos = true };
            var completion = await engine.Submit(new GenerationRequest(promptIds, sampling) { ContinuesPrompt = true }).ReadToEndAsync();
            var reply = await engine.Submit(new GenerationRequest(promptIds, sampling)).ReadToEndAsync();
            Assert.Equal(ids, completion.OutputTokens);
            // prompt text + completion = the text of all the ids (Decode is Hugging Face's, checked in the tokenizer's tests)
            Assert.Equal(tokenizer.Decode([.. promptIds, .. ids]), tokenizer.Decode(promptIds) + completion.Text);
            Assert.Equal(tokenizer.Decode(ids), reply.Text);
        }
        // the example
        var city = tokenizer.Encode("The history of the city");
        var text = (await engine.Submit(new GenerationRequest(city, SamplingOptions.Greedy(8)) { ContinuesPrompt = true }).ReadToEndAsync()).Text;
        Assert.StartsWith(" ", text);
    }
}
