using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>Each key is a tenant: its conversations do not exist for other keys; keys are never logged.</summary>
[Collection(GatewayCollection.Name)]
public sealed class TenantTests(GatewayFixture fixture)
{
    async Task<string> NewConversation(string key)
    {
        using var response = await fixture.Http.SendAsync(fixture.Post("/v1/conversations", """{"system":"Be kind."}""", key));
        Assert.Equal(200, (int)response.StatusCode);
        var id = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!;
        using var turn = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions",
            GatewayFixture.ChatBody("Hello", 4, extra: $$""","metadata":{"conversation_id":"{{id}}"}"""), key));
        Assert.Equal(200, (int)turn.StatusCode);
        return id;
    }

    [Fact(Timeout = 60_000)]
    public async Task Another_tenants_conversation_is_404_for_read_continue_subscribe_cancel_and_delete()
    {
        var id = await NewConversation(GatewayFixture.KeyA);
        var b = GatewayFixture.KeyB;

        using (var read = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{id}", b)))
            await GatewayFixture.AssertError(read, 404, "conversation_not_found");
        using (var cont = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions",
                   GatewayFixture.ChatBody("Hi, it is B", 4, extra: $$""","metadata":{"conversation_id":"{{id}}"}"""), b)))
            await GatewayFixture.AssertError(cont, 404, "conversation_not_found");
        var viaHeader = fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("Hi again", 4, stream: true), b);
        viaHeader.Headers.Add("X-Conversation-Id", id);
        using (var cont2 = await fixture.Http.SendAsync(viaHeader))
            await GatewayFixture.AssertError(cont2, 404, "conversation_not_found");
        using (var sub = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{id}/stream", b), HttpCompletionOption.ResponseHeadersRead))
            await GatewayFixture.AssertError(sub, 404, "conversation_not_found");
        using (var cancel = await fixture.Http.SendAsync(fixture.Post($"/v1/conversations/{id}/cancel", "", b)))
            await GatewayFixture.AssertError(cancel, 404, "conversation_not_found");
        using (var delete = await fixture.Http.SendAsync(new HttpRequestMessage(HttpMethod.Delete, $"/v1/conversations/{id}")
               { Headers = { Authorization = new AuthenticationHeaderValue("Bearer", b) } }))
            await GatewayFixture.AssertError(delete, 404, "conversation_not_found");

        // Untouched, and still A's.
        using var mine = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{id}", GatewayFixture.KeyA));
        var conversation = JsonDocument.Parse(await mine.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(1, conversation.GetProperty("turns").GetInt32());
        Assert.Equal(3, conversation.GetProperty("messages").GetArrayLength());

        // An id nobody made is not found either, nor one a byte away from a real one.
        var forged = id[..^1] + (id[^1] == '0' ? '1' : '0');
        using var f = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{forged}", GatewayFixture.KeyA));
        await GatewayFixture.AssertError(f, 404, "conversation_not_found");
    }

    [Fact(Timeout = 60_000)]
    public async Task The_owner_subscribes_and_sees_every_chunk_of_a_turn_in_order()
    {
        var id = await NewConversation(GatewayFixture.KeyA);
        using var sub = await fixture.Http.SendAsync(fixture.Get($"/v1/conversations/{id}/stream"), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(200, (int)sub.StatusCode);
        using var reader = new StreamReader(await sub.Content.ReadAsStreamAsync());
        Assert.StartsWith(": subscribed", await reader.ReadLineAsync());

        using var turn = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions",
            GatewayFixture.ChatBody("Tell me more", 10, extra: $$""","metadata":{"conversation_id":"{{id}}"}""")));
        var reply = JsonDocument.Parse(await turn.Content.ReadAsStringAsync()).RootElement
            .GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();

        var text = "";
        var expected = 0;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        while (await reader.ReadLineAsync(timeout.Token) is { } line)
        {
            if (!line.StartsWith("data: ")) continue;
            var chunk = JsonDocument.Parse(line[6..]).RootElement;
            if (chunk.GetProperty("turn").GetInt32() == 0) continue; // the first turn's last chunks may still be on their way
            Assert.Equal(1, chunk.GetProperty("turn").GetInt32());
            Assert.Equal(expected++, chunk.GetProperty("sequence").GetInt32());
            text += chunk.GetProperty("text").GetString();
            if (chunk.GetProperty("finish_reason").ValueKind == JsonValueKind.String) break;
        }
        Assert.Equal(reply, text);
    }

    [Fact(Timeout = 30_000)]
    public async Task Keys_never_appear_in_the_logs()
    {
        // Good and bad keys, failures of every kind (the rest of the suite adds more when it ran before).
        foreach (var key in new[] { GatewayFixture.KeyA, GatewayFixture.KeyB, "sk-wrong", "sk-not-a-key-of-this-server" })
        {
            using var r1 = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", GatewayFixture.ChatBody("hi", 2), key));
            using var r2 = await fixture.Http.SendAsync(fixture.Post("/v1/chat/completions", "{broken", key));
            using var r3 = await fixture.Http.SendAsync(fixture.Get("/v1/conversations/conv_x", key));
        }
        var lines = fixture.Logs.Lines.ToList();
        Assert.NotEmpty(lines);
        Assert.Contains(lines, l => l.Contains("tenant-a", StringComparison.Ordinal)); // tenants by name
        foreach (var secret in new[] { GatewayFixture.KeyA, GatewayFixture.KeyB, "sk-not-a-key-of-this-server", "sk-wrong" })
            Assert.DoesNotContain(lines, l => l.Contains(secret, StringComparison.Ordinal));
        Assert.DoesNotContain(lines, l => l.Contains("Bearer", StringComparison.OrdinalIgnoreCase));
    }

    [Fact(Timeout = 60_000)]
    public async Task Without_keys_the_gateway_listens_on_loopback_only_as_one_tenant()
    {
        // Asked to listen everywhere, with no keys configured.
        var (app, url) = await fixture.StartExtraGatewayAsync(new() { ["urls"] = "http://0.0.0.0:0" });
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        Assert.All(addresses, a => Assert.StartsWith("http://127.0.0.1:", a));
        using var http = new HttpClient { BaseAddress = url };
        using var response = await http.PostAsync("/v1/chat/completions", new StringContent(GatewayFixture.ChatBody("hi", 2)));
        Assert.Equal(200, (int)response.StatusCode);
        Assert.Equal(["http://127.0.0.1:8000", "https://127.0.0.1:9000/x", "http://localhost:1"],
            GatewayHost.ListenUrls(new Microsoft.Extensions.Configuration.ConfigurationBuilder().AddInMemoryCollection(
                new Dictionary<string, string?> { ["urls"] = "http://*:8000;https://[::]:9000/x;http://localhost:1" }).Build(), loopbackOnly: true));
    }

    [Fact(Timeout = 30_000)]
    public void Keys_from_a_file_each_make_a_tenant()
    {
        var file = Path.GetTempFileName();
        try
        {
            File.WriteAllLines(file, ["# keys", "", "acme sk-acme-0123456789", "sk-anonymous-0123456789"]);
            var config = new Microsoft.Extensions.Configuration.ConfigurationBuilder().Build();
            var keys = ApiKeys.Load(config, new GatewayOptions { ApiKeysFile = file });
            Assert.Equal(2, keys.Count);
            Assert.Equal("acme", keys.Find("sk-acme-0123456789")?.Name);
            Assert.StartsWith("key-", keys.Find("sk-anonymous-0123456789")?.Name);
            Assert.Null(keys.Find("sk-acme-012345678"));
            File.WriteAllLines(file, ["acme sk-acme-0123456789", "acme sk-acme-other-0123"]);
            var e = Assert.Throws<ArgumentException>(() => ApiKeys.Load(config, new GatewayOptions { ApiKeysFile = file }));
            Assert.DoesNotContain("sk-acme", e.Message);
        }
        finally { File.Delete(file); }
    }
}
