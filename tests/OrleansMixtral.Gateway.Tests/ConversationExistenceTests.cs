using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// A conversation exists once created: an id that was never stored (or that the storage lost) is 404 everywhere, never
/// an empty conversation with 200.
/// </summary>
[Collection(GatewayCollection.Name)]
public sealed class ConversationExistenceTests(GatewayFixture fixture)
{
    /// <summary>An id the tenant's key signs (the gateway would have made it) whose conversation is in no storage.</summary>
    string UnstoredId(string key = GatewayFixture.KeyA) =>
        ConversationIds.New(fixture.Gateway.Services.GetRequiredService<ApiKeys>().Find(key)!);

    [Fact(Timeout = 60_000)]
    public async Task An_id_that_was_never_stored_is_404_for_read_continue_subscribe_cancel_and_delete()
    {
        var id = UnstoredId();
        using (var read = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{id}")))
        {
            var error = await GatewayFixture.AssertError(read, 404, "conversation_not_found");
            Assert.Contains(id, error.GetProperty("message").GetString());
        }
        using (var cont = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions",
                   GatewayFixture.ChatBody("Hello?", 4, extra: $$""","metadata":{"conversation_id":"{{id}}"}"""))))
            await GatewayFixture.AssertError(cont, 404, "conversation_not_found");
        var viaHeader = fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("Hello again?", 4, stream: true));
        viaHeader.Headers.Add("X-Conversation-Id", id);
        using (var cont2 = await fixture.Http.SendAsync(viaHeader))
        {
            var error = await GatewayFixture.AssertError(cont2, 404, "conversation_not_found");
            Assert.Contains(id, error.GetProperty("message").GetString());
        }
        using (var sub = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{id}/stream"), HttpCompletionOption.ResponseHeadersRead))
            await GatewayFixture.AssertError(sub, 404, "conversation_not_found");
        using (var cancel = await fixture.Http.SendAsync(fixture.Post($"/v1/conversations/{id}/cancel", "")))
            await GatewayFixture.AssertError(cancel, 404, "conversation_not_found");
        using (var delete = await fixture.Http.SendAsync(new HttpRequestMessage(HttpMethod.Delete, $"/v1/conversations/{id}")
               { Headers = { Authorization = new AuthenticationHeaderValue("Bearer", GatewayFixture.KeyA) } }))
            await GatewayFixture.AssertError(delete, 404, "conversation_not_found");

        // None of that created it.
        using var after = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{id}"));
        await GatewayFixture.AssertError(after, 404, "conversation_not_found");
    }

    [Fact(Timeout = 60_000)]
    public async Task A_created_conversation_exists_before_its_first_turn_and_new_starts_one()
    {
        // Created without a system message: it exists at once, with nothing in it.
        using var created = await fixture.Http.SendAsync(fixture.Post("/v1/conversations", "{}"));
        Assert.Equal(200, (int)created.StatusCode);
        var id = JsonDocument.Parse(await created.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!;
        using (var read = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{id}")))
        {
            Assert.Equal(200, (int)read.StatusCode);
            var c = JsonDocument.Parse(await read.Content.ReadAsStringAsync()).RootElement;
            Assert.Equal((0, 0, 0), (c.GetProperty("turns").GetInt32(), c.GetProperty("tokens").GetInt32(), c.GetProperty("messages").GetArrayLength()));
        }
        using (var delete = await fixture.Http.SendAsync(new HttpRequestMessage(HttpMethod.Delete, $"/v1/conversations/{id}")
               { Headers = { Authorization = new AuthenticationHeaderValue("Bearer", GatewayFixture.KeyA) } }))
            Assert.Equal(200, (int)delete.StatusCode);
        using (var turn = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions",
                   GatewayFixture.ChatBody("Hello", 4, extra: $$""","metadata":{"conversation_id":"{{id}}"}"""))))
            Assert.Equal(200, (int)turn.StatusCode);

        // "new" starts one, whose id comes back and then reads as a stored conversation with its turn.
        var start = fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("Hi there", 4));
        start.Headers.Add("X-Conversation-Id", "new");
        using var first = await fixture.Http.SendAsync(start);
        Assert.Equal(200, (int)first.StatusCode);
        var newId = first.Headers.GetValues("X-Conversation-Id").Single();
        using var stored = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{newId}"));
        Assert.Equal(200, (int)stored.StatusCode);
        Assert.Equal(1, JsonDocument.Parse(await stored.Content.ReadAsStringAsync()).RootElement.GetProperty("turns").GetInt32());
    }
}

static class JsonExtensions
{
    public static int GetInteger(this JsonElement e) => e.GetInt32();
}
