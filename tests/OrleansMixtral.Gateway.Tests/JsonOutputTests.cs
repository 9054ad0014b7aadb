using System.Text;
using System.Text.Json;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>The gateway's JSON is UTF-8 as it is: quotes as \", apostrophes and non-ASCII unescaped (not \u0027, \u0022, \u00e9).</summary>
[Collection(GatewayCollection.Name)]
public sealed class JsonOutputTests(GatewayFixture fixture)
{
    const string Prompt = "He said, \"I don't know\" at the café & <left>";

    static void AssertUnescaped(string raw)
    {
        Assert.DoesNotContain("\\u00", raw);
        Assert.Contains("He said, \\\"I don't know\\\" at the café & <left>", raw);
    }

    [Fact(Timeout = 60_000)]
    public async Task Replies_whole_and_streamed_and_errors_are_written_without_html_escapes()
    {
        var body = $$"""{"model":"tiny-mixtral","prompt":{{JsonSerializer.Serialize(Prompt)}},"max_tokens":2,"temperature":0,"echo":true}""";
        using var whole = await fixture.Http.SendAsync(fixture.Post("/v1/completions", body));
        var raw = Encoding.UTF8.GetString(await whole.Content.ReadAsByteArrayAsync());
        AssertUnescaped(raw);
        Assert.StartsWith(Prompt, JsonDocument.Parse(raw).RootElement.GetProperty("choices")[0].GetProperty("text").GetString());

        using var streamed = await fixture.Http.SendAsync(fixture.Post("/v1/completions", body.Replace("}", ""","stream":true}""")), HttpCompletionOption.ResponseHeadersRead);
        AssertUnescaped(Encoding.UTF8.GetString(await streamed.Content.ReadAsByteArrayAsync()));

        // an error naming what was sent
        using var error = await fixture.Http.SendAsync(fixture.Post("/v1/completions", """{"model":"l'modèle","prompt":"hi"}"""));
        var errorText = Encoding.UTF8.GetString(await error.Content.ReadAsByteArrayAsync());
        Assert.Contains("'l'modèle'", errorText);
        Assert.DoesNotContain("\\u00", errorText);
    }
}
