using System.Text.Json;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>/health, served by ASP.NET Core's health checks with the gateway's own body: the model, the slots, every engine.</summary>
[Collection(GatewayCollection.Name)]
public sealed class HealthTests(GatewayFixture fixture)
{
    [Fact(Timeout = 30_000)]
    public async Task Health_lists_the_engine_and_only_GET_is_allowed()
    {
        using var response = await fixture.Http.GetAsync("/health");
        Assert.Equal(200, (int)response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        var health = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal("ok", health.GetProperty("status").GetString());
        Assert.Equal(GatewayFixture.Model, health.GetProperty("model").GetString());
        var info = fixture.Engine.Engine.Info;
        Assert.Equal(info.ContextLength, health.GetProperty("context_length").GetInt32());
        var engine = Assert.Single(health.GetProperty("engines").EnumerateArray());
        Assert.Equal(fixture.Cluster.Silos[0].SiloAddress.ToParsableString(), engine.GetProperty("silo").GetString());
        Assert.Equal(info.Backend, engine.GetProperty("backend").GetString());
        Assert.Equal(JsonValueKind.Null, engine.GetProperty("device_index").ValueKind);
        Assert.Equal(info.KvBlocks, engine.GetProperty("kv_blocks_total").GetInt32());

        using var post = await fixture.Http.SendAsync(fixture.Post("/health", "{}"));
        await GatewayFixture.AssertError(post, 405);
    }
}
