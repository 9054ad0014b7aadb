using System.Text.Json;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// A conversation that outgrows the tiny model's 1,024-token context through the gateway: each reply keeps its room, the
/// usage and the conversation say how many of its oldest turns the model no longer sees, and a client that sends the
/// whole history (as OpenAI clients do) may go on doing so.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class ContextOverflowTests(GatewayFixture fixture)
{
    [Fact(Timeout = 120_000)]
    public async Task Usage_and_the_conversation_say_how_many_oldest_turns_were_dropped_and_replies_keep_their_room()
    {
        var history = new List<(string Role, string Content)> { ("system", "You are a storyteller.") };
        string? id = null;
        var dropped = 0;
        for (var turn = 0; turn < 8 && dropped == 0; turn++)
        {
            history.Add(("user", $"Tell me more about the old city, part {turn}."));
            // The whole history each time, as an OpenAI client that keeps its own sends it.
            var messages = JsonSerializer.Serialize(history.Select(m => new { role = m.Role, content = m.Content }));
            var request = fixture.Post("/v1/chat/completions",
                $$"""{"model":"{{GatewayFixture.Model}}","messages":{{messages}},"max_tokens":200,"temperature":0,"ignore_eos":true}""");
            request.Headers.Add("X-Conversation-Id", id ?? "new");
            using var response = await fixture.Http.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(200 == (int)response.StatusCode, text);
            id ??= response.Headers.GetValues("X-Conversation-Id").Single();
            using var doc = JsonDocument.Parse(text);
            var usage = doc.RootElement.GetProperty("usage");
            Assert.Equal(200, usage.GetProperty("completion_tokens").GetInt32());
            Assert.True(usage.GetProperty("prompt_tokens").GetInt32() + 200 <= 1024);
            dropped = usage.GetProperty("dropped_turns").GetInt32();
            history.Add(("assistant", doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!));
        }
        Assert.True(dropped > 0, "eight 200-token turns never outgrew the context");

        using var read = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{id}"));
        using var conversation = JsonDocument.Parse(await read.Content.ReadAsStringAsync());
        Assert.Equal(dropped, conversation.RootElement.GetProperty("dropped_turns").GetInt32());
        Assert.Equal(history.Count, conversation.RootElement.GetProperty("messages").GetArrayLength()); // the transcript keeps every turn

        // A stateless request has no conversation: its usage has no dropped_turns.
        using var stateless = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("Hello", 2)));
        using var plain = JsonDocument.Parse(await stateless.Content.ReadAsStringAsync());
        Assert.False(plain.RootElement.GetProperty("usage").TryGetProperty("dropped_turns", out _));
    }
}
