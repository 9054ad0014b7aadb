using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using OrleansMixtral.Client.AI;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Gateway.Tests;

// Inside the namespace, so that its ChatMessage and ChatRole come before OrleansMixtral's.
using Microsoft.Extensions.AI;

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
        var promptTokens = 0;
        string sent = "";
        for (var turn = 0; turn < 8 && dropped == 0; turn++)
        {
            history.Add(("user", $"Tell me more about the old city, part {turn}."));
            // The whole history each time, as an OpenAI client that keeps its own sends it.
            var messages = sent = JsonSerializer.Serialize(history.Select(m => new { role = m.Role, content = m.Content }));
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
            promptTokens = usage.GetProperty("prompt_tokens").GetInt32();
            history.Add(("assistant", doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!));
        }
        Assert.True(dropped > 0, "eight 200-token turns never outgrew the context");

        using var read = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{id}"));
        using var conversation = JsonDocument.Parse(await read.Content.ReadAsStringAsync());
        Assert.Equal(dropped, conversation.RootElement.GetProperty("dropped_turns").GetInt32());
        Assert.Equal(history.Count, conversation.RootElement.GetProperty("messages").GetArrayLength()); // the transcript keeps every turn

        // The same history as a stateless request (no conversation: the whole history in the request) goes through the same
        // prompt builder: the same oldest turns dropped, the same prompt.
        using var stateless = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions",
            $$"""{"model":"{{GatewayFixture.Model}}","messages":{{sent}},"max_tokens":200,"temperature":0,"ignore_eos":true}"""));
        using var plain = JsonDocument.Parse(await stateless.Content.ReadAsStringAsync());
        var statelessUsage = plain.RootElement.GetProperty("usage");
        Assert.Equal(dropped, statelessUsage.GetProperty("dropped_turns").GetInt32());
        Assert.Equal(promptTokens, statelessUsage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(200, statelessUsage.GetProperty("completion_tokens").GetInt32());

        // And through the IChatClient.
        await using var services = ChatClientTests.Services(fixture);
        var chat = services.GetRequiredService<IChatClient>();
        var viaChatClient = await chat.GetResponseAsync(
            [.. history.SkipLast(1).Select(m => new ChatMessage(new ChatRole(m.Role), m.Content))],
            new ChatOptions { MaxOutputTokens = 200, Temperature = 0, AdditionalProperties = new() { ["ignore_eos"] = true } });
        Assert.Equal(dropped, viaChatClient.Usage!.AdditionalCounts![MixtralChatClient.DroppedTurnsCount]);
        Assert.Equal(promptTokens, viaChatClient.Usage.InputTokenCount);

        // A short history drops nothing, and says so.
        using var shortReply = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("Hello", 2)));
        using var shortDoc = JsonDocument.Parse(await shortReply.Content.ReadAsStringAsync());
        Assert.Equal(0, shortDoc.RootElement.GetProperty("usage").GetProperty("dropped_turns").GetInt32());
    }

    [Fact(Timeout = 60_000)]
    public async Task A_message_that_cannot_fit_is_the_same_refusal_through_every_path()
    {
        var longText = string.Join(' ', Enumerable.Repeat("the history of the old city and its river", 200)); // ≈ 1800 tokens > 1024
        var expected = Assert.Throws<ContextLengthExceededException>(() =>
            new ChatPromptBuilder(CpuReference.Tokenizer, 1024).CheckFits("You are terse.", longText)).Message;
        var messages = JsonSerializer.Serialize(new[] { new { role = "system", content = "You are terse." }, new { role = "user", content = longText } });
        foreach (var extra in new[] { "", ""","metadata":{"conversation_id":"new"}""" })
        {
            using var response = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions",
                $$"""{"model":"{{GatewayFixture.Model}}","messages":{{messages}}{{extra}}}"""));
            var error = await GatewayFixture.AssertError(response, 400, "context_length_exceeded");
            Assert.Equal(expected, error.GetProperty("message").GetString());
        }
        await using var services = ChatClientTests.Services(fixture);
        var chat = services.GetRequiredService<IChatClient>();
        foreach (var conversation in new[] { null, "overflow-" + Guid.NewGuid().ToString("N") })
        {
            var e = await Assert.ThrowsAsync<MixtralRequestException>(() => chat.GetResponseAsync(
                [new ChatMessage(ChatRole.System, "You are terse."), new ChatMessage(ChatRole.User, longText)], new ChatOptions { ConversationId = conversation }));
            Assert.Equal("context_length_exceeded", e.Code);
            Assert.Equal(expected, e.Message);
        }
    }
}
